"""Storage and delivery rules on the real broker and database, through the verification service in-process."""

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient, monitoring

from services.verification.app import VerificationSettings, create_app
from shared import topics
from shared.clock import SystemClock
from shared.contracts.envelope import Envelope
from shared.contracts.intake import CaseWithdrawn
from shared.contracts.envelope import new_event
from shared.mongo import UPDATES_PER_COMMAND
from shared.outbox import AggregateStore, Change, OutboxRelay, Outgoing, entries_of
from shared.versions import minute_of
from shared.kafka import publisher_for, create_broker
from tests.builders import case_reported
from tests.conftest import eventually, serving
from tests.kafka_helpers import TopicReader, header, publish

pytestmark = pytest.mark.integration


def _settings(infra, isolation) -> VerificationSettings:
    return VerificationSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                consumer_backoff_s=0.05, **isolation)


@pytest.fixture
async def cases(infra, isolation):
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    yield client[f"{isolation['db_prefix']}_verification"]["cases"]
    await client.close()


def _of_case(case_id):
    return lambda r: header(r, topics.HEADER_CASE_ID) == case_id


async def _outbox(collection, doc_id):
    """The outbox entries of a document's retained version claims, by event id."""
    entries = {}
    async for claim in collection.database[collection.name + "_versions"].find({"doc_id": doc_id}):
        entries |= entries_of(claim)
    return entries


async def test_a_reported_case_is_screened_and_stored(infra, isolation, cases):
    event = case_reported()
    async with serving(create_app(_settings(infra, isolation))), TopicReader(infra["kafka"], topics.VERIFICATION) as out:
        await publish(infra["kafka"], topics.INTAKE, event)
        [screened] = await out.collect(_of_case(event.case_id))
        outbox = await eventually(lambda: _published(cases, event.case_id))
        doc = await cases.find_one({"_id": event.case_id})
    body = Envelope.from_bytes(screened.value)
    assert body.type == "case.screened" and body.causation_id == event.event_id
    assert body.correlation_id == event.correlation_id and screened.key == event.case_id.encode()
    assert doc["status"] == "awaiting_decision" and doc["applied"] == [event.event_id]
    assert [e["type"] for e in outbox.values()] == ["case.screened"]


async def _published(collection, doc_id):
    outbox = await _outbox(collection, doc_id)
    return outbox if outbox and all(e["status"] == "published" for e in outbox.values()) else None


async def test_the_same_event_delivered_twice_changes_nothing_the_second_time(infra, isolation, cases):
    event = case_reported()
    withdrawn = new_event(CaseWithdrawn(reason="x"), case_id=event.case_id, producer="intake", actor=None,
                          correlation_id=event.case_id, causation_id=None)
    async with serving(create_app(_settings(infra, isolation))), TopicReader(infra["kafka"], topics.VERIFICATION) as out:
        await publish(infra["kafka"], topics.INTAKE, event)
        await out.collect(_of_case(event.case_id))
        first = await cases.find_one({"_id": event.case_id})
        await publish(infra["kafka"], topics.INTAKE, event)  # redelivery
        await publish(infra["kafka"], topics.INTAKE, withdrawn)  # a later event proves the duplicate was consumed
        await eventually(lambda: cases.find_one({"_id": event.case_id, "status": "withdrawn"}))
        extra = await out.drain(_of_case(event.case_id), seconds=1.5)
    after = await cases.find_one({"_id": event.case_id})
    assert extra == []  # no second case.screened
    assert after["version"] == first["version"] + 1  # only the withdrawal changed it
    assert after["applied"] == [event.event_id, withdrawn.event_id]
    assert after["screening"] == first["screening"]


