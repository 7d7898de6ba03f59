import json
import uuid

import pytest

from shared import topics
from shared.contracts import intake, verification
from shared.contracts.envelope import ContractError, Envelope, new_event, parse_data, registered_types


def _withdrawn() -> Envelope:
    case_id = str(uuid.uuid4())
    return new_event(intake.CaseWithdrawn(reason="salah lapor"), case_id=case_id, producer="intake",
                     actor=None, correlation_id=case_id, causation_id=None)


def test_envelope_round_trips_through_json_bytes():
    event = _withdrawn()
    again = Envelope.from_bytes(event.to_json().encode())
    assert again == event
    assert parse_data(again, intake.CaseWithdrawn).reason == "salah lapor"


def test_headers_repeat_type_id_case_and_correlation():
    event = _withdrawn()
    assert event.headers() == {topics.HEADER_EVENT_TYPE: "case.withdrawn", topics.HEADER_EVENT_ID: event.event_id,
                               topics.HEADER_CASE_ID: event.case_id, topics.HEADER_CORRELATION_ID: event.case_id}


def test_consumers_ignore_fields_added_by_a_newer_producer():
    body = json.loads(_withdrawn().to_json())
    body["new_top_level_field"] = 1
    body["data"]["extra"] = "x"
    parsed = Envelope.from_bytes(json.dumps(body))
    assert parse_data(parsed, intake.CaseWithdrawn).reason == "salah lapor"


@pytest.mark.parametrize("raw", [b"not json", b"{}", b"[]", b"\xff\xfe", b'{"event_id": 1}'])
def test_anything_but_an_envelope_is_a_contract_error(raw):
    with pytest.raises(ContractError):
        Envelope.from_bytes(raw)


def test_payload_of_another_type_is_a_contract_error():
    with pytest.raises(ContractError):
        parse_data(_withdrawn(), verification.CaseRejected)


def test_invalid_payload_is_a_contract_error():
    event = _withdrawn().model_copy(update={"data": {"reason": None}})
    with pytest.raises(ContractError):
        parse_data(event, intake.CaseWithdrawn)


def test_every_event_type_of_the_design_has_a_contract():
    designed = {
        "case.reported", "case.amended", "case.withdrawn",
        "case.screened", "case.linked", "case.info_requested", "case.verified", "case.rejected",
        "referral.created", "referral.acknowledged", "referral.accepted", "referral.declined", "referral.updated",
        "referral.escalated", "referral.closed", "case.closed",
        "case.viewed", "case.exported", "case.searched", "case.erased", "cases.listed",
        "account.created", "account.changed", "account.disabled", "account.password_reset", "login.succeeded",
        "login.failed", "session.revoked",
    }
    assert {t for t, _ in registered_types()} == designed
