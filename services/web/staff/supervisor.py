"""The supervisor's pages: search in the region, a case's trail as a timeline with the chain's verdict, its exports
(JSON Lines and the printable document, through audit), the dashboard, and the directory's trail (also for admins)."""

from __future__ import annotations

import asyncio
import re
from datetime import date, datetime, time, timedelta
from typing import Any

from babel.dates import format_date
from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.web import vocabulary
from services.web.i18n import Locale
from services.web.staff import charts, words
from services.web.staff.common import StaffPages, agency_name, deadline_of, village_name, villages_in
from services.web.vocabulary import N_

CASE_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
VILLAGE = re.compile(r"^\d{2}\.\d{2}\.\d{2}\.\d{4}$")
STATUSES = ("reported", "screened", "info_requested", "verified", "rejected", "withdrawn", "referred", "closed")
KINDS = ("tppo", "tppm", "np_pmi", "unknown")
READS = ("case.viewed", "case.exported", "case.searched", "cases.listed")  # a listing is a read of what it shows
WINDOWS = (4, 12, 26, 52)
WHAT = N_("case")


def day_start(value: str | None, loc: Locale, plus_days: int = 0) -> str | None:
    """A date typed in a form as the instant its day starts in the supervisor's zone (WIB/WITA/WIT)."""
    try:
        day = date.fromisoformat(value or "")
    except ValueError:
        return None
    return datetime.combine(day + timedelta(days=plus_days), time(0), loc.zone.tz).isoformat()


def why(entry: dict[str, Any], loc: Locale) -> list[str]:
    """What an entry's data says, in a few words: the reason, question, note, outcome, milestone."""
    _ = loc.gettext
    data = entry.get("data") or {}
    kind = entry.get("type")
    out: list[str] = []

    def kinds(types: Any) -> str:
        return ", ".join(_(vocabulary.CASE_TYPES[t][0]) if t in vocabulary.CASE_TYPES else str(t)
                         for t in types or [])

    if kind == "case.reported":
        out.append(_("%(village)s · suspected: %(kinds)s") % {"village": village_name(data.get("village_code")),
                                                              "kinds": kinds(data.get("suspected_types"))})
        # counts after their words: "1 people" is wrong in English, and the catalogs hold no plural forms
        out.append(_("indicators: %(n)s · people: %(p)s") % {"n": len(data.get("indicators") or []),
                                                             "p": len(data.get("persons") or [])})
    elif kind == "case.screened":
        priority = words.PRIORITIES.get(data.get("priority")) or "?"
        out.append(_("score %(score)s · %(priority)s") % {"score": data.get("score"), "priority": _(priority)})
    elif kind == "case.linked":  # v1 names one case; v2 (`links`) every case one screening linked it to
        links = data.get("links") or [data]
        if len(links) > 1:
            out.append(_("with %(n)s cases") % {"n": len(links)})
        reasons = dict.fromkeys(r for link in links for r in link.get("reasons") or [])
        out.append(", ".join(_(words.LINK_REASONS.get(r, r)) for r in reasons))
    elif kind == "cases.listed" and data.get("resource") == "reports":
        out.append(_("in the reporter's own list of reports"))
    elif kind == "case.info_requested":
        out.append(_("Question:") + " " + str(data.get("question")))
    elif kind == "case.amended":
        out.append(_("Answer:") + " " + str(data.get("answer")))
    elif kind == "case.verified":
        out.append(kinds(data.get("case_types")))
        if data.get("note"):
            out.append(_("Note") + ": " + str(data["note"]))
    elif kind in ("case.rejected", "case.withdrawn", "case.erased"):
        out.append(_("Reason") + ": " + str(data.get("reason")))
    elif kind and kind.startswith("referral."):
        out.append(agency_name(data.get("agency_id")))
        if kind == "referral.created":
            out.append(_(words.FUNCTIONS.get(data.get("function"), data.get("function") or "")))
        if data.get("reason"):
            out.append(_("Reason") + ": " + str(data["reason"]))
        if data.get("rerouted_to_agency_id"):
            out.append(_("passed on to %(unit)s") % {"unit": agency_name(data["rerouted_to_agency_id"])})
        milestone = data.get("milestone") or {}
        if milestone.get("kind"):
            detail = milestone.get("lp_number") or milestone.get("letter_number") or milestone.get("office") or ""
            out.append((_(words.MILESTONES.get(milestone["kind"], milestone["kind"])) + " " + str(detail)).strip())
        if data.get("note"):
            out.append(_("Note") + ": " + str(data["note"]))
        if data.get("outcome"):
            out.append(_(words.OUTCOMES.get(data["outcome"], data["outcome"])))
        if kind == "referral.escalated":
            out.append(_(deadline_of(data.get("deadline"))))
    elif kind == "case.closed":
        out.extend(agency_name(a) + ": " + _(words.OUTCOMES.get(o, o)) for a, o in (data.get("outcomes") or {}).items())
    elif kind == "case.exported":
        out.append(_("%(format)s · purpose: %(purpose)s") % {"format": data.get("format"),
                                                             "purpose": data.get("purpose") or "—"})
    elif kind == "case.viewed":
        out.append(f'{data.get("service")}: {data.get("resource")}')
    elif kind and (kind.startswith("account.") or kind.startswith("login.") or kind.startswith("session.")):
        for field in ("username", "role", "region", "unit", "reason"):
            if data.get(field):
                shown = _(words.ROLES.get(data[field], data[field])) if field == "role" else data[field]
                out.append(f"{field}: {shown}")
        if data.get("changed"):
            out.append(_("changed") + ": " + ", ".join(data["changed"]))
    return [line for line in out if line]


