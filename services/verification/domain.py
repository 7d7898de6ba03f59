"""Verification's case: screened on arrival, then decided by a person (verify / reject / request_info).

Pure: functions take the stored document and return a `Change` (new fields + the events it causes).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.verification import linking, screening
from shared import crypto, regions, topics
from shared.auth import Principal
from shared.contracts import intake, verification
from shared.contracts.envelope import Actor, Envelope, new_event, parse_data
from shared.outbox import Change, Outgoing

SERVICE = "verification"
OPEN = ("awaiting_decision", "info_requested")

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class InvalidTransition(Exception):
    """The case is not in a state that allows this: 409 with the current state."""


class _Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Verify(_Decision):
    decision: Literal["verify"]
    case_types: list[Literal["tppo", "tppm", "np_pmi"]] = Field(min_length=1, max_length=3)
    note: Text | None = None
    person_threatened: bool = False
    victim_abroad: bool = False


class Reject(_Decision):
    decision: Literal["reject"]
    reason: Text


class RequestInfo(_Decision):
    decision: Literal["request_info"]
    question: Text


Decision = Annotated[Verify | Reject | RequestInfo, Field(discriminator="decision")]


def _actor(principal: Principal) -> Actor:
    return Actor(id=principal.sub, role=principal.role, unit=principal.unit, region=principal.region)


def _event(doc_id: str, payload: Any, *, correlation_id: str, causation_id: str | None, actor: Actor | None,
           now: datetime) -> Outgoing:
    return Outgoing(topics.VERIFICATION, new_event(payload, case_id=doc_id, producer=SERVICE, actor=actor,
                                                   correlation_id=correlation_id, causation_id=causation_id,
                                                   occurred_at=now))


def report_of(event: Envelope) -> intake.CaseReported | None:
    """The report a case.reported or case.amended event carries."""
    if event.type == "case.reported":
        return parse_data(event, intake.CaseReported)
    if event.type == "case.amended":
        return parse_data(event, intake.CaseAmended).report
    return None


def on_reported(doc: dict[str, Any] | None, event: Envelope, now: datetime, *, key: bytes | None,
                links: list[dict[str, Any]] = (), watch_hits: list[dict[str, Any]] = (),  # type: ignore[assignment]
                more_links: int = 0, indexed: dict[str, list[str]] | None = None) -> Change | None:
    """A new report (or an amended one) is screened, linked and enters the queue.

    Screening reads the report opened with the case's key; the case keeps it sealed, as it arrived. `indexed`
    names the link-index entries (identifier digests, village-days) the report was filed under, so that its
    erasure can take them out again."""
    if event.type == "case.reported":
        report = parse_data(event, intake.CaseReported)
        if doc is not None:
            return None  # already have this case
    elif event.type == "case.amended":
        report = parse_data(event, intake.CaseAmended).report
        if doc is None or doc["status"] != "info_requested":
            return None
    else:
        return None
    plain = opened(report, key, event.case_id)
    result = screening.screen(plain, screening.today_of(now), [h["watch_id"] for h in watch_hits])
    screened = _event(event.case_id, result, correlation_id=event.correlation_id, causation_id=event.event_id,
                      actor=None, now=now)
    known = {link["case_id"] for link in (doc or {}).get("links", [])}
    found = [link for link in links if link["case_id"] not in known]

    def told(case_id: str, others: list[tuple[str, list[str]]]) -> Outgoing:
        payload = verification.CasesLinked(links=[verification.LinkTold(linked_case_id=other, reasons=reasons)
                                                  for other, reasons in others])
        return _event(case_id, payload, correlation_id=event.correlation_id, causation_id=event.event_id,
                      actor=None, now=now)

    # Both trails learn of the links: this case's in one event naming them all, each earlier case's in one naming
    # this case. The earlier case's document is not rewritten: its page finds this case in the link-index entries
    # it is filed under (`later_links`).
    linked = [told(event.case_id, [(link["case_id"], link["reasons"]) for link in found])] if found else []
    linked += [told(link["case_id"], [(event.case_id, link["reasons"])]) for link in found]
    fields = {
        "case_number": report.case_number,
        "village_code": report.village_code,
        "region_path": regions.path(report.village_code),
        "status": "awaiting_decision",
        "report": report.model_dump(mode="json"),
        "submission": report.submission,
        "screening": result.model_dump(mode="json"),
        "priority_rank": screening.PRIORITY_RANK[result.priority],
        "suggested_types": result.suggested_types,
        "correlation_id": event.correlation_id,
        "observed_at": report.observed_at.isoformat(),
        "links": linking.merge_links((doc or {}).get("links", []), list(links)),
        "watchlist_hits": list(watch_hits),
        "more_links": more_links,  # linked cases beyond linking.MAX_LINKS, not listed
        "index": _merged_index((doc or {}).get("index"), indexed or {}),
        "updated_at": now.isoformat(),
    }
    if doc is None:
        fields.update({"received_at": report.received_at.isoformat(), "question": None, "decision": None})
    else:
        fields["exchanges"] = answered(doc.get("exchanges", []), event, now)
    return Change(set=fields, events=[screened, *linked])


def answered(exchanges: list[dict[str, Any]], event: Envelope, now: datetime) -> list[dict[str, Any]]:
    """The questions so far, the last one with the reporter's (sealed) answer from a `case.amended`."""
    if event.type != "case.amended" or not exchanges or exchanges[-1].get("answer") is not None:
        return exchanges
    answer = parse_data(event, intake.CaseAmended).answer
    return [*exchanges[:-1], {**exchanges[-1], "answer": answer, "answered_at": now.isoformat()}]


