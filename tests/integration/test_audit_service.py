"""The audit service on the real broker and database: trail, redelivery, tampering, scope and dead letters."""

import asyncio
import json
import os
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient

from services.audit import domain
from services.audit.app import AuditSettings, create_app
from services.audit.store import BUSY_DAY, AuditStore
from shared import topics
from shared.clock import SystemClock
from shared.contracts.access import CaseViewed
from shared.contracts.envelope import Actor, Envelope, new_event
from shared.contracts.verification import CaseInfoRequested, CaseRejected, CaseVerified, Situation
from tests.builders import PILOT_VILLAGE, case_reported
from tests.conftest import auth, calls_to, eventually, serving
from tests.kafka_helpers import publish

pytestmark = pytest.mark.integration
SUPERVISOR = auth("supervisor", "36.03")


def _app(infra, isolation):
    return create_app(AuditSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                    consumer_backoff_s=0.05, **isolation))


@pytest.fixture
async def audit_db(infra, isolation):
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    yield client[f"{isolation['db_prefix']}_audit"]
    await client.close()


def _verified(reported: Envelope, types=("np_pmi",)) -> Envelope:
    data = reported.data
    return new_event(CaseVerified(case_number=data["case_number"], village_code=data["village_code"],
                                  case_types=list(types), priority="high", situation=Situation()),
                     case_id=reported.case_id, producer="verification",
                     actor=Actor(id="verifier-1", role="verifier", region="36.03"),
                     correlation_id=reported.case_id, causation_id=reported.event_id)


def _follow_up(reported: Envelope, payload) -> Envelope:
    return new_event(payload, case_id=reported.case_id, producer="verification", actor=None,
                     correlation_id=reported.case_id, causation_id=reported.event_id)


READS = ("case.viewed", "case.exported", "case.searched", "cases.listed")


async def _trail(http, case_id: str, at_least: int, *, prefix: str, headers=SUPERVISOR) -> dict:
    """The trail (as the API shows entries) once it holds `at_least` entries.

    Waits on /trail/verify and reads the entries from the database: reading the trail over HTTP is itself a
    recorded read, which would add entries to the very trail these tests count."""
    async def probe():
        r = await http.get(f"/v1/cases/{case_id}/trail/verify", headers=headers)
        return r.status_code == 200 and r.json()["entries"] >= at_least

    await eventually(probe, timeout=40)
    client = AsyncMongoClient(os.environ["MONGODB_URI"])
    try:
        db = client[f"{prefix}_audit"]
        entries = await db["trail"].find({"case_id": case_id}).sort([("seq", 1)]).to_list()
    finally:
        await client.close()
    return {"case_id": case_id, "entries": [domain.trail_view(e, None) for e in entries]}


async def _projected(audit_db, case_id: str, seq: int) -> dict:
    """The case document once it has taken in trail entry `seq` (it is written right after the entry)."""
    return await eventually(lambda: audit_db["cases"].find_one({"_id": case_id, "trail_seq": {"$gte": seq}}))


async def _publish_in_order(kafka: str, http, events: list[tuple[str, Envelope]], prefix: str) -> dict:
    """Publish each event once the previous one is in the trail, so the trail order is the publishing order."""
    trail: dict = {}
    for n, (topic, event) in enumerate(events, start=1):
        await publish(kafka, topic, event)
        trail = await _trail(http, event.case_id, n, prefix=prefix)
    return trail


