"""The admin's pages: the accounts of the admin's region through identity's API — list, create (the one-time
password shown once, never stored here), change role, region or unit, disable or enable, and reset."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.web.staff.common import StaffPages, regions_in
from services.web.upstream import error_code
from services.web.vocabulary import N_
from shared import reference

ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
ROLES = ("reporter", "verifier", "investigator", "supervisor", "admin")
WHAT = N_("account")
FIELD_WORDS = {
    "username": N_("A username of 1 to 64 characters that nobody else has."),
    "name": N_("Write the person's name."),
    "role": N_("Choose a role."),
    "region": N_("Choose a region inside yours (a village for a reporter)."),
    "unit": N_("An investigator needs a unit."),
}


def units() -> list[tuple[str, str]]:
    return sorted(((a.id, a.name) for a in reference.agencies().values()), key=lambda u: u[1])


def account_form(form: Any, *, creating: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """What the create/change form asks identity for, and the fields that are plainly wrong before asking."""
    fields = {k: str(form.get(k) or "").strip() for k in ("username", "name", "role", "region", "unit")}
    errors: dict[str, str] = {}
    if creating and not (1 <= len(fields["username"]) <= 64):
        errors["username"] = FIELD_WORDS["username"]
    if not (1 <= len(fields["name"]) <= 200):
        errors["name"] = FIELD_WORDS["name"]
    if fields["role"] not in ROLES:
        errors["role"] = FIELD_WORDS["role"]
    if fields["role"] == "investigator" and fields["unit"] not in reference.agencies():
        errors["unit"] = FIELD_WORDS["unit"]
    body: dict[str, Any] = {"name": fields["name"], "role": fields["role"], "region": fields["region"],
                            "unit": fields["unit"] if fields["role"] == "investigator" else None}
    if creating:
        body["username"] = fields["username"]
        if body["unit"] is None:
            body.pop("unit")
    return body, errors


def problems_of(answer: Any) -> dict[str, str]:
    """identity's 422/409 details as the form's field errors."""
    try:
        details = answer.json()["error"].get("details") or []
    except (ValueError, KeyError, TypeError):
        details = []
    out = {}
    for d in details if isinstance(details, list) else []:
        field = str((d or {}).get("field") or "").split(".")[-1]
        if field in FIELD_WORDS:
            out[field] = FIELD_WORDS[field]
    if answer.status_code == 409 and error_code(answer) in ("username_taken", "conflict"):
        out.setdefault("username", FIELD_WORDS["username"])
    return out


def routes(staff: StaffPages) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    pages = staff.pages

    def form_context(session: dict[str, Any]) -> dict[str, Any]:
        return {"roles": ROLES, "regions": regions_in(session["account"].get("region")), "units": units()}

    @router.get("/accounts")
    async def accounts(request: Request) -> Response:
        session = await staff.session(request, "admin")
        q = request.query_params
        params: dict[str, Any] = {"limit": 50}
        keep = {}
        if q.get("role") in ROLES:
            params["role"] = keep["role"] = q["role"]
        if q.get("status") in ("active", "disabled"):
            params["status"] = keep["status"] = q["status"]
        if (cursor := q.get("cursor") or "") and len(cursor) <= 100:
            params["cursor"] = cursor
        answer = await pages.person(session).call("identity", "GET", "/v1/accounts", params=params)
        body = answer.json() if answer.status_code == 200 else {"items": [], "next": None}
        return staff.render(request, "staff/accounts.html", session, items=body["items"], next=body.get("next"),
                            keep=keep, paged="cursor" in params, errors={}, form={}, **form_context(session))

    @router.post("/accounts")
    async def create(request: Request) -> Response:
        session = await staff.session(request, "admin")
        form = await request.form()
        _ = pages.locale(request, session).gettext
        body, errors = account_form(form, creating=True)
        if not staff.csrf_ok(session, form):
            errors["form"] = N_("The page was out of date. Please try again.")
        if not errors:
            answer = await pages.person(session).call("identity", "POST", "/v1/accounts", json=body)
            if answer.status_code == 201:
                return staff.render(request, "staff/account.html", session, a=answer.json(),
                                    one_time=answer.json().get("one_time_password"), created=True, errors={},
                                    **form_context(session))
            errors = problems_of(answer) or {"form": N_("The account was not created. Check the answers.")}
        return staff.render(request, "staff/accounts.html", session, status=422, items=[], next=None, keep={},
                            paged=False, errors={k: _(v) for k, v in errors.items()},
                            form={k: str(form.get(k) or "") for k in ("username", "name", "role", "region", "unit")},
                            **form_context(session))

    async def load(session: dict[str, Any], account_id: str) -> dict[str, Any] | None:
        return await staff.fetch(session, "identity", "/v1/accounts", account_id, ACCOUNT_ID)

    @router.get("/accounts/{account_id}")
    async def account(account_id: str, request: Request) -> Response:
        session = await staff.session(request, "admin")
        found = await load(session, account_id)
        if found is None:
            return staff.not_found(request, session, WHAT)
        return staff.render(request, "staff/account.html", session, a=found, errors={},
                            done=request.query_params.get("done"), **form_context(session))

    @router.post("/accounts/{account_id}")
    async def change(account_id: str, request: Request) -> Response:
        session = await staff.session(request, "admin")
        form = await request.form()
        _ = pages.locale(request, session).gettext
        found = await load(session, account_id)
        if found is None:
            return staff.not_found(request, session, WHAT)
        what = str(form.get("what") or "")
        errors: dict[str, str] = {}
        if not staff.csrf_ok(session, form):
            errors["form"] = N_("The page was out of date. Please try again.")
        elif what in ("disable", "enable"):
            body: dict[str, Any] = {"status": "disabled" if what == "disable" else "active"}
        elif what == "change":
            body, errors = account_form(form, creating=False)
        elif what == "reset":
            answer = await pages.person(session).call("identity", "POST", f"/v1/accounts/{account_id}/reset",
                                                      json={"reset_totp": form.get("reset_totp") == "1"})
            if answer.status_code == 200:
                return staff.render(request, "staff/account.html", session, a=found, errors={},
                                    one_time=answer.json()["one_time_password"], **form_context(session))
            errors["form"] = N_("The password was not reset. Please try again.")
        else:
            errors["form"] = N_("Choose what to change.")
        if not errors:
            answer = await pages.person(session).call("identity", "PATCH", f"/v1/accounts/{account_id}", json=body)
            if answer.status_code == 200:
                return pages.redirect(f"/accounts/{account_id}?done={what}")
            if answer.status_code == 404:
                return staff.not_found(request, session, WHAT)
            errors = problems_of(answer) or {"form": N_("The change was not recorded. Check the answers.")}
        return staff.render(request, "staff/account.html", session, status=422, a={**found, **{
            k: str(form.get(k)) for k in ("name", "role", "region", "unit") if form.get(k) is not None}},
            errors={k: _(v) for k, v in errors.items()}, **form_context(session))

    return router