async def test_a_malformed_message_is_dead_lettered_and_the_consumer_goes_on(infra, isolation, cases):
    garbage_key = str(uuid.uuid4())
    good = case_reported()
    async with serving(create_app(_settings(infra, isolation))), TopicReader(infra["kafka"], topics.DEADLETTER) as dlq:
        await publish(infra["kafka"], topics.INTAKE, b'{"type": "case.reported", "oops"', key=garbage_key)
        invalid = case_reported().model_copy(update={"data": {"case_number": 1}})  # valid envelope, bad payload
        await publish(infra["kafka"], topics.INTAKE, invalid)
        await publish(infra["kafka"], topics.INTAKE, good)
        dead = await dlq.collect(lambda r: r.key in (garbage_key.encode(), invalid.case_id.encode())
                                 and header(r, topics.DLQ_CONSUMER) == "verification", count=2)
        await eventually(lambda: cases.find_one({"_id": good.case_id}))
    raw = next(r for r in dead if r.key == garbage_key.encode())
    assert raw.value == b'{"type": "case.reported", "oops"'  # unchanged
    assert header(raw, topics.DLQ_SOURCE_TOPIC) == topics.INTAKE
    assert header(raw, topics.DLQ_SOURCE_PARTITION) is not None and header(raw, topics.DLQ_SOURCE_OFFSET) is not None
    assert "not a valid event envelope" in header(raw, topics.DLQ_ERROR)
    bad_payload = next(r for r in dead if r.key == invalid.case_id.encode())
    assert "payload invalid" in header(bad_payload, topics.DLQ_ERROR)
    assert await cases.find_one({"_id": invalid.case_id}) is None


async def test_the_sweeper_publishes_an_entry_whose_first_publish_failed(infra, isolation):
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    broker = create_broker(infra["kafka"], "test-sweeper")
    await broker.connect()
    real = publisher_for(broker)
    calls = {"n": 0}

    async def flaky(topic, key, value, headers):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("broker unreachable (simulated)")
        await real(topic, key, value, headers)

    relay = OutboxRelay(flaky, SystemClock(), grace_s=0)
    store = AggregateStore(client[f"{isolation['db_prefix']}_sweep"]["things"], relay)
    event = new_event(CaseWithdrawn(reason="sweep"), case_id=str(uuid.uuid4()), producer="test", actor=None,
                      correlation_id="c", causation_id=None)
    try:
        async with TopicReader(infra["kafka"], topics.INTAKE) as out:
            await store.create({"_id": event.case_id}, [Outgoing(topics.INTAKE, event)])
            entry = (await store.outbox(event.case_id))[event.event_id]
            assert (entry["status"], entry["attempts"]) == ("pending", 1)
            assert "simulated" in entry["last_error"]
            assert await relay.sweep_once(full=False) == 1  # the document this process failed to publish
            [record] = await out.collect(_of_case(event.case_id))
            assert json.loads(record.value)["event_id"] == event.event_id
            assert await relay.sweep_once(full=True) == 0  # nothing left
        assert (await store.outbox(event.case_id))[event.event_id]["status"] == "published"
    finally:
        await broker.stop()
        await client.close()


async def test_a_version_guarded_change_refuses_a_stale_writer(infra, isolation):
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    relay = OutboxRelay(lambda *a: asyncio.sleep(0), SystemClock())
    store = AggregateStore(client[f"{isolation['db_prefix']}_guard"]["things"], relay)
    try:
        await store.create({"_id": "a", "n": 0})
        results = await asyncio.gather(*(store.change("a", 1, Change(set={"n": i})) for i in range(1, 6)),
                                       return_exceptions=True)
        assert sum(1 for r in results if r == 2) == 1
        assert sum(1 for r in results if isinstance(r, Exception)) == 4
    finally:
        await client.close()


async def test_a_full_sweep_publishes_what_a_crashed_process_left_pending(infra, isolation):
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    broker = create_broker(infra["kafka"], "test-sweeper-2")
    await broker.connect()

    async def dead(*_):
        raise ConnectionError("process about to crash (simulated)")

    collection = client[f"{isolation['db_prefix']}_sweep"]["things"]
    event = new_event(CaseWithdrawn(reason="crash"), case_id=str(uuid.uuid4()), producer="test", actor=None,
                      correlation_id="c", causation_id=None)
    try:
        await AggregateStore(collection, OutboxRelay(dead, SystemClock(), grace_s=0)).create(
            {"_id": event.case_id}, [Outgoing(topics.INTAKE, event)])
        restarted = OutboxRelay(publisher_for(broker), SystemClock(), grace_s=0)  # knows nothing of the failure
        AggregateStore(collection, restarted)
        async with TopicReader(infra["kafka"], topics.INTAKE) as out:
            assert await restarted.sweep_once(full=False) == 0
            assert await restarted.sweep_once(full=True) == 1
            await out.collect(_of_case(event.case_id))
    finally:
        await broker.stop()
        await client.close()


