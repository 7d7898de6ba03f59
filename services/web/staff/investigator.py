"""The investigator's pages: the unit's referral inbox (new ones first, each with its deadline as a countdown) and
one referral as the unit may see it, with the actions its state allows: acknowledge, accept, decline with a reason,
progress updates with milestones, close with an outcome."""

from __future__ import annotations

import asyncio
import re
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.web.staff import words
from services.web.staff.common import StaffPages
from services.web.upstream import error_code
from services.web.vocabulary import N_

REFERRAL_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
WHAT = N_("referral")
# The inbox's sections: what the unit must act on first, then what it is working on, then what is finished.
SECTIONS = [("created", N_("New: to acknowledge")), ("acknowledged", N_("Acknowledged: accept or decline")),
            ("accepted", N_("Accepted: in progress"))]
FINISHED = [("closed", N_("Closed")), ("declined", N_("Declined"))]
ACTIONS = ("acknowledge", "accept", "decline", "updates", "close")
MILESTONE_FIELDS = {
    "lp_filed": ("lp_number", "lp_model", "lp_date"),
    "sp2hp_sent": ("letter_number", "sent_on"),
    "departure_deferred": ("office", "deferred_on", "recheck_on", "missing_documents"),
    "victim_handed_to_services": ("to_agency", "handed_on"),
    "note": (),
}
DATES = {"lp_date", "sent_on", "deferred_on", "recheck_on", "handed_on"}
OUTCOMES = ("police_report_filed", "departure_deferred", "victim_handed_to_services", "no_offence_found",
            "transferred", "other")


def milestone_from(form: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The milestone an update form describes (its kind and fields), or the fields that are wrong."""
    kind = str(form.get("kind") or "note")
    if kind not in MILESTONE_FIELDS:
        return None, {"kind": N_("Choose a milestone.")}
    milestone: dict[str, Any] = {"kind": kind}
    errors: dict[str, str] = {}
    for name in MILESTONE_FIELDS[kind]:
        value = str(form.get(name) or "").strip()
        if not value:
            continue
        if name in DATES:
            try:
                value = date.fromisoformat(value).isoformat()
            except ValueError:
                errors[name] = N_("Give a valid date.")
                continue
        if name == "missing_documents":
            milestone[name] = [d.strip()[:100] for d in value.split(",") if d.strip()][:20]
            continue
        if name == "lp_model" and value not in ("A", "B"):
            errors[name] = N_("Model A or B.")
            continue
        milestone[name] = value[:100]
    if kind == "lp_filed" and "lp_number" not in milestone and "lp_number" not in errors:
        errors["lp_number"] = N_("Write the police report number.")
    return milestone, errors


def routes(staff: StaffPages) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    pages = staff.pages

    @router.get("/inbox")
    async def inbox(request: Request) -> Response:
        session = await staff.session(request, "investigator")
        finished = request.query_params.get("finished") == "1"
        person = pages.person(session)
        parts = FINISHED if finished else SECTIONS
        answers = await asyncio.gather(*(  # the parts at once: each is a scan of the unit's referrals
            person.call("referral", "GET", "/v1/referrals", params={"status": status, "limit": 100})
            for status, _ in parts))
        sections = []
        for (status, title), answer in zip(parts, answers, strict=True):
            body = answer.json() if answer.status_code == 200 else {"items": [], "next": None}
            sections.append({"status": status, "title": title, "rows": body["items"],
                             "more": bool(body.get("next"))})
        return staff.render(request, "staff/inbox.html", session, sections=sections, finished=finished)

    async def load(session: dict[str, Any], referral_id: str) -> dict[str, Any] | None:
        return await staff.fetch(session, "referral", "/v1/referrals", referral_id, REFERRAL_ID)

    def show(request: Request, session: dict[str, Any], referral: dict[str, Any], *, status: int = 200,
             **context: Any) -> Response:
        return staff.render(request, "staff/referral.html", session, status=status, r=referral,
                            outcomes=OUTCOMES, milestone_kinds=list(MILESTONE_FIELDS),
                            done=request.query_params.get("done"), errors=context.pop("errors", {}),
                            form=context.pop("form", {}), **context)

    @router.get("/inbox/{referral_id}")
    async def referral_page(referral_id: str, request: Request) -> Response:
        session = await staff.session(request, "investigator")
        referral = await load(session, referral_id)
        if referral is None:
            return staff.not_found(request, session, WHAT)
        return show(request, session, referral)

    @router.post("/inbox/{referral_id}/{action}")
    async def act(referral_id: str, action: str, request: Request) -> Response:
        session = await staff.session(request, "investigator")
        form = await request.form()
        _ = pages.locale(request, session).gettext
        referral = await load(session, referral_id)
        if referral is None or action not in ACTIONS:
            return staff.not_found(request, session, WHAT)
        errors: dict[str, str] = {}
        body: dict[str, Any] = {}
        note = str(form.get("note") or "").strip()
        if not staff.csrf_ok(session, form):
            errors["form"] = _("The page was out of date. Please try again.")
        elif action == "decline":
            reason = str(form.get("reason") or "").strip()
            body = {"reason": reason}
            if not reason:
                errors["reason"] = _("Write why your unit declines it.")
        elif action == "updates":
            milestone, problems = milestone_from(form)
            errors.update({k: _(v) for k, v in problems.items()})
            if milestone and milestone["kind"] == "note" and not note:
                errors["note"] = _("Write a note, or choose a milestone.")
            body = {"milestone": milestone} if milestone and milestone["kind"] != "note" else {}
            if note:
                body["note"] = note
        elif action == "close":
            outcome = str(form.get("outcome") or "")
            body = {"outcome": outcome}
            if outcome not in OUTCOMES:
                errors["outcome"] = _("Choose the outcome.")
            elif outcome == "other" and not note:
                errors["note"] = _("Say what happened in the note.")
            if note:
                body["note"] = note
        if any(len(str(v)) > 2000 for v in (note, body.get("reason", ""))):
            errors["form"] = _("At most 2000 characters.")
        if errors:
            return show(request, session, referral, status=422, errors=errors, action=action,
                        form={k: str(v) for k, v in form.items() if k != "csrf"})
        answer = await pages.person(session).call("referral", "POST", f"/v1/referrals/{referral_id}/{action}",
                                                  json=body)
        if answer.status_code == 200:
            return pages.redirect(f"/inbox/{referral_id}?done={action}")
        if answer.status_code == 404:
            return staff.not_found(request, session, WHAT)
        current = await load(session, referral_id) or referral
        if answer.status_code == 409 and error_code(answer) == "case_erased":
            message = _("This case's personal data was erased: a note or reason can no longer be added.")
        elif answer.status_code == 409:
            message = _("Someone in your unit moved this referral meanwhile; it is now: %(status)s.") % {
                "status": _(words.REFERRAL_STATUSES.get(current["status"], current["status"]))}
        elif answer.status_code == 422:
            message = _("Some answers were not accepted. Check them and try again.")
        else:
            message = _("This was not recorded. Please try again.") + f" ({error_code(answer) or answer.status_code})"
        return show(request, session, current, status=answer.status_code if answer.status_code >= 400 else 502,
                    errors={"form": message}, action=action, form={k: str(v) for k, v in form.items() if k != "csrf"})

    return router
