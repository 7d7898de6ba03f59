"""Deadlines that escalate once per breach, declined referrals re-routed (never lost) and a case that closes when
all its referrals are closed: pure decisions, no clock, database or broker."""

from datetime import UTC, datetime, timedelta

import pytest

from services.referral import domain, routing
from shared.auth import Principal
from shared.crypto import Sealer
from shared.contracts.envelope import new_event
from shared.contracts.referral import ReferralClosed, ReferralDeclined
from shared.outbox import Change
from tests.builders import case_verified

NOW = datetime(2026, 11, 29, 8, tzinfo=UTC)
SEAL = Sealer(bytes(range(32)), "case")
HOUR = timedelta(hours=1)


def _principal(unit: str) -> Principal:
    return Principal(sub=f"inv-{unit}", name="Petugas", role="investigator", region="36", unit=unit)


_verified = case_verified


def _open(**kw):
    event = _verified(**kw)
    return event, domain.open_referrals(event, NOW)


def _doc(**kw):
    _, [(doc, _), *_rest] = _open(**kw)
    return {**doc, "version": 1}


def _apply(doc, change: Change):
    """What the store does with a change."""
    out = {**doc, **change.set, "version": doc["version"] + 1}
    for field, value in change.push.items():
        out[field] = [*doc.get(field, []), value]
    return out


def _walk(doc, *steps, at=NOW):
    by = _principal(doc["agency_id"])
    for step in steps:
        change = {
            "acknowledge": lambda d: domain.acknowledge(d, by, at),
            "accept": lambda d: domain.accept(d, by, at),
            "update": lambda d: domain.record_update(d, by, domain.Update(note="SP2HP dikirim"), at, SEAL),
            "decline": lambda d: domain.decline(d, by, domain.Decline(reason="bukan wewenang kami"), at, SEAL),
            "close": lambda d: domain.close(d, by, domain.Close(outcome="police_report_filed"), at, SEAL),
        }[step](doc)
        doc = _apply(doc, change)
    return doc


# --- deadlines ---------------------------------------------------------------------------------------------


def test_the_deadline_owed_follows_the_referral_through_its_life():
    doc = _doc(priority="high")  # 24 h to acknowledge, 72 h to a first update, then every 168 h
    assert domain.next_deadline(doc) == ("acknowledge", NOW + 24 * HOUR)
    assert doc["next_deadline"] == "acknowledge" and doc["next_due_ts"] == (NOW + 24 * HOUR).timestamp()
    assert doc["escalation_pending"] is True
    doc = _walk(doc, "acknowledge")
    assert domain.next_deadline(doc) == ("first_update", NOW + 72 * HOUR)
    doc = _walk(doc, "accept")
    assert domain.next_deadline(doc) == ("first_update", NOW + 72 * HOUR)
    doc = _walk(doc, "update", at=NOW + 10 * HOUR)
    assert domain.next_deadline(doc) == ("update_1", NOW + 178 * HOUR)
    doc = _walk(doc, "update", at=NOW + 100 * HOUR)
    assert domain.next_deadline(doc) == ("update_2", NOW + 268 * HOUR)
    assert doc["next_due_ts"] == (NOW + 268 * HOUR).timestamp()
    doc = _walk(doc, "close")
    assert domain.next_deadline(doc) is None and doc["next_due_ts"] is None and doc["escalation_pending"] is False


def test_periodic_updates_come_from_the_data_file_per_priority():
    every = {p: d.update_every for p, d in routing.deadlines().items()}
    assert every["critical"] < every["high"] < every["medium"] < every["low"]
    doc = _walk(_doc(priority="critical"), "acknowledge", "accept", "update")
    assert domain.next_deadline(doc) == ("update_1", NOW + every["critical"])


def test_nothing_escalates_before_or_at_the_deadline():
    doc = _doc(priority="critical")
    assert domain.escalate(doc, NOW + 4 * HOUR) is None
    assert domain.overdue(doc, NOW + 4 * HOUR) is None


def test_a_breached_deadline_escalates_naming_the_late_unit_and_by_how_much():
    doc = _doc(priority="critical")
    change = domain.escalate(doc, NOW + 5 * HOUR + timedelta(seconds=30))
    [out] = change.events
    assert out.topic == "waspada.referral.v1" and out.event.type == "referral.escalated"
    assert out.event.data["agency_id"] == doc["agency_id"] == "bp3mi_banten"
    assert out.event.data["deadline"] == "acknowledge" and out.event.data["overdue_seconds"] == 3630
    assert out.event.data["referral_id"] == doc["_id"] and out.event.case_id == doc["case_id"]
    assert out.event.correlation_id == doc["correlation_id"]
    assert change.push["escalations"]["deadline"] == "acknowledge"
    assert change.set["escalation_pending"] is False  # written with the event, so the checker skips it next time