async def test_an_entry_the_broker_refuses_is_marked_failed_stops_blocking_and_is_resent_once_fixed(infra, isolation):
    from aiokafka import AIOKafkaProducer

    from shared.outbox import resend_failed

    # This producer refuses records over 4 KB (as a broker refuses those over its message.max.bytes).
    strict = AIOKafkaProducer(bootstrap_servers=infra["kafka"], max_request_size=4096, acks="all")
    normal = AIOKafkaProducer(bootstrap_servers=infra["kafka"], acks="all")
    await strict.start()
    await normal.start()

    def via(producer):
        async def publish(topic, key, value, headers):
            await producer.send_and_wait(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])
        return publish

    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    db_name = f"{isolation['db_prefix']}_failing"
    relay = OutboxRelay(via(strict), SystemClock(), grace_s=0, max_attempts=2)
    store = AggregateStore(client[db_name]["things"], relay)
    case_id = str(uuid.uuid4())

    def event(reason):
        return new_event(CaseWithdrawn(reason=reason), case_id=case_id, producer="test", actor=None,
                         correlation_id=case_id, causation_id=None)

    big, small, later = event("x" * 10_000), event("small"), event("later")
    try:
        async with TopicReader(infra["kafka"], topics.INTAKE) as out:
            await store.create({"_id": case_id}, [Outgoing(topics.INTAKE, big), Outgoing(topics.INTAKE, small)])
            assert (await store.outbox(case_id))[big.event_id]["status"] == "pending"  # one refusal: tried again
            stored = await client[db_name]["things_versions"].find_one({"doc_id": case_id})
            assert isinstance(stored["outbox"][big.event_id]["m"], str)  # its message kept as one text
            await relay.sweep_once(full=False)  # refused a second time: failed, and the next entry goes out
            entries = await store.outbox(case_id)
            assert entries[big.event_id]["status"] == "failed" and entries[small.event_id]["status"] == "published"
            # a published entry keeps no copy of its message; a failed one keeps it for `resend`
            assert "payload" not in entries[small.event_id] and "headers" not in entries[small.event_id]
            assert json.loads(entries[big.event_id]["payload"])["event_id"] == big.event_id
            assert "MessageSizeTooLargeError" in entries[big.event_id]["last_error"]
            assert await relay.failed_entries() == 1
            await store.change(case_id, 1, Change(set={"n": 1}, events=[Outgoing(topics.INTAKE, later)]))
            assert await relay.sweep_once(full=True) == 0  # the failed entry is not retried by itself
            sent = [json.loads(r.value)["event_id"] for r in await out.collect(_of_case(case_id), count=2)]
            assert sent == [small.event_id, later.event_id]

            assert await resend_failed(client, [db_name], via(normal)) == (1, 0)  # the cause fixed: sent again
            [resent] = await out.collect(_of_case(case_id), count=1)
            assert json.loads(resent.value)["event_id"] == big.event_id
        assert (await store.outbox(case_id))[big.event_id]["status"] == "published"
        assert await relay.failed_entries() == 0
    finally:
        await strict.stop()
        await normal.stop()
        await client.close()


class _Updates(monitoring.CommandListener):
    """Counts the update commands sent to one collection (the client's own record of its round trips)."""

    def __init__(self, collection: str) -> None:
        self.collection, self.count = collection, 0

    def started(self, event):
        if event.command_name == "update" and event.command.get("update") == self.collection:
            self.count += 1

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


