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


async def test_the_accounts_trail_reads_blocks_and_its_page_checks_only_what_was_appended_since(
        infra, isolation, monkeypatch):
    """Every sign-in is a directory entry, so the directory grows for ever: a page of the accounts trail reads
    blocks of seq by equality (never every entry), the same pages as one sort of the region's entries, and the page's
    check of the chain recomputes what was appended since the last entry found intact. A change to an older entry
    shows at the next whole recomputation (every 15 minutes, and always on `GET /v1/directory/trail/verify`)."""
    from datetime import UTC, datetime

    from pymongo import AsyncMongoClient

    from services.audit import domain
    from services.audit.handlers import check_directory
    from services.audit.store import AuditStore
    from shared.clock import SystemClock

    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    store = AuditStore(client[f"{isolation['db_prefix']}_audit"], SystemClock())
    clock = SystemClock()
    try:
        await store.ensure_indexes()
        regions = ["36.03", "36.04", "36.03", "36.03.11.2009"]
        events_of = [_event(events.LoginFailed(username=f"u{i}", region=regions[i % 4], reason="bad_password",
                                               failures=1), f"account-{i % 7}", region=regions[i % 4])
                     for i in range(260)]
        legacy, previous = [], None  # 230 recorded before entries carried their block
        for event in events_of[:230]:
            previous = domain.directory_entry(event, previous, datetime.now(UTC))
            legacy.append({k: v for k, v in previous.items() if k != "block"})
        await store.directory.insert_many(legacy)
        await store.directory_head.insert_one({"_id": domain.DIRECTORY, "trail_seq": 230,
                                               "trail_hash": previous["hash"], "version": 1})
        assert await store.backfill_directory_blocks() == 230
        for event in events_of[230:]:  # and 30 the usual way
            await store.append_to_directory(event.event_id, lambda last, e=event: domain.directory_entry(
                e, last, datetime.now(UTC)))

        reads: list = []
        find = store.directory.find
        monkeypatch.setattr(store.directory, "find", lambda f, *a, **k: reads.append(f) or find(f, *a, **k))
        everything = sorted((e for e in await find({}).to_list() if "36.03" in e["region_path"]),
                            key=lambda e: e["seq"])
        paged, after = [], 0
        while True:
            page, resume = await store.directory_trail("36.03", None, after, 41)
            paged += page[:40]
            after = page[39]["seq"] if len(page) > 40 else resume
            if after is None:
                break
        assert [e["seq"] for e in paged] == [e["seq"] for e in everything]
        newest, before = [], 0  # the page's order: newest first
        while True:
            page, resume = await store.directory_trail("36.03", None, 0, 41, before_seq=before)
            newest += page[:40]
            before = page[39]["seq"] if len(page) > 40 else resume
            if before is None:
                break
        assert [e["seq"] for e in newest] == [e["seq"] for e in reversed(everything)]
        sparse, resume = await store.directory_trail("36.03.11.2009", None, 0, 1000, before_seq=0)
        assert len(sparse) == 65 and resume is None  # a village's few: every block read, nothing more to go to
        assert reads and all(set(f) == {"block"} for f in reads)  # never the whole directory

        whole = await check_directory(store, clock, since_checked=False)  # notes how far it is intact
        assert whole == {"valid": True, "entries": 260, "first_broken_seq": None}
        reads.clear()
        event = _event(events.LoginFailed(username="new", region="36.03", reason="bad_code", failures=1), "acc-new")
        await store.append_to_directory(event.event_id, lambda last: domain.directory_entry(
            event, last, datetime.now(UTC)))
        page_check = await check_directory(store, clock, since_checked=True)
        assert page_check["valid"] and page_check["entries"] == 261 and page_check["checked_from_seq"] == 261
        assert [f for f in reads if "trail" in f] == []  # only the block of the new entry
        later = _event(events.LoginFailed(username="new", region="36.03", reason="bad_code", failures=2), "acc-new")
        await store.append_to_directory(later.event_id, lambda last: domain.directory_entry(
            later, last, datetime.now(UTC)))
        await store.directory.update_one({"seq": 262}, {"$set": {"event.data.reason": "diubah"}})
        assert (await check_directory(store, clock, since_checked=True))["first_broken_seq"] == 262  # not yet checked
        await store.directory.update_one({"seq": 262}, {"$set": {"event.data.reason": "bad_code"}})
        await store.directory.update_one({"seq": 12}, {"$set": {"event.data.reason": "diubah"}})
        assert (await check_directory(store, clock, since_checked=True))["valid"]  # older than the last check
        assert (await check_directory(store, clock, since_checked=False))["first_broken_seq"] == 12
    finally:
        await client.close()
