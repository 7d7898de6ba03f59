"""The reporter's pages: the report form and the outbox (both work offline, see static/outbox.js), and My reports
with the officer's question, the answer and withdrawal. Reports reach intake through /api/reports, which the
phone's outbox calls with the Idempotency-Key it made when the report was first saved."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.web import vocabulary
from services.web.i18n import Locale
from services.web.pages import Pages, Redirect
from services.web.security import same
from services.web.upstream import error_code
from shared import reference

CASE_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{8,100}$")


def villages_for(region: str | None) -> list[tuple[str, str]]:
    """The villages a reporter may choose: their own, or those of their kecamatan (or wider area), by name."""
    regions = reference.regions()
    if not region:
        return []
    if region in regions and regions[region].level in ("village", "kelurahan"):
        return [(region, regions[region].name)]
    inside = [(r.code, r.name) for r in regions.values()
              if r.level in ("village", "kelurahan") and r.code.startswith(region + ".")]
    return sorted(inside, key=lambda v: v[1])


def field_messages(details: Any, loc: Locale) -> dict[str, str]:
    """intake's 422 details, `[{"field": "persons.0.nik", "problem", "type"}]`, as one message per field in the
    person's language."""
    out: dict[str, str] = {}
    if not isinstance(details, list):
        return out
    for problem in details:
        if not isinstance(problem, dict):
            continue
        field = str(problem.get("field") or "body")
        parts = field.split(".")
        words = [p for p in parts if not p.isdigit()]
        if parts[0] == "persons" and len(parts) == 2 and "at least" in str(problem.get("problem", "")):
            message = vocabulary.PERSON_NEEDS_IDENTITY
        else:
            message = vocabulary.FIELD_PROBLEMS.get(words[-1] if words else "", vocabulary.INVALID)
        out.setdefault(field, loc.gettext(message))
    return out


def _api_error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": None}, **extra}, status_code=status)