def timeline(entries: list[dict[str, Any]], verdict: dict[str, Any], loc: Locale, *, reads: bool) -> list[dict]:
    broken = verdict.get("first_broken_seq")
    shown = []
    for entry in entries:
        seq = entry.get("seq")
        state = "broken" if seq == broken else ("after-break" if broken is not None and (seq or 0) > broken else "")
        is_read = entry.get("type") in READS
        if is_read and not reads and not state:
            continue
        shown.append({**entry, "state": state, "read": is_read, "why": why(entry, loc)})
    return shown


def routes(staff: StaffPages) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    pages = staff.pages

    @router.get("/cases")
    async def search(request: Request) -> Response:
        session = await staff.session(request, "supervisor")
        loc = pages.locale(request, session)
        q = request.query_params
        params: dict[str, Any] = {"limit": 25}
        keep: dict[str, str] = {}
        if q.get("status") in STATUSES:
            params["status"] = keep["status"] = q["status"]
        if q.get("type") in KINDS:
            params["type"] = keep["type"] = q["type"]
        if VILLAGE.match(q.get("village") or ""):
            params["village_code"] = keep["village"] = q["village"]
        if start := day_start(q.get("from"), loc):
            params["reported_from"], keep["from"] = start, q["from"]
        if end := day_start(q.get("to"), loc, plus_days=1):
            params["reported_to"], keep["to"] = end, q["to"]
        cursor = q.get("cursor") or ""
        if cursor and len(cursor) <= 100:
            params["cursor"] = cursor
        problem = None
        if start and end and start >= end:
            problem, result = loc.gettext("The first date is after the last."), {"items": [], "next": None}
        else:
            answer = await pages.person(session).call("audit", "GET", "/v1/cases", params=params)
            result = answer.json() if answer.status_code == 200 else {"items": [], "next": None}
        return staff.render(request, "staff/search.html", session, items=result["items"], next=result.get("next"),
                            keep=keep, paged=bool(params.get("cursor")), statuses=STATUSES, kind_choices=KINDS,
                            villages=villages_in(session["account"].get("region")), problem=problem)

    @router.get("/cases/{case_id}")
    async def case_trail(case_id: str, request: Request) -> Response:
        session = await staff.session(request, "supervisor")
        if not CASE_ID.match(case_id):
            return staff.not_found(request, session, WHAT)
        person = pages.person(session)
        verdict, trail, referrals = await asyncio.gather(  # at once: each is a read of its own on the services
            person.call("audit", "GET", f"/v1/cases/{case_id}/trail/verify"),
            person.call("audit", "GET", f"/v1/cases/{case_id}/trail"),
            person.call("referral", "GET", "/v1/referrals", params={"case_id": case_id, "limit": 50}))
        if verdict.status_code != 200:
            return staff.not_found(request, session, WHAT)
        loc = pages.locale(request, session)
        entries = trail.json()["entries"] if trail.status_code == 200 else []
        reads = request.query_params.get("reads") == "1"
        number = next((e["data"].get("case_number") for e in entries if (e.get("data") or {}).get("case_number")),
                      None)
        status = next((words.TRAIL_STATUSES[s] for e in reversed(entries)
                       if (s := _status_of(e.get("type"))) in words.TRAIL_STATUSES), None)
        return staff.render(request, "staff/trail.html", session, case_id=case_id, case_number=number,
                            verdict=verdict.json(), entries=timeline(entries, verdict.json(), loc, reads=reads),
                            reads=reads, read_count=sum(1 for e in entries if e.get("type") in READS),
                            referrals=referrals.json()["items"] if referrals.status_code == 200 else [],
                            case_status=status)

    @router.get("/cases/{case_id}/export")
    async def export(case_id: str, request: Request) -> Response:
        session = await staff.session(request, "supervisor")
        fmt = request.query_params.get("format")
        purpose = (request.query_params.get("purpose") or "").strip()[:500]
        if not CASE_ID.match(case_id) or fmt not in ("jsonl", "html"):
            return staff.not_found(request, session, WHAT)
        params = {"format": fmt, **({"purpose": purpose} if purpose else {})}
        answer = await pages.person(session).call("audit", "GET", f"/v1/cases/{case_id}/trail/export", params=params)
        if answer.status_code != 200:
            return staff.not_found(request, session, WHAT)
        headers = {"Content-Disposition": answer.headers.get("Content-Disposition")
                   or f'attachment; filename="trail-{case_id}.{fmt}"'}
        return Response(answer.content, media_type=answer.headers.get("Content-Type"), headers=headers)

    @router.get("/dashboard")
    async def dashboard(request: Request) -> Response:
        session = await staff.session(request, "supervisor")
        loc = pages.locale(request, session)
        try:
            weeks = int(request.query_params.get("weeks") or 12)
        except ValueError:
            weeks = 12
        weeks = weeks if weeks in WINDOWS else 12
        today = pages.clock.now().astimezone(loc.zone.tz).date()
        first = today - timedelta(days=today.weekday() + 7 * (weeks - 1))
        person = pages.person(session)

        async def past_deadline() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            cursor = None
            for _page in range(5):  # at most 1000 referrals past a deadline
                answer = await person.call("referral", "GET", "/v1/referrals/overdue",
                                           params={"limit": 200, **({"cursor": cursor} if cursor else {})})
                if answer.status_code != 200:
                    break
                found += answer.json()["items"]
                cursor = answer.json().get("next")
                if not cursor:
                    break
            return found

        stats, overdue = await asyncio.gather(  # audit's figures and referral's overdue list at once
            person.call("audit", "GET", "/v1/stats",
                        params={"reported_from": datetime.combine(first, time(0), loc.zone.tz).isoformat()}),
            past_deadline())
        body = stats.json() if stats.status_code == 200 else {}
        return staff.render(request, "staff/dashboard.html", session, weeks=weeks, windows=WINDOWS,
                            first=first, **dashboard_figures(body, overdue, first, weeks, loc))

    @router.get("/directory")
    async def directory(request: Request) -> Response:
        session = await staff.session(request, "supervisor", "admin")
        try:  # newest first; `before`: the seq the previous page ended at
            before = max(0, int(request.query_params.get("before") or 0))
        except ValueError:
            before = 0
        person = pages.person(session)
        # The chain since the last whole recomputation (audit's, every 15 minutes): a view costs what was appended
        # since, not every sign-in ever recorded.
        verdict = await person.call("audit", "GET", "/v1/directory/trail/verify", params={"since_checked": "true"})
        trail = await person.call("audit", "GET", "/v1/directory/trail", params={"before": before, "limit": 100})
        loc = pages.locale(request, session)
        available = verdict.status_code == 200 and trail.status_code == 200
        body = trail.json() if available else {"entries": [], "next": None}
        shown = timeline(body["entries"], verdict.json() if available else {}, loc, reads=True)
        return staff.render(request, "staff/directory.html", session, available=available,
                            verdict=verdict.json() if available else None, entries=shown, next=body.get("next"),
                            before=before)

    return router


