"""Events produced by the verification service on `waspada.verification.v1`."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from shared.contracts.envelope import Contract, register
from shared.contracts.intake import CaseType, Person

Priority = Literal["critical", "high", "medium", "low"]


class TriggeredIndicator(Contract):
    id: str
    weight: int
    stage: str
    points_to: list[str]
    forces_escalation: bool
    source: str = "reported"  # "reported" by the reporter, or "checklist:<item>" from a missing NP-PMI document


class Escalation(Contract):
    child_involved: bool = False
    forcing_indicators: list[str] = Field(default_factory=list)
    departure_within_72h: bool = False


@register("case.screened", 1)
class CaseScreened(Contract):
    case_number: str
    village_code: str
    score: int
    priority: Priority
    indicators: list[TriggeredIndicator]
    escalation: Escalation
    suggested_types: list[CaseType]
    type_reasons: dict[str, list[str]] = Field(default_factory=dict)  # case type -> the indicators pointing to it
    indicator_set_version: str
    watchlist_hits: list[str] = Field(default_factory=list)  # ids of the watch-list entries the report hits
    submission: int = 1


@register("case.linked", 1)
class CaseLinked(Contract):
    linked_case_id: str
    reasons: list[str]


class LinkTold(Contract):
    linked_case_id: str
    reasons: list[str]


@register("case.linked", 2)
class CasesLinked(Contract):
    """The cases one screening found a case linked to, each with its reasons: the new report's event names all of
    them, each earlier case's names the new one. (v1 named one case per event: a report naming a prolific
    recruiter, linked to 25 cases, caused 50 events, each sent, consumed by three services and chained in a trail.)"""

    links: list[LinkTold] = Field(min_length=1)


@register("case.info_requested", 1)
class CaseInfoRequested(Contract):
    question: str


class Situation(Contract):
    """What referral routing needs to know beyond the case types (DOMAIN.md §4.1)."""

    child_involved: bool = False
    departure_planned: bool = False
    departure_date: date | None = None
    person_threatened: bool = False
    victim_abroad: bool = False


class LinkedCase(Contract):
    """An earlier case the verified one shares a person or a recruiter with: its number, never its people."""

    case_id: str
    case_number: str | None = None
    reasons: list[str] = Field(default_factory=list)


@register("case.verified", 1)
class CaseVerified(Contract):
    case_number: str
    village_code: str
    case_types: list[CaseType] = Field(min_length=1)
    priority: Priority
    situation: Situation
    note: str | None = None
    # Sealed (shared.crypto) as the report holds them: only the units the case is referred to open them.
    persons: list[Person] = Field(default_factory=list)
    narrative: str | None = None
    linked_cases: list[LinkedCase] = Field(default_factory=list)  # so the units see which cases belong together


@register("case.rejected", 1)
class CaseRejected(Contract):
    reason: str
