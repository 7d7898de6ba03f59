"""Reads of personal data land in the trail; exports and checkpoints on the real broker and database."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient

from services.audit import records
from services.audit.app import AuditSettings, create_app
from shared import topics
from shared.clock import ManualClock
from shared.contracts.access import CasesListed
from shared.contracts.envelope import Actor, new_event
from shared.contracts.referral import ReferralAcknowledged, ReferralEscalated
from shared.contracts.verification import CaseVerified, Situation
from tests.builders import case_reported
from tests.conftest import auth, eventually, in_read_model, serving
from tests.kafka_helpers import TopicReader, publish

pytestmark = pytest.mark.integration
SUPERVISOR = auth("supervisor", "36.03", sub="supervisor-reader")
ADMIN = auth("admin", "36")


def _app(infra, isolation):
    return create_app(AuditSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                    **isolation))


async def test_a_supervisors_own_reads_exports_and_searches_are_in_the_trail(infra, isolation):
    event = case_reported()
    async with serving(_app(infra, isolation)) as http:
        await publish(infra["kafka"], topics.INTAKE, event)
        await eventually(lambda: _count(http, event.case_id, 1))
        await in_read_model(isolation["db_prefix"], event.case_id)  # before it is searched for
        assert (await http.get(f"/v1/cases/{event.case_id}/trail", headers=SUPERVISOR)).status_code == 200
        exported = await http.get(f"/v1/cases/{event.case_id}/trail/export", headers=SUPERVISOR,
                                  params={"format": "html", "purpose": "permintaan penyidik"})
        assert exported.status_code == 200 and "text/html" in exported.headers["content-type"]
        assert "attachment" in exported.headers["content-disposition"]
        listed = await http.get("/v1/cases", headers=SUPERVISOR, params={"village_code": "36.03.11.2009"})
        assert event.case_id in [c["case_id"] for c in listed.json()["items"]]
        await eventually(lambda: _count(http, event.case_id, 4), timeout=30)
        trail = (await http.get(f"/v1/cases/{event.case_id}/trail", headers=SUPERVISOR)).json()["entries"]
    # a listing travels under its own key, so it may reach the trail before or after the case's own reads
    reads = {e["type"]: e for e in trail if e["type"] in ("case.viewed", "case.exported", "cases.listed")}
    assert set(reads) == {"case.viewed", "case.exported", "cases.listed"}
    assert all(e["actor"]["id"] == "supervisor-reader" and e["producer"] == "audit" for e in reads.values())
    assert reads["case.exported"]["data"] == {"service": "audit", "format": "html", "purpose": "permintaan penyidik"}
    assert reads["cases.listed"]["data"] == {"service": "audit", "resource": "cases", "case_ids": [event.case_id],
                                             "query": {"village_code": "36.03.11.2009"}}


async def test_one_search_is_one_access_record_and_one_event_and_is_in_every_listed_cases_trail(infra, isolation):
    events = [case_reported() for _ in range(12)]
    client = AsyncMongoClient(infra["mongo"])
    access_log = client[f"{isolation['db_prefix']}_audit"]["access_log"]
    try:
        async with serving(_app(infra, isolation)) as http, TopicReader(infra["kafka"], topics.ACCESS) as access:
            for event in events:
                await publish(infra["kafka"], topics.INTAKE, event)
            for event in events:
                await eventually(lambda event=event: _count(http, event.case_id, 1))
                await in_read_model(isolation["db_prefix"], event.case_id)  # before it is searched for
            listed = await http.get("/v1/cases", headers=SUPERVISOR, params={"village_code": "36.03.11.2009"})
            shown = {c["case_id"] for c in listed.json()["items"]}
            assert {e.case_id for e in events} <= shown
            for event in events:
                await eventually(lambda event=event: _count(http, event.case_id, 2), timeout=30)
            published = await access.drain(lambda r: True, 1.0)
            records = await access_log.find({}).to_list()
            trails = [(await http.get(f"/v1/cases/{e.case_id}/trail", headers=SUPERVISOR)).json()["entries"]
                      for e in events]
    finally:
        await client.close()
    assert [r["type"] for r in records] == ["cases.listed"]  # one record for the whole answer
    [listing] = [json.loads(r.value) for r in published]  # and one event
    assert set(listing["data"]["case_ids"]) == shown and listing["case_id"].startswith("listing:")
    for event, trail in zip(events, trails, strict=True):
        [entry] = [e for e in trail if e["type"] == "cases.listed"]
        assert entry["causation_id"] == listing["event_id"] and entry["actor"]["id"] == "supervisor-reader"
        assert entry["data"]["case_ids"] == [event.case_id]  # each trail names its own case, not the others


async def test_a_listing_delivered_twice_is_recorded_once_in_each_trail(infra, isolation):
    events = [case_reported() for _ in range(3)]
    listing_id = f"listing:{uuid.uuid4()}"
    actor = Actor(id="supervisor-reader", role="supervisor", region="36.03")

    def listing(case_ids):
        return new_event(CasesListed(service="audit", resource="cases", case_ids=case_ids), case_id=listing_id,
                         producer="audit", actor=actor, correlation_id=listing_id, causation_id=None)

    twice, later = listing([e.case_id for e in events]), listing([events[0].case_id])
    async with serving(_app(infra, isolation)) as http:
        for event in events:
            await publish(infra["kafka"], topics.INTAKE, event)
            await eventually(lambda event=event: _count(http, event.case_id, 1))
        for message in (twice, twice, later):  # one key, one partition: `later` is read after the duplicate
            await publish(infra["kafka"], topics.ACCESS, message)
        await eventually(lambda: _count(http, events[0].case_id, 3), timeout=30)
        trails = [(await http.get(f"/v1/cases/{e.case_id}/trail/verify", headers=SUPERVISOR)).json()
                  for e in events]
    assert [t["entries"] for t in trails] == [3, 2, 2] and all(t["valid"] for t in trails)


async def _count(http, case_id, n):
    r = await http.get(f"/v1/cases/{case_id}/trail/verify", headers=SUPERVISOR)
    return r.status_code == 200 and r.json()["entries"] >= n


async def test_a_jsonl_export_has_every_entry_then_the_verdict(infra, isolation):
    event = case_reported()
    async with serving(_app(infra, isolation)) as http:
        await publish(infra["kafka"], topics.INTAKE, event)
        await eventually(lambda: _count(http, event.case_id, 1))
        r = await http.get(f"/v1/cases/{event.case_id}/trail/export", headers=SUPERVISOR)
    lines = r.text.splitlines()
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert '"case.reported"' in lines[0] and '"valid": true' in lines[-1]


async def test_checkpoints_detect_a_trail_deleted_whole(infra, isolation):
    first, second = case_reported(), case_reported()
    client = AsyncMongoClient(infra["mongo"])
    trail = client[f"{isolation['db_prefix']}_audit"]["trail"]
    try:
        async with serving(_app(infra, isolation)) as http:
            for event in (first, second):
                await publish(infra["kafka"], topics.INTAKE, event)
                await eventually(lambda event=event: _count(http, event.case_id, 1))
                await in_read_model(isolation["db_prefix"], event.case_id)  # a checkpoint takes the heads it shows
            assert (await http.post("/v1/checkpoints", headers=SUPERVISOR)).status_code == 403
            earlier = len((await http.get("/v1/checkpoints", headers=SUPERVISOR)).json()["items"])  # the daily one
            taken = await http.post("/v1/checkpoints", headers=ADMIN)
            assert taken.status_code == 201 and taken.json()["seq"] == earlier + 1 and taken.json()["cases"] == 2
            again = (await http.post("/v1/checkpoints", headers=ADMIN)).json()
            assert again["seq"] == earlier + 2 and again["prev_hash"] == taken.json()["hash"]
            ok = (await http.get("/v1/checkpoints/verify", headers=SUPERVISOR)).json()
            assert ok == {"valid": True, "checkpoints": earlier + 2, "first_broken_seq": None,
                          "trails_not_matching": []}
            await trail.delete_many({"case_id": second.case_id})  # someone removes a whole trail
            broken = (await http.get("/v1/checkpoints/verify", headers=SUPERVISOR)).json()
            listed = (await http.get("/v1/checkpoints", headers=SUPERVISOR)).json()["items"]
    finally:
        await client.close()
    assert broken["valid"] is False and broken["trails_not_matching"] == [second.case_id]
    assert [c["seq"] for c in listed] == list(range(len(listed), 0, -1))


async def test_a_checkpoint_keeps_heads_in_pages_and_the_list_pages(infra, isolation, monkeypatch):
    monkeypatch.setattr(records, "PAGE_SIZE", 2)
    events = [case_reported() for _ in range(3)]
    client = AsyncMongoClient(infra["mongo"])
    db = client[f"{isolation['db_prefix']}_audit"]
    try:
        async with serving(_app(infra, isolation)) as http:
            for event in events:
                await publish(infra["kafka"], topics.INTAKE, event)
                await eventually(lambda event=event: _count(http, event.case_id, 1))
                await in_read_model(isolation["db_prefix"], event.case_id)  # a checkpoint takes the heads it shows
            taken = [(await http.post("/v1/checkpoints", headers=ADMIN)).json() for _ in range(2)]
            stored = await db["checkpoints"].find_one({"seq": taken[-1]["seq"]})
            pages = await db["checkpoint_pages"].find({"pages_id": stored["pages_id"]}).to_list()
            assert "heads" not in stored and stored["cases"] == 3 and stored["pages"] == 2
            assert sorted(len(p["heads"]) for p in pages) == [1, 2]
            first = (await http.get("/v1/checkpoints", headers=SUPERVISOR, params={"limit": 1})).json()
            second = (await http.get("/v1/checkpoints", headers=SUPERVISOR,
                                     params={"limit": 1, "cursor": first["next"]})).json()
            assert [c["seq"] for c in first["items"] + second["items"]] == [taken[1]["seq"], taken[0]["seq"]]
            ok = (await http.get("/v1/checkpoints/verify", headers=SUPERVISOR)).json()
            assert ok["valid"] is True and ok["first_broken_seq"] is None
            page = next(p for p in pages if len(p["heads"]) == 2)
            await db["checkpoint_pages"].update_one({"_id": page["_id"]}, {"$set": {"heads": page["heads"][:1]}})
            broken = (await http.get("/v1/checkpoints/verify", headers=SUPERVISOR)).json()
    finally:
        await client.close()
    assert broken["valid"] is False and broken["first_broken_seq"] == taken[-1]["seq"]


async def test_stats_give_median_times_and_overdue_referrals(infra, isolation):
    reported = case_reported()
    t0 = reported.occurred_at
    region = auth("supervisor", "36.03.11")

    def follow(payload, minutes, topic):
        return topic, new_event(payload, case_id=reported.case_id, producer="x", actor=None,
                                correlation_id=reported.case_id, causation_id=None,
                                occurred_at=t0 + timedelta(minutes=minutes))

    events = [
        (topics.INTAKE, reported),
        follow(CaseVerified(case_number="n", village_code="36.03.11.2009", case_types=["tppo"], priority="high",
                            situation=Situation()), 30, topics.VERIFICATION),
        follow(ReferralEscalated(referral_id="r-1", agency_id="polresta_tangerang", deadline="acknowledge",
                                 due_at=t0, overdue_seconds=60), 40, topics.REFERRAL),
        follow(ReferralAcknowledged(referral_id="r-1", agency_id="polresta_tangerang"), 90, topics.REFERRAL),
    ]
    async with serving(_app(infra, isolation)) as http:
        for n, (topic, event) in enumerate(events, start=1):
            await publish(infra["kafka"], topic, event)
            await eventually(lambda n=n: _count(http, reported.case_id, n))
        await publish(infra["kafka"], *events[2])  # the escalation redelivered: still one overdue referral
        await publish(infra["kafka"], *events[3])

        async def stats():
            body = (await http.get("/v1/stats", headers=region)).json()
            return body if body.get("acknowledged_cases") == 1 else None

        body = await eventually(stats)
    received = datetime.fromisoformat(reported.data["received_at"])
    assert body["median_seconds_report_to_decision"] == pytest.approx(  # kept to the whole minute
        (events[1][1].occurred_at - received).total_seconds(), abs=60)
    assert body["median_seconds_decision_to_first_acknowledgement"] == 60 * 60
    assert (body["cases_with_overdue_referrals"], body["overdue_referrals"]) == (1, 1)
    # per week: the report counted by village and by its verified kind, and the escalation in its own week
    monday = (received - timedelta(days=received.weekday())).date().isoformat()
    escalated = events[2][1].occurred_at.astimezone(UTC).date()
    weeks = {w["week"]: w for w in body["weeks"]}
    assert weeks[monday]["reports"] == 1 and weeks[monday]["by_village"] == {"36.03.11.2009": 1}
    assert weeks[monday]["by_type"] == {"tppo": 1}
    assert sum(w["escalations"] for w in body["weeks"]) == 1
    assert weeks[(escalated - timedelta(days=escalated.weekday())).isoformat()]["escalations"] == 1


async def test_a_checkpoint_is_taken_by_itself_each_day(infra, isolation):
    clock = ManualClock(datetime(2026, 11, 29, 23, 0, tzinfo=UTC))
    app = create_app(AuditSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                   checkpoint_check_interval_s=0.1, **isolation), clock=clock)
    async with serving(app) as http:
        async def seqs():
            items = (await http.get("/v1/checkpoints", headers=SUPERVISOR)).json()["items"]
            return [c["seq"] for c in items]

        assert await eventually(seqs) == [1]
        clock.advance(timedelta(hours=2))  # the next day
        await eventually(lambda: _has(seqs, [2, 1]))


async def _has(probe, expected):
    return await probe() == expected
