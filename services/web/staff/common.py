"""What every staff page needs beyond the reporter's foundation (services.web.pages): the role check, the words
for the APIs' ids, names of villages and units, deadlines as countdowns, and the not-found page."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from services.web.i18n import Locale
from services.web.pages import Pages, Redirect
from services.web.staff import words
from services.web.vocabulary import N_
from shared import reference
from shared.regions import covers

# Where each role lands after signing in, and what its navigation offers.
HOMES = {"verifier": "/queue", "investigator": "/inbox", "supervisor": "/dashboard", "admin": "/accounts"}
NAV = {
    "verifier": [("/queue", N_("Queue"))],
    "investigator": [("/inbox", N_("Referrals"))],
    "supervisor": [("/dashboard", N_("Dashboard")), ("/cases", N_("Cases")),
                   ("/directory", N_("Accounts trail"))],
    "admin": [("/accounts", N_("Accounts")), ("/directory", N_("Accounts trail"))],
}


class StaffPages:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    async def session(self, request: Request, *roles: str) -> dict[str, Any]:
        """The signed-in person of a staff page; anyone of another role goes to their own home page."""
        session = await self.pages.signed_in(request)
        role = session["account"].get("role")
        if role not in roles:
            raise Redirect(HOMES.get(role, "/report" if role == "reporter" else "/home"))
        return session

    def render(self, request: Request, template: str, session: dict[str, Any], *, status: int = 200,
               **context: Any) -> HTMLResponse:
        loc = self.pages.locale(request, session)
        now = self.pages.clock.now()
        return self.pages.render(
            request, template, session=session, status=status, words=words, nav=NAV.get(
                session["account"].get("role"), []), village=village_name, agency=agency_name,
            due=lambda at: countdown(at, now, loc), span=lambda s: duration(s, loc),
            word=lambda table, key: loc.gettext(table[key]) if key in table else key,
            deadline_word=lambda key: loc.gettext(deadline_of(key)),
            **context)

    async def fetch(self, session: dict[str, Any], service: str, path: str, item_id: str,
                    shape: re.Pattern[str]) -> dict[str, Any] | None:
        """One item from a service's API as the signed-in person may see it, or None (malformed id, not found,
        not theirs: the pages answer all three with the same not-found page)."""
        if not shape.match(item_id):
            return None
        answer = await self.pages.person(session).call(service, "GET", f"{path}/{item_id}")
        return answer.json() if answer.status_code == 200 else None

    def not_found(self, request: Request, session: dict[str, Any], what: str) -> HTMLResponse:
        return self.render(request, "staff/not_found.html", session, status=404, what=what)

    @staticmethod
    def csrf_ok(session: dict[str, Any], form: Any) -> bool:
        return Pages.form_csrf_ok(session, form)


def deadline_of(key: str | None) -> str:
    """The words for a deadline key (`acknowledge`, `first_update`, `update_<n>`)."""
    return words.DEADLINES.get(key or "") or words.DEADLINES["next_update"]


def village_name(code: str | None) -> str:
    region = reference.regions().get(code or "")
    return region.name if region else (code or "")


def agency_name(agency_id: str | None) -> str:
    agency = reference.agencies().get(agency_id or "")
    return agency.name if agency else (agency_id or "")


def villages_in(region: str | None) -> list[tuple[str, str]]:
    """The villages of a staff member's region, by name (for filters)."""
    return sorted(((r.code, r.name) for r in reference.regions().values()
                   if r.level in ("village", "kelurahan") and covers(region, r.code)), key=lambda v: v[1])


def regions_in(region: str | None) -> list[tuple[str, str, str]]:
    """Every known region inside `region` (itself included), as (code, name, level), in code order."""
    return sorted((r.code, r.name, r.level) for r in reference.regions().values() if covers(region, r.code))


def duration(seconds: float, loc: Locale) -> str:
    """'3 d 4 h', '2 h 5 min', '40 min' (in the page's language)."""
    seconds = abs(int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    d, h, m = loc.gettext("d"), loc.gettext("h"), loc.gettext("min")
    if days:
        return f"{days} {d} {hours} {h}" if hours else f"{days} {d}"
    if hours:
        return f"{hours} {h} {minutes} {m}" if minutes else f"{hours} {h}"
    return f"{max(minutes, 1)} {m}"


def countdown(at: str | None, now: datetime, loc: Locale) -> dict[str, Any] | None:
    """A deadline as officers read it: time left, or how late, and whether it is overdue."""
    if not at:
        return None
    due = datetime.fromisoformat(at)
    left = (due - now).total_seconds()
    text = duration(left, loc)
    return {"overdue": left < 0, "at": loc.when(due),
            "text": (loc.gettext("%(t)s overdue") if left < 0 else loc.gettext("%(t)s left")) % {"t": text}}
