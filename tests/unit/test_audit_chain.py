"""The trail's hash chain and its verification, and the case read model the events build (pure, no I/O)."""

import copy
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.audit import domain
from shared.contracts.envelope import new_event
from shared.contracts.intake import CaseWithdrawn
from shared.contracts.verification import CaseRejected, CaseVerified, Situation
from tests.builders import PILOT_VILLAGE, case_reported

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def _events(case_id: str, n: int):
    first = case_reported(case_id)
    rest = [new_event(CaseRejected(reason=f"alasan {i}"), case_id=case_id, producer="verification", actor=None,
                      correlation_id=case_id, causation_id=first.event_id) for i in range(n - 1)]
    return [first, *rest]


def _chain(n: int = 4) -> list[dict]:
    entries: list[dict] = []
    for i, event in enumerate(_events(str(uuid.uuid4()), n)):
        entries.append(domain.chain_entry(event, entries[-1] if entries else None, T0 + timedelta(seconds=i)))
    return entries


def _stored(entries: list[dict]) -> list[dict]:
    """What the database hands back: a copy with an _id, read in seq order."""
    return [{**copy.deepcopy(e), "_id": f"oid-{e['seq']}"} for e in entries]


def test_entries_are_numbered_from_one_and_each_links_to_the_previous_hash():
    entries = _chain(3)
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev_hash"] == "0" * 64
    assert entries[1]["prev_hash"] == entries[0]["hash"] and entries[2]["prev_hash"] == entries[1]["hash"]


def test_the_hash_is_sha256_over_prev_hash_and_the_canonical_json_of_the_entry():
    entry = _chain(1)[0]
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert entry["hash"] == hashlib.sha256(("0" * 64 + canonical).encode()).hexdigest()
    assert set(body) == {"case_id", "seq", "event_id", "type", "event", "recorded_at", "prev_hash"}


def test_an_intact_chain_is_valid():
    entries = _stored(_chain(4))
    assert domain.verify_chain(entries) == {"valid": True, "entries": 4, "first_broken_seq": None}


def test_an_empty_trail_is_valid():
    assert domain.verify_chain([]) == {"valid": True, "entries": 0, "first_broken_seq": None}


@pytest.mark.parametrize("tamper", [
    lambda e: e["event"]["data"].update(reason="diubah"),
    lambda e: e.update(recorded_at="2020-01-01T00:00:00.000000+00:00"),
    lambda e: e["event"].update(actor={"id": "someone-else", "role": "verifier"}),
    lambda e: e.update(type="case.verified"),
])
def test_a_changed_field_breaks_the_chain_at_that_entry(tamper):
    entries = _stored(_chain(4))
    tamper(entries[2])
    assert domain.verify_chain(entries) == {"valid": False, "entries": 4, "first_broken_seq": 3}


def test_a_deleted_middle_entry_breaks_the_chain_at_the_missing_seq():
    entries = _stored(_chain(4))
    del entries[1]
    assert domain.verify_chain(entries) == {"valid": False, "entries": 3, "first_broken_seq": 2}


def test_a_reordered_pair_breaks_the_chain_at_the_first_of_the_pair():
    entries = _stored(_chain(4))
    entries[1], entries[2] = entries[2], entries[1]
    assert domain.verify_chain(entries)["first_broken_seq"] == 2


def test_swapped_seq_numbers_break_the_chain_even_when_read_back_in_seq_order():
    entries = _stored(_chain(4))
    entries[1]["seq"], entries[2]["seq"] = 3, 2
    assert domain.verify_chain(sorted(entries, key=lambda e: e["seq"]))["first_broken_seq"] == 2


def test_a_changed_hash_breaks_the_chain_at_that_entry():
    entries = _stored(_chain(4))
    entries[1]["hash"] = "f" * 64
    assert domain.verify_chain(entries)["first_broken_seq"] == 2


def test_a_chain_rewritten_with_recomputed_hashes_from_a_wrong_prev_hash_is_broken():
    entries = _stored(_chain(3))
    entries[1]["prev_hash"] = "1" * 64
    entries[1]["hash"] = domain.chain_hash(entries[1]["prev_hash"], entries[1])
    assert domain.verify_chain(entries)["first_broken_seq"] == 2