def test_a_breach_escalates_once_however_often_it_is_checked():
    doc = _doc(priority="critical")
    doc = _apply(doc, domain.escalate(doc, NOW + 5 * HOUR))
    assert domain.escalate(doc, NOW + 6 * HOUR) is None
    assert domain.escalate(doc, NOW + 600 * HOUR) is None
    # still late, still on the supervisors' list, with the time it is late by now
    assert domain.overdue(doc, NOW + 6 * HOUR) == {"deadline": "acknowledge", "due_at": (NOW + 4 * HOUR).isoformat(),
                                                    "overdue_seconds": 7200}


def test_each_missed_deadline_is_its_own_breach():
    doc = _doc(priority="critical")
    doc = _apply(doc, domain.escalate(doc, NOW + 5 * HOUR))
    doc = _walk(doc, "acknowledge", at=NOW + 6 * HOUR)
    assert doc["escalation_pending"] is True
    doc = _apply(doc, domain.escalate(doc, NOW + 25 * HOUR))
    assert [e["deadline"] for e in doc["escalations"]] == ["acknowledge", "first_update"]
    doc = _walk(doc, "accept", "update", at=NOW + 26 * HOUR)
    assert domain.escalate(doc, NOW + 27 * HOUR) is None
    late = domain.escalate(doc, NOW + 26 * HOUR + routing.deadlines()["critical"].update_every + HOUR)
    assert late.events[0].event.data["deadline"] == "update_1"


def test_declined_and_closed_referrals_owe_nothing():
    assert domain.escalate(_walk(_doc(), "acknowledge", "decline"), NOW + 1000 * HOUR) is None
    assert domain.escalate(_walk(_doc(), "acknowledge", "accept", "close"), NOW + 1000 * HOUR) is None


# --- re-routing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("function", "declined_by", "expected"), [
    ("police", ["polresta_tangerang"], "polda_banten"),
    ("police", ["polresta_tangerang", "polda_banten"], "bareskrim_ppa_ppo"),
    ("police", ["polresta_tangerang", "polda_banten", "bareskrim_ppa_ppo"], None),
    ("migrant_worker_agency", ["bp3mi_banten"], "kp2mi"),
    ("immigration_office", ["kanim_tangerang"], None),  # listed for regency and province: nobody wider
    ("witness_protection", ["lpsk"], None),
])
def test_a_declined_function_goes_to_the_next_wider_unit(function, declined_by, expected):
    nxt = routing.next_unit(function, "36.03.11.2009", declined_by)
    assert (nxt.agency_id if nxt else None) == expected


def test_a_decline_names_the_referral_that_replaces_it_with_an_id_derived_from_it():
    doc = _doc(case_types=("tppo",))
    assert doc["agency_id"] == "polresta_tangerang"
    change = domain.decline(_walk(doc, "acknowledge"), _principal("polresta_tangerang"),
                            domain.Decline(reason="wilayah Polda"), NOW, SEAL)
    data = change.events[0].event.data
    assert data["rerouted_to_agency_id"] == "polda_banten" and data["needs_supervisor"] is False
    assert data["rerouted_to_referral_id"] == domain.rerouted_id_for(doc["_id"], "polda_banten")
    assert change.set["rerouted_to"] == {"referral_id": data["rerouted_to_referral_id"], "agency_id": "polda_banten"}


def test_the_replacement_referral_is_the_same_however_often_it_is_built():
    declined = _walk(_doc(case_types=("tppo",)), "acknowledge", "decline")
    event = new_event(ReferralDeclined(referral_id=declined["_id"], agency_id="polresta_tangerang", reason="x",
                                       rerouted_to_referral_id=declined["rerouted_to"]["referral_id"],
                                       rerouted_to_agency_id="polda_banten"),
                      case_id=declined["case_id"], producer="referral", actor=None,
                      correlation_id=declined["correlation_id"], causation_id=None, occurred_at=NOW + HOUR)
    (new, [out]), (again, _) = domain.reroute(declined, event), domain.reroute(declined, event)
    assert new == {**again, "history": new["history"]} and new["_id"] == again["_id"]
    assert new["_id"] == declined["rerouted_to"]["referral_id"] != declined["_id"]
    assert new["agency_id"] == "polda_banten" and new["status"] == "created" and new["case_id"] == declined["case_id"]
    assert new["rerouted_from"] == declined["_id"] and new["declined_by"] == ["polresta_tangerang"]
    assert new["deadlines"]["acknowledge_by"] == (NOW + HOUR + 24 * HOUR).isoformat()  # from the decline's time
    assert out.event.type == "referral.created" and out.event.data["rerouted_from"] == declined["_id"]
    assert out.event.causation_id == event.event_id
    # and it can itself be declined further up the chain
    nxt = routing.next_unit(new["function"], new["village_code"], [*new["declined_by"], new["agency_id"]])
    assert nxt.agency_id == "bareskrim_ppa_ppo"


