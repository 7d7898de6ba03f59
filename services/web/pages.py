"""What every page needs: the person's language and session, rendering in that language, and redirects."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from babel.support import Translations
from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from services.web import vocabulary
from services.web.i18n import LANGUAGES, Locale, pick_language, zone_of
from services.web.security import LANG_COOKIE, LOGIN_CSRF_COOKIE, SESSION_COOKIE, same
from services.web.sessions import SessionStore
from services.web.upstream import Person, Upstream
from shared.clock import Clock

STATIC = Path(__file__).parent / "static"


class Redirect(Exception):
    """Raised inside a handler to answer with a redirect (e.g. to sign in)."""

    def __init__(self, to: str) -> None:
        super().__init__(to)
        self.to = to


@dataclass
class Pages:
    templates: Environment
    catalogs: dict[str, Translations]
    sessions: SessionStore
    upstream: Upstream
    clock: Clock
    version: str
    cookie_secure: bool

    # --- who is asking, in which language ---------------------------------------------------------------

    def lang(self, request: Request) -> str:
        return pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))

    def locale(self, request: Request, session: dict[str, Any] | None = None) -> Locale:
        lang = self.lang(request)
        region = session["account"].get("region") if session else None
        return Locale(lang, self.catalogs[lang], zone_of(region))

    async def session(self, request: Request) -> dict[str, Any] | None:
        return await self.sessions.load(request.cookies.get(SESSION_COOKIE))

    async def signed_in(self, request: Request, *, setup_ok: bool = False) -> dict[str, Any]:
        """The session of a page that needs one; otherwise a redirect to sign in (or to finish the account setup)."""
        session = await self.session(request)
        if session is None:
            ended = "?ended=1" if request.cookies.get(SESSION_COOKIE) else ""
            raise Redirect(f"/login{ended}")
        if not setup_ok:
            if session.get("must_change_password"):
                raise Redirect("/password")
            if session.get("must_enroll_totp"):
                raise Redirect("/totp")
        return session

    def person(self, session: dict[str, Any]) -> Person:
        return Person(self.upstream, self.sessions, self.clock, session)

    # --- answers ----------------------------------------------------------------------------------------

    def asset(self, path: str) -> str:
        return f"/static/{path}?v={self.version}"

    def render(self, request: Request, template: str, *, session: dict[str, Any] | None = None, status: int = 200,
               **context: Any) -> HTMLResponse:
        loc = self.locale(request, session)
        html = self.templates.get_template(template).render(
            _=loc.gettext, loc=loc, lang=loc.lang, other_lang=[x for x in LANGUAGES if x != loc.lang][0],
            session=session, account=(session or {}).get("account"), csrf=(session or {}).get("csrf"),
            asset=self.asset, path=request.url.path, here=quote(request.url.path + (
                f"?{request.url.query}" if request.url.query else "")),
            vocabulary=vocabulary, tojson=lambda v: json.dumps(v, ensure_ascii=False).replace("</", "<\\/"),
            **context)
        return HTMLResponse(html, status_code=status)

    def redirect(self, to: str, status: int = 303) -> RedirectResponse:
        return RedirectResponse(to, status_code=status)

    def set_session_cookie(self, response: Response, cookie: str) -> None:
        response.set_cookie(SESSION_COOKIE, cookie, httponly=True, secure=self.cookie_secure, samesite="strict",
                            path="/")

    def clear_session_cookie(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, httponly=True, secure=self.cookie_secure, samesite="strict", path="/")

    def login_csrf(self, request: Request) -> str:
        """Double-submit token of the sign-in form (before there is a session to hold one)."""
        return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)

    def set_login_csrf(self, response: Response, token: str) -> None:
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, secure=self.cookie_secure, samesite="strict",
                            path="/login", max_age=3600)

    @staticmethod
    def form_csrf_ok(session: dict[str, Any], form: Any) -> bool:
        return same(session.get("csrf"), form.get("csrf"))


def local_path(value: str | None, default: str = "/") -> str:
    """A redirect target from a form or query: only a path on this site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value
