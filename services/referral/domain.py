"""Referral's domain: a verified case opens one referral per routed agency, which its unit then moves along
created -> acknowledged -> accepted -> (updated)* -> closed, or acknowledged -> declined (re-routed to the next
wider unit, or flagged for a supervisor). Deadlines that pass escalate once each; a case closes when every one
of its referrals is closed.

Pure: functions take the stored document (or the incoming event) and return new documents or a `Change`
with the events it causes; nothing here reads the clock, the database or the broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from services.referral import routing
from shared import crypto, regions, topics
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


# Seals a note or reason with the case's key (shared.crypto.Sealer); raises CaseErased once the case is erased.
Seal = Callable[[str | None], str | None]


def rerouted_id_for(declined_referral_id: str, agency_id: str) -> str:
    """The referral that replaces a declined one: derived from it, so re-routing twice opens nothing new."""
    return str(uuid.uuid5(NAMESPACE, f"{declined_referral_id}:reroute:{agency_id}"))


def derived_event_id(*parts: str) -> str:
    """An id for applying something at most once (an escalation of one deadline, a referral event to its case)."""
    return str(uuid.uuid5(NAMESPACE, ":".join(parts)))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def created_day(created_at: str) -> str:
    """The (UTC) day a referral was created: the bucket its unit's and region's full lists read it in."""
    return datetime.fromisoformat(created_at).astimezone(UTC).date().isoformat()


def created_hour(created_at: str) -> str:
    """The (UTC) hour a referral was created in ("2026-12-02T09"): what a full list reads a busy day by."""
    return datetime.fromisoformat(created_at).astimezone(UTC).strftime("%Y-%m-%dT%H")


def created_week(created_at: str) -> str:
    """The week (its Monday, UTC) a referral was created in: what a full list reads at once where days are quiet."""
    day = datetime.fromisoformat(created_at).astimezone(UTC).date()
    return (day - timedelta(days=day.weekday())).isoformat()


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
        raise ContractError("case.verified has no valid village code (dd.dd.dd.dddd)")
    decisions = routing.route(verified.case_types, verified.situation, verified.village_code)
    case = {"case_id": event.case_id, "case_number": verified.case_number, "correlation_id": event.correlation_id,
            "priority": verified.priority, "village_code": verified.village_code,
            "persons": [p.model_dump(mode="json") for p in verified.persons], "narrative": verified.narrative,
            "case_types": list(verified.case_types),
            "linked_cases": [link.model_dump(mode="json") for link in verified.linked_cases]}
    return [_new_referral(referral_id_for(event.case_id, d.agency_id), case, d, d.trigger, event.event_id, now)
            for d in decisions]


def _new_referral(referral_id: str, case: dict[str, Any], decision: routing.RouteDecision, trigger: str,
                  causation_id: str, now: datetime, rerouted_from: str | None = None,
                  declined_by: list[str] | None = None) -> tuple[dict[str, Any], list[Outgoing]]:
    plan = routing.deadlines()[case["priority"]]
    due = routing.deadlines_for(case["priority"], now)
    payload = contract.ReferralCreated(
        referral_id=referral_id, case_number=case["case_number"], agency_id=decision.agency_id,
        function=decision.function, trigger=trigger, priority=case["priority"],
        deadlines=contract.Deadlines(**due), fallback=decision.fallback, rerouted_from=rerouted_from,
    )
    created = new_event(payload, case_id=case["case_id"], producer=SERVICE, actor=None,
                        correlation_id=case["correlation_id"], causation_id=causation_id, occurred_at=now)
    at = _iso(now)
    doc = {
        "_id": referral_id,
        "referral_id": referral_id,
        "case_id": case["case_id"],
        "case_number": case["case_number"],
        "correlation_id": case["correlation_id"],
        "agency_id": decision.agency_id,
        "function": decision.function,
        "trigger": trigger,
        "triggers": list(decision.triggers) if rerouted_from is None else [trigger],
        "role": decision.role,
        "fallback": decision.fallback,
        "priority": case["priority"],
        "priority_rank": PRIORITY_RANK[case["priority"]],
        "village_code": case["village_code"],
        "region_path": regions.path(case["village_code"]),
        "persons": case.get("persons", []),  # sealed; opened only for the unit's investigators
        "narrative": case.get("narrative"),
        "case_types": list(case.get("case_types") or []),
        "linked_cases": list(case.get("linked_cases") or []),  # numbers of cases sharing a person or recruiter
        "status": "created",
        "deadlines": {k: _iso(v) for k, v in due.items()},
        "update_every_hours": plan.update_every / timedelta(hours=1),
        "milestones": [],
        "decline_reason": None,
        "outcome": None,
        "closing_note": None,
        "acknowledged_at": None,
        "first_update_at": None,
        "last_update_at": None,
        "escalations": [],
        "rerouted_from": rerouted_from,
        "rerouted_to": None,
        "declined_by": list(declined_by or []),
        "needs_supervisor": False,
        "created_at": at,
        "created_day": created_day(at),
        "created_week": created_week(at),
        "created_hour": created_hour(at),
        "updated_at": at,
        "history": [{"status": "created", "action": "create", "at": at, "by": None,
                     "event_id": created.event_id}],
    }
    doc.update(deadline_fields(doc))
    return doc, [Outgoing(topics.REFERRAL, created)]


def reroute(declined: dict[str, Any], event: Envelope) -> tuple[dict[str, Any], list[Outgoing]] | None:
    """The referral that replaces a declined one (from its `referral.declined`), or None if it goes to nobody.

    Built from the declined document and the event alone, at the event's time, so a retry builds the same."""
    data = parse_data(event, contract.ReferralDeclined)
    if data.rerouted_to_referral_id is None or data.rerouted_to_agency_id is None:
        return None
    decision = routing.next_unit(declined["function"], declined["village_code"], _declined_chain(declined))
    if decision is None or decision.agency_id != data.rerouted_to_agency_id:
        # The directory changed since the decline: follow what the decline promised, which the case already lists.
        decision = routing.RouteDecision(agency_id=data.rerouted_to_agency_id, function=declined["function"],
                                         trigger=declined["trigger"], role="primary", fallback=True,
                                         unit_region="", triggers=(declined["trigger"],))
    return _new_referral(data.rerouted_to_referral_id, declined, decision, declined["trigger"], event.event_id,
                         event.occurred_at, rerouted_from=declined["_id"], declined_by=_declined_chain(declined))