def test_a_decline_with_nobody_left_needs_a_supervisor():
    doc = _doc(case_types=("tppm",))
    assert doc["agency_id"] == "kanim_tangerang"
    declined = _walk(doc, "acknowledge", "decline")
    assert declined["needs_supervisor"] is True and declined["rerouted_to"] is None
    assert declined["escalation_pending"] is False and declined["next_due_ts"] is None


# --- the case closes when all its referrals have --------------------------------------------------------


def _referral_event(case_id, payload):
    return new_event(payload, case_id=case_id, producer="referral", actor=None, correlation_id=f"corr-{case_id}",
                     causation_id=None)


def _closed(case_id, referral_id, agency_id, outcome="police_report_filed"):
    return _referral_event(case_id, ReferralClosed(referral_id=referral_id, agency_id=agency_id, outcome=outcome))


def _store(case, change):
    return {**(case or {}), **change.set}


def test_a_case_closes_once_when_its_last_referral_closes():
    verified, opened = _open(departure_planned=True)
    case = _store(None, domain.case_opened(None, verified, opened, NOW))
    (bp3mi, _), (tpi, _) = opened
    first = domain.case_followed(
        case, _closed(verified.case_id, bp3mi["_id"], "bp3mi_banten", "departure_deferred"), NOW)
    assert first.events == [] and first.set["closed"] is False
    case = _store(case, first)
    last = domain.case_followed(case, _closed(verified.case_id, tpi["_id"], "tpi_soekarno_hatta"), NOW)
    [out] = last.events
    assert out.event.type == "case.closed" and out.event.case_id == verified.case_id
    assert out.event.data["outcomes"] == {"bp3mi_banten": "departure_deferred",
                                          "tpi_soekarno_hatta": "police_report_filed"}
    case = _store(case, last)
    again = domain.case_followed(case, _closed(verified.case_id, tpi["_id"], "tpi_soekarno_hatta"), NOW)
    assert again.events == [] and again.set["closed"] is True


def test_a_rerouted_referral_keeps_its_case_open_until_the_replacement_closes():
    verified, [(police, _)] = _open(case_types=("tppo",))
    case = _store(None, domain.case_opened(None, verified, [(police, [])], NOW))
    replacement = domain.rerouted_id_for(police["_id"], "polda_banten")
    declined = _referral_event(verified.case_id, ReferralDeclined(
        referral_id=police["_id"], agency_id="polresta_tangerang", reason="x",
        rerouted_to_referral_id=replacement, rerouted_to_agency_id="polda_banten"))
    change = domain.case_followed(case, declined, NOW)
    assert change.events == [] and change.set["referrals"][replacement]["state"] == "open"
    case = _store(case, change)
    [out] = domain.case_followed(case, _closed(verified.case_id, replacement, "polda_banten"), NOW).events
    assert out.event.data["outcomes"] == {"polda_banten": "police_report_filed"}


def test_a_referral_waiting_for_a_supervisor_keeps_its_case_open():
    verified, [(kanim, _), (police, _)] = _open(case_types=("tppm",))
    case = _store(None, domain.case_opened(None, verified, [(kanim, []), (police, [])], NOW))
    stuck = _referral_event(verified.case_id, ReferralDeclined(referral_id=kanim["_id"], agency_id="kanim_tangerang",
                                                               reason="x", needs_supervisor=True))
    case = _store(case, domain.case_followed(case, stuck, NOW))
    assert domain.case_followed(case, _closed(verified.case_id, police["_id"], "polresta_tangerang"), NOW).events == []


def test_events_out_of_order_never_reopen_a_referral_or_close_a_case_early():
    verified, opened = _open(departure_planned=True)
    (bp3mi, _), (tpi, _) = opened
    # a referral's closure seen before the case was listed: recorded, but an unlisted case never closes
    early = domain.case_followed(None, _closed(verified.case_id, bp3mi["_id"], "bp3mi_banten"), NOW)
    assert early.events == [] and early.set["seeded"] is False
    case = _store(None, early)
    # the listing arrives afterwards and does not undo the closure
    case = _store(case, domain.case_opened(case, verified, opened, NOW))
    assert case["referrals"][bp3mi["_id"]]["state"] == "closed" and case["referrals"][tpi["_id"]]["state"] == "open"
    [out] = domain.case_followed(case, _closed(verified.case_id, tpi["_id"], "tpi_soekarno_hatta"), NOW).events
    assert out.event.type == "case.closed"


def test_other_referral_events_do_not_touch_the_case():
    assert domain.case_followed({}, _referral_event("c", ReferralClosed(referral_id="r", agency_id="a", outcome="x"))
                                .model_copy(update={"type": "referral.updated"}), NOW) is None
