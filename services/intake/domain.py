"""Intake's domain: what a report must contain, how it is normalised, and how a report's status moves.

Pure: no I/O. Functions decide and return the document fields and the events a change causes.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from shared import reference, regions, topics, urgency
from shared.api_models import Instant
from shared.auth import Principal
from shared.crypto import CaseErased, Sealer, open_values
from shared.identity import normalise_nik, normalise_passport, normalise_phone
from shared.contracts import intake as contract
from shared.contracts.envelope import Actor, Envelope, new_event
from shared.outbox import Change, Outgoing

SERVICE = "intake"
MAX_NARRATIVE = 5000
MAX_PERSONS = 30
# Dates a report may carry: an observation at most this long ago, a departure at most this far from today.
OLDEST_OBSERVATION = timedelta(days=3653)
DEPARTURE_RANGE = timedelta(days=3653)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]

class Strict(BaseModel):
    # Unknown fields are refused (and so keys like "$where" or "a.b" never reach the database).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PersonIn(Strict):
    role: contract.PersonRole
    name: Name | None = None
    nik: str | None = Field(None, description="16-digit NIK (full-width and other Unicode digits are accepted)")
    passport_number: str | None = Field(None, description="6-12 letters A-Z and digits")
    phone: str | None = Field(None, description="a valid number: 08… or +62… in Indonesia, else +<country code>")
    age: int | None = Field(None, ge=0, le=120)
    birth_date: date | None = None
    sex: contract.Sex | None = None
    nationality: str | None = Field(None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")

    @field_validator("nik")
    @classmethod
    def _nik(cls, v: str | None) -> str | None:
        return normalise_nik(v) if v is not None else None

    @field_validator("passport_number")
    @classmethod
    def _passport(cls, v: str | None) -> str | None:
        return normalise_passport(v) if v is not None else None

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        return normalise_phone(v) if v is not None else None

    @field_validator("birth_date")
    @classmethod
    def _born(cls, v: date | None) -> date | None:
        if v is not None and (v > date.today() or v.year < 1900):
            raise ValueError("birth_date must be in the past")
        return v

    @model_validator(mode="after")
    def _identifies_someone(self) -> PersonIn:
        if not any((self.name, self.nik, self.passport_number, self.phone)):
            raise ValueError("a person needs at least a name, NIK, passport number or phone")
        return self


PORT_CODE = re.compile(r"[A-Z]{3}|[A-Z]{2}[A-Z2-9]{3}")


class DepartureIn(Strict):
    planned_date: date | None = None
    port: str | None = Field(None, description="the airport's IATA code (CGK) or a seaport's or border post's "
                                               "UN/LOCODE (IDTPP)", examples=["CGK"])
    destination_country: str | None = Field(None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")
    route: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = Field(
        None, description="free text, sealed like the narrative")

    @field_validator("port")
    @classmethod
    def _port(cls, v: str | None) -> str | None:
        # A code, not a place described in words: free text here would be personal data left unsealed.
        if v is None:
            return None
        code = unicodedata.normalize("NFKC", v).strip().upper()
        if not PORT_CODE.fullmatch(code):
            raise ValueError("port must be an IATA airport code (CGK) or a UN/LOCODE (IDTPP)")
        return code


class LocationIn(Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class ReportIn(Strict):
    """A report as a reporter files it (DESIGN.md, "Exact shapes"); the reporter comes from the token."""

    village_code: str = Field(pattern=r"^\d{2}\.\d{2}\.\d{2}\.\d{4}$", examples=["36.03.11.2009"])
    observed_at: Instant = Field(description="when it was seen: not in the future, at most 10 years ago")
    suspected_types: list[contract.CaseType] = Field(min_length=1, max_length=4)
    indicators: list[Annotated[str, StringConstraints(max_length=64)]] = Field(default_factory=list, max_length=50)
    narrative: str = Field(min_length=1, max_length=MAX_NARRATIVE)
    persons: list[PersonIn] = Field(default_factory=list, max_length=MAX_PERSONS)
    departure: DepartureIn | None = None
    location: LocationIn | None = None
    documents: dict[contract.ChecklistItem, contract.DocumentStatus] = Field(
        default_factory=dict, description="NP-PMI document checklist (UU 18/2017 Pasal 13): present/missing/unknown")

    @field_validator("suspected_types", "indicators")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class FieldProblem(ValueError):
    def __init__(self, problems: list[dict[str, str]]):
        super().__init__("; ".join(f"{p['field']}: {p['problem']}" for p in problems))
        self.problems = problems


def check_against_reference(report: ReportIn, reporter: Principal, now: datetime) -> None:
    """Rules that need reference data or the reporter; raises FieldProblem naming every bad field."""
    problems: list[dict[str, str]] = []
    if not reference.is_village(report.village_code):
        problems.append({"field": "village_code", "problem": f"unknown village code {report.village_code}"})
    elif not regions.covers(reporter.region, report.village_code) and not regions.covers(
        regions.regency_of(reporter.region), report.village_code
    ):
        problems.append({"field": "village_code", "problem": "outside the regency your account covers"})
    known = reference.indicators()
    for i, indicator in enumerate(report.indicators):
        if indicator not in known:
            problems.append({"field": f"indicators.{i}", "problem": f"unknown indicator {indicator!r}"})
    if report.observed_at > now + timedelta(minutes=10):
        problems.append({"field": "observed_at", "problem": "is in the future"})
    elif report.observed_at < now - OLDEST_OBSERVATION:
        problems.append({"field": "observed_at", "problem": "is more than 10 years ago"})
    problems += _departure_problems(report.departure, now)
    if problems:
        raise FieldProblem(problems)


def _departure_problems(departure: DepartureIn | None, now: datetime) -> list[dict[str, str]]:
    if departure is None or departure.planned_date is None:
        return []
    if abs(departure.planned_date - now.date()) > DEPARTURE_RANGE:
        return [{"field": "departure.planned_date", "problem": "is more than 10 years from today"}]
    return []


def request_hash(report: ReportIn) -> str:
    """Fingerprint of a request body, to tell a retry (same body) from a reused key (different body)."""
    canonical = json.dumps(report.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# The namespace of case ids made from a reporter's Idempotency-Key (uuid5; a fixed value: ids stay what they were)
KEYED_CASES = uuid.UUID("6f1d3c3e-5b0a-4c1e-9a43-0c9b9c7d2f10")


def case_id_for(idempotency_id: str) -> str:
    """The case id of a report filed with an Idempotency-Key (`idempotency_id`: "<reporter>:<key>"): the same for
    every retry of it, however late, and for a concurrent twin, so the case's own first write is the guard."""
    return str(uuid.uuid5(KEYED_CASES, idempotency_id))


