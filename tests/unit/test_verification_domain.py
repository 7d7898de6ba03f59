from datetime import UTC, date, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from services.verification import domain
from shared.auth import Principal
from shared.crypto import CaseErased, Sealer
from shared.contracts import intake
from tests.builders import case_reported

VERIFIER = Principal(sub="v1", name="Petugas", role="verifier", region="36.03")
NOW = datetime(2026, 11, 29, 8, tzinfo=UTC)
decision = TypeAdapter(domain.Decision)
KEY = bytes(range(32))


def _seal(doc):
    return Sealer(KEY, doc["_id"])


def _screened_doc(**report_over):
    event = case_reported(**report_over)
    change = domain.on_reported(None, event, NOW, key=KEY)
    return {"_id": event.case_id, "version": 1, **change.set}, change, event


def test_a_new_report_is_screened_into_the_queue():
    doc, change, event = _screened_doc()
    assert doc["status"] == "awaiting_decision" and doc["region_path"][-1] == "36.03.11.2009"
    [out] = change.events
    assert out.event.type == "case.screened" and out.event.causation_id == event.event_id
    assert out.event.actor is None  # screening is automatic


def test_a_second_case_reported_for_a_known_case_changes_nothing():
    doc, _, event = _screened_doc()
    assert domain.on_reported(doc, event, NOW, key=KEY) is None


@pytest.mark.parametrize(("body", "status", "event_type"), [
    ({"decision": "verify", "case_types": ["np_pmi"]}, "verified", "case.verified"),
    ({"decision": "reject", "reason": "bukan TPPO"}, "rejected", "case.rejected"),
    ({"decision": "request_info", "question": "Siapa sponsornya?"}, "info_requested", "case.info_requested"),
])
def test_each_decision_records_its_event_with_the_verifier(body, status, event_type):
    doc, _, _ = _screened_doc()
    change = domain.decide(doc, decision.validate_python(body), VERIFIER, NOW, _seal(doc))
    assert change.set["status"] == status and change.set["decision"]["by"] == "v1"
    [out] = change.events
    assert out.event.type == event_type and out.event.actor.id == "v1" and out.event.actor.role == "verifier"


@pytest.mark.parametrize("body", [
    {"decision": "verify", "case_types": []},
    {"decision": "verify", "case_types": ["unknown"]},
    {"decision": "reject"},
    {"decision": "reject", "reason": "  "},
    {"decision": "request_info"},
    {"decision": "approve"},
    {"decision": "verify", "case_types": ["tppo"], "$set": 1},
])
def test_incomplete_decisions_are_refused(body):
    with pytest.raises(ValidationError):
        decision.validate_python(body)


def test_a_decided_case_cannot_be_decided_again():
    doc, _, _ = _screened_doc()
    doc.update(domain.decide(doc, decision.validate_python({"decision": "reject", "reason": "x"}), VERIFIER, NOW,
                             _seal(doc)).set)
    with pytest.raises(domain.InvalidTransition):
        domain.decide(doc, decision.validate_python({"decision": "reject", "reason": "y"}), VERIFIER, NOW, _seal(doc))


def test_verified_case_carries_the_situation_routing_needs():
    departure = intake.Departure(planned_date=date(2026, 12, 1), destination_country="SA")
    doc, _, _ = _screened_doc(departure=departure, indicators=["distress_signal_abroad"],
                              persons=[intake.Person(person_id="p", role="potential_victim", name="A", age=16)])
    change = domain.decide(doc, decision.validate_python(
        {"decision": "verify", "case_types": ["tppo", "tppo"], "person_threatened": True}), VERIFIER, NOW, _seal(doc))
    data = change.events[0].event.data
    assert data["case_types"] == ["tppo"] and data["priority"] == "critical"
    assert data["situation"] == {"child_involved": True, "departure_planned": True, "departure_date": "2026-12-01",
                                 "person_threatened": True, "victim_abroad": True}


def test_a_withdrawn_report_leaves_the_queue_but_not_after_a_decision():
    doc, _, event = _screened_doc()
    assert domain.on_withdrawn(doc, event, NOW).set["status"] == "withdrawn"
    doc["status"] = "verified"
    assert domain.on_withdrawn(doc, event, NOW) is None


def test_questions_reasons_and_notes_leave_verification_sealed():
    doc, _, _ = _screened_doc()
    change = domain.decide(doc, decision.validate_python({"decision": "request_info", "question": "Siapa Pak Joko?"}),
                           VERIFIER, NOW, _seal(doc))
    assert "Pak Joko" not in change.events[0].event.to_json() and "Pak Joko" not in repr(change.set)
    assert domain.verifier_view({**doc, **change.set}, KEY)["question"] == "Siapa Pak Joko?"


def test_an_erased_case_cannot_be_decided():
    doc, _, _ = _screened_doc()
    for body in ({"decision": "reject", "reason": "x"}, {"decision": "verify", "case_types": ["tppo"]}):
        with pytest.raises(CaseErased):
            domain.decide(doc, decision.validate_python(body), VERIFIER, NOW, Sealer(None, doc["_id"]))
