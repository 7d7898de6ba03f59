"""Referral's domain: a verified case opens one referral per routed agency, which its unit then moves along
created -> acknowledged -> accepted -> (updated)* -> closed, or acknowledged -> declined.

Pure: functions take the stored document (or the incoming event) and return new documents or a `Change`
with the events it causes; nothing here reads the clock, the database or the broker.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from services.referral import routing
from shared import regions, topics
from shared.auth import Principal
from shared.contracts import referral as contract
from shared.contracts import verification
from shared.contracts.envelope import Actor, Contract, ContractError, Envelope, new_event, parse_data
from shared.outbox import Change, Outgoing

SERVICE = "referral"
# Referral ids are derived from (case, agency), so a redelivered `case.verified` finds its referrals already there.
NAMESPACE = uuid.UUID("5b1f3a0e-8c2d-4e7a-9f60-3d9a7c1e2b44")
PRIORITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}

Status = Literal["created", "acknowledged", "accepted", "declined", "closed"]
Outcome = Literal["police_report_filed", "departure_deferred", "victim_handed_to_services", "no_offence_found",
                  "transferred", "other"]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]

# action -> (statuses it may start from, status it leaves the referral in)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("created",), "acknowledged"),
    "accept": (("acknowledged",), "accepted"),
    "decline": (("acknowledged",), "declined"),
    "update": (("accepted",), "accepted"),
    "close": (("accepted",), "closed"),
}


class InvalidTransition(Exception):
    """The referral is not in a state that allows this action: 409."""


def referral_id_for(case_id: str, agency_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{case_id}:{agency_id}"))


# --- request bodies ----------------------------------------------------------------------------------------


class Strict(BaseModel):
    # Unknown fields are refused (and so keys like "$set" or "a.b" never reach the database).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Acknowledge(Strict):
    """`{}`"""


class Accept(Strict):
    """`{}`"""


class Decline(Strict):
    reason: Text


class LpFiled(Strict):
    """A police report (Laporan Polisi) was filed at SPKT (DOMAIN.md §4.2)."""

    kind: Literal["lp_filed"]
    lp_number: Short
    lp_model: Literal["A", "B"] | None = None
    lp_date: date | None = None


class Sp2hpSent(Strict):
    """A progress letter (SP2HP) was sent to the reporter."""

    kind: Literal["sp2hp_sent"]
    letter_number: Short | None = None
    sent_on: date | None = None


class DepartureDeferred(Strict):
    """Departure deferred at a checkpoint: administrative, the person may leave once papers are complete."""

    kind: Literal["departure_deferred"]
    office: Short | None = None
    deferred_on: date | None = None
    recheck_on: date | None = None
    missing_documents: list[Short] = Field(default_factory=list, max_length=20)


class VictimHandedToServices(Strict):
    kind: Literal["victim_handed_to_services"]
    to_agency: Short | None = None
    handed_on: date | None = None


class NoteOnly(Strict):
    kind: Literal["note"]


Milestone = Annotated[LpFiled | Sp2hpSent | DepartureDeferred | VictimHandedToServices | NoteOnly,
                      Field(discriminator="kind")]


class Update(Strict):
    note: Text | None = None
    milestone: Milestone | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Update:
        if self.note is None and (self.milestone is None or self.milestone.kind == "note"):
            raise ValueError("an update needs a note, a milestone, or both")
        return self


class Close(Strict):
    outcome: Outcome
    note: Text | None = None

    @model_validator(mode="after")
    def _other_is_explained(self) -> Close:
        if self.outcome == "other" and self.note is None:
            raise ValueError("outcome 'other' needs a note saying what happened")
        return self


# --- opening referrals from a verified case ----------------------------------------------------------------


def open_referrals(event: Envelope, now: datetime) -> list[tuple[dict[str, Any], list[Outgoing]]]:
    """The referral documents a `case.verified` opens, each with its own `referral.created`."""
    verified = parse_data(event, verification.CaseVerified)
    if not regions.VILLAGE_CODE.match(verified.village_code):
        raise ContractError(f"case.verified has no village code: {verified.village_code!r}")
    decisions = routing.route(verified.case_types, verified.situation, verified.village_code)
    due = routing.deadlines_for(verified.priority, now)
    at = now.astimezone(UTC).isoformat()
    opened = []
    for decision in decisions:
        referral_id = referral_id_for(event.case_id, decision.agency_id)
        payload = contract.ReferralCreated(
            referral_id=referral_id, case_number=verified.case_number, agency_id=decision.agency_id,
            function=decision.function, trigger=decision.trigger, priority=verified.priority,
            deadlines=contract.Deadlines(**due), fallback=decision.fallback,
        )
        created = new_event(payload, case_id=event.case_id, producer=SERVICE, actor=None,
                            correlation_id=event.correlation_id, causation_id=event.event_id, occurred_at=now)
        doc = {
            "_id": referral_id,
            "referral_id": referral_id,
            "case_id": event.case_id,
            "case_number": verified.case_number,
            "correlation_id": event.correlation_id,
            "agency_id": decision.agency_id,
            "function": decision.function,
            "trigger": decision.trigger,
            "triggers": list(decision.triggers),
            "role": decision.role,
            "fallback": decision.fallback,
            "priority": verified.priority,
            "priority_rank": PRIORITY_RANK[verified.priority],
            "village_code": verified.village_code,
            "region_path": regions.path(verified.village_code),
            "status": "created",
            "deadlines": {k: v.astimezone(UTC).isoformat() for k, v in due.items()},
            "milestones": [],
            "decline_reason": None,
            "outcome": None,
            "closing_note": None,
            "acknowledged_at": None,
            "first_update_at": None,
            "created_at": at,
            "updated_at": at,
            "history": [{"status": "created", "action": "create", "at": at, "by": None,
                         "event_id": created.event_id}],
        }
        opened.append((doc, [Outgoing(topics.REFERRAL, created)]))
    return opened


# --- moving a referral -------------------------------------------------------------------------------------


def _actor(principal: Principal) -> Actor:
    return Actor(id=principal.sub, role=principal.role, unit=principal.unit, region=principal.region)


def _move(doc: dict[str, Any], action: str, payload: Contract, by: Principal, now: datetime,
          fields: dict[str, Any] | None = None, push: dict[str, Any] | None = None) -> Change:
    allowed_from, target = TRANSITIONS[action]
    if doc["status"] not in allowed_from:
        raise InvalidTransition(f"cannot {action} a referral that is {doc['status']}; "
                                f"{action} needs status {' or '.join(allowed_from)}")
    event = new_event(payload, case_id=doc["case_id"], producer=SERVICE, actor=_actor(by),
                      correlation_id=doc["correlation_id"], causation_id=None, occurred_at=now)
    at = now.astimezone(UTC).isoformat()
    entry = {"status": target, "action": action, "at": at, "by": by.sub, "event_id": event.event_id}
    return Change(set={"status": target, "updated_at": at, **(fields or {})},
                  events=[Outgoing(topics.REFERRAL, event)], push={"history": entry, **(push or {})})


def acknowledge(doc: dict[str, Any], by: Principal, now: datetime) -> Change:
    payload = contract.ReferralAcknowledged(referral_id=doc["_id"], agency_id=doc["agency_id"])
    return _move(doc, "acknowledge", payload, by, now, {"acknowledged_at": now.astimezone(UTC).isoformat()})


def accept(doc: dict[str, Any], by: Principal, now: datetime) -> Change:
    payload = contract.ReferralAccepted(referral_id=doc["_id"], agency_id=doc["agency_id"])
    return _move(doc, "accept", payload, by, now)


def decline(doc: dict[str, Any], by: Principal, body: Decline, now: datetime) -> Change:
    payload = contract.ReferralDeclined(referral_id=doc["_id"], agency_id=doc["agency_id"], reason=body.reason)
    return _move(doc, "decline", payload, by, now, {"decline_reason": body.reason})


def record_update(doc: dict[str, Any], by: Principal, body: Update, now: datetime) -> Change:
    milestone = body.milestone.model_dump(mode="json", exclude_none=True) if body.milestone else None
    payload = contract.ReferralUpdated(referral_id=doc["_id"], agency_id=doc["agency_id"], note=body.note,
                                       milestone=milestone)
    at = now.astimezone(UTC).isoformat()
    fields = {} if doc.get("first_update_at") else {"first_update_at": at}
    change = _move(doc, "update", payload, by, now, fields)
    entry = {**(milestone or {"kind": "note"}), "note": body.note, "at": at, "by": by.sub,
             "event_id": change.events[0].event.event_id}
    change.push["milestones"] = entry
    return change


def close(doc: dict[str, Any], by: Principal, body: Close, now: datetime) -> Change:
    payload = contract.ReferralClosed(referral_id=doc["_id"], agency_id=doc["agency_id"], outcome=body.outcome)
    return _move(doc, "close", payload, by, now, {"outcome": body.outcome, "closing_note": body.note})


# --- what users see ----------------------------------------------------------------------------------------


def referral_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "referral_id": doc["_id"],
        "case_id": doc["case_id"],
        "case_number": doc["case_number"],
        "agency_id": doc["agency_id"],
        "function": doc["function"],
        "trigger": doc["trigger"],
        "triggers": doc.get("triggers", [doc["trigger"]]),
        "role": doc.get("role"),
        "fallback": doc["fallback"],
        "village_code": doc["village_code"],
        "status": doc["status"],
        "priority": doc["priority"],
        "deadlines": doc["deadlines"],
        "milestones": doc.get("milestones", []),
        "decline_reason": doc.get("decline_reason"),
        "outcome": doc.get("outcome"),
        "closing_note": doc.get("closing_note"),
        "version": doc["version"],
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
        "history": [{k: h.get(k) for k in ("status", "action", "at", "by")} for h in doc.get("history", [])],
    }