def case_number(regency_code: str, year: int, seq: int) -> str:
    return f"{regency_code.replace('.', '')}-{year}-{seq:06d}"


def seq_of(number: str) -> int:
    """The place of a case number (`case_number`) in its regency's yearly sequence."""
    return int(number.rsplit("-", 1)[1])


def actor_of(principal: Principal) -> Actor:
    return Actor(id=principal.sub, role=principal.role, unit=principal.unit, region=principal.region)


def file_report(report: ReportIn, reporter: Principal, *, case_id: str, number: str, idempotency_id: str,
                fingerprint: str, now: datetime, seal: Sealer) -> tuple[dict[str, Any], list[Outgoing]]:
    """A new case: its intake document and the `case.reported` event, personal data sealed with the case's key."""
    payload = contract.CaseReported(
        case_number=number,
        village_code=report.village_code,
        regency_code=regions.regency_of(report.village_code),
        reporter=contract.Reporter(id=reporter.sub, role=reporter.role, region=reporter.region),
        received_at=now,
        observed_at=report.observed_at.astimezone(UTC),
        suspected_types=report.suspected_types,
        indicators=report.indicators,
        narrative=report.narrative,
        persons=[contract.Person(person_id=str(uuid.uuid4()), **p.model_dump()) for p in report.persons],
        departure=contract.Departure(**report.departure.model_dump()) if report.departure else None,
        location=contract.Location(**report.location.model_dump()) if report.location else None,
        documents=report.documents,
    )
    urgent = urgency.headers(payload, now.date())  # from the plain report, before it is sealed
    payload = contract.CaseReported.model_validate(seal.report(payload.model_dump(mode="json")))
    event = new_event(payload, case_id=case_id, producer=SERVICE, actor=actor_of(reporter),
                      correlation_id=case_id, causation_id=None, occurred_at=now)
    doc = {
        "_id": case_id,
        "case_number": number,
        "idempotency_id": idempotency_id,
        "request_hash": fingerprint,
        "reporter_id": reporter.sub,
        "region_path": regions.path(report.village_code),
        "status": "reported",
        "question": None,
        "decision_reason": None,
        "report": payload.model_dump(mode="json"),
        "received_at": now.isoformat(),
        "updated_at": now.isoformat(),
        "status_history": [{"status": "reported", "at": now.isoformat(), "event_id": event.event_id}],
    }
    return doc, [Outgoing(topics.INTAKE, event, urgent)]