async def test_events_of_every_case_topic_are_trailed_in_order_with_a_valid_chain(infra, isolation):
    reported = case_reported()
    verified = _verified(reported)
    viewed = _follow_up(reported, CaseViewed(service="verification", resource="case"))
    async with serving(_app(infra, isolation)) as http:
        trail = await _publish_in_order(infra["kafka"], http, [
            (topics.INTAKE, reported), (topics.VERIFICATION, verified), (topics.ACCESS, viewed)],
            isolation["db_prefix"])
        verdict = (await http.get(f"/v1/cases/{reported.case_id}/trail/verify", headers=SUPERVISOR)).json()
    entries = trail["entries"]
    assert trail["case_id"] == reported.case_id
    assert [(e["seq"], e["event_id"], e["type"]) for e in entries] == [
        (1, reported.event_id, "case.reported"), (2, verified.event_id, "case.verified"),
        (3, viewed.event_id, "case.viewed")]
    assert entries[0]["prev_hash"] == "0" * 64
    assert [e["prev_hash"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    assert len({e["hash"] for e in entries}) == 3 and all(len(e["hash"]) == 64 for e in entries)
    assert entries[1]["actor"] == {"id": "verifier-1", "role": "verifier", "unit": None, "region": "36.03"}
    assert entries[1]["causation_id"] == reported.event_id and entries[1]["producer"] == "verification"
    assert entries[1]["correlation_id"] == reported.case_id and entries[1]["data"]["case_types"] == ["np_pmi"]
    assert entries[0]["data"]["village_code"] == PILOT_VILLAGE
    assert verdict == {"valid": True, "entries": 3, "first_broken_seq": None}


async def test_the_same_event_delivered_twice_is_recorded_once(infra, isolation, audit_db):
    reported = case_reported()
    later = _follow_up(reported, CaseInfoRequested(question="Siapa nama sponsornya?"))
    async with serving(_app(infra, isolation)) as http:
        await publish(infra["kafka"], topics.INTAKE, reported)
        await _trail(http, reported.case_id, 1, prefix=isolation["db_prefix"])
        await publish(infra["kafka"], topics.INTAKE, reported)  # redelivery
        await publish(infra["kafka"], topics.INTAKE, later)  # same partition, after the duplicate: proves it was read
        trail = await _trail(http, reported.case_id, 2, prefix=isolation["db_prefix"])
        verdict = (await http.get(f"/v1/cases/{reported.case_id}/trail/verify", headers=SUPERVISOR)).json()
    assert [(e["seq"], e["event_id"]) for e in trail["entries"]] == [(1, reported.event_id), (2, later.event_id)]
    assert await audit_db["trail"].count_documents({"case_id": reported.case_id}) == 2
    assert verdict == {"valid": True, "entries": 2, "first_broken_seq": None}
    case = await _projected(audit_db, reported.case_id, 2)
    assert case["status"] == "info_requested" and case["trail_seq"] == 2


async def test_concurrent_appends_to_one_case_give_one_gapless_valid_chain(audit_db):
    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    reported = case_reported()
    events = [reported, *(_follow_up(reported, CaseInfoRequested(question=f"q{i}")) for i in range(9))]

    async def record(event):
        now = datetime.now(UTC)
        return await store.append(event.case_id, event.event_id, lambda last: domain.chain_entry(event, last, now))

    results = await asyncio.gather(*(record(e) for e in events + events))  # every event twice, all at once
    entries = await store.trail_of(reported.case_id)
    assert sum(appended for _, appended in results) == 10
    assert [e["seq"] for e in entries] == list(range(1, 11))
    assert sorted(e["event_id"] for e in entries) == sorted(e.event_id for e in events)
    assert domain.verify_chain(entries)["valid"] is True


async def test_an_event_redelivered_after_a_crash_between_trail_and_case_write_completes_the_case(
        infra, isolation, audit_db):
    reported = case_reported()
    async with serving(_app(infra, isolation)) as http:
        # The first delivery got as far as the trail entry, then the process died: no case document, no commit.
        await audit_db["trail"].insert_one(domain.chain_entry(reported, None, datetime.now(UTC)))
        await publish(infra["kafka"], topics.INTAKE, reported)
        case = await _projected(audit_db, reported.case_id, 1)
        trail = await _trail(http, reported.case_id, 1, prefix=isolation["db_prefix"])
    assert case["status"] == "reported" and case["village_code"] == PILOT_VILLAGE
    assert [e["event_id"] for e in trail["entries"]] == [reported.event_id]


async def test_a_late_event_older_than_the_cases_status_does_not_move_it_back(infra, isolation, audit_db):
    reported = case_reported()
    late = _follow_up(reported, CaseInfoRequested(question="?")).model_copy(
        update={"occurred_at": datetime.now(UTC) - timedelta(minutes=5)})
    async with serving(_app(infra, isolation)) as http:
        await _publish_in_order(infra["kafka"], http, [
            (topics.INTAKE, reported), (topics.VERIFICATION, _verified(reported)), (topics.VERIFICATION, late)],
            isolation["db_prefix"])
        case = await _projected(audit_db, reported.case_id, 3)
    assert case["status"] == "verified" and case["trail_seq"] == 3


async def test_tampering_with_or_deleting_a_stored_entry_is_reported_at_its_seq(infra, isolation, audit_db):
    changed, cut = case_reported(), case_reported()
    async with serving(_app(infra, isolation)) as http:
        for reported in (changed, cut):
            await _publish_in_order(infra["kafka"], http, [
                (topics.INTAKE, reported), (topics.VERIFICATION, _verified(reported)),
                (topics.VERIFICATION, _follow_up(reported, CaseRejected(reason="duplikat")))],
                isolation["db_prefix"])
            await _projected(audit_db, reported.case_id, 3)
            before = (await http.get(f"/v1/cases/{reported.case_id}/trail/verify", headers=SUPERVISOR)).json()
            assert before == {"valid": True, "entries": 3, "first_broken_seq": None}
        result = await audit_db["trail"].update_one({"case_id": changed.case_id, "seq": 2},
                                                    {"$set": {"event.data.case_types": ["tppo"]}})
        assert result.modified_count == 1
        await audit_db["trail"].delete_one({"case_id": cut.case_id, "seq": 3})
        tampered = (await http.get(f"/v1/cases/{changed.case_id}/trail/verify", headers=SUPERVISOR)).json()
        truncated = (await http.get(f"/v1/cases/{cut.case_id}/trail/verify", headers=SUPERVISOR)).json()
    assert tampered == {"valid": False, "entries": 3, "first_broken_seq": 2}
    assert truncated == {"valid": False, "entries": 2, "first_broken_seq": 3}


async def test_a_case_outside_the_callers_region_is_not_found_and_roles_are_checked(infra, isolation):
    reported = case_reported()
    async with serving(_app(infra, isolation)) as http:
        await publish(infra["kafka"], topics.INTAKE, reported)
        await _trail(http, reported.case_id, 1, prefix=isolation["db_prefix"])
        trail_url = f"/v1/cases/{reported.case_id}/trail"
        elsewhere = auth("supervisor", "36.01")
        assert (await http.get(trail_url, headers=elsewhere)).status_code == 404
        assert (await http.get(trail_url + "/verify", headers=elsewhere)).json()["error"]["code"] == "not_found"
        assert (await http.get(f"/v1/cases/{uuid.uuid4()}/trail", headers=SUPERVISOR)).status_code == 404
        listed = (await http.get("/v1/cases", headers=elsewhere)).json()["items"]
        assert reported.case_id not in [c["case_id"] for c in listed]
        assert (await http.get(trail_url, headers=auth("reporter", PILOT_VILLAGE))).status_code == 403
        assert (await http.get(trail_url, headers=auth("verifier", "36.03"))).status_code == 403
        assert (await http.get(trail_url)).status_code == 401
        assert (await http.get("/v1/deadletters", headers=auth("investigator", "36", unit="kp2mi"))).status_code == 403
        assert (await http.get(trail_url, headers={"Authorization": "Bearer forged"})).status_code == 401
        assert (await http.get(trail_url, headers=auth("admin", "36"))).status_code == 200
        assert (await http.get(trail_url, headers=auth("supervisor", "36.03.11"))).status_code == 200


async def test_cases_are_searched_and_counted_within_the_supervisors_region(infra, isolation):
    district = f"9{random.randint(0, 9)}.{random.randint(10, 99)}.{random.randint(10, 99)}"  # no other test's cases
    v1, v2 = f"{district}.{random.randint(1000, 4999)}", f"{district}.{random.randint(5000, 9999)}"
    a, b, c = (case_reported(village_code=v1), case_reported(village_code=v1), case_reported(village_code=v2))
    supervisor = auth("supervisor", district)
    async with serving(_app(infra, isolation)) as http:
        for event in (a, b, c):
            await publish(infra["kafka"], topics.INTAKE, event)
        for event in (a, b, c):
            await _trail(http, event.case_id, 1, prefix=isolation["db_prefix"], headers=supervisor)
        await publish(infra["kafka"], topics.VERIFICATION, _verified(a, types=("tppo", "np_pmi")))
        await publish(infra["kafka"], topics.VERIFICATION, _follow_up(b, CaseRejected(reason="bukan TPPO")))

        async def search(**params):
            r = await http.get("/v1/cases", headers=supervisor, params=params)
            assert r.status_code == 200, r.text
            return r.json()

        async def decided():
            items = (await search(status="verified"))["items"] + (await search(status="rejected"))["items"]
            # each search is itself a recorded read of the cases it lists, so their trails keep growing
            return items if len(items) == 2 and all(i["trail_entries"] >= 2 for i in items) else None

        await eventually(decided, timeout=40)
        ids = lambda page: {i["case_id"] for i in page["items"]}  # noqa: E731
        assert ids(await search()) == {a.case_id, b.case_id, c.case_id}
        assert ids(await search(type="tppo")) == {a.case_id}
        assert ids(await search(village_code=v2)) == {c.case_id}
        assert ids(await search(status="reported")) == {c.case_id}
        day_ago = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        assert ids(await search(reported_from=day_ago)) == {a.case_id, b.case_id, c.case_id}
        assert ids(await search(reported_to=day_ago)) == set()
        first = await search(limit=2)
        second = await search(limit=2, cursor=first["next"])
        assert len(first["items"]) == 2 and second["next"] is None and ids(first) | ids(second) == ids(await search())
        [item] = (await search(type="tppo"))["items"]
        assert item["status"] == "verified" and item["types"] == ["np_pmi", "tppo"] and item["village_code"] == v1
        # two events, plus the searches above, which are recorded reads of the case
        assert item["case_number"] == a.data["case_number"] and item["trail_entries"] >= 2
        bad = await http.get("/v1/cases", headers=supervisor, params={"status": "lost"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
        stats = (await http.get("/v1/stats", headers=supervisor)).json()
    assert stats["total"] == 3
    assert stats["by_status"] == {"rejected": 1, "reported": 1, "verified": 1}
    assert stats["by_type"] == {"np_pmi": 1, "tppo": 1}
    assert stats["by_village"] == {v1: 2, v2: 1} and stats["by_district"] == {district: 3}
    # over time, an undecided (or rejected) report counts under the kind its reporter suspected
    assert sum(w["by_type"].get("np_pmi", 0) for w in stats["weeks"]) == 3
    assert sum(w["by_type"].get("tppo", 0) for w in stats["weeks"]) == 1
    assert sum(w["reports"] for w in stats["weeks"]) == 3


async def test_the_figures_kept_per_week_are_counted_again_when_a_case_of_that_week_changes(
        infra, isolation, audit_db):
    """Stats keep each week's figures (FerretDB cannot count a year of cases on every view) but never show stale
    ones: a case that changes makes its week counted again; a period cut inside a week is counted case by case."""
    long_ago = datetime(2026, 3, 4, 10, tzinfo=UTC)  # a Wednesday, in a week no other test reports in
    a, b = (case_reported(received_at=long_ago + timedelta(hours=h), observed_at=long_ago - timedelta(days=1))
            .model_copy(update={"occurred_at": long_ago + timedelta(hours=h)}) for h in (0, 48))
    async with serving(_app(infra, isolation)) as http:
        for event in (a, b):
            await publish(infra["kafka"], topics.INTAKE, event)
            await _trail(http, event.case_id, 1, prefix=isolation["db_prefix"])
        week = {"reported_from": "2026-03-02T00:00:00+00:00", "reported_to": "2026-03-09T00:00:00+00:00"}

        async def both_counted():  # the read model takes in a round's events every few seconds
            body = (await http.get("/v1/stats", headers=SUPERVISOR, params=week)).json()
            return body if body["by_status"] == {"reported": 2} else None

        first = await eventually(both_counted, timeout=30)
        kept = await audit_db["stats_parts"].find_one({"_id": "36.03|2026-03-02"})
        assert kept is not None and json.loads(kept["part"])["by_status"] == [["reported", 2]]
        again = (await http.get("/v1/stats", headers=SUPERVISOR, params=week)).json()
        assert again == first  # from the kept part
        await publish(infra["kafka"], topics.VERIFICATION, _verified(a, types=("tppo",)))

        async def decided():
            body = (await http.get("/v1/stats", headers=SUPERVISOR, params=week)).json()
            return body if body["by_status"] == {"reported": 1, "verified": 1} else None

        after = await eventually(decided, timeout=30)
        assert after["by_type"] == {"tppo": 1} and after["decided_cases"] == 1
        # Thursday on: b only (reported on Friday), counted case by case from the week's cases
        cut = (await http.get("/v1/stats", headers=SUPERVISOR,
                              params={**week, "reported_from": "2026-03-05T00:00:00+00:00"})).json()
        assert cut["total"] == 1 and cut["by_status"] == {"reported": 1}
        everything = (await http.get("/v1/stats", headers=SUPERVISOR)).json()
        assert everything["total"] == 2


async def test_a_message_that_is_not_json_is_dead_lettered_and_listed_while_the_consumer_goes_on(infra, isolation):
    good = case_reported()
    garbage_key = good.case_id  # same key, same partition: the good event is read only after the garbage
    async with serving(_app(infra, isolation)) as http:
        await publish(infra["kafka"], topics.INTAKE, b"\xffthis is not json", key=garbage_key)
        await publish(infra["kafka"], topics.INTAKE, good)
        await _trail(http, good.case_id, 1, prefix=isolation["db_prefix"])

        async def listed():
            r = await http.get("/v1/deadletters", headers=SUPERVISOR, params={"case_id": garbage_key})
            return r.json()["items"] if r.status_code == 200 and r.json()["items"] else None

        [dead] = await eventually(listed, timeout=40)
        newest_first = (await http.get("/v1/deadletters", headers=auth("admin", "36"), params={"limit": 200})).json()
    assert dead["source_topic"] == topics.INTAKE and dead["consumer"] == "audit" and dead["key"] == garbage_key
    assert dead["body"] == "[masked: 17 characters, not JSON]" and "not a valid event envelope" in dead["error"]
    assert dead["headers"][topics.DLQ_SOURCE_TOPIC] == topics.INTAKE and dead["topic"] == topics.DEADLETTER
    assert dead["headers"][topics.DLQ_SOURCE_OFFSET].isdigit()
    stamps = [item["recorded_at"] for item in newest_first["items"]]
    assert stamps == sorted(stamps, reverse=True) and dead["id"] in [item["id"] for item in newest_first["items"]]


async def test_a_dead_letter_is_listed_with_its_data_masked(infra, isolation):
    nik, name = f"3603{uuid.uuid4().int % 10**12:012d}", f"Rohani{uuid.uuid4().int % 10**6}"
    case_id = str(uuid.uuid4())
    unsealed = (f'{{"event_id": "e-1", "type": "case.reported", "case_id": "{case_id}", "data": {{"persons": '
                f'[{{"role": "potential_victim", "name": "{name}", "nik": "{nik}", "age": 19}}]}}}}').encode()
    async with serving(_app(infra, isolation)) as http:
        await publish(infra["kafka"], topics.INTAKE, unsealed, key=case_id)  # no occurred_at: not an envelope

        async def listed():
            # The case is unknown to audit (only its dead letter exists), so only an admin sees it listed.
            r = await http.get("/v1/deadletters", headers=auth("admin", "36.03"), params={"case_id": case_id})
            return r.json()["items"] if r.status_code == 200 and r.json()["items"] else None

        [dead] = await eventually(listed, timeout=40)
    assert nik not in repr(dead) and name not in repr(dead)
    shown = json.loads(dead["body"])
    assert shown["type"] == "case.reported" and shown["case_id"] == case_id
    assert shown["data"] == {"persons": [{"role": "[masked]", "name": "[masked]", "nik": "[masked]", "age": "[masked]"}]}


class _Record:
    """A Kafka record as a consumer's batch holds it."""

    def __init__(self, event: Envelope, offset: int):
        self.topic, self.partition, self.offset, self.headers = topics.VERIFICATION, 0, offset, ()
        self.key, self.value = event.case_id.encode(), event.to_json().encode()


async def _apply_batch(store: AuditStore, events: list[Envelope]) -> None:
    from shared.consumer import EventConsumer, consume_batch

    async def record(event):
        now = datetime.now(UTC)
        await store.record(event.case_id, event.event_id, lambda last: domain.chain_entry(event, last, now),
                           domain.case_updates(event), opens=event.type == "case.reported")  # as the handler does

    async def no_dead_letters(*args):
        raise AssertionError(f"dead-lettered: {args}")

    consumer = EventConsumer(name="audit", apply=record, dead_letter=no_dead_letters, backoff_s=0)
    await consume_batch(consumer, [_Record(e, i) for i, e in enumerate(events)], concurrency=4)


async def test_links_are_chained_on_a_head_held_in_memory_and_the_case_written_once_per_round(audit_db,
                                                                                            monkeypatch):
    from shared.contracts.verification import CaseLinked

    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    reported, other = case_reported(), case_reported()
    links = [_follow_up(reported, CaseLinked(linked_case_id=str(uuid.uuid4()), reasons=["phone"])) for _ in range(10)]
    reads = calls_to(monkeypatch, store.cases, "find_one")
    await _apply_batch(store, [reported, *links[:3], other])
    await _apply_batch(store, links[3:6])  # later batches: the head is still held, the case not written
    await _apply_batch(store, links[6:])
    assert await audit_db["cases"].find_one({"_id": reported.case_id}) is None  # the report's write waits too
    assert await audit_db["head_journal"].count_documents({}) == 3  # one note per batch, before its commit
    assert await store.write_heads() == 2
    reads = [f for f in reads if f.get("_id") == reported.case_id]
    entries = await store.trail_of(reported.case_id)
    assert [e["event_id"] for e in entries] == [reported.event_id, *(e.event_id for e in links)]
    assert domain.verify_chain(entries)["valid"] is True
    doc = await audit_db["cases"].find_one({"_id": reported.case_id})
    assert (doc["trail_seq"], doc["trail_hash"], doc["status"]) == (11, entries[-1]["hash"], "reported")
    assert reads == []  # the report opens its case (no document to look for); the links went on the head held here
    # written once, for the report and the ten links of three batches: a new document causing no events, no claim
    assert await audit_db["cases_versions"].count_documents({"doc_id": reported.case_id}) == 0
    assert await audit_db["head_journal"].count_documents({}) == 0  # every head it named is written

    await _apply_batch(store, [reported, *links])  # the whole batch again (a crash before its commit): no change
    await store.write_heads()
    assert len(await store.trail_of(reported.case_id)) == 11
    assert (await audit_db["cases"].find_one({"_id": reported.case_id}))["trail_seq"] == 11


async def test_the_links_of_a_batch_to_many_cases_go_into_their_trails_in_one_insert(audit_db, monkeypatch):
    from shared.contracts.verification import CaseLinked

    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    earlier = [case_reported() for _ in range(12)]
    await _apply_batch(store, earlier)
    new = case_reported()
    # a recruiter's report: linked to twelve earlier cases, each told in its own trail, and its own twelve links
    links = [_follow_up(c, CaseLinked(linked_case_id=new.case_id, reasons=["same recruiter phone"])) for c in earlier]
    links += [_follow_up(new, CaseLinked(linked_case_id=c.case_id, reasons=["same recruiter phone"])) for c in earlier]
    inserts = calls_to(monkeypatch, store.trail, "insert_many")
    await _apply_batch(store, [new, *links])
    # the report went in alone (it writes its case document); the 24 links, chained in memory, in one command
    assert [len(docs) for docs in inserts] == [1, 24]
    for case in [*earlier, new]:
        entries = await store.trail_of(case.case_id)
        assert len(entries) == (2 if case is not new else 13)
        assert domain.verify_chain(entries)["valid"] is True


async def test_a_head_moved_on_by_another_process_costs_a_collision_not_a_broken_chain(audit_db):
    from shared.contracts.verification import CaseLinked

    mine, other = AuditStore(audit_db, SystemClock()), AuditStore(audit_db, SystemClock())
    await mine.ensure_indexes()
    reported = case_reported()

    def link():
        return _follow_up(reported, CaseLinked(linked_case_id=str(uuid.uuid4()), reasons=["name"]))

    await _apply_batch(mine, [reported, link()])
    await _apply_batch(other, [link(), link()])  # a rebalance: the other copy appended meanwhile
    late = [link() for _ in range(3)]
    await _apply_batch(mine, late)  # chained on a stale head: the first collides, the three are appended in order
    await mine.write_heads()
    entries = await mine.trail_of(reported.case_id)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["event_id"] for e in entries[-3:]] == [e.event_id for e in late]
    doc = await audit_db["cases"].find_one({"_id": reported.case_id})
    assert domain.verify_chain(entries, domain.head_of(doc))["valid"] is True and doc["trail_seq"] == 7


async def test_chained_entries_wait_out_a_database_outage_at_the_batchs_end(audit_db, monkeypatch):
    from pymongo.errors import AutoReconnect

    from shared.contracts.verification import CaseLinked

    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    reported = case_reported()
    await _apply_batch(store, [reported])
    insert_many, failures = store.trail.insert_many, []

    async def away_once(docs, *args, **kwargs):
        if not failures:
            failures.append(len(docs))
            raise AutoReconnect("connection refused (simulated)")
        return await insert_many(docs, *args, **kwargs)

    monkeypatch.setattr(store.trail, "insert_many", away_once)
    links = [_follow_up(reported, CaseLinked(linked_case_id=str(uuid.uuid4()), reasons=["phone"])) for _ in range(4)]
    await _apply_batch(store, links)  # the batch's end waits and tries again: only then may it be committed
    assert failures == [4]
    assert [e["event_id"] for e in await store.trail_of(reported.case_id)] == \
        [reported.event_id, *(e.event_id for e in links)]


async def test_an_entry_the_database_refuses_for_good_is_kept_as_a_dead_letter_and_the_others_go_in(audit_db,
                                                                                                   monkeypatch):
    from pymongo.errors import OperationFailure

    from shared.contracts.verification import CaseLinked

    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    reported = case_reported()
    await _apply_batch(store, [reported])
    links = [_follow_up(reported, CaseLinked(linked_case_id=str(uuid.uuid4()), reasons=["phone"])) for _ in range(4)]
    poison = links[1].event_id
    insert_many = store.trail.insert_many

    async def refusing(docs, *args, **kwargs):
        if any(d.get("event_id") == poison for d in docs):
            raise OperationFailure("refused (simulated)", code=2)
        return await insert_many(docs, *args, **kwargs)

    monkeypatch.setattr(store.trail, "insert_many", refusing)
    await _apply_batch(store, links)
    await store.write_heads()
    entries = await store.trail_of(reported.case_id)
    assert [e["event_id"] for e in entries] == [reported.event_id, *(e.event_id for e in links if e.event_id != poison)]
    assert domain.verify_chain(entries)["valid"] is True
    dead = await audit_db["deadletters"].find_one({"_id": f"trail:{reported.case_id}:{poison}"})
    assert dead["case_id"] == reported.case_id and dead["consumer"] == "audit" and poison in dead["body"]
    assert (await audit_db["cases"].find_one({"_id": reported.case_id}))["needs_attention"]


async def test_each_batch_journals_only_the_heads_it_moved(audit_db):
    from shared.contracts.verification import CaseLinked

    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    first, second = case_reported(), case_reported()

    def link(case):
        return _follow_up(case, CaseLinked(linked_case_id=str(uuid.uuid4()), reasons=["phone"]))

    await _apply_batch(store, [first, second, link(first), link(second)])
    await _apply_batch(store, [link(second)])
    notes = sorted(await audit_db["head_journal"].find({}).to_list(), key=lambda n: -len(n["heads"]))
    assert [sorted(h["case_id"] for h in n["heads"]) for n in notes] == \
        [sorted([first.case_id, second.case_id]), [second.case_id]]
    assert [h["seq"] for h in notes[1]["heads"]] == [3]
    restarted = AuditStore(audit_db, SystemClock())
    assert await restarted.recover_heads() == 2  # the notes together name every head left unwritten
    heads = {c.case_id: (await audit_db["cases"].find_one({"_id": c.case_id}))["trail_seq"] for c in (first, second)}
    assert heads == {first.case_id: 2, second.case_id: 3}


async def test_the_events_of_a_round_are_written_into_their_case_document_once(audit_db, monkeypatch):
    from shared.contracts.verification import CaseLinked

    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    reported = case_reported()
    links = [_follow_up(reported, CaseLinked(linked_case_id=str(uuid.uuid4()), reasons=["phone"])) for _ in range(3)]
    await _apply_batch(store, [reported, *links])
    await _apply_batch(store, [_follow_up(reported, CaseInfoRequested(question="Kapan?"))])
    assert await audit_db["cases"].find_one({"_id": reported.case_id}) is None  # not before the round
    shown = await AuditStore(audit_db, SystemClock()).case(reported.case_id)  # meanwhile, as its trail tells it
    assert (shown["trail_seq"], shown["status"], shown["region_path"][-1]) == (5, "info_requested", PILOT_VILLAGE)
    assert await store.case(str(uuid.uuid4())) is None
    writes = calls_to(monkeypatch, store.case_versions, "write")
    assert await store.write_heads() == 1
    doc = await audit_db["cases"].find_one({"_id": reported.case_id})
    assert (doc["trail_seq"], doc["status"], doc["region_path"][-1]) == (5, "info_requested", PILOT_VILLAGE)
    assert len(writes) == 1  # the report, three links and the request: one write
    assert domain.verify_chain(await store.trail_of(reported.case_id), domain.head_of(doc))["valid"] is True
    assert await store.write_heads() == 0  # nothing left


async def test_heads_a_stopped_process_left_unwritten_are_written_by_the_next_one(audit_db):
    from shared.contracts.verification import CaseLinked

    stopped = AuditStore(audit_db, SystemClock())
    await stopped.ensure_indexes()
    first, second = case_reported(), case_reported()
    links = [_follow_up(c, CaseLinked(linked_case_id=str(uuid.uuid4()), reasons=["name"])) for c in (first, second)
             for _ in range(2)]
    await _apply_batch(stopped, [first, second, *links[:3]])
    await _apply_batch(stopped, links[3:])
    # the process stops here: its heads and updates were never written, only journaled with each batch
    assert await audit_db["cases"].count_documents({"_id": {"$in": [first.case_id, second.case_id]}}) == 0

    started = AuditStore(audit_db, SystemClock())
    assert await started.recover_heads() == 2
    for case in (first, second):
        doc = await audit_db["cases"].find_one({"_id": case.case_id})
        entries = await started.trail_of(case.case_id)
        assert doc["trail_seq"] == len(entries) == 3 and doc["trail_hash"] == entries[-1]["hash"]
        # what the report told the read model, from its trail entry
        assert (doc["status"], doc["region_path"][-1], doc["suspected_types"]) == ("reported", PILOT_VILLAGE, ["np_pmi"])
        assert domain.verify_chain(entries, domain.head_of(doc))["valid"] is True
    assert await audit_db["head_journal"].count_documents({}) == 0
    later = _follow_up(first, CaseInfoRequested(question="Siapa sponsornya?"))
    await _apply_batch(started, [later])
    assert [e["seq"] for e in await started.trail_of(first.case_id)] == [1, 2, 3, 4]


async def test_a_head_left_unwritten_without_a_journal_is_found_by_the_next_event(audit_db):
    """A journal note that could not be written either (the database away at the batch's end, then a crash):
    the next event of the case meets the stale head, searches the trail and writes the head."""
    from shared.contracts.verification import CaseLinked

    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    reported = case_reported()
    links = [_follow_up(reported, CaseLinked(linked_case_id=str(uuid.uuid4()), reasons=["name"])) for _ in range(3)]
    await _apply_batch(store, [reported, *links])
    await audit_db["head_journal"].delete_many({})
    restarted = AuditStore(audit_db, SystemClock())
    assert await restarted.recover_heads() == 0
    assert await audit_db["cases"].find_one({"_id": reported.case_id}) is None  # behind the trail
    later = _follow_up(reported, CaseInfoRequested(question="Siapa sponsornya?"))
    await _apply_batch(restarted, [later])
    entries = await restarted.trail_of(reported.case_id)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5] and entries[-1]["event_id"] == later.event_id
    assert domain.verify_chain(entries)["valid"] is True
    # the stale head was found by a collision: the document takes in the whole trail, the report's updates too
    assert await restarted.write_heads() == 1
    doc = await audit_db["cases"].find_one({"_id": reported.case_id})
    assert (doc["trail_seq"], doc["status"], doc["region_path"][-1]) == (5, "info_requested", PILOT_VILLAGE)


async def test_a_report_that_comes_after_its_cases_other_events_or_again_still_chains(audit_db):
    """A report is chained as its case's seq 1 without looking for a case document (no read: the test of links
    chained on a head held in memory). Where the
    trail had entries already (its case's other events came first, through another process) seq 1 collides and
    the trail is searched; a report delivered again appends nothing."""
    from shared.contracts.verification import CaseLinked

    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    reported = case_reported()
    await _apply_batch(store, [reported])
    assert await store.write_heads() == 1

    late = case_reported()
    early = AuditStore(audit_db, SystemClock())
    await _apply_batch(early, [_follow_up(late, CaseLinked(linked_case_id=reported.case_id, reasons=["name"]))])
    assert await early.write_heads() == 1
    again = AuditStore(audit_db, SystemClock())  # the report's copy, which never saw the case
    await _apply_batch(again, [late, reported])  # the late report, and the first one delivered again
    await again.write_heads()
    late_entries, entries = await again.trail_of(late.case_id), await again.trail_of(reported.case_id)
    assert [e["type"] for e in late_entries] == ["case.linked", "case.reported"]
    assert [e["event_id"] for e in entries] == [reported.event_id]
    for case, chain in ((late, late_entries), (reported, entries)):
        doc = await audit_db["cases"].find_one({"_id": case.case_id})
        assert domain.verify_chain(chain, domain.head_of(doc))["valid"] is True
        assert (doc["trail_seq"], doc["status"], doc["region_path"][-1]) == (len(chain), "reported", PILOT_VILLAGE)


async def test_the_search_reads_busy_weeks_a_day_at_a_time_in_the_same_order_as_a_sort(audit_db):
    """The search reads a report week at a time, and a busy week a day at a time: pages come out in the order one
    sort of every matching case would give, however the days and weeks are filled, within a period too; a case
    stored before cases carried their report day is given it once and found in its place."""
    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    region = ["36", "36.03"]
    monday = datetime(2026, 6, 1, tzinfo=UTC)
    rng, busy = random.Random(7), BUSY_DAY + 5
    # a busy Sunday and Saturday (more than a day's read), a quiet Friday, a quiet week before, one case a week
    # earlier still, and cases of another region and of no report time
    spots = ([monday + timedelta(days=6, minutes=rng.randrange(1440)) for _ in range(busy)]
             + [monday + timedelta(days=5, minutes=rng.randrange(1440)) for _ in range(busy)]
             + [monday + timedelta(days=4, minutes=n) for n in range(3)]
             + [monday - timedelta(days=d, hours=3) for d in (1, 3, 3, 6)] + [monday - timedelta(days=10)])
    docs = []
    for n, at in enumerate(spots):
        stamp = domain.timestamp(at)
        docs.append({"_id": f"c{n:03d}", "region_path": region, "status": "verified" if n % 3 else "reported",
                     "reported_at": stamp, "reported_week": domain.report_week(stamp),
                     "reported_day": domain.report_day(stamp)})
    docs.append({**docs[0], "_id": "elsewhere", "region_path": ["36", "36.01"]})
    docs.append({"_id": "untimed", "region_path": region, "status": "reported", "reported_at": None,
                 "reported_week": domain.NO_WEEK, "reported_day": domain.NO_WEEK})
    for day in {d["reported_day"] for d in docs}:  # as `project` registers them, before a case of the day
        await store.note_day(day)
    await audit_db["cases"].insert_many(docs)
    for week in {d["reported_week"] for d in docs}:
        await store._touch_week(week)

    def expected(status=None, low=None, high=None):
        chosen = [d for d in docs if "36.03" in d["region_path"] and (status is None or d["status"] == status)
                  and (low is None or (d["reported_at"] or "") >= low) and (high is None or (d["reported_at"] or "") < high)
                  and (d["reported_at"] or low is None and high is None)]
        chosen.sort(key=lambda d: d["_id"])
        chosen.sort(key=lambda d: d["reported_at"] or "", reverse=True)
        return [d["_id"] for d in chosen]

    async def pages(size, filters=None, start=None, end=None):
        out, offset = [], 0
        while page := await store.search("36.03", filters or {}, offset, size, start, end):
            out += [d["_id"] for d in page]
            offset += size
        return out

    assert [d["_id"] for d in await store.search("36.03", {}, 0, 200)] == expected()
    assert expected()[-1] == "untimed" and len(expected()) == 2 * busy + 3 + 4 + 1 + 1
    for size in (1, 7, 44, 45, 50, 91):
        assert await pages(size) == expected(), size
    assert await pages(10, {"status": "reported"}) == expected("reported")
    start, end = monday - timedelta(days=3, hours=4), monday + timedelta(days=5, hours=12)
    window = {"reported_at": {"$gte": domain.timestamp(start), "$lt": domain.timestamp(end)}}
    assert await pages(5, window, start, end) == expected(low=domain.timestamp(start), high=domain.timestamp(end))
    # a case written before cases carried their day (nor was its day registered): found in its week's whole read,
    # and given its day once
    await audit_db["cases"].update_one({"_id": "c096"}, {"$unset": {"reported_day": ""}})
    await audit_db["report_days"].delete_one({"_id": docs[96]["reported_day"]})
    assert await pages(13) == expected()
    await audit_db["meta"].delete_many({})
    restarted = AuditStore(audit_db, SystemClock())
    assert await restarted.backfill_report_weeks() == 1 + len(docs)  # c096's day, and every case's hour
    assert await restarted.backfill_report_weeks() == 0  # once per database
    assert (await audit_db["cases"].find_one({"_id": "c096"}))["reported_day"] == docs[96]["reported_day"]
    assert await audit_db["report_days"].find_one({"_id": docs[96]["reported_day"]})
    assert await pages(13) == expected()


async def test_a_busy_day_is_read_an_hour_at_a_time_newest_first(audit_db, monkeypatch):
    """A day with cases in many hours (a province's day holds hundreds) is read an hour at a time from the newest
    until the page is full, so the first page costs about a page of cases however busy the day; the pages come out
    as one sort would give them, and a quiet day is still read whole."""
    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    busy = datetime(2026, 6, 3, tzinfo=UTC)
    spots = [busy + timedelta(hours=h, minutes=7 * n) for h in range(24) for n in range(8)]  # 192 in 24 hours
    spots += [busy - timedelta(days=1, hours=h) for h in (2, 5, 9)]  # a quiet day before (1 June)
    docs = []
    for n, at in enumerate(spots):
        stamp = domain.timestamp(at)
        docs.append({"_id": f"c{n:03d}", "region_path": ["36", "36.03"], "status": "reported", "reported_at": stamp,
                     "reported_week": domain.report_week(stamp), "reported_day": domain.report_day(stamp),
                     "reported_hour": domain.report_hour(stamp)})
        await store.note_day(docs[-1]["reported_day"])  # as `project` registers them, before a case of the day
        await store.note_hour(docs[-1]["reported_hour"])
    await audit_db["cases"].insert_many(docs)
    for week in {d["reported_week"] for d in docs}:
        await store._touch_week(week)
    assert await store.backfill_report_weeks() == 0  # every case carries its week, day and hour
    expected = [d["_id"] for d in sorted(docs, key=lambda d: d["reported_at"], reverse=True)]

    reads: list = []
    find = store.cases.find
    monkeypatch.setattr(store.cases, "find", lambda f, *a, **k: reads.append(f) or find(f, *a, **k))
    assert [d["_id"] for d in await store.search("36.03", {}, 0, 20)] == expected[:20]
    assert [f["reported_hour"] for f in reads] == ["2026-06-03T23", "2026-06-03T22", "2026-06-03T21"]  # 8 each
    reads.clear()
    out, offset = [], 0
    while page := await store.search("36.03", {}, offset, 30):
        out += [d["_id"] for d in page]
        offset += 30
    assert out == expected
    # the quiet day read whole, by each page that reaches it
    assert [f for f in reads if "reported_hour" not in f] == [{"region_path": "36.03", "reported_day": "2026-06-01"}] * 2


async def test_a_changed_week_is_counted_again_from_its_days_reading_only_the_day_that_changed(audit_db):
    """A week whose figures are out of date is the sum of its days' kept parts: a day no case of which changed is
    not counted again (a mark put in its kept part shows through), the day that changed is, and the sum is what
    counting every case of the week gives."""
    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    await store.backfill_report_weeks()  # nothing to fill in: figures may use days
    monday = datetime(2026, 7, 6, tzinfo=UTC)
    region, week = ["36", "36.03"], domain.report_week(domain.timestamp(monday))

    async def report(case_id, at, status="reported"):
        stamp = domain.timestamp(at)
        doc = {"_id": case_id, "region_path": region, "status": status, "reported_at": stamp,
               "reported_week": week, "reported_day": domain.report_day(stamp), "village_code": "36.03.11.2009",
               "suspected_types": ["tppo"]}
        await store.note_day(doc["reported_day"])
        await audit_db["cases"].replace_one({"_id": case_id}, doc, upsert=True)
        await store.touch_figures([(week, doc["reported_day"])])  # as `project` does after the write

    for n in range(3):
        await report(f"tue{n}", monday + timedelta(days=1, hours=n))
    await report("thu0", monday + timedelta(days=3))
    figures = domain.stats_of("36.03", await store.stats("36.03", None, None))
    assert figures["total"] == 4 and figures["by_status"] == {"reported": 4}
    kept = await audit_db["stats_parts"].find_one({"_id": f"36.03|{week}"})
    days = json.loads(kept["days"])
    tuesday = domain.report_day(domain.timestamp(monday + timedelta(days=1)))
    days[tuesday][1]["by_village"].append(["mark", 1])  # proves the kept part is what is used, not a recount
    await audit_db["stats_parts"].update_one({"_id": kept["_id"]}, {"$set": {"days": json.dumps(days)}})

    await report("thu0", monday + timedelta(days=3), status="verified")  # Thursday changes; Tuesday does not
    figures = domain.stats_of("36.03", await store.stats("36.03", None, None))
    assert figures["by_status"] == {"reported": 3, "verified": 1}
    assert figures["by_village"].get("mark") == 1  # Tuesday's kept part, not counted again
    every = domain.stats_of("36.03", domain.stats_part(await audit_db["cases"].find({"reported_week": week}).to_list()))
    marked_out = ("by_village", "by_district")  # (the mark counts as a village, and as a district)
    assert {k: v for k, v in figures.items() if k not in marked_out} == \
        {k: v for k, v in every.items() if k not in marked_out}

    await report("tue1", monday + timedelta(days=1, hours=1), status="rejected")  # now Tuesday changes
    figures = domain.stats_of("36.03", await store.stats("36.03", None, None))
    assert "mark" not in figures["by_village"] and figures["by_status"] == {"reported": 2, "rejected": 1,
                                                                            "verified": 1}
    every = domain.stats_of("36.03", domain.stats_part(await audit_db["cases"].find({"reported_week": week}).to_list()))
    assert figures == every
    # most of a week's days changed (as after a bulk load): the week is read at once and parted by day again (a
    # mark in a day that did not change goes: it was counted again with the rest)
    kept = await audit_db["stats_parts"].find_one({"_id": f"36.03|{week}"})
    days = json.loads(kept["days"])
    days[tuesday][1]["by_village"].append(["mark", 1])
    await audit_db["stats_parts"].update_one({"_id": kept["_id"]}, {"$set": {"days": json.dumps(days)}})
    for n, day in enumerate((0, 2, 4)):
        await report(f"more{n}", monday + timedelta(days=day))
    figures = domain.stats_of("36.03", await store.stats("36.03", None, None))
    assert "mark" not in figures["by_village"]
    assert figures["total"] == 7 and figures == domain.stats_of("36.03", domain.stats_part(
        await audit_db["cases"].find({"reported_week": week}).to_list()))
    kept = json.loads((await audit_db["stats_parts"].find_one({"_id": f"36.03|{week}"}))["days"])
    assert sorted(kept) == sorted({domain.report_day(domain.timestamp(monday + timedelta(days=d)))
                                   for d in (0, 1, 2, 3, 4)})
    assert sum(sum(n for _, n in part["by_status"]) for _, part in kept.values()) == 7


async def test_a_changed_day_is_counted_again_from_its_hours_reading_only_the_hour_that_changed(audit_db):
    """A busy day's figures are the sum of its hours' kept parts: an hour no case of which changed is not counted
    again (a mark put in its kept part shows through), the hour that changed is; a change whose hour is not known
    makes the whole day counted again; and the sum is always what counting every case gives."""
    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    await store.backfill_report_weeks()  # nothing to fill in: figures may use days and hours
    monday = datetime(2026, 8, 3, tzinfo=UTC)
    region, week = ["36", "36.03"], domain.report_week(domain.timestamp(monday))
    day = domain.report_day(domain.timestamp(monday))

    async def report(case_id, at, status="reported", hour_known=True):
        stamp = domain.timestamp(at)
        doc = {"_id": case_id, "region_path": region, "status": status, "reported_at": stamp, "reported_week": week,
               "reported_day": day, "reported_hour": domain.report_hour(stamp), "village_code": "36.03.11.2009",
               "suspected_types": ["tppo"]}
        await store.note_day(day)
        await store.note_hour(doc["reported_hour"])
        await audit_db["cases"].replace_one({"_id": case_id}, doc, upsert=True)
        await store.touch_figures([(week, day, doc["reported_hour"]) if hour_known else (week, day)])

    for n in range(6):
        await report(f"h{n}", monday + timedelta(hours=9 + n))
    figures = domain.stats_of("36.03", await store.stats("36.03", None, None))
    assert figures["total"] == 6
    kept = await audit_db["stats_hours"].find_one({"_id": f"36.03|{day}"})  # the day's hours, beside the week
    hours = json.loads(kept["hours"])
    nine = domain.report_hour(domain.timestamp(monday + timedelta(hours=9)))
    assert sorted(hours) == sorted(domain.report_hour(domain.timestamp(monday + timedelta(hours=9 + n)))
                                   for n in range(6))
    hours[nine][1]["by_village"].append(["mark", 1])  # proves the hour's kept part is used, not a recount
    await audit_db["stats_hours"].update_one({"_id": kept["_id"]}, {"$set": {"hours": json.dumps(hours)}})

    reads = []
    found = store._stats_rows

    async def counted(region_, where):
        reads.append(where)
        return await found(region_, where)

    store._stats_rows = counted
    await report("h5", monday + timedelta(hours=14), status="verified")  # 14:00 changes; 09:00 does not
    figures = domain.stats_of("36.03", await store.stats("36.03", None, None))
    fourteen = domain.report_hour(domain.timestamp(monday + timedelta(hours=14)))
    assert reads == [{"reported_hour": fourteen}]
    # the hour's token is on its registry entry, not in the week's document (which every view reads whole)
    assert set(await audit_db["stats_weeks"].find_one({"_id": week})) == {"_id", "token", "days"}
    assert (await audit_db["report_hours"].find_one({"_id": fourteen}))["token"]
    assert figures["by_status"] == {"reported": 5, "verified": 1}
    assert figures["by_village"].get("mark") == 1  # 09:00's kept part, not counted again
    rows = await audit_db["cases"].find({"reported_week": week}).to_list()
    marked_out = ("by_village", "by_district")
    expected = domain.stats_of("36.03", domain.stats_part(rows))
    assert {k: v for k, v in figures.items() if k not in marked_out} == \
        {k: v for k, v in expected.items() if k not in marked_out}

    reads.clear()
    await report("h0", monday + timedelta(hours=9), status="rejected", hour_known=False)  # its hour not told
    figures = domain.stats_of("36.03", await store.stats("36.03", None, None))
    assert reads == [{"reported_day": day}] and "mark" not in figures["by_village"]
    assert figures == domain.stats_of("36.03", domain.stats_part(await audit_db["cases"].find(
        {"reported_week": week}).to_list()))


async def test_figures_kept_in_an_earlier_form_are_counted_again_not_misread(audit_db):
    """Parts kept before spans were counted by step held each span one by one: a view after the upgrade counts the
    week (and its day's hours) again and keeps them in the current form, whatever their tokens say."""
    store = AuditStore(audit_db, SystemClock())
    await store.ensure_indexes()
    await store.backfill_report_weeks()
    monday = datetime(2026, 9, 7, tzinfo=UTC)
    region, week = ["36", "36.03"], domain.report_week(domain.timestamp(monday))
    day = domain.report_day(domain.timestamp(monday))
    for n, minutes in enumerate((10, 20, 95)):
        reported = monday + timedelta(hours=9 + n)
        stamp = domain.timestamp(reported)
        await store.note_day(day)
        await store.note_hour(domain.report_hour(stamp))
        await audit_db["cases"].replace_one({"_id": f"old{n}"}, {
            "_id": f"old{n}", "region_path": region, "status": "verified", "reported_at": stamp,
            "decided_at": domain.timestamp(reported + timedelta(minutes=minutes, seconds=30)), "reported_week": week,
            "reported_day": day, "reported_hour": domain.report_hour(stamp), "village_code": "36.03.11.2009"},
            upsert=True)
        await store.touch_figures([(week, day, domain.report_hour(stamp))])
    token = (await audit_db["stats_weeks"].find_one({"_id": week}))["token"]
    old_part = {**domain.stats_part([]), "by_status": [["verified", 3]], "to_decision": [630.0, 1230.0, 5730.0]}
    await audit_db["stats_parts"].replace_one({"_id": f"36.03|{week}"}, {  # as the earlier release kept it
        "token": token, "part": json.dumps(old_part), "days": json.dumps({day: [token, old_part]})}, upsert=True)

    figures = domain.stats_of("36.03", await store.stats("36.03", None, None))
    assert figures["decided_cases"] == 3 and figures["median_seconds_report_to_decision"] == 20 * 60
    kept = await audit_db["stats_parts"].find_one({"_id": f"36.03|{week}"})
    assert kept["form"] == domain.PARTS_FORM and json.loads(kept["part"])["to_decision"] == [
        [600, 1], [1200, 1], [5700, 1]]
    assert figures == domain.stats_of("36.03", domain.stats_part(await audit_db["cases"].find(
        {"reported_week": week}).to_list()))
