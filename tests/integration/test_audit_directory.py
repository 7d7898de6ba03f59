"""Audit's directory trail on the real broker and database: identity events in one hash chain, read by region,
verified, redelivery-safe, and tampering shown at its seq."""

import uuid

import pytest

from services.audit.app import AuditSettings, create_app
from shared import topics
from shared.contracts import identity as events
from shared.contracts.envelope import Actor, new_event
from tests.conftest import auth, eventually, serving
from tests.kafka_helpers import publish

pytestmark = pytest.mark.integration


def _app(infra, isolation):
    return create_app(AuditSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                    consumer_backoff_s=0.05, **isolation))


def _event(payload, account_id, region="36.03"):
    return new_event(payload, case_id=account_id, producer="identity",
                     actor=Actor(id="admin-1", role="admin", region=region), correlation_id=account_id,
                     causation_id=None)


async def _entries(http, headers, count, **params):
    async def probe():
        r = await http.get("/v1/directory/trail", headers=headers, params=params)
        assert r.status_code == 200, r.text
        return r.json() if len(r.json()["entries"]) >= count else None

    return await eventually(probe, timeout=40)


async def test_identity_events_make_one_verifiable_chain_read_by_region(infra, isolation):
    tangerang, serang = str(uuid.uuid4()), str(uuid.uuid4())
    created = _event(events.AccountCreated(username="198001012005011001", role="verifier", region="36.03",
                                           must_change_password=True), tangerang)
    signed_in = _event(events.LoginSucceeded(username="198001012005011001", region="36.03", session_id="s1",
                                             second_factor=True), tangerang)
    elsewhere = _event(events.AccountCreated(username="nrp-77", role="supervisor", region="36.04",
                                             must_change_password=True), serang, region="36")
    ghost = _event(events.LoginFailed(reason="unknown_account", failures=1), "unknown-abc")
    supervisor, province_admin = auth("supervisor", "36.03"), auth("admin", "36")
    async with serving(_app(infra, isolation)) as http:
        for event in (created, signed_in, elsewhere, ghost):
            await publish(infra["kafka"], topics.IDENTITY, event)
        everything = await _entries(http, province_admin, 4)
        await publish(infra["kafka"], topics.IDENTITY, created)  # a redelivery changes nothing
        mine = (await http.get("/v1/directory/trail", headers=supervisor)).json()
        one = (await http.get("/v1/directory/trail", headers=supervisor, params={"account_id": tangerang})).json()
        paged = (await http.get("/v1/directory/trail", headers=province_admin, params={"limit": 2})).json()
        rest = (await http.get("/v1/directory/trail", headers=province_admin,
                               params={"after": paged["next"]})).json()
        verdict = (await http.get("/v1/directory/trail/verify", headers=supervisor)).json()
        reporter = await http.get("/v1/directory/trail", headers=auth("reporter", "36.03.11.2009"))
    entries = everything["entries"]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4] and entries[0]["prev_hash"] == "0" * 64
    assert [e["prev_hash"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    assert {e["event_id"] for e in entries} == {created.event_id, signed_in.event_id, elsewhere.event_id,
                                                ghost.event_id}
    by_id = {e["event_id"]: e for e in entries}
    assert by_id[created.event_id]["account_id"] == tangerang and by_id[created.event_id]["type"] == "account.created"
    assert {e["event_id"] for e in mine["entries"]} == {created.event_id, signed_in.event_id, ghost.event_id}
    assert [e["event_id"] for e in one["entries"]] == [e["event_id"] for e in entries if e["account_id"] == tangerang]
    assert len(paged["entries"]) == 2 and [e["seq"] for e in rest["entries"]] == [3, 4] and rest["next"] is None
    assert verdict == {"valid": True, "entries": 4, "first_broken_seq": None}
    assert reporter.status_code == 403


async def test_a_changed_directory_entry_is_reported_at_its_seq(infra, isolation):
    from pymongo import AsyncMongoClient

    account = str(uuid.uuid4())
    admin = auth("admin", "36.03")
    async with serving(_app(infra, isolation)) as http:
        for reason in ("bad_password", "bad_code", "code_reused"):
            await publish(infra["kafka"], topics.IDENTITY, _event(
                events.LoginFailed(username="u1", region="36.03", reason=reason, failures=1), account))
        await _entries(http, admin, 3)
        client = AsyncMongoClient(infra["mongo"])
        try:
            trail = client[f"{isolation['db_prefix']}_audit"]["directory_trail"]
            await trail.update_one({"seq": 2}, {"$set": {"event.data.reason": "bad_password"}})
        finally:
            await client.close()
        verdict = (await http.get("/v1/directory/trail/verify", headers=admin)).json()
    assert verdict == {"valid": False, "entries": 3, "first_broken_seq": 2}


async def test_a_checkpoint_holds_the_directory_head_so_a_deleted_directory_trail_shows(infra, isolation):
    from pymongo import AsyncMongoClient

    admin = auth("admin", "36.03")
    async with serving(_app(infra, isolation)) as http:
        for reason in ("bad_password", "bad_code"):
            await publish(infra["kafka"], topics.IDENTITY, _event(
                events.LoginFailed(username="u1", region="36.03", reason=reason, failures=1), str(uuid.uuid4())))
        await _entries(http, admin, 2)
        assert (await http.post("/v1/checkpoints", headers=admin)).status_code == 201
        assert (await http.get("/v1/checkpoints/verify", headers=admin)).json()["valid"] is True
        client = AsyncMongoClient(infra["mongo"])
        try:
            await client[f"{isolation['db_prefix']}_audit"]["directory_trail"].delete_many({})
        finally:
            await client.close()
        verdict = (await http.get("/v1/checkpoints/verify", headers=admin)).json()
    assert verdict["valid"] is False and verdict["trails_not_matching"] == ["directory"]
