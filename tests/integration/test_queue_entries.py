"""The verifier's queue is read from its own small entries, which follow every write of a case, a crashed one too."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter

from services.verification import domain
from services.verification.store import CaseStore
from shared.auth import Principal
from shared.clock import ManualClock
from shared.contracts import intake
from shared.crypto import Sealer
from shared.outbox import OutboxRelay
from tests.builders import case_reported
from tests.conftest import no_publish

pytestmark = pytest.mark.integration

KEY = bytes(range(32))
DECISION = TypeAdapter(domain.Decision)
VERIFIER = Principal(sub="v1", name="Petugas", role="verifier", region="36.03")
ENTRY_FIELDS = {"_id", "version", "status", "region_path", "priority_rank", "received_at", "case_number",
                "village_code", "priority", "score", "escalation", "suggested_types"}


@pytest.fixture
def db(database):
    return database("queue")


def _store(db, clock):
    return CaseStore(db, OutboxRelay(no_publish, clock, repair_after_s=10), clock)


async def _report(store, clock, **over):
    event = case_reported(**over)
    assert await store.apply_once(event.case_id, event.event_id,
                                  lambda doc: domain.on_reported(doc, event, clock.now(), key=KEY))
    return event.case_id


async def _decide(store, clock, case_id, body):
    doc = await store.load(case_id)
    change = domain.decide(doc, DECISION.validate_python(body), VERIFIER, clock.now(), Sealer(KEY, case_id))
    return await store.update(doc, change)


async def _listed(store, status="awaiting_decision", **filters):
    return [e["_id"] for e in await store.queue("36.03", {"status": status, **filters}, None, 50)]


async def test_the_queue_lists_its_entries_without_reading_a_case_and_follows_each_decision(db, monkeypatch):
    clock = ManualClock(datetime(2026, 12, 2, 8, tzinfo=UTC))
    store = _store(db, clock)
    await store.ensure_indexes()
    assert await store.backfill_queue() == 0  # a new database: nothing to fill in
    child = [intake.Person(person_id="p", role="potential_victim", name="Anak", age=15)]
    low = await _report(store, clock, indicators=["family_pressed_to_sign"])
    critical = await _report(store, clock, indicators=["family_pressed_to_sign"], persons=child)
    asked = await _report(store, clock, indicators=["family_pressed_to_sign"])

    reads: list = []
    find = store.collection.find
    monkeypatch.setattr(store.collection, "find", lambda f, *a, **k: reads.append(f) or find(f, *a, **k))
    assert await _listed(store) == [critical, low, asked]
    assert await _listed(store, priority="critical") == [critical]
    assert reads == []  # not one case document read (each is ≈ 8.5 KB as stored, its report sealed)
    entry = await store.queue_view.collection.find_one({"_id": critical})
    assert set(entry) == ENTRY_FIELDS  # no report, no names: nothing personal

    await _decide(store, clock, low, {"decision": "verify", "case_types": ["np_pmi"]})
    await _decide(store, clock, asked, {"decision": "request_info", "question": "Kapan berangkat?"})
    reads.clear()  # (the decisions read their cases)
    assert await _listed(store) == [critical]
    assert await _listed(store, status="info_requested") == [asked]
    assert (await store.queue_view.collection.find_one({"_id": low}))["status"] == "verified"
    assert reads == []


async def test_open_cases_stored_before_the_entries_are_listed_then_given_theirs_once(db):
    clock = ManualClock(datetime(2026, 12, 2, 8, tzinfo=UTC))
    store = _store(db, clock)
    await store.ensure_indexes()
    cases = [await _report(store, clock, indicators=["family_pressed_to_sign"]) for _ in range(3)]
    await _decide(store, clock, cases[0], {"decision": "reject", "reason": "tidak cukup bukti"})
    listed = await _listed(store)
    await store.queue_view.collection.delete_many({})  # as stored by the version before the entries
    await store.queue_view.markers.meta.delete_many({})

    restarted = _store(db, clock)
    assert await _listed(restarted) == listed == cases[1:]  # read from the cases until the backfill has run
    assert await restarted.backfill_queue() == 2  # the open ones; the rejected case is never listed
    assert await restarted.backfill_queue() == 0  # once per database
    assert await _listed(restarted) == listed


async def test_a_case_whose_entry_was_not_written_is_listed_after_the_sweeper_and_a_late_entry_is_undone(db,
                                                                                                         monkeypatch):
    """The entry is written after the version's claim and before the document: a writer that dies at the entry
    leaves a claim that the sweeper writes through, entry first. A stalled writer's entry of an older version
    written over a newer one (FerretDB's conditional replace is a query, then a replace) is given again."""
    clock = ManualClock(datetime(2026, 12, 2, 8, 0, 30, tzinfo=UTC))
    store = _store(db, clock)
    await store.ensure_indexes()
    await store.relay.sweep_once(full=True)  # the first sweep of the process: every claim
    await store.backfill_queue()

    async def crash(_doc):
        raise ConnectionError("process died before the queue entry (simulated)")

    monkeypatch.setattr(store.queue_view, "write", crash)
    with pytest.raises(ConnectionError):
        await _report(store, clock, indicators=["family_pressed_to_sign"])
    monkeypatch.undo()
    assert await _listed(store) == [] and await store.collection.count_documents({}) == 0  # only the claim
    [claim] = await store.versions.claims.find({}).to_list()
    case_id = claim["doc_id"]

    clock.advance(timedelta(seconds=71))  # some seconds old, its minute over
    await store.relay.sweep_once(full=True)
    assert await _listed(store) == [case_id]
    assert (await store.load(case_id))["status"] == "awaiting_decision"

    written = await _decide(store, clock, case_id, {"decision": "verify", "case_types": ["tppo"]})
    stale = domain.queue_entry({**written, "status": "awaiting_decision", "version": written["version"] - 1})
    await store.queue_view.collection.replace_one({"_id": case_id}, stale)  # the older entry landed last
    assert await _listed(store) == [case_id]
    clock.advance(timedelta(seconds=71))
    await store.relay.sweep_once(full=True)
    assert await _listed(store) == []
    assert (await store.queue_view.collection.find_one({"_id": case_id}))["version"] == written["version"]


async def test_an_older_versions_entry_never_replaces_a_newer_one(db):
    clock = ManualClock(datetime(2026, 12, 2, 8, tzinfo=UTC))
    store = _store(db, clock)
    await store.ensure_indexes()
    case_id = await _report(store, clock, indicators=["family_pressed_to_sign"])
    first = await store.load(case_id)
    decided = await _decide(store, clock, case_id, {"decision": "reject", "reason": "tidak cukup bukti"})
    results = await asyncio.gather(store.queue_view.write(first), store.queue_view.write(decided))
    assert results == [False, False]  # both of a version the entry already has, or older
    entry = await store.queue_view.collection.find_one({"_id": case_id})
    assert (entry["version"], entry["status"]) == (decided["version"], "rejected")
