"""The referral service on the real broker and database: routing a verified case, redelivery, and a unit's walk
through a referral over HTTP."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.referral.app import ReferralSettings, create_app
from shared import topics
from shared.clock import ManualClock
from shared.contracts.envelope import Envelope, new_event
from shared.contracts.verification import CaseVerified, Situation
from tests.conftest import auth, serving, referrals_of
from tests.kafka_helpers import TopicReader, header, publish

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)


def _app(infra, isolation, clock=None):
    settings = ReferralSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                consumer_backoff_s=0.05, **isolation)
    return create_app(settings, clock=clock)


def _verified(case_id, case_types, **situation) -> Envelope:
    payload = CaseVerified(case_number="3603-2026-000042", village_code="36.03.11.2009", case_types=case_types,
                           priority="high", situation=Situation(**situation))
    return new_event(payload, case_id=case_id, producer="verification",
                     actor=None, correlation_id=f"report-{case_id}", causation_id=None)


def _of_case(case_id):
    return lambda r: header(r, topics.HEADER_CASE_ID) == case_id


_referrals = referrals_of


async def test_a_verified_case_is_routed_once_even_when_delivered_twice(infra, isolation):
    case_id = str(uuid.uuid4())
    first = _verified(case_id, ["np_pmi"], departure_planned=True)
    reverified = _verified(case_id, ["np_pmi", "tppo"], departure_planned=True)
    supervisor = auth("supervisor", "36.03")
    async with (serving(_app(infra, isolation, ManualClock(START))) as http,
                TopicReader(infra["kafka"], topics.REFERRAL) as out):
        await publish(infra["kafka"], topics.VERIFICATION, first)
        routed = await _referrals(http, case_id, supervisor, 2)
        assert sorted(r["agency_id"] for r in routed) == ["bp3mi_banten", "tpi_soekarno_hatta"]
        assert all(r["status"] == "created" and r["priority"] == "high" and r["fallback"] is False for r in routed)
        assert routed[0]["deadlines"] == {"acknowledge_by": (START + timedelta(hours=24)).isoformat(),
                                          "first_update_by": (START + timedelta(hours=72)).isoformat()}
        assert routed[0]["next_deadline"] == "acknowledge"
        assert routed[0]["next_due_at"] == (START + timedelta(hours=24)).isoformat()
        created = await out.collect(_of_case(case_id), count=2)

        await publish(infra["kafka"], topics.VERIFICATION, first)  # redelivered: must open nothing
        # A later event of the same case (same key, same partition) is applied only after the redelivery,
        # so once its new referral shows, the duplicate has been processed.
        await publish(infra["kafka"], topics.VERIFICATION, reverified)
        routed = await _referrals(http, case_id, supervisor, 3)
        assert sorted(r["agency_id"] for r in routed) == ["bp3mi_banten", "polresta_tangerang", "tpi_soekarno_hatta"]
        created += await out.collect(_of_case(case_id), count=1)
        first_page = (await http.get("/v1/referrals", headers=supervisor,
                                     params={"case_id": case_id, "limit": 2})).json()
        second_page = (await http.get("/v1/referrals", headers=supervisor,
                                      params={"case_id": case_id, "limit": 2, "cursor": first_page["next"]})).json()
        assert len(first_page["items"]) == 2 and second_page["next"] is None
        assert {r["referral_id"] for r in first_page["items"] + second_page["items"]} == {
            r["referral_id"] for r in routed}

    events = [Envelope.from_bytes(r.value) for r in created]
    assert [e.type for e in events] == ["referral.created"] * 3
    assert sorted(e.data["agency_id"] for e in events) == sorted(r["agency_id"] for r in routed)
    assert {e.data["referral_id"] for e in events} == {r["referral_id"] for r in routed}
    assert {e.correlation_id for e in events} == {f"report-{case_id}"}
    assert {e.causation_id for e in events[:2]} == {first.event_id} and events[2].causation_id == reverified.event_id
    assert all(r.key == case_id.encode() for r in created)


async def test_a_unit_walks_its_referral_to_closed_and_nobody_else_can(infra, isolation):
    case_id = str(uuid.uuid4())
    bp3mi_sub = f"inv-bp3mi-{uuid.uuid4().hex[:6]}"
    bp3mi = auth("investigator", "36", unit="bp3mi_banten", sub=bp3mi_sub)
    tpi = auth("investigator", "36.71", unit="tpi_soekarno_hatta")
    police = auth("investigator", "36.03", unit="polresta_tangerang")
    async with (serving(_app(infra, isolation)) as http,
                TopicReader(infra["kafka"], topics.REFERRAL) as out):
        await publish(infra["kafka"], topics.VERIFICATION, _verified(case_id, ["np_pmi"], departure_planned=True))
        [mine] = await _referrals(http, case_id, bp3mi, 1)
        url = f"/v1/referrals/{mine['referral_id']}"
        assert mine["agency_id"] == "bp3mi_banten" and mine["case_number"] == "3603-2026-000042"

        # scope: another unit, another region, the wrong role, no token
        assert (await http.get("/v1/referrals", headers=police, params={"case_id": case_id})).json()["items"] == []
        assert (await http.get(url, headers=police)).status_code == 404
        assert (await http.post(url + "/acknowledge", headers=police, json={})).status_code == 404
        assert (await http.get(url, headers=auth("supervisor", "36.01"))).status_code == 404
        assert (await http.get(url, headers=auth("supervisor", "36"))).status_code == 200
        assert (await http.get(url, headers=auth("reporter", "36.03.11.2009"))).status_code == 403
        assert (await http.post(url + "/acknowledge", headers=auth("supervisor", "36"), json={})).status_code == 403
        assert (await http.get(url)).status_code == 401
        assert (await http.get("/v1/referrals/no-such-referral", headers=bp3mi)).status_code == 404
        assert (await http.get("/v1/referrals", headers=bp3mi, params={"status": "lost"})).status_code == 422
        assert (await http.get("/v1/referrals", headers=bp3mi, params={"cursor": "%%"})).status_code == 422
        assert (await http.get("/openapi.json")).status_code == 200

        # the walk, with the refusals along the way
        closing_early = await http.post(url + "/close", headers=bp3mi, json={"outcome": "departure_deferred"})
        assert closing_early.status_code == 409 and closing_early.json()["error"]["code"] == "conflict"
        acknowledged = await http.post(url + "/acknowledge", headers=bp3mi, json={})
        assert acknowledged.status_code == 200 and acknowledged.json()["status"] == "acknowledged"
        assert (await http.post(url + "/acknowledge", headers=bp3mi, json={})).status_code == 409
        assert (await http.post(url + "/accept", headers=bp3mi, json={"why": "x"})).status_code == 422
        assert (await http.post(url + "/accept", headers=bp3mi)).json()["status"] == "accepted"
        bad_kind = await http.post(url + "/updates", headers=bp3mi,
                                   json={"note": "x", "milestone": {"kind": "arrested"}})
        assert bad_kind.status_code == 422
        updated = await http.post(url + "/updates", headers=bp3mi, json={
            "note": "Keberangkatan ditunda di TPI",
            "milestone": {"kind": "departure_deferred", "office": "TPI Soekarno-Hatta", "recheck_on": "2026-12-10",
                          "missing_documents": ["rekomendasi_disnaker", "perjanjian_kerja"]}})
        assert updated.status_code == 200, updated.text
        [milestone] = updated.json()["milestones"]
        assert milestone["kind"] == "departure_deferred" and milestone["recheck_on"] == "2026-12-10"
        assert milestone["missing_documents"] == ["rekomendasi_disnaker", "perjanjian_kerja"]
        bad_outcome = await http.post(url + "/close", headers=bp3mi, json={"outcome": "solved"})
        assert bad_outcome.status_code == 422
        closed = await http.post(url + "/close", headers=bp3mi, json={"outcome": "departure_deferred"})
        assert closed.status_code == 200 and closed.json()["status"] == "closed"
        assert closed.json()["outcome"] == "departure_deferred"
        assert [h["action"] for h in closed.json()["history"]] == ["create", "acknowledge", "accept", "update",
                                                                    "close"]
        assert (await http.post(url + "/updates", headers=bp3mi, json={"note": "x"})).status_code == 409

        # the checkpoint declines its own referral after acknowledging it
        [checkpoint] = await _referrals(http, case_id, tpi, 1)
        tpi_url = f"/v1/referrals/{checkpoint['referral_id']}"
        assert (await http.post(tpi_url + "/decline", headers=tpi, json={"reason": "x"})).status_code == 409
        await http.post(tpi_url + "/acknowledge", headers=tpi, json={})
        declined = await http.post(tpi_url + "/decline", headers=tpi, json={"reason": "sudah ditangani BP3MI"})
        assert declined.status_code == 200 and declined.json()["status"] == "declined"

        closed_only = await http.get("/v1/referrals", headers=auth("supervisor", "36.03"),
                                     params={"case_id": case_id, "status": "closed"})
        assert [r["referral_id"] for r in closed_only.json()["items"]] == [mine["referral_id"]]

        records = await out.collect(_of_case(case_id), count=2 + 4 + 2)

    events = [Envelope.from_bytes(r.value) for r in records]
    walk = [e for e in events if e.data["referral_id"] == mine["referral_id"]]
    assert [e.type for e in walk] == ["referral.created", "referral.acknowledged", "referral.accepted",
                                      "referral.updated", "referral.closed"]
    assert all(e.actor.id == bp3mi_sub and e.actor.unit == "bp3mi_banten" for e in walk[1:])
    assert walk[3].data["milestone"]["kind"] == "departure_deferred" and walk[4].data["outcome"] == "departure_deferred"
    assert {e.correlation_id for e in events} == {f"report-{case_id}"}
