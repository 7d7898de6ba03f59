"""Events produced by the intake service on `waspada.intake.v1`."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from shared.contracts.envelope import Contract, register

CaseType = Literal["tppo", "tppm", "np_pmi", "unknown"]
PersonRole = Literal["potential_victim", "recruiter", "facilitator", "witness", "family"]
Sex = Literal["female", "male", "unknown"]
# UU 18/2017 Pasal 13: what a prospective migrant worker must hold (DOMAIN.md §2.3).
ChecklistItem = Literal["marital_status_letter", "family_permission", "competence_certificate",
                        "health_psych_certificate", "passport", "work_visa", "placement_agreement", "work_contract"]
DocumentStatus = Literal["present", "missing", "unknown"]


class Person(Contract):
    person_id: str
    role: PersonRole
    name: str | None = None
    nik: str | None = None
    passport_number: str | None = None
    phone: str | None = None
    age: int | None = None
    # A date, or sealed text (shared.crypto) in events and stored documents.
    birth_date: Annotated[date | str | None, Field(union_mode="left_to_right")] = None
    sex: Sex | None = None
    nationality: str | None = None


class Departure(Contract):
    planned_date: date | None = None
    port: str | None = None
    destination_country: str | None = None
    route: str | None = None


class Location(Contract):
    lat: float
    lon: float


class Reporter(Contract):
    id: str
    role: str
    region: str


@register("case.reported", 1)
class CaseReported(Contract):
    case_number: str
    village_code: str
    regency_code: str
    reporter: Reporter
    received_at: AwareDatetime
    observed_at: AwareDatetime
    suspected_types: list[CaseType]
    indicators: list[str]
    narrative: str
    persons: list[Person] = Field(default_factory=list)
    departure: Departure | None = None
    location: Location | None = None
    documents: dict[ChecklistItem, DocumentStatus] = Field(default_factory=dict)  # NP-PMI checklist, if known
    submission: int = 1  # 1 for the first report, +1 for every amendment that re-enters screening


@register("case.amended", 1)
class CaseAmended(Contract):
    """The reporter's answer to an information request; carries the whole amended report for re-screening."""

    answer: str
    report: CaseReported


@register("case.withdrawn", 1)
class CaseWithdrawn(Contract):
    reason: str