def _merged_index(before: dict[str, list[str]] | None, added: dict[str, list[str]]) -> dict[str, list[str]]:
    before = before or {}
    return {part: list(dict.fromkeys([*before.get(part, []), *added.get(part, [])]))
            for part in ("identities", "buckets")}


def on_erased(doc: dict[str, Any] | None, now: datetime) -> Change | None:
    """After erasure the case can no longer be found by its identifiers: its link-index entries are gone (the
    store removes them), and it keeps no links and no watch-list hits."""
    if doc is None:
        return None
    screening_fields = {**doc.get("screening", {}), "watchlist_hits": []}
    return Change(set={"links": [], "more_links": 0, "watchlist_hits": [], "screening": screening_fields,
                       "index": {"identities": [], "buckets": []}, "erased_at": now.isoformat(),
                       "updated_at": now.isoformat()})


def unlink(doc: dict[str, Any] | None, erased_case_id: str, now: datetime) -> Change | None:
    """A case linked to an erased one forgets the link (it says which identifier the two shared)."""
    if doc is None or not any(link["case_id"] == erased_case_id for link in doc.get("links", [])):
        return None
    return Change(set={"links": [link for link in doc["links"] if link["case_id"] != erased_case_id],
                       "updated_at": now.isoformat()})


def opened(report: intake.CaseReported, key: bytes | None, case_id: str) -> intake.CaseReported:
    return intake.CaseReported.model_validate(crypto.open_values(report.model_dump(mode="json"), key, case_id))


def later_links(doc: dict[str, Any], entries: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The case's links to cases received after it, from the link-index entries it is filed under (`entries`:
    (identifier kind or "bucket", the entry)): a later report links to it without rewriting it."""
    mine = (doc.get("received_at") or "", doc["_id"])
    later = [(kind, ref) for kind, entry in entries for ref in linking.refs_of(entry)
             if (ref.get("received_at") or "", ref["case_id"]) > mine]
    links = linking.shared_identity_links([{**ref, "kind": kind} for kind, ref in later if kind != "bucket"])
    shared = {link["case_id"] for link in links}
    report = intake.CaseReported.model_validate(doc["report"]) if doc.get("report") else None
    links += [linking.link_of(ref, ["two reporters of the village within a day"], "corroborates")
              for kind, ref in later if kind == "bucket" and report is not None
              and linking.corroborates(report, ref, ref["case_id"] in shared)]
    return linking.merge_links([], links)


def with_later_links(doc: dict[str, Any], entries: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The case with its links both ways: those found when it was screened and those of later reports."""
    return {**doc, "links": linking.merge_links(doc.get("links", []), later_links(doc, entries))}


def on_withdrawn(doc: dict[str, Any] | None, event: Envelope, now: datetime) -> Change | None:
    if doc is None or doc["status"] not in OPEN:
        return None
    return Change(set={"status": "withdrawn", "updated_at": now.isoformat()})