# --- the reporter's view of a case's status ---------------------------------------------------------------

Status = Literal["reported", "screened", "info_requested", "verified", "rejected", "withdrawn"]

NEXT_STEP: dict[str, str] = {
    "reported": "Your report was received and is being screened.",
    "screened": "An immigration officer will review your report.",
    "info_requested": "The officer asked a question: answer it with an amendment.",
    "verified": "Your report was verified and is being referred to the units that will act on it.",
    "rejected": "Your report was reviewed and not taken further; the reason is given.",
    "withdrawn": "You withdrew this report.",
}

# Which verification outcome may move a report from which status (redelivery and reordering change nothing).
_MOVES: dict[str, tuple[str, ...]] = {
    "case.screened": ("reported",),
    "case.info_requested": ("reported", "screened"),
    "case.verified": ("reported", "screened", "info_requested"),
    "case.rejected": ("reported", "screened", "info_requested"),
}
_TARGET = {"case.screened": "screened", "case.info_requested": "info_requested",
           "case.verified": "verified", "case.rejected": "rejected"}


def may_move(event_type: str) -> bool:
    """Whether a verification event of this type can change a reporter's view at all: the others (a link to
    another case, the most frequent of them with a prolific recruiter) are not worth reading the report for."""
    return event_type in _MOVES


def on_verification_event(doc: dict[str, Any] | None, event: Envelope, now: datetime) -> Change | None:
    """How a verification event changes the reporter's view; None when it changes nothing."""
    if doc is None or event.type not in _MOVES or doc["status"] not in _MOVES[event.type]:
        return None
    if event.type == "case.screened" and event.data.get("submission", 1) != doc["report"].get("submission", 1):
        return None  # screening of an earlier submission
    target = _TARGET[event.type]
    # The case moved on: whatever stopped it before (a dead-lettered event) no longer holds it up.
    fields: dict[str, Any] = {"status": target, "updated_at": now.isoformat(), "needs_attention": None}
    if event.type == "case.info_requested":
        fields["question"] = event.data.get("question")
    if event.type == "case.rejected":
        fields["decision_reason"] = event.data.get("reason")
    return Change(set=fields, push={"status_history": {"status": target, "at": now.isoformat(),
                                                        "event_id": event.event_id}})


NEEDS_ATTENTION_STEP = ("Processing of your report stopped at a technical fault. Supervisors have been alerted "
                        "and will follow it up; you do not need to file it again.")


def dead_lettered(doc: dict[str, Any] | None, source_topic: str | None, event_type: str | None,
                  now: datetime) -> Change | None:
    """An event of this report ended in the dead-letter topic: the report needs attention until it moves on."""
    if doc is None:
        return None
    return Change(set={"needs_attention": {"since": now.isoformat(), "source_topic": source_topic,
                                           "event_type": event_type}, "updated_at": now.isoformat()})


class InvalidTransition(Exception):
    """The case is not in a state that allows this action: 409."""


class AmendmentIn(Strict):
    """The reporter's answer to an information request, with what they add to the report."""

    answer: str = Field(min_length=1, max_length=MAX_NARRATIVE)
    add_indicators: list[Annotated[str, StringConstraints(max_length=64)]] = Field(default_factory=list, max_length=50)
    add_persons: list[PersonIn] = Field(default_factory=list, max_length=MAX_PERSONS)
    suspected_types: list[contract.CaseType] | None = Field(None, min_length=1, max_length=4)
    departure: DepartureIn | None = None