async def _marking_store(infra, isolation, name):
    """A store whose relay publishes to Kafka and keeps its marks until flushed, and the count of its updates."""
    updates = _Updates("things_versions")
    client = AsyncMongoClient(infra["mongo"], tz_aware=True, event_listeners=[updates])
    broker = create_broker(infra["kafka"], f"test-relay-{name}")
    await broker.connect()
    relay = OutboxRelay(publisher_for(broker), SystemClock(), mark_delay_s=60)  # marks wait for the test's flush
    things = client[f"{isolation['db_prefix']}_{name}"]["things"]
    return updates, client, broker, relay, things, AggregateStore(things, relay)


async def test_a_changes_events_go_out_in_order_and_the_marks_of_several_changes_are_one_update(infra, isolation):
    updates, client, broker, relay, things, store = await _marking_store(infra, isolation, "batch")
    case_ids = [str(uuid.uuid4()) for _ in range(3)]
    events = {case_id: [new_event(CaseWithdrawn(reason=f"r{i}"), case_id=case_id, producer="test", actor=None,
                                  correlation_id="c", causation_id=None) for i in range(3)] for case_id in case_ids}
    try:
        async with TopicReader(infra["kafka"], topics.INTAKE) as out:
            for case_id in case_ids:
                await store.create({"_id": case_id}, [Outgoing(topics.INTAKE, e) for e in events[case_id]])
            records = await out.collect(lambda r: (r.key or b"").decode() in case_ids, count=9)
        assert updates.count == 0  # published, their marks queued
        await relay.flush_marks()
        claims = await things.database["things_versions"].find({"doc_id": {"$in": case_ids}}).to_list()
    finally:
        await broker.stop()
        await client.close()
    for case_id in case_ids:
        assert [json.loads(r.value)["event_id"] for r in records if r.key == case_id.encode()] == \
            [e.event_id for e in events[case_id]]
    assert updates.count == 1  # nine entries of three changes marked published and their claims closed in one write
    assert len(claims) == 3 and all(claim["outbox_open"] is False for claim in claims)
    assert {(e["status"], e["attempts"]) for claim in claims for e in entries_of(claim).values()} == {("published", 1)}
    assert not any("payload" in e for claim in claims for e in entries_of(claim).values())  # dropped with the marks
    assert all(isinstance(claim["outbox"], str) for claim in claims)  # all out at once: one value, not four per entry


