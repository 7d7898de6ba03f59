"""Reads of personal data land in the trail; exports and checkpoints on the real broker and database."""

from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient

from services.audit.app import AuditSettings, create_app
from shared import topics
from shared.clock import ManualClock
from shared.contracts.envelope import new_event
from shared.contracts.referral import ReferralAcknowledged, ReferralEscalated
from shared.contracts.verification import CaseVerified, Situation
from tests.builders import case_reported
from tests.conftest import auth, eventually, serving
from tests.kafka_helpers import publish

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
        assert (await http.get(f"/v1/cases/{event.case_id}/trail", headers=SUPERVISOR)).status_code == 200
        exported = await http.get(f"/v1/cases/{event.case_id}/trail/export", headers=SUPERVISOR,
                                  params={"format": "html", "purpose": "permintaan penyidik"})
        assert exported.status_code == 200 and "text/html" in exported.headers["content-type"]
        assert "attachment" in exported.headers["content-disposition"]
        listed = await http.get("/v1/cases", headers=SUPERVISOR, params={"village_code": "36.03.11.2009"})
        assert event.case_id in [c["case_id"] for c in listed.json()["items"]]
        await eventually(lambda: _count(http, event.case_id, 4), timeout=30)
        trail = (await http.get(f"/v1/cases/{event.case_id}/trail", headers=SUPERVISOR)).json()["entries"]
    reads = [e for e in trail if e["type"] in ("case.viewed", "case.exported", "case.searched")]
    assert [e["type"] for e in reads[:3]] == ["case.viewed", "case.exported", "case.searched"]
    assert all(e["actor"]["id"] == "supervisor-reader" and e["producer"] == "audit" for e in reads)
    assert reads[1]["data"] == {"service": "audit", "format": "html", "purpose": "permintaan penyidik"}


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
    assert body["median_seconds_report_to_decision"] == pytest.approx(
        (events[1][1].occurred_at - received).total_seconds(), abs=1)
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