def _declined_chain(doc: dict[str, Any]) -> list[str]:
    return [*doc.get("declined_by", []), doc["agency_id"]]


# --- deadlines and escalation ------------------------------------------------------------------------------


def _parse(at: str) -> datetime:
    return datetime.fromisoformat(at)


def _update_every(doc: dict[str, Any]) -> timedelta:
    hours = doc.get("update_every_hours")
    return timedelta(hours=hours) if hours else routing.deadlines()[doc["priority"]].update_every


def next_deadline(doc: dict[str, Any]) -> tuple[str, datetime] | None:
    """The deadline the referral's unit owes next, as (key, due), or None once it is declined or closed.

    created: acknowledge; acknowledged or accepted without an update: first update; accepted after n updates:
    `update_<n>`, due `update_every_hours` after the last update (the SP2HP rhythm)."""
    status = doc["status"]
    if status == "created":
        return "acknowledge", _parse(doc["deadlines"]["acknowledge_by"])
    if status not in ("acknowledged", "accepted"):
        return None
    if not doc.get("first_update_at"):
        return "first_update", _parse(doc["deadlines"]["first_update_by"])
    last = _parse(doc.get("last_update_at") or doc["first_update_at"])
    return f"update_{len(doc.get('milestones', []))}", last + _update_every(doc)


def escalated_keys(doc: dict[str, Any]) -> set[str]:
    return {e["deadline"] for e in doc.get("escalations", [])}