async def test_the_marks_of_many_changes_do_not_stall_the_database(infra, isolation):
    """FerretDB v1 holds a PostgreSQL connection for every update of a command until the command ends (50 in its
    pool): one bulk write of 60 marks never finished and left FerretDB answering nobody. They go in small commands."""
    updates, client, broker, relay, things, store = await _marking_store(infra, isolation, "many")
    case_ids = [str(uuid.uuid4()) for _ in range(60)]
    try:
        await asyncio.gather(*(store.create({"_id": case_id}, [Outgoing(topics.INTAKE, new_event(
            CaseWithdrawn(reason="r"), case_id=case_id, producer="test", actor=None, correlation_id="c",
            causation_id=None))]) for case_id in case_ids))
        assert updates.count == 0  # all 60 published, their marks queued
        assert await asyncio.wait_for(relay.flush_marks(), 60) is True
        claims = await asyncio.wait_for(
            things.database["things_versions"].find({"doc_id": {"$in": case_ids}}).to_list(), 30)
    finally:
        await broker.stop()
        await client.close()
    assert updates.count == -(-60 // UPDATES_PER_COMMAND)
    assert len(claims) == 60 and all(claim["outbox_open"] is False for claim in claims)


async def test_in_the_background_a_write_returns_before_its_events_go_out_and_they_keep_their_order(infra, isolation):
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    broker_answers = asyncio.Event()
    published = []

    async def slow_broker(topic, key, value, headers):
        await broker_answers.wait()
        published.append(json.loads(value)["event_id"])

    relay = OutboxRelay(slow_broker, SystemClock(), background=True)
    store = AggregateStore(client[f"{isolation['db_prefix']}_later"]["things"], relay)
    case_id = str(uuid.uuid4())
    first, second = (new_event(CaseWithdrawn(reason=r), case_id=case_id, producer="test", actor=None,
                               correlation_id="c", causation_id=None) for r in ("one", "two"))
    try:
        await store.create({"_id": case_id, "n": 0}, [Outgoing(topics.INTAKE, first)])
        await store.change(case_id, 1, Change(set={"n": 1}, events=[Outgoing(topics.INTAKE, second)]))
        # both writes returned although the broker has not answered yet
        assert published == [] and {e["status"] for e in (await store.outbox(case_id)).values()} == {"pending"}
        broker_answers.set()
        await relay.drain()
        assert published == [first.event_id, second.event_id]
        assert {e["status"] for e in (await store.outbox(case_id)).values()} == {"published"}
    finally:
        await client.close()


async def test_a_sweep_waits_for_the_marks_being_written_and_does_not_find_those_claims_open(infra, isolation,
                                                                                            monkeypatch):
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    relay = OutboxRelay(lambda *a: asyncio.sleep(0), SystemClock(), mark_delay_s=0)
    store = AggregateStore(client[f"{isolation['db_prefix']}_marking"]["things"], relay)
    claims = store.versions.claims
    writing, bulk_write = asyncio.Event(), claims.bulk_write

    async def slow_bulk_write(requests, **kwargs):
        writing.set()
        await asyncio.sleep(0.3)  # the database is slow to answer the background flush
        return await bulk_write(requests, **kwargs)

    monkeypatch.setattr(claims, "bulk_write", slow_bulk_write)
    event = new_event(CaseWithdrawn(reason="x"), case_id="m", producer="test", actor=None, correlation_id="m",
                      causation_id=None)
    try:
        await store.create({"_id": "m"}, [Outgoing(topics.INTAKE, event)])
        await writing.wait()  # the marks are on their way
        assert await relay.sweep_once(full=True) == 0
        claim = await claims.find_one({"doc_id": "m"})
    finally:
        await relay.drain()
        await client.close()
    assert claim["outbox_open"] is False and entries_of(claim)[event.event_id]["status"] == "published"


async def test_an_entry_stored_field_by_field_before_is_still_published_by_the_sweeper(infra, isolation):
    """Claims written before entries kept their message as one text (`m`) are read and published as they are."""
    sent = []

    async def publish(topic, key, value, headers):
        sent.append((topic, key, value, headers))

    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    things = client[f"{isolation['db_prefix']}_oldform"]["things"]
    relay = OutboxRelay(publish, SystemClock(), grace_s=0)
    store = AggregateStore(things, relay)
    event = new_event(CaseWithdrawn(reason="old"), case_id="old-1", producer="test", actor=None,
                      correlation_id="old-1", causation_id=None)
    now = datetime.now(UTC) - timedelta(seconds=5)  # kept: within the retention, past the grace
    try:
        await things.insert_one({"_id": "old-1", "version": 1, "rev": "r1"})
        await things.database["things_versions"].insert_one({
            "_id": "old-1#0000000001", "doc_id": "old-1", "version": 1, "base_rev": None, "at": now.isoformat(),
            "minute": minute_of(now), "set": {"version": 1, "rev": "r1"}, "unset": [], "outbox_open": True,
            "outbox_failed": False, "outbox": {event.event_id: {
                "topic": topics.INTAKE, "key": "old-1", "payload": event.to_json(), "headers": event.headers(),
                "type": event.type, "order": 0, "status": "pending", "attempts": 0, "last_error": None,
                "created_at": now.isoformat(), "published_at": None}}})
        assert await relay.sweep_once(full=False) == 0  # not among this process's failures
        assert await relay.sweep_once(full=True) == 1
        entry = (await store.outbox("old-1"))[event.event_id]
    finally:
        await client.close()
    assert [(t, k, json.loads(v)["event_id"]) for t, k, v, _ in sent] == [(topics.INTAKE, b"old-1", event.event_id)]
    assert entry["status"] == "published" and "payload" not in entry