def _status_of(event_type: str | None) -> str | None:
    return {"case.reported": "reported", "case.amended": "reported", "case.screened": "screened",
            "case.info_requested": "info_requested", "case.verified": "verified", "case.rejected": "rejected",
            "case.withdrawn": "withdrawn", "referral.created": "referred", "case.closed": "closed"}.get(event_type or "")


def dashboard_figures(stats: dict[str, Any], overdue: list[dict[str, Any]], first: date, weeks: int,
                      loc: Locale) -> dict[str, Any]:
    """The charts and the tables beside them."""
    _ = loc.gettext
    starts = [(first + timedelta(days=7 * i)).isoformat() for i in range(weeks)]
    by_week = {w["week"]: w for w in stats.get("weeks") or []}
    labels = [format_date(date.fromisoformat(s), "d MMM", locale=loc.lang) for s in starts]
    kinds = [k for k in KINDS if any(by_week.get(s, {}).get("by_type", {}).get(k) for s in starts)] or ["np_pmi"]
    kind_series = [charts.Series(_(words.SHORT_KINDS[k]),
                                 [by_week.get(s, {}).get("by_type", {}).get(k, 0) for s in starts]) for k in kinds]
    reports = [by_week.get(s, {}).get("reports", 0) for s in starts]
    escalations = [by_week.get(s, {}).get("escalations", 0) for s in starts]
    villages: dict[str, int] = {}
    for s in starts:
        for code, n in (by_week.get(s, {}).get("by_village") or {}).items():
            villages[code] = villages.get(code, 0) + n
    village_rows = sorted(((village_name(c), n) for c, n in villages.items()), key=lambda r: (-r[1], r[0]))
    units: dict[str, int] = {}
    for r in overdue:
        if r.get("overdue"):
            units[r["agency_id"]] = units.get(r["agency_id"], 0) + 1
    unit_rows = sorted(((agency_name(a), n) for a, n in units.items()), key=lambda r: (-r[1], r[0]))
    waiting = sum(1 for r in overdue if r.get("needs_supervisor"))
    kinds_chart = charts.columns("c-kinds", _("Reports per week by kind"),
                                 _("Stacked columns: one per week, coloured by kind. The table beside has the numbers."),
                                 labels, kind_series)
    esc_chart = charts.columns("c-esc", _("Escalations per week"),
                               _("Columns: deadlines missed per week. The table beside has the numbers."),
                               labels, [charts.Series(_("Escalations"), escalations)])
    village_chart = charts.bars("c-villages", _("Reports by village"),
                                _("Bars: reports per village in the period. The table beside has the numbers."),
                                village_rows[:12])
    unit_chart = charts.bars("c-units", _("Overdue referrals by unit"),
                             _("Bars: referrals past a deadline now, per unit. The table beside has the numbers."),
                             unit_rows[:12], colour=charts.COLOURS[1])
    return {
        "total": stats.get("total", 0), "by_status": stats.get("by_status") or {},
        "median_decision": stats.get("median_seconds_report_to_decision"),
        "median_ack": stats.get("median_seconds_decision_to_first_acknowledgement"),
        "decided": stats.get("decided_cases", 0), "acknowledged": stats.get("acknowledged_cases", 0),
        "week_rows": list(zip(labels, reports, [[s.values[i] for s in kind_series] for i in range(weeks)],
                              escalations, strict=True)),
        "kind_labels": [s.label for s in kind_series], "kinds_chart": kinds_chart, "esc_chart": esc_chart,
        "village_chart": village_chart, "village_rows": village_rows, "unit_chart": unit_chart,
        "unit_rows": unit_rows, "overdue_total": sum(units.values()), "waiting_supervisor": waiting,
        "escalations_total": sum(escalations),
    }
