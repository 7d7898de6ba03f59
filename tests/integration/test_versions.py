"""Version claims on the real database: one writer per version, a write a crashed writer left half done is
completed by the next writer (or the sweeper), and a writer whose version was claimed long ago is refused."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from shared import mongo
from shared.clock import ManualClock, SystemClock
from shared.outbox import AggregateStore, Change, OutboxRelay
from shared.versions import VersionedCollection
from tests.conftest import calls_to

pytestmark = pytest.mark.integration


@pytest.fixture
async def things(infra, isolation):
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    yield VersionedCollection(client[f"{isolation['db_prefix']}_versions"]["things"], SystemClock())
    await client.close()


async def _next(things, doc_id, **fields):
    doc = await things.load(doc_id)
    return await things.write(doc_id, {**doc, **fields, "version": doc["version"] + 1}, base=doc)


async def test_of_many_writers_of_one_version_exactly_one_wins(things):
    await things.write("a", {"n": 0, "version": 1})
    doc = await things.load("a")
    results = await asyncio.gather(*(things.write("a", {**doc, "n": i, "version": 2}, base=doc) for i in range(1, 9)),
                                   return_exceptions=True)
    assert sum(1 for r in results if isinstance(r, dict)) == 1
    assert all(isinstance(r, DuplicateKeyError) for r in results if not isinstance(r, dict))
    winner = next(r for r in results if isinstance(r, dict))
    assert (await things.load("a"))["n"] == winner["set"]["n"]


async def test_a_claim_keeps_what_it_sets_as_one_value_and_older_claims_are_written_through_too(things):
    written = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    await things.write("c", {"n": 0, "at": written, "nested": {"a": [1, 2]}, "version": 1})
    doc = await things.load("c")
    await _next(things, "c", n=1, nested={"a": [3]})
    stored = await things.claims.find_one({"_id": "c#0000000002"})
    assert isinstance(stored["set"], bytes)  # FerretDB keeps one value, not a document decoded field by field
    changed = things.set_of(stored)
    assert {k: changed[k] for k in ("n", "nested", "version")} == {"n": 1, "nested": {"a": [3]}, "version": 2}
    assert changed["rev"] == (await things.load("c"))["rev"]
    # a claim written as a document (before this form) that its writer left half done: written through all the same
    await things.claims.insert_one({"_id": "c#0000000003", "doc_id": "c", "version": 3,
                                    "base_rev": (await things.load("c"))["rev"], "at": written.isoformat(),
                                    "set": {"n": 2, "version": 3, "rev": "old-form"}, "unset": ["nested"]})
    assert await things.catch_up("c") == 3
    after = await things.load("c")
    assert (after["n"], after["rev"], after["at"], "nested" in after) == (2, "old-form", written, False)
    assert doc["at"] == written  # a datetime stays a datetime through the BSON value


async def test_a_write_left_half_done_is_completed_by_the_next_writer_or_the_sweeper(things, monkeypatch):
    await things.write("b", {"n": 0, "version": 1})

    async def crash(*_):
        raise ConnectionError("process died between the claim and the write (simulated)")

    def dying(on: bool) -> None:  # the document's write: the usual one statement, and the careful path
        if on:
            monkeypatch.setattr(things, "_write_through", crash)
            monkeypatch.setattr(things, "_replace", crash)
        else:
            monkeypatch.undo()

    dying(True)
    with pytest.raises(ConnectionError):
        await _next(things, "b", n=1)
    dying(False)
    assert (await things.load("b"))["version"] == 1  # the claim stands, the document lags
    with pytest.raises(DuplicateKeyError):  # a second writer of version 2 loses, and completes the first
        await things.write("b", {**(await things.load("b")), "n": 99, "version": 2})
    assert ((await things.load("b"))["version"], (await things.load("b"))["n"]) == (2, 1)

    clock = ManualClock()
    relay = OutboxRelay(lambda *a: asyncio.sleep(0), clock, repair_after_s=10)
    relay.watch(things)

    async def left_half_done(n):
        dying(True)
        with pytest.raises(ConnectionError):
            await _next(things, "b", n=n)
        dying(False)

    await left_half_done(2)
    await relay.sweep_once(full=True)  # at start the sweeper checks every claim, however fresh
    assert (await things.load("b"))["version"] == 3
    await left_half_done(3)
    await relay.sweep_once(full=True)  # later only claims some seconds old: the writer may be writing it now
    assert (await things.load("b"))["version"] == 3
    clock.advance(timedelta(seconds=71))  # some seconds old, and its minute over (the sweeper reads whole minutes)
    await relay.sweep_once(full=True)  # the sweeper repairs what nobody else touches
    assert ((await things.load("b"))["version"], (await things.load("b"))["n"]) == (4, 3)


async def test_the_sweeper_reads_each_document_once_however_many_claims_it_has(things, monkeypatch):
    for doc_id in ("d", "e"):
        await things.write(doc_id, {"n": 0, "version": 1})
        for n in range(1, 6):
            await _next(things, doc_id, n=n)
    other = VersionedCollection(things.collection, SystemClock())  # another process's sweeper
    reads = calls_to(monkeypatch, other, "_version")
    assert await other.repair(None) == 0  # ten claims (a new document causing no events has none), all written
    assert sorted(reads) == ["d", "e"]
    reads.clear()
    assert await other.prune(retention_s=0) == 10
    assert sorted(reads) == ["d", "e"]
    assert await things.claims.count_documents({}) == 0


async def test_what_this_process_wrote_through_meeting_nobody_is_not_read_again_by_its_sweeper(things, monkeypatch):
    """Its writes are known written; a document whose write met another writer (where FerretDB's query-then-replace
    could land an older version late), or that another process wrote since, is read as before."""
    for doc_id in ("f", "g", "h"):
        await things.write(doc_id, {"n": 0, "version": 1})
        await _next(things, doc_id, n=1)
    stale = (await things.claims.find_one({"_id": "g#0000000002"}))["base_rev"]
    with pytest.raises(DuplicateKeyError):  # a second writer of g's version 2, on what it read before
        await things.write("g", {"_id": "g", "n": 9, "version": 2, "rev": stale}, base={"rev": stale, "version": 1})
    other = VersionedCollection(things.collection, SystemClock())
    await _next(other, "h", n=2)  # another process's version 3 of h
    reads = calls_to(monkeypatch, things, "_version")
    assert await things.repair(None) == 0
    assert sorted(reads) == ["g", "h"]  # f is taken as written: it is
    assert (await things.load("f"))["version"] == 2
    reads.clear()
    assert await things.prune(retention_s=0) == 4  # f's and g's version 2, h's 2 and 3
    assert sorted(reads) == ["g", "h"] and await things.claims.count_documents({}) == 0


async def test_a_writer_whose_version_was_claimed_and_pruned_long_ago_is_refused(things):
    await things.write("c", {"n": 0, "version": 1})
    stale = await things.load("c")
    await _next(things, "c", n=1)
    await _next(things, "c", n=2)
    assert await things.prune(retention_s=0) == 2  # every claim is written through and old enough
    with pytest.raises(DuplicateKeyError):
        await things.write("c", {**stale, "n": 42, "version": 2}, base=stale)
    assert ((await things.load("c"))["version"], (await things.load("c"))["n"]) == (3, 2)
    assert await things.claims.count_documents({}) == 0  # its claim withdrawn


async def test_the_updates_of_two_copies_of_every_service_at_once_do_not_stall_the_database(infra, isolation):
    """FerretDB v1 holds a PostgreSQL connection per update while it waits for another to write: with pymongo's
    default pool (100 commands in flight per client) against FerretDB's 50 connections, 200 updates at once left it
    answering nobody. A service's client keeps `mongo.POOL_SIZE` in flight, and infra/local gives FerretDB a pool
    larger than two copies of every service together: here 14 clients, each with 100 updates at once."""
    clients = [mongo.connect(infra["mongo"]) for _ in range(14)]
    try:
        for _ in range(3):
            await asyncio.wait_for(asyncio.gather(*(
                client[f"{isolation['db_prefix']}_many"]["counters"].update_one(
                    {"_id": f"{c}-{i}"}, {"$inc": {"n": 1}}, upsert=True)
                for c, client in enumerate(clients) for i in range(100))), 120)
        counters = clients[0][f"{isolation['db_prefix']}_many"]["counters"]
        assert [d["n"] for d in await asyncio.wait_for(counters.find({}).to_list(), 30)] == [3] * 1400
    finally:
        for client in clients:
            await client.close()


async def test_a_new_document_that_causes_no_events_is_inserted_without_a_claim_and_only_once(things):
    await things.write("n", {"n": 0, "version": 1})
    assert await things.claims.count_documents({"doc_id": "n"}) == 0
    with pytest.raises(DuplicateKeyError):  # a second first writer loses, as on a claim
        await things.write("n", {"n": 1, "version": 1})
    assert (await things.load("n"))["n"] == 0
    doc = await _next(things, "n", n=2)  # its next version is claimed as always
    assert doc["version"] == 2 and await things.claims.count_documents({"doc_id": "n"}) == 1


async def test_the_next_write_of_a_document_this_process_wrote_is_based_on_it_without_a_read(things, monkeypatch):
    await things.write("r", {"n": 0, "when": datetime(2026, 12, 2, 8, 0, tzinfo=UTC), "version": 1})
    doc = await things.load("r")
    await things.write("r", {**doc, "n": 1, "version": 2}, base=doc)
    reads = calls_to(monkeypatch, things.collection, "find_one")
    base = things.remembered("r")
    assert reads == []  # from memory
    assert base == await things.load("r")  # as a read returns it (the datetime comes back as the database gives it)
    await things.write("r", {**base, "n": 2, "version": 3}, base=base)
    assert (await things.load("r"))["n"] == 2


async def test_a_remembered_document_another_process_wrote_since_is_read_again_and_nothing_is_lost(infra, isolation):
    """Two processes (two stores on one collection): the first remembers what it wrote; the second writes after it;
    the first's next event is decided on its stale memory, refused (the version is taken), decided again on what is
    stored, and both changes are kept; an event the second applied is not applied again by the first."""
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    relay = OutboxRelay(lambda *a: asyncio.sleep(0), SystemClock())
    collection = client[f"{isolation['db_prefix']}_recent"]["things"]
    first, second = AggregateStore(collection, relay), AggregateStore(collection, relay)

    def add(tag):
        return lambda doc: Change(set={"tags": [*(doc or {}).get("tags", []), tag]})

    try:
        assert await first.apply_once("a", "e1", add("one"))
        assert await second.apply_once("a", "e2", add("two"))  # reads what the first wrote; the first still remembers v1
        assert await first.apply_once("a", "e3", add("three"))
        assert not await first.apply_once("a", "e2", add("two again"))  # applied by the second: not twice
        assert await second.apply_once("a", "e4", lambda doc: Change(set={"closed": True}))
        # Decided on the first's memory (not closed) this event would change nothing; on what is stored it does.
        assert await first.apply_once("a", "e5", lambda doc: Change(set={"archived": True}) if doc.get("closed")
                                      else None)
        doc = await first.load("a")
    finally:
        await client.close()
    assert doc["tags"] == ["one", "two", "three"] and doc["version"] == 5 and doc["archived"] is True
    assert doc["applied"] == ["e1", "e2", "e3", "e4", "e5"]


async def test_an_event_that_makes_its_aggregate_is_applied_without_a_read_and_once_however_late_redelivered(
        infra, isolation, monkeypatch):
    """`fresh`: the first attempt takes the document as absent. A redelivery (its first version's claim still kept,
    or pruned long ago) is refused at the insert, read, and found applied: nothing is written twice."""
    from shared import topics
    from shared.contracts.envelope import new_event
    from shared.contracts.intake import CaseWithdrawn
    from shared.outbox import Outgoing

    client = mongo.connect(infra["mongo"])
    relay = OutboxRelay(lambda *a: asyncio.sleep(0), SystemClock())
    collection = client[f"{isolation['db_prefix']}_fresh"]["things"]
    store, other = AggregateStore(collection, relay), AggregateStore(collection, relay)  # `other`: another process

    def make(tag):
        event = new_event(CaseWithdrawn(reason=tag), case_id="a", producer="test", actor=None, correlation_id="a",
                          causation_id=None)
        return lambda doc: Change(set={"tags": [*(doc or {}).get("tags", []), tag]},
                                  events=[Outgoing(topics.INTAKE, event)])

    try:
        reads = calls_to(monkeypatch, AggregateStore, "load")
        versioned_reads = calls_to(monkeypatch, VersionedCollection, "load")
        assert await store.apply_once("a", "e1", make("one"), fresh=True)
        assert (reads, versioned_reads) == ([], [])  # no read of a document that is not there
        monkeypatch.undo()
        assert not await other.apply_once("a", "e1", make("one again"), fresh=True)  # redelivered elsewhere
        await relay.flush_marks()
        assert await other.versions.prune(retention_s=0) == 1  # its claim is gone; the document stays
        assert not await other.apply_once("a", "e1", make("one once more"), fresh=True)
        doc = await store.load("a")
        claims = await store.versions.claims.count_documents({})
    finally:
        await client.close()
    assert (doc["tags"], doc["version"], doc["applied"], claims) == (["one"], 1, ["e1"], 0)


async def test_after_its_first_sweep_the_sweeper_reads_claims_a_minute_at_a_time(infra, isolation, monkeypatch):
    """FerretDB filters a range of `at` only after decoding every claim it holds (thousands within the retention);
    an equality on the claim's minute it pushes into its SQL. So the sweeper's repair and prune read the minutes they
    need, and a claim that could not go yet is read again with its minute until it goes."""
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    clock = ManualClock(datetime(2026, 12, 2, 8, 0, 30, tzinfo=UTC))
    things = VersionedCollection(client[f"{isolation['db_prefix']}_versions"]["minutes"], clock)
    await OutboxRelay(lambda *a: asyncio.sleep(0), clock).ensure_indexes()
    try:
        assert await things.repair(None) == 0 and await things.prune(retention_s=600) == 0  # the first: every claim
        filters: list = []
        find = things.claims.find
        monkeypatch.setattr(things.claims, "find", lambda f, *a, **k: filters.append(f) or find(f, *a, **k))

        await things.write("a", {"n": 0, "version": 1})
        await _next(things, "a", n=1)  # 08:00
        clock.advance(timedelta(minutes=1))
        await _next(things, "a", n=2)  # 08:01
        doc = await things.load("a")
        await things.write("a", {**doc, "n": 3, "version": 4}, base=doc,  # 08:01, an event not out yet
                           record={"outbox": {"e": {"status": "pending"}}, "outbox_open": True, "outbox_failed": False})

        async def crash(*_):
            raise ConnectionError("died between the claim and the write (simulated)")
        monkeypatch.setattr(things, "_write_through", crash)
        monkeypatch.setattr(things, "_replace", crash)
        with pytest.raises(ConnectionError):
            await _next(things, "a", n=4)  # 08:01, left half done
        monkeypatch.setattr(things, "_write_through", VersionedCollection._write_through.__get__(things))
        monkeypatch.setattr(things, "_replace", VersionedCollection._replace.__get__(things))
        assert (await things.load("a"))["version"] == 4

        clock.advance(timedelta(minutes=1))
        assert await things.repair("2026-12-02T07:59:50+00:00", clock.now().isoformat()) == 1
        assert (await things.load("a"))["version"] == 5
        scans = [f for f in filters if "_id" not in f]  # reads of many claims (catch_up reads claims by _id)
        assert [f["minute"] for f in scans] == ["2026-12-02T07:59", "2026-12-02T08:00", "2026-12-02T08:01",
                                                "2026-12-02T08:02"]  # no range read
        assert all(set(f) == {"minute"} for f in scans)

        filters.clear()
        clock.advance(timedelta(minutes=10))  # 08:12: 08:00 and 08:01 are past the retention
        assert await things.prune(retention_s=600) == 3  # the open claim stays
        assert await things.claims.count_documents({}) == 1
        assert filters and all("minute" in f for f in filters)
        await things.claims.update_one({"outbox_open": True}, {"$set": {"outbox_open": False}})
        clock.advance(timedelta(minutes=1))
        filters.clear()
        assert await things.prune(retention_s=600) == 1  # 08:01 read again (and 08:02, empty)
        assert sorted(f["minute"] for f in filters if "minute" in f) == ["2026-12-02T08:01", "2026-12-02T08:02"]
        assert await things.claims.count_documents({}) == 0
        filters.clear()
        assert await things.prune(retention_s=600) == 0 and filters == []  # nothing left to read
    finally:
        await client.close()


async def test_a_packed_field_is_stored_as_one_value_and_read_back_as_it_was(infra, isolation):
    """FerretDB decodes a stored document value by value at every read and write: a sub-document read and written
    whole (a case's sealed report) is stored as one value, and read back as the document it was by the services'
    clients; one stored field by field (before it was packed) is read as it is and packed at its next write."""
    client, plain = mongo.connect(infra["mongo"]), AsyncMongoClient(infra["mongo"], tz_aware=True)
    name = f"{isolation['db_prefix']}_versions"
    things = VersionedCollection(client[name]["packed"], SystemClock(), packed=("report",))
    report = {"persons": [{"name": "sealed:abc", "age": 19}], "narrative": "sealed:def", "at": None}
    try:
        await things.write("p", {"report": report, "n": 0, "version": 1})
        raw = await plain[name]["packed"].find_one({"_id": "p"})
        assert raw["report"].subtype == mongo.PACKED_SUBTYPE  # one value in the database
        assert (await things.load("p"))["report"] == report
        await _next(things, "p", n=1)
        assert (await plain[name]["packed"].find_one({"_id": "p"}))["report"].subtype == mongo.PACKED_SUBTYPE
        assert (await things.load("p"))["report"] == report and (await things.load("p"))["n"] == 1
        listed = VersionedCollection(client[name]["listed"], SystemClock(), packed=("history",))
        await listed.write("l", {"history": [{"status": "created"}], "version": 1})
        await _next(listed, "l", history=[{"status": "created"}, {"status": "acknowledged"}])
        raw = await plain[name]["listed"].find_one({"_id": "l"})
        assert raw["history"].subtype == mongo.PACKED_LIST_SUBTYPE  # a list too
        assert (await listed.load("l"))["history"] == [{"status": "created"}, {"status": "acknowledged"}]
        await plain[name]["packed"].insert_one({"_id": "old", "report": report, "version": 1, "rev": "r0"})
        assert (await things.load("old"))["report"] == report  # stored field by field before
        await _next(things, "old", n=5)
        assert (await plain[name]["packed"].find_one({"_id": "old"}))["report"].subtype == mongo.PACKED_SUBTYPE
        assert (await things.load("old"))["report"] == report
    finally:
        await client.close()
        await plain.close()


SENT = {"outbox": {"e-1": {"status": "published"}}, "outbox_open": False}  # a change with an event, already out


async def test_a_new_document_known_new_is_written_after_its_claim_and_every_reader_finds_it(infra, isolation):
    """With `first_through_later`, a writer that knows its id is new answers once the claim is in; its document is
    written right after. Before that lands: a reader in the same process waits for it; a reader in another process
    writes it through from the claim; the next write here builds on it; the late insert then changes nothing."""
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    collection = client[f"{isolation['db_prefix']}_later"]["things"]
    here, there = VersionedCollection(collection, SystemClock()), VersionedCollection(collection, SystemClock())
    here.first_through_later = there.first_through_later = True
    gate = asyncio.Event()
    insert = here._inserts.insert

    async def held(doc):  # the document's insert, held until the test lets it go
        await gate.wait()
        return await insert(doc)

    here._inserts.insert = held
    try:
        await here.write("a", {"n": 1, "version": 1}, record=SENT, known_new=True)
        assert await collection.find_one({"_id": "a"}) is None  # answered: the claim is in, the document not yet
        assert (await there.load("a"))["n"] == 1  # another process writes it through from the claim
        doc = await there.load("a")
        await here.write("a", {**doc, "n": 2, "version": 2}, base=here.remembered("a"))  # built on the memory
        gate.set()
        await here.settle()
        stored = await here.load("a")
        assert (stored["version"], stored["n"]) == (2, 2)  # the late first insert hid nothing
        assert await here.claims.count_documents({"doc_id": "a"}) == 2  # and withdrew no claim

        gate.clear()
        await here.write("b", {"n": 1, "version": 1}, record=SENT, known_new=True)
        reading = asyncio.create_task(here.load("b"))  # the same process: waits for its own write
        await asyncio.sleep(0.05)
        assert not reading.done()
        gate.set()
        assert (await reading)["n"] == 1

        # Not known new (an id a document may have had, its claims pruned long ago): written before the answer.
        here._inserts.insert = insert
        await here.write("c", {"n": 1, "version": 1}, record=SENT)
        assert (await collection.find_one({"_id": "c"}))["n"] == 1
    finally:
        gate.set()
        await here.settle()
        await client.close()


async def test_a_first_version_whose_writer_died_before_writing_it_is_written_by_the_sweeper(infra, isolation):
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    collection = client[f"{isolation['db_prefix']}_later"]["things"]
    things = VersionedCollection(collection, SystemClock())
    things.first_through_later = True

    async def died(_doc):
        raise ConnectionError("process died after the claim (simulated)")

    insert, things._inserts.insert = things._inserts.insert, died
    try:
        await things.write("d", {"n": 7, "version": 1}, record=SENT, known_new=True)
        await things.settle()
        assert await collection.find_one({"_id": "d"}) is None
        relay = OutboxRelay(lambda *a: asyncio.sleep(0), SystemClock())
        after_restart = VersionedCollection(collection, SystemClock())
        relay.watch(after_restart)
        await relay.sweep_once(full=True)  # at start the sweeper checks every claim
        assert (await collection.find_one({"_id": "d"}))["n"] == 7
    finally:
        things._inserts.insert = insert
        await client.close()
