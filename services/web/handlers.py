"""Signing in and out, the first-sign-in password change, TOTP enrolment, the language switch, and the files the
browser fetches at the site's root (service worker, manifest)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import segno
from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.web import staff
from services.web.pages import STATIC, Pages, Redirect, local_path
from services.web.security import LANG_COOKIE, LOGIN_CSRF_COOKIE, SESSION_COOKIE, same
from services.web.upstream import SessionEnded, Unavailable, error_code
from services.web.i18n import LANGUAGES

HOME = {"reporter": "/report", **staff.HOMES}


def home_of(session: dict[str, Any]) -> str:
    if session.get("must_change_password"):
        return "/password"
    if session.get("must_enroll_totp"):
        return "/totp"
    return HOME.get(session["account"].get("role"), "/home")


def routes(pages: Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def root(request: Request) -> Response:
        session = await pages.session(request)
        return pages.redirect(home_of(session) if session else "/login")

    @router.get("/login")
    async def login_page(request: Request, ended: int = 0, bye: int = 0) -> Response:
        session = await pages.session(request)
        if session is not None:
            return pages.redirect(home_of(session))
        token = pages.login_csrf(request)
        response = pages.render(request, "login.html", form_csrf=token, ended=bool(ended), bye=bool(bye))
        pages.set_login_csrf(response, token)
        if ended or request.cookies.get(SESSION_COOKIE):
            pages.clear_session_cookie(response)
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        username = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        code = "".join(str(form.get("totp") or "").split())

        def again(message: str, status: int) -> Response:
            token = pages.login_csrf(request)
            response = pages.render(request, "login.html", form_csrf=token, error=message, username=username,
                                    status=status)
            pages.set_login_csrf(response, token)
            return response

        _ = pages.locale(request).gettext
        if not same(request.cookies.get(LOGIN_CSRF_COOKIE), str(form.get("csrf") or "")):
            return again(_("The page was out of date. Please sign in again."), 400)
        if not username or not password:
            return again(_("Write your username and password."), 422)
        body: dict[str, Any] = {"username": username, "password": password}
        if code:
            body["totp"] = code
        try:
            answer = await pages.upstream.call("identity", "POST", "/v1/login", json=body)
            if answer.status_code == 429:
                minutes = max(1, -(-int(answer.headers.get("Retry-After", "60") or 60) // 60))
                return again(_("Too many attempts. Try again in %(n)s minutes.") % {"n": minutes}, 429)
            if answer.status_code != 200:
                return again(_("Username, password or code is wrong."), 401)
            tokens = answer.json()
            me = await pages.upstream.call("identity", "GET", "/v1/me", token=tokens["access_token"])
        except Unavailable:
            return again(_("Sign-in is not available right now. Try again in a moment."), 503)
        if me.status_code != 200:
            return again(_("Sign-in is not available right now. Try again in a moment."), 503)
        account = {k: me.json().get(k) for k in ("username", "name", "role", "region", "unit")}
        cookie, session = await pages.sessions.create(tokens, account, pages.lang(request))
        response = pages.redirect(home_of(session))
        pages.set_session_cookie(response, cookie)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @router.get("/logout")
    async def logout_page(request: Request) -> Response:
        session = await pages.session(request)
        if session is None:
            return pages.redirect("/login?bye=1")
        return pages.render(request, "logout.html", session=session)

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = await pages.session(request)
        if session is None:
            response = pages.redirect("/login?bye=1")
            pages.clear_session_cookie(response)
            return response
        form = await request.form()
        if not pages.form_csrf_ok(session, form):
            return pages.redirect("/logout")  # a stale page: confirm on a fresh one
        try:
            await pages.upstream.call("identity", "POST", "/v1/logout", token=session["access_token"])
        except Unavailable:
            pass  # the session ends here regardless; identity's refresh token expires on its own
        await pages.sessions.end(session["_id"])
        response = pages.redirect("/login?bye=1")
        pages.clear_session_cookie(response)
        return response

    @router.get("/password")
    async def password_page(request: Request) -> Response:
        session = await pages.signed_in(request, setup_ok=True)
        return pages.render(request, "password.html", session=session, errors={})

    @router.post("/password")
    async def change_password(request: Request) -> Response:
        session = await pages.signed_in(request, setup_ok=True)
        form = await request.form()
        _ = pages.locale(request, session).gettext
        current, new, repeat = (str(form.get(k) or "") for k in ("current", "new", "repeat"))
        errors: dict[str, str] = {}
        if not pages.form_csrf_ok(session, form):
            errors["form"] = _("The page was out of date. Please try again.")
        elif new != repeat:
            errors["repeat"] = _("The two new passwords are not the same.")
        else:
            person = pages.person(session)
            answer = await person.call("identity", "POST", "/v1/password", json={"current": current, "new": new})
            if answer.status_code in (200, 204):
                await person.refresh(force=True)
                await pages.sessions.change(session["_id"], must_change_password=False)
                session["must_change_password"] = False
                return pages.redirect(home_of(session))
            if answer.status_code == 422 and "new" in answer.text:
                errors["new"] = _("At least 10 characters, and not your username.")
            else:
                errors["current"] = _("Your current password is wrong.")
        return pages.render(request, "password.html", session=session, errors=errors, status=422)

    @router.get("/totp")
    async def totp_page(request: Request) -> Response:
        session = await pages.signed_in(request, setup_ok=True)
        return await _totp(request, session, error=None)

    async def _totp(request: Request, session: dict[str, Any], error: str | None) -> Response:
        uri = session.get("totp_uri")
        if not uri:
            answer = await pages.person(session).call("identity", "POST", "/v1/totp/enroll")
            if answer.status_code != 200:
                return pages.redirect(home_of(session))
            uri = answer.json()["otpauth_uri"]
            await pages.sessions.change(session["_id"], totp_uri=uri)
        secret = parse_qs(urlparse(uri).query).get("secret", [""])[0]
        qr = segno.make(uri, error="m").svg_inline(scale=5, dark="#111", light="#fff", omitsize=False)
        return pages.render(request, "totp.html", session=session, qr=qr, secret=secret, error=error,
                            status=422 if error else 200)

    @router.post("/totp")
    async def confirm_totp(request: Request) -> Response:
        session = await pages.signed_in(request, setup_ok=True)
        form = await request.form()
        _ = pages.locale(request, session).gettext
        if not pages.form_csrf_ok(session, form):
            return await _totp(request, session, _("The page was out of date. Please try again."))
        code = "".join(str(form.get("code") or "").split())
        person = pages.person(session)
        answer = await person.call("identity", "POST", "/v1/totp/confirm", json={"code": code})
        if answer.status_code != 200:
            return await _totp(request, session, _("That code is not right. Use the newest code in the app."))
        await person.refresh(force=True)
        await pages.sessions.change(session["_id"], must_enroll_totp=False, totp_uri=None)
        session["must_enroll_totp"] = False
        return pages.redirect(home_of(session))

    @router.get("/home")
    async def staff_home(request: Request) -> Response:
        session = await pages.signed_in(request)
        return pages.render(request, "home.html", session=session)

    @router.get("/lang/{lang}")
    async def switch_language(lang: str, request: Request, next: str | None = None) -> Response:
        response = pages.redirect(local_path(next, "/"))
        if lang in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=400 * 24 * 3600, secure=pages.cookie_secure,
                                samesite="lax", path="/")
        return response

    @router.get("/offline")
    async def offline(request: Request) -> Response:
        return pages.render(request, "offline.html")

    @router.get("/sw.js")
    async def service_worker() -> Response:
        script = (STATIC / "sw.js").read_text().replace("__VERSION__", pages.version)
        return Response(script, media_type="text/javascript",
                        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"})

    @router.get("/manifest.webmanifest")
    async def manifest(request: Request) -> Response:
        _ = pages.locale(request).gettext
        import json

        body = {"name": "Waspada", "short_name": "Waspada", "start_url": "/", "display": "standalone",
                "background_color": "#ffffff", "theme_color": "#0b5d3b", "lang": pages.lang(request),
                "description": _("Report what you saw in your village."),
                "icons": [{"src": pages.asset("icon.svg"), "sizes": "any", "type": "image/svg+xml"}]}
        return Response(json.dumps(body), media_type="application/manifest+json")

    return router


def install_redirects(app: Any) -> None:
    """Handlers raise Redirect (e.g. to sign in); it becomes a 303 for pages and a 401 for htmx requests."""
    from starlette.responses import RedirectResponse

    @app.exception_handler(Redirect)
    async def _redirect(request: Request, exc: Redirect) -> Response:
        if request.headers.get("HX-Request"):
            return Response(status_code=204, headers={"HX-Redirect": exc.to})
        return RedirectResponse(exc.to, status_code=303)

    @app.exception_handler(SessionEnded)
    async def _ended(request: Request, exc: SessionEnded) -> Response:
        if request.url.path.startswith("/api/"):
            from fastapi.responses import JSONResponse

            return JSONResponse({"error": {"code": "signed_out", "message": "session ended", "details": None}}, 401)
        target = "/login?ended=1"
        if request.headers.get("HX-Request"):
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    from starlette.exceptions import HTTPException

    as_json = app.exception_handlers[HTTPException]  # the API's error body (shared.http)

    @app.exception_handler(HTTPException)
    async def _not_found(request: Request, exc: HTTPException) -> Response:
        """An address with no page is a page in the person's language, not the API's JSON error."""
        if exc.status_code != 404 or request.url.path.startswith(("/api/", "/static/")):
            return await as_json(request, exc)
        pages: Pages = app.state.pages
        return pages.render(request, "not_found.html", status=404)

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable) -> Response:
        if request.url.path.startswith("/api/"):
            from fastapi.responses import JSONResponse

            return JSONResponse({"error": {"code": "unavailable", "message": f"{exc} unavailable", "details": None}},
                                503, headers={"Retry-After": "10"})
        pages: Pages = app.state.pages
        return pages.render(request, "unavailable.html", status=503)


__all__ = ["error_code", "home_of", "install_redirects", "routes"]