def test_a_value_of_the_wrong_type_breaks_the_chain_instead_of_raising():
    entries = _stored(_chain(2))
    entries[1]["event"]["data"] = {"reason": datetime(2026, 1, 1)}  # not JSON at all
    assert domain.verify_chain(entries)["first_broken_seq"] == 2
    entries = _stored(_chain(2))
    entries[1]["seq"] = 2.0
    assert domain.verify_chain(entries)["first_broken_seq"] == 2


def test_a_deleted_last_entry_shows_against_the_recorded_head():
    entries = _stored(_chain(3))
    head = domain.TrailHead(3, entries[2]["hash"])
    assert domain.verify_chain(entries, head)["valid"] is True
    assert domain.verify_chain(entries[:2], head) == {"valid": False, "entries": 2, "first_broken_seq": 3}


def test_a_head_that_lags_behind_the_trail_is_not_a_break():
    entries = _stored(_chain(3))
    assert domain.verify_chain(entries, domain.TrailHead(2, entries[1]["hash"]))["valid"] is True
    assert domain.verify_chain(entries, domain.TrailHead(2, "e" * 64))["first_broken_seq"] == 2


def test_event_json_the_database_cannot_hold_is_stored_reversibly_and_hashes_the_same_when_read_back():
    data = {"a.b": 1, "$where": "x", "100%": [[1, 2], [3]], "%list": -0.0, "plain": {"k.k": [{"x": [[]]}]}}
    stored = domain.to_storable(data)
    keys = json.dumps(stored)
    assert ".b" not in keys and '"$' not in keys
    assert all(not isinstance(item, list) for item in stored["100%25"])
    assert domain.from_storable(stored) == {**data, "%list": 0.0}
    event = case_reported().model_copy(update={"data": data})
    entry = domain.chain_entry(event, None, T0)
    assert domain.verify_chain([json.loads(json.dumps(entry))])["valid"] is True
    assert domain.trail_view(entry, None)["data"] == {**data, "%list": 0.0}


def test_the_trail_view_shows_the_envelope_fields_of_each_entry():
    first = _chain(1)[0]
    view = domain.trail_view(first, None)
    assert view["seq"] == 1 and view["type"] == "case.reported" and view["producer"] == "intake"
    assert view["hash"] == first["hash"] and view["prev_hash"] == "0" * 64
    assert view["correlation_id"] == first["case_id"] and view["data"]["village_code"] == PILOT_VILLAGE
    assert set(view) == {"seq", "event_id", "type", "occurred_at", "recorded_at", "actor", "producer",
                         "correlation_id", "causation_id", "prev_hash", "hash", "data"}


def test_a_reported_case_gets_its_region_path_and_a_verified_case_its_types():
    reported = case_reported()
    facets = {u.facet: u.fields for u in domain.case_updates(reported)}
    assert facets["place"]["region_path"] == ["36", "36.03", "36.03.11", PILOT_VILLAGE]
    assert facets["status"] == {"status": "reported"}
    assert facets["reported"]["reported_at"] == domain.timestamp(
        datetime.fromisoformat(reported.data["received_at"]))
    verified = new_event(CaseVerified(case_number="3603-2026-000001", village_code=PILOT_VILLAGE,
                                      case_types=["tppo", "np_pmi"], priority="high", situation=Situation()),
                         case_id=reported.case_id, producer="verification", actor=None,
                         correlation_id=reported.case_id, causation_id=None)
    facets = {u.facet: u.fields for u in domain.case_updates(verified)}
    assert facets["status"] == {"status": "verified"} and facets["types"] == {"types": ["np_pmi", "tppo"]}


def test_events_that_say_nothing_about_the_case_change_nothing_and_odd_data_never_raises():
    withdrawn = new_event(CaseWithdrawn(reason="x"), case_id="c", producer="intake", actor=None,
                          correlation_id="c", causation_id=None)
    assert [(u.facet, u.fields) for u in domain.case_updates(withdrawn)] == [("status", {"status": "withdrawn"})]
    odd = case_reported().model_copy(update={"data": {"village_code": 36, "received_at": "kemarin"}})
    assert {u.facet for u in domain.case_updates(odd)} == {"reported", "status"}
    viewed = odd.model_copy(update={"type": "case.viewed", "data": {}})
    assert domain.case_updates(viewed) == []


