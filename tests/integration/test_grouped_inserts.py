"""Grouped inserts on the real database: writers at once share one insert command, each learns its own document's
fate (a duplicate refused in its writer only), and a writer alone is not kept waiting for company."""

import asyncio
from collections import Counter

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import DuplicateKeyError

from shared.clock import SystemClock
from shared.mongo import TRANSIENT_ERRORS, GroupedInserts
from shared.versions import VersionedCollection

pytestmark = pytest.mark.integration


class Inserts(monitoring.CommandListener):
    """The insert commands the client sent, per collection, with how many documents each carried."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.sent.append((event.command["insert"], len(event.command.get("documents", ()))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def commands(self, collection: str) -> int:
        return sum(1 for name, _ in self.sent if name == collection)


@pytest.fixture
async def db(infra, isolation):
    listener = Inserts()
    client = AsyncMongoClient(infra["mongo"], tz_aware=True, event_listeners=[listener])
    database = client[f"{isolation['db_prefix']}_grouped"]
    yield database, listener
    await client.close()


async def test_writers_at_once_share_commands_and_every_document_is_stored(db):
    database, listener = db
    inserts = GroupedInserts(database["things"])
    await asyncio.gather(*(inserts.insert({"_id": f"t{i}", "n": i}) for i in range(40)))
    assert await database["things"].count_documents({}) == 40
    assert listener.sent == [("things", 40)]  # all forty asked at once: one command

    first = asyncio.create_task(inserts.insert({"_id": "first"}))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # its command is on its way; the next ten come meanwhile and wait for it
    await asyncio.gather(first, *(inserts.insert({"_id": f"u{i}"}) for i in range(10)))
    assert listener.sent[1:] == [("things", 1), ("things", 10)]
    assert await database["things"].count_documents({}) == 51


async def test_a_duplicate_is_refused_in_its_own_writer_only(db):
    database, listener = db
    await database["things"].insert_one({"_id": "taken"})
    inserts = GroupedInserts(database["things"])
    ids = ["a", "b", "taken", "c", "twice", "twice", "d"]
    results = await asyncio.gather(*(inserts.insert({"_id": i}) for i in ids), return_exceptions=True)
    refused = [i for i, r in zip(ids, results) if isinstance(r, DuplicateKeyError)]
    assert refused == ["taken", "twice"]  # one of the two "twice" got in, the other is told it is a duplicate
    assert all(r is None for r in results if not isinstance(r, DuplicateKeyError))
    assert sorted(d["_id"] for d in await database["things"].find().to_list()) == ["a", "b", "c", "d", "taken",
                                                                                   "twice"]
    assert inserts.commands < len(ids)


async def test_a_writer_alone_goes_at_once(db):
    database, listener = db
    inserts = GroupedInserts(database["things"])
    for i in range(5):
        await asyncio.wait_for(inserts.insert({"_id": i}), timeout=10)
    assert listener.commands("things") == 5  # one each, none held back


async def test_a_failed_command_is_raised_in_each_of_its_writers():
    away = AsyncMongoClient("mongodb://127.0.0.1:1/?directConnection=true", serverSelectionTimeoutMS=300)
    inserts = GroupedInserts(away["waspada_nowhere"]["things"])  # no database answers there
    results = await asyncio.gather(*(inserts.insert({"_id": i}) for i in range(6)), return_exceptions=True)
    assert all(isinstance(r, TRANSIENT_ERRORS) for r in results), results
    assert inserts.commands == 1
    await away.close()


async def test_version_claims_of_side_by_side_writes_share_commands(db):
    database, listener = db
    things = VersionedCollection(database["docs"], SystemClock())
    await asyncio.gather(*(things.write(f"d{i}", {"n": 0, "version": 1}) for i in range(16)))  # first versions
    firsts = listener.commands("docs")
    docs = [await things.load(f"d{i}") for i in range(16)]
    await asyncio.gather(*(things.write(d["_id"], {**d, "n": 1, "version": 2}, base=d) for d in docs))
    assert [d["n"] for d in await database["docs"].find().sort("_id").to_list()] == [1] * 16
    assert await database["docs_versions"].count_documents({}) == 16  # every second version claimed
    assert firsts < 16 and listener.commands("docs_versions") < 16
    assert Counter(name for name, _ in listener.sent) == {"docs": firsts, "docs_versions": listener.commands(
        "docs_versions")}


async def test_writers_are_told_when_the_sender_is_stopped_rather_than_left_waiting(db):
    database, _ = db
    inserts = GroupedInserts(database["things"])
    first = asyncio.create_task(inserts.insert({"_id": "first"}))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # its command is on its way
    waiting = [asyncio.create_task(inserts.insert({"_id": f"w{i}"})) for i in range(5)]
    await asyncio.sleep(0)
    inserts._sender.cancel()  # as when the process stops
    results = await asyncio.wait_for(asyncio.gather(first, *waiting, return_exceptions=True), timeout=10)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    await inserts.insert({"_id": "after"})  # a new writer starts a new sender
    assert await database["things"].find_one({"_id": "after"}) is not None
