"""Nothing grows without bound inside one document: an aggregate's applied ids, a link-index entry."""

import uuid

import pytest

from services.verification import linking
from services.verification.store import INDEX_KEEP, CaseStore
from shared import outbox
from shared.clock import SystemClock
from shared.outbox import AggregateStore, Change, OutboxRelay
from tests.conftest import no_publish

pytestmark = pytest.mark.integration


@pytest.fixture
def db(database):
    return database("bounded")


async def test_applied_ids_keep_a_window_and_an_old_redelivery_is_still_ignored(db, monkeypatch):
    monkeypatch.setattr(outbox, "APPLIED_WINDOW", 3)
    store = AggregateStore(db["things"], OutboxRelay(no_publish, SystemClock()))
    events = [f"event-{n}" for n in range(6)]

    def count(doc):
        return Change(set={"n": (doc or {}).get("n", 0) + 1})

    for event_id in events:
        assert await store.apply_once("a", event_id, count) is True
    doc = await store.load("a")
    assert doc["applied"] == events[-3:] and doc["n"] == 6
    assert await store.apply_once("a", events[0], count) is False  # left the window long ago
    assert await store.apply_once("a", events[-1], count) is False
    assert (await store.load("a"))["n"] == 6


async def test_a_common_name_keeps_one_bounded_entry_and_counts_the_rest(db):
    store = CaseStore(db, OutboxRelay(no_publish, SystemClock()), SystemClock())
    identity = type("Identity", (), {"digest": f"joko-{uuid.uuid4().hex}", "kind": "recruiter_name"})()
    refs = [{"case_id": f"case-{n:03d}", "received_at": f"2026-11-30T10:{n:02d}:00+00:00"}  # each newer
            for n in range(INDEX_KEEP + 15)]
    for ref in refs:
        await store.index_identities(ref, [identity])
    await store.index_identities(refs[0], [identity])  # an old report indexed again (amended): counted once
    entry = await db["identities"].find_one({"_id": identity.digest})
    newest = sorted(refs, key=lambda r: (r["received_at"], r["case_id"]), reverse=True)[:INDEX_KEEP]
    assert [r["case_id"] for r in linking.refs_of(entry)] == [r["case_id"] for r in newest]
    assert isinstance(entry["refs"], str) and "cases" not in entry  # one text, not an array FerretDB reads by element
    assert entry["total"] == INDEX_KEEP + 15
    matches, beyond = store.identity_matches([identity], "new-case", await store.entries_of([identity.digest], []))
    assert len(matches) == INDEX_KEEP and beyond == 15


async def test_an_entry_stored_as_an_array_before_is_read_and_rewritten_as_one_text(db):
    relay = OutboxRelay(no_publish)
    store = CaseStore(db, relay, SystemClock())
    identity = type("Identity", (), {"digest": f"joko-{uuid.uuid4().hex}", "kind": "recruiter_phone"})()
    old = [{"case_id": f"case-{n}", "received_at": f"2026-11-30T10:0{n}:00+00:00"} for n in range(3)]
    await db["identities"].insert_one({"_id": identity.digest, "kind": "recruiter_phone", "cases": old, "total": 3,
                                       "version": 1, "rev": "r1"})
    matches, _ = store.identity_matches([identity], "new-case", await store.entries_of([identity.digest], []))
    assert sorted(m["case_id"] for m in matches) == ["case-0", "case-1", "case-2"]
    await store.index_identities({"case_id": "case-9", "received_at": "2026-11-30T11:00:00+00:00"}, [identity])
    entry = await db["identities"].find_one({"_id": identity.digest})
    assert "cases" not in entry and [r["case_id"] for r in linking.refs_of(entry)] == \
        ["case-9", "case-2", "case-1", "case-0"]
    assert entry["total"] == 4


async def test_outbox_entries_leave_the_aggregate_once_published_and_old(db):
    from shared import topics
    from shared.contracts.envelope import new_event
    from shared.contracts.intake import CaseWithdrawn
    from shared.outbox import Outgoing

    relay = OutboxRelay(no_publish, SystemClock(), retention_s=0)
    store = AggregateStore(db["things"], relay)

    def event():
        return Outgoing(topics.INTAKE, new_event(CaseWithdrawn(reason="x"), case_id="b", producer="test", actor=None,
                                                 correlation_id="b", causation_id=None))

    await store.create({"_id": "b"}, [event()])
    for version in range(1, 31):
        await store.change("b", version, Change(set={"n": version}, events=[event()]))
    doc = await store.load("b")
    assert doc["version"] == 31 and "outbox" not in doc  # the document carries no entries at all
    assert len(await store.outbox("b")) == 31  # each version's claim holds its own, published ones
    await relay.sweep_once(full=True)  # older than the retention (0 s here), published and written through
    assert await store.outbox("b") == {}


async def test_the_watch_list_is_read_again_only_after_an_addition(db, monkeypatch):
    """Each screened report is checked against the watch list: a process keeps the list and reads it again only
    when an addition (by any process) has moved the list's stamp, not once per report as it grows."""
    screening, supervising = (CaseStore(db, OutboxRelay(no_publish, SystemClock()), SystemClock()) for _ in range(2))
    await supervising.add_watch_entry({"_id": "w1", "region": "36.03", "region_path": ["36", "36.03"]})
    reads: list = []
    find = screening.watchlist.find
    monkeypatch.setattr(screening.watchlist, "find", lambda f, *a, **k: reads.append(f) or find(f, *a, **k))
    village = ["36", "36.03", "36.03.11", "36.03.11.2009"]
    for _ in range(5):
        assert [e["_id"] for e in await screening.watch_entries(village)] == ["w1"]
    assert len(reads) == 1  # five reports, one read of the list
    await supervising.add_watch_entry({"_id": "w2", "region": "36.03.11.2009", "region_path": village})
    await supervising.add_watch_entry({"_id": "w3", "region": "36.04", "region_path": ["36", "36.04"]})
    assert sorted(e["_id"] for e in await screening.watch_entries(village)) == ["w1", "w2"]  # not 36.04's
    assert [e["_id"] for e in await screening.watch_entries(["36", "36.04"])] == ["w3"]
    assert len(reads) == 2