def decide(doc: dict[str, Any], decision: Verify | Reject | RequestInfo, principal: Principal,
           now: datetime, seal: crypto.Sealer) -> Change:
    """Notes, reasons and questions may name people: they are sealed with the case's key (`seal`)."""
    if doc["status"] != "awaiting_decision":
        raise InvalidTransition(f"the case is {doc['status']}, not awaiting a decision")
    if seal.erased:
        raise crypto.CaseErased(doc["_id"])
    actor = _actor(principal)
    record = {"decision": decision.decision, "by": principal.sub, "name": principal.name, "role": principal.role,
              "at": now.isoformat()}
    common = {"correlation_id": doc["correlation_id"], "causation_id": None, "actor": actor, "now": now}
    if isinstance(decision, Verify):
        report = intake.CaseReported.model_validate(doc["report"])
        screened = verification.CaseScreened.model_validate(doc["screening"])
        payload = verification.CaseVerified(
            case_number=doc["case_number"], village_code=doc["village_code"],
            case_types=list(dict.fromkeys(decision.case_types)), priority=screened.priority,
            situation=screening.situation(report, screened, screening.today_of(now),
                                          person_threatened=decision.person_threatened,
                                          victim_abroad=decision.victim_abroad),
            note=seal(decision.note),
            persons=report.persons,  # still sealed, as stored
            narrative=report.narrative,
            linked_cases=[verification.LinkedCase(case_id=link["case_id"], case_number=link.get("case_number"),
                                                  reasons=link.get("reasons", [])) for link in doc.get("links", [])],
        )
        status = "verified"
        record.update({"case_types": payload.case_types, "note": payload.note})
    elif isinstance(decision, Reject):
        payload, status = verification.CaseRejected(reason=seal(decision.reason)), "rejected"
        record["reason"] = payload.reason
    else:
        payload, status = verification.CaseInfoRequested(question=seal(decision.question)), "info_requested"
        record["question"] = payload.question
    fields: dict[str, Any] = {"status": status, "decision": record, "updated_at": now.isoformat()}
    if status == "info_requested":
        fields["question"] = record["question"]
        fields["exchanges"] = [*doc.get("exchanges", []), {
            "question": record["question"], "asked_at": record["at"], "asked_by": principal.sub,
            "asked_by_name": principal.name, "answer": None, "answered_at": None}]
    return Change(set=fields, events=[_event(doc["_id"], payload, **common)])


def verifier_view(doc: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """The case with its personal data opened for the verifier of its region ([erased] after erasure)."""
    doc = {**doc, **crypto.open_values({k: doc.get(k) for k in ("report", "question", "decision", "exchanges")},
                                       key, doc["_id"])}
    return {
        "case_id": doc["_id"],
        "case_number": doc["case_number"],
        "version": doc["version"],
        "status": doc["status"],
        "village_code": doc["village_code"],
        "received_at": doc["received_at"],
        "screening": doc["screening"],
        "links": doc.get("links", []),
        "more_links": doc.get("more_links", 0),
        "watchlist_hits": doc.get("watchlist_hits", []),
        "question": doc.get("question"),
        "exchanges": doc.get("exchanges") or [],  # every question asked, each with the reporter's answer once given
        "decision": doc.get("decision"),
        "report": doc["report"],
    }


def queue_entry(doc: dict[str, Any]) -> dict[str, Any]:
    """A case's entry in the queue's own collection: what the queue filters, sorts and lists, no personal data.
    (A case that was never screened, none in practice, is kept out of the queue by its status.)"""
    s = doc.get("screening") or {}
    return {"_id": doc["_id"], "version": doc["version"], "status": doc.get("status"),
            "region_path": doc.get("region_path", []), "priority_rank": doc.get("priority_rank"),
            "received_at": doc.get("received_at"), "case_number": doc.get("case_number"),
            "village_code": doc.get("village_code"), "priority": s.get("priority"), "score": s.get("score"),
            "escalation": s.get("escalation"), "suggested_types": doc.get("suggested_types", [])}


def queue_item(entry: dict[str, Any]) -> dict[str, Any]:
    """What the queue answers of an entry (`queue_entry`)."""
    return {"case_id": entry["_id"], **{k: entry[k] for k in ("case_number", "version", "village_code", "received_at",
                                                                "priority", "score", "escalation", "suggested_types")}}


def current_state(doc: dict[str, Any]) -> dict[str, Any]:
    """What a refused decision tells of the case as it is now."""
    return queue_item(queue_entry(doc)) | {"status": doc["status"]}


class WatchEntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    kind: linking.WatchKind
    value: Annotated[str, StringConstraints(min_length=2, max_length=200)]
    note: Text | None = None


WATCHLIST = "watchlist"  # the associated data of sealed watch-list labels and notes


def watch_entry(entry: WatchEntryIn, principal: Principal, now: datetime, *, id_key: bytes,
                seal: crypto.Sealer) -> dict[str, Any]:
    """Matched by keyed hash; label and note sealed (a recruiter's name is personal data too)."""
    match = linking.watch_value(entry.kind, entry.value)  # raises ValueError for an impossible phone
    if not match:
        raise ValueError("value has nothing to match on")
    return {"_id": str(uuid.uuid4()), "kind": entry.kind, "label": seal(entry.value),
            "digest": linking.watch_digest(id_key, entry.kind, match), "note": seal(entry.note),
            "region": principal.region, "region_path": regions.path(principal.region),
            "added_by": principal.sub, "added_at": now.isoformat()}


def watch_view(doc: dict[str, Any], label_key: bytes) -> dict[str, Any]:
    shown = crypto.open_values({k: doc.get(k) for k in ("label", "note")}, label_key, WATCHLIST)
    return {k: doc[k] for k in ("kind", "region", "added_by", "added_at")} | shown | {"id": doc["_id"]}
