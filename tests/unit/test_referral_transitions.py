"""A referral's life: opened from `case.verified`, then created -> acknowledged -> accepted -> updated* -> closed,
or acknowledged -> declined; everything else is refused."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.referral import domain
from shared.auth import Principal
from shared.crypto import CaseErased, Sealer
from shared.contracts.envelope import ContractError, new_event
from shared.contracts.verification import CaseRejected
from shared.outbox import Change
from tests.builders import case_verified

NOW = datetime(2026, 11, 29, 8, tzinfo=UTC)
BP3MI = Principal(sub="inv-1", name="Petugas BP3MI", role="investigator", region="36", unit="bp3mi_banten")
SEAL = Sealer(bytes(range(32)), "case")


_verified = case_verified


def _opened(**kw):
    event = _verified(**kw)
    return event, domain.open_referrals(event, NOW)


def _doc(status="created"):
    _, [(doc, _)] = _opened()
    return {**doc, "version": 1, "status": status}


def _apply(doc, change: Change):
    """What the store does with a change, so a test can walk a referral through several steps."""
    out = {**doc, **change.set, "version": doc["version"] + 1}
    for field, value in change.push.items():
        out[field] = [*doc.get(field, []), value]
    return out


ACTIONS = {
    "acknowledge": lambda doc: domain.acknowledge(doc, BP3MI, NOW),
    "accept": lambda doc: domain.accept(doc, BP3MI, NOW),
    "decline": lambda doc: domain.decline(doc, BP3MI, domain.Decline(reason="bukan wewenang kami"), NOW, SEAL),
    "update": lambda doc: domain.record_update(doc, BP3MI, domain.Update(note="korban ditemui"), NOW, SEAL),
    "close": lambda doc: domain.close(doc, BP3MI, domain.Close(outcome="departure_deferred"), NOW, SEAL),
}
STATUSES = ("created", "acknowledged", "accepted", "declined", "closed")
ALLOWED = {("created", "acknowledge"): "acknowledged", ("acknowledged", "accept"): "accepted",
           ("acknowledged", "decline"): "declined", ("accepted", "update"): "accepted",
           ("accepted", "close"): "closed"}
EVENT_OF = {"acknowledge": "referral.acknowledged", "accept": "referral.accepted", "decline": "referral.declined",
            "update": "referral.updated", "close": "referral.closed"}


def test_a_verified_case_opens_one_referral_per_agency_with_its_created_event():
    event, opened = _opened(case_types=("np_pmi", "tppo"), departure_planned=True)
    assert [doc["agency_id"] for doc, _ in opened] == ["polresta_tangerang", "bp3mi_banten", "tpi_soekarno_hatta"]
    for doc, [out] in opened:
        assert doc["_id"] == doc["referral_id"] == domain.referral_id_for(event.case_id, doc["agency_id"])
        assert doc["status"] == "created" and doc["milestones"] == [] and doc["case_id"] == event.case_id
        assert doc["region_path"] == ["36", "36.03", "36.03.11", "36.03.11.2009"]
        assert doc["deadlines"] == {"acknowledge_by": (NOW + timedelta(hours=24)).isoformat(),
                                    "first_update_by": (NOW + timedelta(hours=72)).isoformat()}
        created = out.event
        assert out.topic == "waspada.referral.v1" and created.type == "referral.created"
        assert created.case_id == event.case_id and created.correlation_id == event.correlation_id
        assert created.causation_id == event.event_id and created.actor is None and created.producer == "referral"
        assert created.data["referral_id"] == doc["_id"] and created.data["agency_id"] == doc["agency_id"]
        assert created.data["priority"] == "high" and created.data["fallback"] is False


def test_referral_ids_are_stable_per_case_and_agency_so_a_redelivery_opens_nothing_new():
    event, first = _opened()
    again = domain.open_referrals(event, NOW + timedelta(minutes=5))
    assert [d["_id"] for d, _ in first] == [d["_id"] for d, _ in again]
    assert domain.referral_id_for(str(uuid.uuid4()), "bp3mi_banten") != first[0][0]["_id"]


def test_deadlines_come_from_the_priority():
    _, [(doc, _)] = _opened(priority="critical")
    assert doc["deadlines"]["acknowledge_by"] == (NOW + timedelta(hours=4)).isoformat()
    assert doc["priority"] == "critical" and doc["priority_rank"] == 0


def test_a_fallback_referral_is_flagged():
    _, [(doc, [out])] = _opened(case_types=("tppo",), village="36.01.01.2001")
    assert doc["agency_id"] == "polda_banten" and doc["fallback"] is True and out.event.data["fallback"] is True


def test_a_verified_case_without_a_village_code_is_a_contract_error():
    with pytest.raises(ContractError):
        domain.open_referrals(_verified(village="Rajeg"), NOW)


def test_other_event_types_are_not_a_verified_case():
    event = new_event(CaseRejected(reason="x"), case_id="c", producer="verification", actor=None,
                      correlation_id="c", causation_id=None)
    with pytest.raises(ContractError):
        domain.open_referrals(event, NOW)


@pytest.mark.parametrize(("status", "action"), list(ALLOWED))
def test_every_allowed_transition_records_its_event_and_history(status, action):
    doc = _doc(status)
    change = ACTIONS[action](doc)
    assert change.set["status"] == ALLOWED[(status, action)]
    [out] = change.events
    assert out.event.type == EVENT_OF[action] and out.event.case_id == doc["case_id"]
    assert out.event.actor.id == "inv-1" and out.event.actor.unit == "bp3mi_banten"
    assert out.event.correlation_id == doc["correlation_id"]
    assert out.event.data["referral_id"] == doc["_id"] and out.event.data["agency_id"] == "bp3mi_banten"
    assert change.push["history"]["action"] == action and change.push["history"]["by"] == "inv-1"
    assert change.push["history"]["by_name"] == "Petugas BP3MI"  # the staff page names who acted
    assert change.push["history"]["event_id"] == out.event.event_id


@pytest.mark.parametrize(("status", "action"),
                         [(s, a) for s in STATUSES for a in ACTIONS if (s, a) not in ALLOWED])
def test_every_other_transition_is_refused(status, action):
    with pytest.raises(domain.InvalidTransition, match=status):
        ACTIONS[action](_doc(status))


def test_a_full_walk_keeps_milestones_outcome_and_the_first_update_time():
    doc = _doc()
    for step in ("acknowledge", "accept"):
        doc = _apply(doc, ACTIONS[step](doc))
    lp = domain.Update.model_validate({"note": "LP dibuat", "milestone": {"kind": "lp_filed",
                                                                          "lp_number": "LP/B/123/XI/2026"}})
    change = domain.record_update(doc, BP3MI, lp, NOW + timedelta(hours=1), SEAL)
    assert change.events[0].event.data["milestone"] == {"kind": "lp_filed", "lp_number": "LP/B/123/XI/2026"}
    doc = _apply(doc, change)
    doc = _apply(doc, domain.record_update(doc, BP3MI, domain.Update.model_validate(
        {"milestone": {"kind": "sp2hp_sent", "sent_on": "2026-12-01"}}), NOW + timedelta(hours=2), SEAL))
    assert doc["first_update_at"] == (NOW + timedelta(hours=1)).isoformat()
    assert [m["kind"] for m in doc["milestones"]] == ["lp_filed", "sp2hp_sent"]
    doc = _apply(doc, domain.close(doc, BP3MI, domain.Close(outcome="police_report_filed"), NOW, SEAL))
    view = domain.referral_view(doc)
    assert view["status"] == "closed" and view["outcome"] == "police_report_filed"
    assert [h["action"] for h in view["history"]] == ["create", "acknowledge", "accept", "update", "update", "close"]
    assert [h["by_name"] for h in view["history"]] == [None] + ["Petugas BP3MI"] * 5
    assert {"referral_id", "case_id", "agency_id", "status", "priority", "deadlines", "milestones"} <= set(view)


def test_a_decline_keeps_its_reason():
    doc = _apply(_doc("acknowledged"), ACTIONS["decline"](_doc("acknowledged")))
    assert doc["status"] == "declined" and SEAL.open(doc["decline_reason"]) == "bukan wewenang kami"
    assert "bukan wewenang" not in repr(doc)


@pytest.mark.parametrize(("model", "body"), [
    (domain.Acknowledge, {"note": "x"}),
    (domain.Decline, {}),
    (domain.Decline, {"reason": "   "}),
    (domain.Close, {"outcome": "solved"}),
    (domain.Close, {"outcome": "other"}),
    (domain.Close, {"outcome": "transferred", "$set": {"status": "created"}}),
    (domain.Update, {}),
    (domain.Update, {"milestone": {"kind": "note"}}),
    (domain.Update, {"note": "x", "milestone": {"kind": "arrested"}}),
    (domain.Update, {"note": "x", "milestone": {"kind": "lp_filed"}}),
    (domain.Update, {"note": "x", "milestone": {"kind": "lp_filed", "lp_number": "1", "lp_model": "C"}}),
    (domain.Update, {"note": "x", "milestone": {"kind": "sp2hp_sent", "extra": 1}}),
])
def test_bad_request_bodies_are_refused(model, body):
    with pytest.raises(ValidationError):
        model.model_validate(body)


@pytest.mark.parametrize("body", [
    {"outcome": "police_report_filed"}, {"outcome": "departure_deferred"}, {"outcome": "victim_handed_to_services"},
    {"outcome": "no_offence_found"}, {"outcome": "transferred"}, {"outcome": "other", "note": "pindah domisili"},
])
def test_every_listed_outcome_closes(body):
    assert domain.close(_doc("accepted"), BP3MI, domain.Close.model_validate(body), NOW,
                        SEAL).set["status"] == "closed"


@pytest.mark.parametrize("action", ["decline", "update", "close_with_note"])
def test_text_written_about_an_erased_case_is_refused_never_stored_in_plaintext(action):
    erased = Sealer(None, "case")
    doc = _doc("acknowledged" if action == "decline" else "accepted")
    with pytest.raises(CaseErased):
        {"decline": lambda: domain.decline(doc, BP3MI, domain.Decline(reason="Siti pindah"), NOW, erased),
         "update": lambda: domain.record_update(doc, BP3MI, domain.Update(note="Siti ditemui"), NOW, erased),
         "close_with_note": lambda: domain.close(doc, BP3MI, domain.Close(outcome="other", note="Siti pulang"), NOW,
                                                 erased)}[action]()
    # what carries no text still moves an erased case's referral along
    assert domain.close(doc if action != "decline" else _doc("accepted"), BP3MI,
                        domain.Close(outcome="transferred"), NOW, erased).set["status"] == "closed"