def deadline_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What the checker and the overdue list query: the next due time and whether its breach is still unreported."""
    due = next_deadline(doc)
    if due is None:
        return {"next_deadline": None, "next_due_ts": None, "escalation_pending": False}
    key, at = due
    return {"next_deadline": key, "next_due_ts": at.timestamp(), "escalation_pending": key not in escalated_keys(doc)}


def overdue(doc: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """The breached deadline of a referral at `now` ({deadline, due_at, overdue_seconds}), or None."""
    due = next_deadline(doc)
    if due is None or now <= due[1]:
        return None
    key, at = due
    return {"deadline": key, "due_at": _iso(at), "overdue_seconds": int((now - at).total_seconds())}


def escalate(doc: dict[str, Any], now: datetime) -> Change | None:
    """`referral.escalated` for a breached deadline not escalated before; None if there is nothing to report."""
    late = overdue(doc, now)
    if late is None or late["deadline"] in escalated_keys(doc):
        return None
    payload = contract.ReferralEscalated(referral_id=doc["_id"], agency_id=doc["agency_id"],
                                         deadline=late["deadline"], due_at=_parse(late["due_at"]),
                                         overdue_seconds=late["overdue_seconds"])
    event = new_event(payload, case_id=doc["case_id"], producer=SERVICE, actor=None,
                      correlation_id=doc["correlation_id"], causation_id=None, occurred_at=now)
    entry = {**late, "at": _iso(now), "event_id": event.event_id}
    return _scheduled(doc, Change(set={}, events=[Outgoing(topics.REFERRAL, event)], push={"escalations": entry}))


def _scheduled(doc: dict[str, Any], change: Change) -> Change:
    """The change, plus the deadline fields of the document it leaves behind."""
    after = {**doc, **change.set}
    for name, value in change.push.items():
        after[name] = [*doc.get(name, []), value]
    change.set.update(deadline_fields(after))
    return change


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
    entry = {"status": target, "action": action, "at": at, "by": by.sub, "by_name": by.name, "event_id": event.event_id}
    return Change(set={"status": target, "updated_at": at, **(fields or {})},
                  events=[Outgoing(topics.REFERRAL, event)], push={"history": entry, **(push or {})})


def acknowledge(doc: dict[str, Any], by: Principal, now: datetime) -> Change:
    payload = contract.ReferralAcknowledged(referral_id=doc["_id"], agency_id=doc["agency_id"])
    return _scheduled(doc, _move(doc, "acknowledge", payload, by, now, {"acknowledged_at": _iso(now)}))


def accept(doc: dict[str, Any], by: Principal, now: datetime) -> Change:
    payload = contract.ReferralAccepted(referral_id=doc["_id"], agency_id=doc["agency_id"])
    return _scheduled(doc, _move(doc, "accept", payload, by, now))


def decline(doc: dict[str, Any], by: Principal, body: Decline, now: datetime, seal: Seal) -> Change:
    """Declined, and never lost: re-routed to the next wider unit for the function, or flagged for a supervisor."""
    nxt = routing.next_unit(doc["function"], doc["village_code"], _declined_chain(doc))
    rerouted = None if nxt is None else {"referral_id": rerouted_id_for(doc["_id"], nxt.agency_id),
                                         "agency_id": nxt.agency_id}
    payload = contract.ReferralDeclined(
        referral_id=doc["_id"], agency_id=doc["agency_id"], reason=seal(body.reason),
        rerouted_to_referral_id=rerouted["referral_id"] if rerouted else None,
        rerouted_to_agency_id=rerouted["agency_id"] if rerouted else None, needs_supervisor=rerouted is None)
    return _scheduled(doc, _move(doc, "decline", payload, by, now, {
        "decline_reason": payload.reason, "rerouted_to": rerouted, "needs_supervisor": rerouted is None}))


def record_update(doc: dict[str, Any], by: Principal, body: Update, now: datetime, seal: Seal) -> Change:
    milestone = body.milestone.model_dump(mode="json", exclude_none=True) if body.milestone else None
    payload = contract.ReferralUpdated(referral_id=doc["_id"], agency_id=doc["agency_id"], note=seal(body.note),
                                       milestone=milestone)
    at = _iso(now)
    fields = {"last_update_at": at} if doc.get("first_update_at") else {"first_update_at": at, "last_update_at": at}
    change = _move(doc, "update", payload, by, now, fields)
    entry = {**(milestone or {"kind": "note"}), "note": payload.note, "at": at, "by": by.sub,
             "event_id": change.events[0].event.event_id}
    change.push["milestones"] = entry
    return _scheduled(doc, change)


def close(doc: dict[str, Any], by: Principal, body: Close, now: datetime, seal: Seal) -> Change:
    payload = contract.ReferralClosed(referral_id=doc["_id"], agency_id=doc["agency_id"], outcome=body.outcome)
    return _scheduled(doc, _move(doc, "close", payload, by, now,
                                 {"outcome": body.outcome, "closing_note": seal(body.note)}))


# --- the case: closed when every one of its referrals is closed --------------------------------------------

# A referral's standing in its case only moves up, so events applied out of order never undo a later state.
CASE_RANK = {"open": 0, "needs_supervisor": 1, "rerouted": 2, "closed": 2}
DONE = ("closed", "rerouted")


def _case_change(case: dict[str, Any] | None, case_id: str, correlation_id: str,
                 updates: dict[str, dict[str, Any]], causation_id: str, now: datetime,
                 seeded: bool = False) -> Change | None:
    """Merge referral standings into the case document; `case.closed` when the last one closes (exactly once,
    since `closed` is written in the same single-document update as the event)."""
    referrals = {k: dict(v) for k, v in (case or {}).get("referrals", {}).items()}
    for referral_id, new in updates.items():
        old = referrals.get(referral_id)
        if old is None or CASE_RANK[new["state"]] > CASE_RANK[old["state"]]:
            referrals[referral_id] = {**(old or {}), **new}
    is_seeded = bool((case or {}).get("seeded")) or seeded
    fields: dict[str, Any] = {"case_id": case_id, "correlation_id": correlation_id, "referrals": referrals,
                              "seeded": is_seeded, "updated_at": _iso(now)}
    events: list[Outgoing] = []
    already_closed = bool((case or {}).get("closed"))
    if (not already_closed and is_seeded and referrals and all(r["state"] in DONE for r in referrals.values())
            and any(r["state"] == "closed" for r in referrals.values())):
        outcomes = {r["agency_id"]: r["outcome"] for r in referrals.values() if r["state"] == "closed"}
        event = new_event(contract.CaseClosed(outcomes=outcomes), case_id=case_id, producer=SERVICE, actor=None,
                          correlation_id=correlation_id, causation_id=causation_id, occurred_at=now)
        events.append(Outgoing(topics.REFERRAL, event))
        fields.update(closed=True, closed_at=_iso(now), outcomes=outcomes)
    else:
        fields["closed"] = already_closed
    return Change(set=fields, events=events)


def case_opened(case: dict[str, Any] | None, event: Envelope,
                opened: list[tuple[dict[str, Any], list[Outgoing]]], now: datetime) -> Change | None:
    """The case lists the referrals a `case.verified` opens before they exist, so it never closes early."""
    updates = {doc["_id"]: {"state": "open", "agency_id": doc["agency_id"]} for doc, _ in opened}
    return _case_change(case, event.case_id, event.correlation_id, updates, event.event_id, now, seeded=True)


def case_followed(case: dict[str, Any] | None, event: Envelope, now: datetime) -> Change | None:
    """A referral's `referral.declined` or `referral.closed` moves its standing in the case document."""
    if event.type == "referral.closed":
        closed = parse_data(event, contract.ReferralClosed)
        updates = {closed.referral_id: {"state": "closed", "agency_id": closed.agency_id, "outcome": closed.outcome}}
    elif event.type == "referral.declined":
        declined = parse_data(event, contract.ReferralDeclined)
        if declined.rerouted_to_referral_id and declined.rerouted_to_agency_id:
            updates = {declined.referral_id: {"state": "rerouted", "agency_id": declined.agency_id,
                                              "rerouted_to": declined.rerouted_to_referral_id},
                       declined.rerouted_to_referral_id: {"state": "open",
                                                          "agency_id": declined.rerouted_to_agency_id}}
        else:
            updates = {declined.referral_id: {"state": "needs_supervisor", "agency_id": declined.agency_id}}
    else:
        return None
    return _case_change(case, event.case_id, event.correlation_id, updates, event.event_id, now)