def routes(pages: Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    async def reporter_session(request: Request) -> dict[str, Any]:
        session = await pages.signed_in(request)
        if session["account"].get("role") != "reporter":
            raise Redirect("/home")
        return session

    @router.get("/report")
    async def report_form(request: Request) -> Response:
        session = await reporter_session(request)
        loc = pages.locale(request, session)
        return pages.render(request, "report.html", session=session,
                            villages=villages_for(session["account"].get("region")),
                            groups=vocabulary.indicator_groups(), zone=loc.zone)

    @router.get("/outbox")
    async def outbox(request: Request) -> Response:
        session = await reporter_session(request)
        return pages.render(request, "outbox.html", session=session)

    @router.get("/reports")
    async def my_reports(request: Request) -> Response:
        session = await reporter_session(request)
        answer = await pages.person(session).call("intake", "GET", "/v1/reports", params={"limit": 50})
        items = answer.json().get("items", []) if answer.status_code == 200 else []
        return pages.render(request, "reports.html", session=session, reports=[_card(r) for r in items],
                            names=_village_names(), errors={})

    async def _one(session: dict[str, Any], case_id: str) -> dict[str, Any] | None:
        if not CASE_ID.match(case_id):
            return None
        answer = await pages.person(session).call("intake", "GET", f"/v1/reports/{case_id}")
        return _card(answer.json()) if answer.status_code == 200 else None

    async def _act(request: Request, case_id: str, path: str, field: str) -> Response:
        session = await reporter_session(request)
        form = await request.form()
        loc = pages.locale(request, session)
        errors: dict[str, str] = {}
        text = str(form.get(field) or "").strip()
        if not pages.form_csrf_ok(session, form):
            errors["form"] = loc.gettext("The page was out of date. Please try again.")
        elif not text:
            errors[field] = loc.gettext(vocabulary.FIELD_PROBLEMS[field])
        elif CASE_ID.match(case_id):
            answer = await pages.person(session).call("intake", "POST", f"/v1/reports/{case_id}/{path}",
                                                      json={field: text})
            if answer.status_code == 422:
                errors.update({k.split(".")[-1]: v for k, v in field_messages(
                    answer.json()["error"].get("details"), loc).items()} or {field: loc.gettext(vocabulary.INVALID)})
            elif answer.status_code == 409:
                errors["form"] = loc.gettext("This report can no longer be changed; its status has moved on.")
            elif answer.status_code != 200:
                errors["form"] = loc.gettext(vocabulary.INVALID)
        report = await _one(session, case_id)
        if report is None:
            return pages.redirect("/reports")
        if not request.headers.get("HX-Request"):
            if not errors:
                return pages.redirect(f"/reports#r-{case_id}")
            return pages.render(request, "reports.html", session=session, reports=[report],
                                names=_village_names(), errors={case_id: errors}, status=422)
        return pages.render(request, "_report_card.html", session=session, r=report, names=_village_names(),
                            card_errors=errors, done=not errors)

    @router.post("/reports/{case_id}/answer")
    async def answer_question(case_id: str, request: Request) -> Response:
        return await _act(request, case_id, "amendments", "answer")

    @router.post("/reports/{case_id}/withdraw")
    async def withdraw(case_id: str, request: Request) -> Response:
        return await _act(request, case_id, "withdraw", "reason")

    # --- the outbox's calls (JSON; CSRF token in a header, fetched from /api/session) ----------------------

    @router.get("/api/session")
    async def api_session(request: Request) -> Response:
        session = await pages.session(request)
        if session is None:
            return _api_error(401, "signed_out", "not signed in")
        if session.get("must_change_password") or session.get("must_enroll_totp"):
            return _api_error(401, "setup_required", "finish signing in first")
        account = session["account"]
        return JSONResponse({"username": account.get("username"), "role": account.get("role"),
                             "csrf": session["csrf"]})

    @router.post("/api/reports")
    async def file_report(request: Request) -> Response:
        session = await pages.session(request)
        if session is None:
            return _api_error(401, "signed_out", "not signed in")
        if session.get("must_change_password") or session.get("must_enroll_totp"):
            return _api_error(401, "setup_required", "finish signing in first")
        if not same(session["csrf"], request.headers.get("X-CSRF-Token")):
            return _api_error(403, "csrf", "missing or stale CSRF token")
        key = request.headers.get("Idempotency-Key") or ""
        if not IDEMPOTENCY_KEY.match(key):
            return _api_error(400, "bad_request", "Idempotency-Key must be 8-100 letters, digits, - or _")
        try:
            body = await request.json()
        except ValueError:
            return _api_error(400, "bad_request", "body is not JSON")
        loc = pages.locale(request, session)
        answer = await pages.person(session).call("intake", "POST", "/v1/reports", json=body,
                                                  headers={"Idempotency-Key": key})
        data = _json(answer)
        if answer.status_code == 201:
            return JSONResponse({k: data.get(k) for k in ("case_id", "case_number", "status", "received_at")},
                                status_code=201,
                                headers={"Idempotent-Replayed": answer.headers.get("Idempotent-Replayed", "false")})
        if answer.status_code == 422:
            fields = field_messages((data.get("error") or {}).get("details"), loc)
            return _api_error(422, "invalid_request", loc.gettext("Some answers need fixing."), fields=fields)
        if answer.status_code == 409:
            return _api_error(409, error_code(answer) or "conflict",
                              loc.gettext("This report was already sent with different contents."))
        if answer.status_code == 403 and error_code(answer) == "setup_required":
            return _api_error(401, "setup_required", "finish signing in first")
        if answer.status_code in (400, 413):
            return _api_error(answer.status_code, error_code(answer) or "bad_request",
                              loc.gettext("The report could not be read; it may be too large."))
        return _api_error(answer.status_code if answer.status_code >= 400 else 502, error_code(answer) or "error",
                          loc.gettext(vocabulary.INVALID))

    return router


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _card(view: dict[str, Any]) -> dict[str, Any]:
    """What My reports shows of one report: no names or numbers of people, only counts and the reporter's words."""
    report = view.get("report") or {}
    return {
        "case_id": view.get("case_id"), "case_number": view.get("case_number"), "status": view.get("status"),
        "question": view.get("question"), "decision_reason": view.get("decision_reason"),
        "received_at": view.get("received_at"), "updated_at": view.get("updated_at"),
        "village_code": report.get("village_code"), "suspected_types": report.get("suspected_types") or [],
        "indicators": report.get("indicators") or [], "persons": len(report.get("persons") or []),
        "can_withdraw": view.get("status") in ("reported", "screened", "info_requested"),
    }


def _village_names() -> dict[str, str]:
    return {code: r.name for code, r in reference.regions().items()}
