"""What makes a report urgent on its face: a child among its people, a departure within 72 hours, or an indicator
that forces escalation (DOMAIN.md). Screening makes such a case critical; intake marks the report's event with
the `urgent` header, so a consumer takes it first among the records it has fetched (`shared/consumer.py`).

The header is one bit about the report, never its content: it is set from the report before it is sealed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from shared import reference, topics
from shared.contracts import intake

DEPARTURE_WINDOW_DAYS = 3  # "departure within 72 hours", counted in calendar days


def age_on(person: intake.Person, day: date) -> int | None:
    if isinstance(person.birth_date, date):  # not when it is sealed or erased text
        b = person.birth_date
        return day.year - b.year - ((day.month, day.day) < (b.month, b.day))
    return person.age


def child_involved(report: intake.CaseReported, day: date) -> bool:
    return any((a := age_on(p, day)) is not None and a < 18 for p in report.persons)


def departure_imminent(report: intake.CaseReported, today: date) -> bool:
    departure = report.departure.planned_date if report.departure else None
    return departure is not None and 0 <= (departure - today).days <= DEPARTURE_WINDOW_DAYS


def forcing(indicator_ids: Iterable[str]) -> list[str]:
    known = reference.indicators()
    return [i for i in indicator_ids if i in known and known[i].forces_escalation]


def is_urgent(report: intake.CaseReported, today: date) -> bool:
    """The report as filed (plain, not sealed) is urgent on its face."""
    return child_involved(report, report.observed_at.date()) or departure_imminent(report, today) \
        or bool(forcing(report.indicators))


def headers(report: intake.CaseReported, today: date) -> dict[str, str]:
    return {topics.HEADER_URGENT: "1"} if is_urgent(report, today) else {}