def check_amendment(amendment: AmendmentIn, now: datetime) -> None:
    known = reference.indicators()
    problems = [{"field": f"add_indicators.{i}", "problem": f"unknown indicator {x!r}"}
                for i, x in enumerate(amendment.add_indicators) if x not in known]
    problems += _departure_problems(amendment.departure, now)
    if problems:
        raise FieldProblem(problems)


def amend(doc: dict[str, Any], amendment: AmendmentIn, reporter: Principal, now: datetime, seal: Sealer) -> Change:
    """Answering an information request re-enters screening with the amended report as a new submission."""
    if doc["status"] != "info_requested":
        raise InvalidTransition(f"a {doc['status']} report has no open question to answer")
    if seal.erased:
        raise CaseErased(doc["_id"])
    before = contract.CaseReported.model_validate(seal.open(doc["report"]))
    persons = list(before.persons) + [contract.Person(person_id=str(uuid.uuid4()), **p.model_dump())
                                      for p in amendment.add_persons]
    if len(persons) > MAX_PERSONS:
        raise FieldProblem([{"field": "add_persons", "problem": f"a report holds at most {MAX_PERSONS} persons"}])
    narrative = f"{before.narrative}\n\n[{now.date().isoformat()}] {amendment.answer}"[-MAX_NARRATIVE * 2:]
    report = before.model_copy(update={
        "indicators": list(dict.fromkeys([*before.indicators, *amendment.add_indicators])),
        "persons": persons,
        "narrative": narrative,
        "suspected_types": amendment.suspected_types or before.suspected_types,
        "departure": contract.Departure(**amendment.departure.model_dump()) if amendment.departure
        else before.departure,
        "submission": before.submission + 1,
    })
    urgent = urgency.headers(report, now.date())
    report = contract.CaseReported.model_validate(seal.report(report.model_dump(mode="json")))
    answer = seal(amendment.answer)
    event = new_event(contract.CaseAmended(answer=answer, report=report), case_id=doc["_id"],
                      producer=SERVICE, actor=actor_of(reporter), correlation_id=doc["_id"], causation_id=None,
                      occurred_at=now)
    return Change(
        set={"status": "reported", "question": None, "report": report.model_dump(mode="json"),
             "updated_at": now.isoformat()},
        events=[Outgoing(topics.INTAKE, event, urgent)],
        push={"status_history": {"status": "reported", "at": now.isoformat(), "event_id": event.event_id,
                                 "amended": True}},
    )


def withdraw(doc: dict[str, Any], reporter: Principal, reason: str, now: datetime, seal: Sealer) -> Change:
    """The reporter takes the report back; the reason (free text, it may name people) is sealed."""
    if doc["status"] not in ("reported", "screened", "info_requested"):
        raise InvalidTransition(f"a {doc['status']} report can no longer be withdrawn")
    event = new_event(contract.CaseWithdrawn(reason=seal(reason)), case_id=doc["_id"], producer=SERVICE,
                      actor=actor_of(reporter), correlation_id=doc["_id"], causation_id=None, occurred_at=now)
    return Change(set={"status": "withdrawn", "updated_at": now.isoformat()},
                  events=[Outgoing(topics.INTAKE, event)],
                  push={"status_history": {"status": "withdrawn", "at": now.isoformat(), "event_id": event.event_id}})




def reporter_view(doc: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """The reporter's own report, opened with the case's key ([erased] once the key is destroyed)."""
    doc = {**doc, **open_values({k: doc.get(k) for k in ("report", "question", "decision_reason")}, key, doc["_id"])}
    return {
        "case_id": doc["_id"],
        "case_number": doc["case_number"],
        "status": doc["status"],
        "next_step": NEEDS_ATTENTION_STEP if doc.get("needs_attention") else NEXT_STEP[doc["status"]],
        "needs_attention": bool(doc.get("needs_attention")),
        "question": doc.get("question") if doc["status"] == "info_requested" else None,
        "decision_reason": doc.get("decision_reason"),
        "received_at": doc["received_at"],
        "updated_at": doc["updated_at"],
        "report": doc["report"],
        "history": [{"status": h["status"], "at": h["at"]} for h in doc.get("status_history", [])],
    }