# --- what users see ----------------------------------------------------------------------------------------


def referral_view(doc: dict[str, Any], key: bytes | None = None, *, opened: bool = False) -> dict[str, Any]:
    """A referral as shown. Opened (one referral, for its unit or the region's supervisor; the read is recorded):
    notes, reasons and the case's persons read with the case's key. Otherwise (lists) they are masked."""
    fields = ("decline_reason", "milestones", "closing_note", "persons", "narrative")
    shown = {k: doc.get(k) for k in fields}
    shown = crypto.open_values(shown, key, doc["case_id"]) if opened else crypto.mask_values(shown)
    doc = {**doc, **shown}
    view = {
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
        "case_types": doc.get("case_types") or [],
        "linked_cases": [{k: link.get(k) for k in ("case_id", "case_number", "reasons")}
                         for link in doc.get("linked_cases") or []],
        "deadlines": doc["deadlines"],
        "milestones": doc.get("milestones", []),
        "decline_reason": doc.get("decline_reason"),
        "rerouted_from": doc.get("rerouted_from"),
        "rerouted_to": doc.get("rerouted_to"),
        "needs_supervisor": doc.get("needs_supervisor", False),
        "next_deadline": doc.get("next_deadline"),
        "next_due_at": _iso(due[1]) if (due := next_deadline(doc)) else None,  # what the unit's countdown shows
        "escalations": [{k: e.get(k) for k in ("deadline", "due_at", "overdue_seconds", "at")}
                        for e in doc.get("escalations", [])],
        "outcome": doc.get("outcome"),
        "closing_note": doc.get("closing_note"),
        "version": doc["version"],
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
        "history": [{k: h.get(k) for k in ("status", "action", "at", "by", "by_name")} for h in doc.get("history", [])],
    }
    if opened:
        view["persons"] = doc.get("persons") or []
        view["narrative"] = doc.get("narrative")
    return view


def attention_view(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A referral on the supervisors' list: what is late and by how much, or that it needs a supervisor."""
    return {**referral_view(doc), "overdue": overdue(doc, now)}
