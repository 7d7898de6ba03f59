"""The verifier's pages: the queue of the region (urgent first, then oldest; filters; keyset paging that holds when
new reports arrive) and the case page that explains itself, with the decision sent under If-Match so that of two
verifiers the second sees plainly who decided first and what."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.web import vocabulary
from services.web.staff.common import StaffPages, villages_in
from services.web.upstream import error_code
from services.web.vocabulary import N_
from shared import reference

CASE_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
VILLAGE = re.compile(r"^\d{2}\.\d{2}\.\d{2}\.\d{4}$")
PRIORITIES = ("critical", "high", "medium", "low")
KINDS = ("tppo", "tppm", "np_pmi")
SUSPECTED = ("tppo", "tppm", "np_pmi", "unknown")
WHAT = N_("case")


def queue_filters(params: Any) -> dict[str, str]:
    """The queue's filters from the page's query, keeping only values the API accepts."""
    chosen = {"priority": params.get("priority"), "type": params.get("type"), "village_code": params.get("village")}
    out = {k: v for k, v in chosen.items() if v and (
        (k == "priority" and v in PRIORITIES) or (k == "type" and v in SUSPECTED) or
        (k == "village_code" and VILLAGE.match(v)))}
    if params.get("waiting") == "1":
        out["status"] = "info_requested"
    return out


def explain(case: dict[str, Any]) -> dict[str, Any]:
    """Why screening gave this priority, in terms an officer can check: the flags that force `critical`, the
    indicators with their weights, the thresholds, and a watch-list hit raising it to at least `high`."""
    screening = case.get("screening") or {}
    indicators = reference.indicators()
    shown = []
    for item in screening.get("indicators") or []:
        known = indicators.get(item.get("id"))
        shown.append({"id": item.get("id"), "title": vocabulary.INDICATOR_TITLES.get(item.get("id"), item.get("id")),
                      "weight": item.get("weight"), "forces": item.get("forces_escalation"),
                      "source": item.get("source") or "reported", "stage": known.stage if known else ""})
    escalation = screening.get("escalation") or {}
    flags = [key for key in ("child_involved", "departure_within_72h") if escalation.get(key)]
    forcing = [vocabulary.INDICATOR_TITLES.get(i, i) for i in escalation.get("forcing_indicators") or []]
    return {"indicators": sorted(shown, key=lambda i: -(i["weight"] or 0)), "flags": flags, "forcing": forcing,
            "score": screening.get("score"), "priority": screening.get("priority"),
            "watch_raised": bool(case.get("watchlist_hits")),
            "suggested": screening.get("suggested_types") or [],
            "type_reasons": {t: [vocabulary.INDICATOR_TITLES.get(i, i) for i in ids]
                             for t, ids in (screening.get("type_reasons") or {}).items()}}


def person_names(case: dict[str, Any]) -> dict[str, str]:
    return {p.get("person_id"): p.get("name") or p.get("phone") or p.get("nik") or "?"
            for p in (case.get("report") or {}).get("persons") or []}


def routes(staff: StaffPages) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    pages = staff.pages

    @router.get("/queue")
    async def queue(request: Request) -> Response:
        session = await staff.session(request, "verifier")
        params = request.query_params
        filters = queue_filters(params)
        cursor = params.get("cursor") or None
        query: dict[str, Any] = {**filters, "limit": 25}
        if cursor and len(cursor) <= 500:
            query["cursor"] = cursor
        answer = await pages.person(session).call("verification", "GET", "/v1/queue", params=query)
        if answer.status_code == 422 and "cursor" in query:  # a stale or edited link: start from the top
            query.pop("cursor")
            answer = await pages.person(session).call("verification", "GET", "/v1/queue", params=query)
        body = answer.json() if answer.status_code == 200 else {"items": [], "next": None}
        keep = {k: v for k, v in (("priority", params.get("priority")), ("type", params.get("type")),
                                  ("village", params.get("village")), ("waiting", params.get("waiting"))) if v}
        return staff.render(request, "staff/queue.html", session, items=body["items"], next=body.get("next"),
                            paged=bool(query.get("cursor")), keep=keep, waiting=filters.get("status") is not None,
                            villages=villages_in(session["account"].get("region")), kind_choices=SUSPECTED,
                            priorities=PRIORITIES)

    async def load(session: dict[str, Any], case_id: str) -> dict[str, Any] | None:
        return await staff.fetch(session, "verification", "/v1/cases", case_id, CASE_ID)

    def show(request: Request, session: dict[str, Any], case: dict[str, Any], *, status: int = 200,
             **context: Any) -> Response:
        return staff.render(request, "staff/case.html", session, status=status, case=case, why=explain(case),
                            names=person_names(case), kind_choices=KINDS, countries=vocabulary.COUNTRIES,
                            done=request.query_params.get("done"), errors=context.pop("errors", {}),
                            form=context.pop("form", {}), **context)

    @router.get("/queue/{case_id}")
    async def case_page(case_id: str, request: Request) -> Response:
        session = await staff.session(request, "verifier")
        case = await load(session, case_id)
        if case is None:
            return staff.not_found(request, session, WHAT)
        return show(request, session, case)

    @router.post("/queue/{case_id}/decision")
    async def decide(case_id: str, request: Request) -> Response:
        session = await staff.session(request, "verifier")
        form = await request.form()
        _ = pages.locale(request, session).gettext
        case = await load(session, case_id)
        if case is None:
            return staff.not_found(request, session, WHAT)
        decision = str(form.get("decision") or "")
        text = {k: str(form.get(k) or "").strip() for k in ("note", "reason", "question")}
        types = [t for t in form.getlist("case_types") if t in KINDS]
        errors: dict[str, str] = {}
        if not staff.csrf_ok(session, form):
            errors["form"] = _("The page was out of date. Please try again.")
        elif decision == "verify" and not types:
            errors["case_types"] = _("Choose at least one kind of case.")
        elif decision == "reject" and not text["reason"]:
            errors["reason"] = _("Write why the report is rejected.")
        elif decision == "request_info" and not text["question"]:
            errors["question"] = _("Write the question for the reporter.")
        elif decision not in ("verify", "reject", "request_info"):
            errors["form"] = _("Choose a decision.")
        elif any(len(v) > 2000 for v in text.values()):
            errors["form"] = _("At most 2000 characters.")
        if errors:
            return show(request, session, case, status=422, errors=errors, form={**text, "decision": decision,
                                                                                  "case_types": types})
        body: dict[str, Any] = {"decision": decision}
        if decision == "verify":
            body.update(case_types=types, person_threatened=form.get("person_threatened") == "1",
                        victim_abroad=form.get("victim_abroad") == "1")
            if text["note"]:
                body["note"] = text["note"]
        elif decision == "reject":
            body["reason"] = text["reason"]
        else:
            body["question"] = text["question"]
        version = str(form.get("version") or "")
        answer = await pages.person(session).call("verification", "POST", f"/v1/cases/{case_id}/decision", json=body,
                                                  headers={"If-Match": f'"{version}"'})
        if answer.status_code == 200:
            return pages.redirect(f"/queue/{case_id}?done={decision}")
        if answer.status_code == 404:
            return staff.not_found(request, session, WHAT)
        current = await load(session, case_id) or case
        if answer.status_code == 409 and error_code(answer) == "case_erased":
            return show(request, session, current, status=409,
                        errors={"form": _("This case's personal data was erased; it can no longer be decided.")})
        if answer.status_code == 409:
            # Someone else decided first, or the case changed (an answer arrived) while this page was open.
            return show(request, session, current, status=409, conflict=True, mine=decision)
        return show(request, session, current, status=answer.status_code if answer.status_code >= 400 else 502,
                    errors={"form": _("The decision was not recorded. Please try again.")},
                    form={**text, "decision": decision, "case_types": types})

    return router