def test_stats_count_a_case_once_per_type_and_sum_villages_into_districts():
    stats = domain.stats_view(
        "36.03",
        [{"_id": "verified", "n": 2}, {"_id": "reported", "n": 1}],
        [{"_id": ["np_pmi", "tppo"], "n": 1}, {"_id": ["np_pmi"], "n": 1}, {"_id": [], "n": 1}],
        [{"_id": "36.03.11.2009", "n": 2}, {"_id": "36.03.11.2002", "n": 1}],
    )
    assert stats["total"] == 3 and stats["by_status"] == {"reported": 1, "verified": 2}
    assert stats["by_type"] == {"np_pmi": 2, "tppo": 1}
    assert stats["by_district"] == {"36.03.11": 3}


def test_a_chain_checked_from_an_entry_found_intact_before_catches_what_changed_after_it():
    entries = _chain(6)
    head = domain.TrailHead(6, entries[-1]["hash"])
    mark = (3, entries[2]["hash"])
    assert domain.verify_chain(_stored(entries[3:]), head, after=mark) == \
        {"valid": True, "entries": 6, "first_broken_seq": None}
    changed = _stored(entries[3:])
    changed[1]["event"]["data"]["reason"] = "diubah"
    assert domain.verify_chain(changed, head, after=mark)["first_broken_seq"] == 5
    assert domain.verify_chain(_stored(entries[3:5]), head, after=mark)["first_broken_seq"] == 6  # the last deleted
    assert domain.verify_chain([], domain.TrailHead(3, entries[2]["hash"]), after=mark)["valid"]  # nothing new
    assert not domain.verify_chain([], domain.TrailHead(3, "f" * 64), after=mark)["valid"]


def test_a_directory_entry_carries_its_block_outside_its_hash_and_a_wrong_block_breaks_the_chain():
    entries = []
    for i, event in enumerate(_events(str(uuid.uuid4()), 3)):
        entries.append(domain.directory_entry(event, entries[-1] if entries else None, T0 + timedelta(seconds=i)))
    assert [e["block"] for e in entries] == [0, 0, 0] and domain.directory_block(101) == 1
    legacy = [{k: v for k, v in e.items() if k != "block"} for e in entries]  # recorded before blocks: same hashes
    assert domain.verify_chain(_stored(legacy))["valid"] and domain.verify_chain(_stored(entries))["valid"]
    moved = _stored(entries)
    moved[1]["block"] = 7  # an entry hidden from the pages that read its block
    assert domain.verify_chain(moved)["first_broken_seq"] == 2


def test_a_rounds_updates_are_taken_in_once_whatever_their_order_and_again_change_nothing():
    """`taken_in`: what a case document changes to for the events of a round (audit writes each case once a round):
    a facet from its newest event whichever came first, a first time from its earliest, the head forward only; taken in
    again, the same document."""
    at = [datetime(2026, 12, 4, 10, tzinfo=UTC) + timedelta(minutes=m) for m in range(3)]
    reported = domain.CaseUpdate("reported", {"reported_at": domain.timestamp(at[0]), "suspected_types": ["tppo"]},
                                 domain.timestamp(at[0]))
    verified = domain.CaseUpdate("status", {"status": "verified"}, domain.timestamp(at[1]))
    closed = domain.CaseUpdate("status", {"status": "closed"}, domain.timestamp(at[2]))
    decided = [domain.CaseUpdate("decided", {"decided_at": domain.timestamp(t)}, domain.timestamp(t), earliest=True)
               for t in (at[2], at[1])]
    entry = {"seq": 6, "hash": "h6"}
    case = {"_id": "c", "trail_seq": 2, "trail_hash": "h2"}
    for order in ([reported, verified, closed, *decided], [closed, *decided[::-1], verified, reported]):
        fields = domain.taken_in(case, order, entry)
        assert fields["status"] == "closed" and fields["decided_at"] == domain.timestamp(at[1])
        assert (fields["trail_seq"], fields["trail_hash"], fields["reported_day"]) == (6, "h6", "2026-12-04")
    written = {**case, **fields}  # no dotted paths among these
    again = domain.taken_in(written, [reported, verified, closed, *decided], entry)
    assert {**written, **again} == written  # taken in again (a redelivery, a recovery): the same document
    assert domain.taken_in(written, [], {"seq": 3, "hash": "h3"}) == {}  # an older head changes nothing
