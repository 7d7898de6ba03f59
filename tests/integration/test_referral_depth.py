"""Referral in depth on the real broker and database: deadlines that escalate exactly once, declined referrals
re-routed (or handed to a supervisor), and `case.closed` once every referral of a case is closed."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.referral.app import ReferralSettings, create_app
from services.referral.domain import rerouted_id_for
from shared import topics
from shared.clock import ManualClock
from shared.contracts.envelope import Envelope, new_event
from shared.contracts.verification import CaseVerified, LinkedCase, Situation
from tests.conftest import auth, eventually, serving, referrals_of
from tests.kafka_helpers import TopicReader, header, publish

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)


def _settings(infra, isolation):
    return ReferralSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                            consumer_backoff_s=0.05, outbox_sweep_interval_s=0.5,
                            deadline_check_interval_s=3600, **isolation)  # the tests run the checks themselves


def _app(infra, isolation, clock=None):
    return create_app(_settings(infra, isolation), clock=clock)


async def _redeliver_and_wait(infra, isolation, record) -> None:
    """Publish a record again and wait until the referral service's group has committed past it (offsets are
    committed only after the handler's write), so what it did, or did not do, is visible."""
    producer = AIOKafkaProducer(bootstrap_servers=infra["kafka"], acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(record.topic, record.value, key=record.key, headers=list(record.headers))
    finally:
        await producer.stop()
    await _processed(infra, isolation, sent)


async def _processed(infra, isolation, record) -> None:
    """Wait until the referral service's group has committed past `record` (topic, partition, offset)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=infra["kafka"], group_id=_settings(infra, isolation).group_id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(record.topic, record.partition)

        async def committed_past():
            return (await consumer.committed(partition) or 0) > record.offset

        await eventually(committed_past, timeout=30)
    finally:
        await consumer.stop()


LINKED = LinkedCase(case_id="c-older", case_number="3603-2026-000012", reasons=["same recruiter phone"])


def _verified(case_id, case_types, priority="high", **situation) -> Envelope:
    payload = CaseVerified(case_number="3603-2026-000077", village_code="36.03.11.2009", case_types=case_types,
                           priority=priority, situation=Situation(**situation), linked_cases=[LINKED])
    return new_event(payload, case_id=case_id, producer="verification", actor=None,
                     correlation_id=f"report-{case_id}", causation_id=None)


def _of(case_id, event_type=None):
    return lambda r: header(r, topics.HEADER_CASE_ID) == case_id and (
        event_type is None or header(r, topics.HEADER_EVENT_TYPE) == event_type)


_referrals = referrals_of


async def test_a_missed_deadline_escalates_exactly_once_and_shows_on_the_supervisors_list(infra, isolation):
    case_id = str(uuid.uuid4())
    clock = ManualClock(START)
    app = _app(infra, isolation, clock)
    supervisor = auth("supervisor", "36.03")
    async with serving(app) as http, TopicReader(infra["kafka"], topics.REFERRAL) as out:
        check = app.state.check_deadlines_once
        await publish(infra["kafka"], topics.VERIFICATION, _verified(case_id, ["np_pmi"], departure_planned=True))
        routed = await _referrals(http, case_id, supervisor, 2)
        await out.collect(_of(case_id, "referral.created"), count=2)
        bp3mi = next(r for r in routed if r["agency_id"] == "bp3mi_banten")
        tpi = next(r for r in routed if r["agency_id"] == "tpi_soekarno_hatta")

        clock.advance(timedelta(hours=24))  # exactly at the acknowledge deadline: not late yet
        assert await check() == 0
        overdue = (await http.get("/v1/referrals/overdue", headers=supervisor)).json()["items"]
        assert case_id not in {r["case_id"] for r in overdue}

        # the checkpoint acknowledges in time; BP3MI does not
        unit = auth("investigator", "36.71", unit="tpi_soekarno_hatta")
        assert (await http.post(f"/v1/referrals/{tpi['referral_id']}/acknowledge", headers=unit)).status_code == 200
        clock.advance(timedelta(hours=2, seconds=5))
        # two checkers at once, then a third: one escalation
        counts = await asyncio.gather(check(), check())
        assert sorted(counts) == [0, 1]
        assert await check() == 0
        [escalated] = await out.collect(_of(case_id, "referral.escalated"), count=1)
        event = Envelope.from_bytes(escalated.value)
        assert event.data["referral_id"] == bp3mi["referral_id"] and event.data["agency_id"] == "bp3mi_banten"
        assert event.data["deadline"] == "acknowledge" and event.data["overdue_seconds"] == 2 * 3600 + 5
        assert event.correlation_id == f"report-{case_id}"
        assert await out.drain(_of(case_id, "referral.escalated"), seconds=1.5) == []

        listed = (await http.get("/v1/referrals/overdue", headers=supervisor)).json()["items"]
        mine = [r for r in listed if r["case_id"] == case_id]
        assert [r["referral_id"] for r in mine] == [bp3mi["referral_id"]]
        assert mine[0]["overdue"]["deadline"] == "acknowledge" and mine[0]["overdue"]["overdue_seconds"] == 7205
        assert [e["deadline"] for e in mine[0]["escalations"]] == ["acknowledge"]
        # scope and role: another regency sees nothing of it, an investigator may not ask
        other = (await http.get("/v1/referrals/overdue", headers=auth("supervisor", "36.01"))).json()["items"]
        assert case_id not in {r["case_id"] for r in other}
        assert (await http.get("/v1/referrals/overdue", headers=unit)).status_code == 403

        # a later deadline missed is a new breach: the checkpoint owes its first update by 72 h
        clock.advance(timedelta(hours=47))
        assert await check() == 1
        [second] = await out.collect(_of(case_id, "referral.escalated"), count=1)
        assert Envelope.from_bytes(second.value).data["deadline"] == "first_update"
        assert Envelope.from_bytes(second.value).data["agency_id"] == "tpi_soekarno_hatta"
        assert await check() == 0


async def test_a_declined_referral_moves_up_the_chain_once_and_then_to_a_supervisor(infra, isolation):
    case_id = str(uuid.uuid4())
    supervisor = auth("supervisor", "36.03")
    units = {"polresta_tangerang": auth("investigator", "36.03", unit="polresta_tangerang"),
             "polda_banten": auth("investigator", "36", unit="polda_banten"),
             "bareskrim_ppa_ppo": auth("investigator", "36", unit="bareskrim_ppa_ppo")}
    async with (serving(_app(infra, isolation)) as http,
                TopicReader(infra["kafka"], topics.REFERRAL) as out):
        await publish(infra["kafka"], topics.VERIFICATION, _verified(case_id, ["tppo"]))
        [current] = await _referrals(http, case_id, supervisor, 1)
        chain = []
        for agency, expected_next in [("polresta_tangerang", "polda_banten"), ("polda_banten", "bareskrim_ppa_ppo"),
                                      ("bareskrim_ppa_ppo", None)]:
            assert current["agency_id"] == agency
            # the unit sees the case's kinds and the numbers of its linked cases, also after a re-route
            assert current["case_types"] == ["tppo"] and current["linked_cases"] == [LINKED.model_dump()]
            url = f"/v1/referrals/{current['referral_id']}"
            await http.post(url + "/acknowledge", headers=units[agency])
            declined = await http.post(url + "/decline", headers=units[agency], json={"reason": "bukan wilayah"})
            assert declined.status_code == 200 and declined.json()["status"] == "declined"
            chain.append(current["referral_id"])
            if expected_next is None:
                assert declined.json()["needs_supervisor"] is True and declined.json()["rerouted_to"] is None
                break
            next_id = rerouted_id_for(current["referral_id"], expected_next)
            assert declined.json()["rerouted_to"] == {"referral_id": next_id, "agency_id": expected_next}

            async def replacement(next_id=next_id, agency=expected_next):
                r = await http.get(f"/v1/referrals/{next_id}", headers=units[agency])
                return r.json() if r.status_code == 200 else None

            current = await eventually(replacement)
            assert current["status"] == "created" and current["rerouted_from"] == chain[-1]

        records = await out.collect(_of(case_id), count=1 + 3 * 2 + 2)  # created; per unit ack + decline; 2 re-routes
        events = [Envelope.from_bytes(r.value) for r in records]
        assert [e.data["agency_id"] for e in events if e.type == "referral.created"] == [
            "polresta_tangerang", "polda_banten", "bareskrim_ppa_ppo"]

        # a redelivered decline re-routes nothing new
        first_decline = next(r for r in records if header(r, topics.HEADER_EVENT_TYPE) == "referral.declined")
        await _redeliver_and_wait(infra, isolation, first_decline)
        listed = (await http.get("/v1/referrals", headers=supervisor, params={"case_id": case_id})).json()["items"]
        assert sorted(r["agency_id"] for r in listed) == ["bareskrim_ppa_ppo", "polda_banten", "polresta_tangerang"]

        # nobody is left: the region's supervisors see it
        attention = (await http.get("/v1/referrals/overdue", headers=supervisor)).json()["items"]
        [stuck] = [r for r in attention if r["case_id"] == case_id]
        assert stuck["referral_id"] == chain[-1] and stuck["needs_supervisor"] is True


async def test_a_case_closes_once_when_every_referral_is_closed(infra, isolation):
    case_id = str(uuid.uuid4())
    supervisor = auth("supervisor", "36.03")
    units = {"bp3mi_banten": auth("investigator", "36", unit="bp3mi_banten"),
             "tpi_soekarno_hatta": auth("investigator", "36.71", unit="tpi_soekarno_hatta")}
    verified = _verified(case_id, ["np_pmi"], departure_planned=True)
    async with (serving(_app(infra, isolation)) as http,
                TopicReader(infra["kafka"], topics.REFERRAL) as out):
        await publish(infra["kafka"], topics.VERIFICATION, verified)
        routed = await _referrals(http, case_id, supervisor, 2)
        await publish(infra["kafka"], topics.VERIFICATION, verified)  # a duplicate changes nothing either
        outcomes = {"bp3mi_banten": "victim_handed_to_services", "tpi_soekarno_hatta": "departure_deferred"}
        closed_records = []
        for n, referral in enumerate(routed):
            agency, url = referral["agency_id"], f"/v1/referrals/{referral['referral_id']}"
            for step, body in [("acknowledge", {}), ("accept", {}), ("updates", {"note": "ditunda di TPI"}),
                               ("close", {"outcome": outcomes[agency]})]:
                r = await http.post(f"{url}/{step}", headers=units[agency], json=body)
                assert r.status_code == 200, r.text
            if n == 0:  # one of two closed: once the service has processed that, the case is still open
                closed_records += await out.collect(_of(case_id, "referral.closed"), count=1)
                await _processed(infra, isolation, closed_records[-1])
                assert await out.drain(_of(case_id, "case.closed"), seconds=1) == []
        last = await out.collect(lambda r: _of(case_id, "referral.closed")(r) or _of(case_id, "case.closed")(r),
                                 count=2)
        assert [header(r, topics.HEADER_EVENT_TYPE) for r in last] == ["referral.closed", "case.closed"]
        closed_records.append(last[0])
        closed = last[1]
        event = Envelope.from_bytes(closed.value)
        assert event.data["outcomes"] == outcomes and event.correlation_id == f"report-{case_id}"
        assert event.producer == "referral" and closed.key == case_id.encode()

        # the last referral.closed delivered again: once the service has processed it, no second case.closed
        # was written (it would be published right after its write, before the offset is committed)
        await _redeliver_and_wait(infra, isolation, closed_records[-1])
        assert await out.drain(_of(case_id, "case.closed"), seconds=1) == []


async def test_the_service_checks_deadlines_on_its_own_while_it_runs(infra, isolation):
    case_id = str(uuid.uuid4())
    clock = ManualClock(START)
    settings = _settings(infra, isolation).model_copy(update={"deadline_check_interval_s": 0.2})
    async with (serving(create_app(settings, clock=clock)) as http,
                TopicReader(infra["kafka"], topics.REFERRAL) as out):
        await publish(infra["kafka"], topics.VERIFICATION, _verified(case_id, ["tppo"], priority="critical"))
        [referral] = await _referrals(http, case_id, auth("supervisor", "36.03"), 1)
        clock.advance(timedelta(hours=4, minutes=1))
        [escalated] = await out.collect(_of(case_id, "referral.escalated"), count=1)
        event = Envelope.from_bytes(escalated.value)
        assert event.data["referral_id"] == referral["referral_id"] and event.data["overdue_seconds"] >= 60


async def test_the_overdue_list_pages_in_order_beyond_the_first_page(infra, isolation):
    clock = ManualClock(START)
    supervisor = auth("supervisor", "36.03")
    # Filed least urgent first, so the order they were stored in is the reverse of the order they are due in.
    priorities = ["low", "medium", "high", "critical"]
    case_ids = {p: str(uuid.uuid4()) for p in priorities}
    async with serving(_app(infra, isolation, clock)) as http:
        for priority in priorities:
            await publish(infra["kafka"], topics.VERIFICATION, _verified(case_ids[priority], ["np_pmi"], priority))
            await _referrals(http, case_ids[priority], supervisor, 1)
        clock.advance(timedelta(hours=200))  # past every acknowledge deadline (4 h to 168 h)
        seen, cursor = [], None
        for _ in range(len(priorities)):
            body = (await http.get("/v1/referrals/overdue", headers=supervisor,
                                   params={"limit": 1, **({"cursor": cursor} if cursor else {})})).json()
            seen += [r["case_id"] for r in body["items"]]
            cursor = body["next"]
    assert seen == [case_ids[p] for p in reversed(priorities)]  # longest overdue first, page after page
    assert cursor is None


async def test_a_full_list_shows_open_referrals_first_then_the_others_newest_first_a_day_at_a_time(infra, isolation):
    from pymongo import AsyncMongoClient

    from services.referral.domain import created_day, created_hour, created_week
    from services.referral.store import ReferralStore
    from shared.outbox import OutboxRelay

    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    db = client[f"{isolation['db_prefix']}_referral"]
    store = ReferralStore(db, OutboxRelay(lambda *a: asyncio.sleep(0), ManualClock(START)), ManualClock(START))
    await store.ensure_indexes()
    region = ["36", "36.03", "36.03.11", "36.03.11.2005"]

    async def referral(name, status, rank, days_ago, agency="polresta_tangerang"):
        at = (START - timedelta(days=days_ago, minutes=rank)).isoformat()
        await store.open({"_id": name, "referral_id": name, "case_id": f"case-{name}", "agency_id": agency,
                          "region_path": region, "status": status, "priority_rank": rank, "created_at": at,
                          "created_day": created_day(at), "created_week": created_week(at),
                          "created_hour": created_hour(at)}, [], applied=None)

    try:
        await referral("closed-old", "closed", 0, 300)
        await referral("declined-mid", "declined", 1, 40)
        await referral("closed-new", "closed", 3, 2)
        await referral("open-low-old", "acknowledged", 3, 30)
        await referral("open-critical", "created", 0, 1)
        await referral("open-low-new", "created", 3, 3)
        await referral("other-unit", "created", 0, 1, agency="bp3mi_banten")
        unit = {"agency_id": "polresta_tangerang"}
        whole = [d["_id"] for d in await store.search(unit, {}, 0, 50)]
        assert whole == ["open-critical", "open-low-old", "open-low-new", "closed-new", "declined-mid", "closed-old"]
        pages = [[d["_id"] for d in await store.search(unit, {}, offset, 2)] for offset in (0, 2, 4)]
        assert sum(pages, []) == whole  # pages across the open and closed parts neither skip nor repeat
        region_wide = [d["_id"] for d in await store.search({"region_path": "36.03"}, {}, 0, 3)]
        assert region_wide == ["open-critical", "other-unit", "open-low-old"]
        assert [d["_id"] for d in await store.search(unit, {"status": "closed"}, 0, 50)] == ["closed-old", "closed-new"]
        # a referral stored before referrals carried their day, week and hour is given them once, and is listed again
        await db["referrals"].update_one({"_id": "closed-old"},
                                         {"$unset": {"created_day": "", "created_week": "", "created_hour": ""}})
        assert "closed-old" not in [d["_id"] for d in await store.search(unit, {}, 0, 50)]
        restarted = ReferralStore(db, OutboxRelay(lambda *a: asyncio.sleep(0)), ManualClock(START))
        assert await restarted.backfill_created_days() == 3
        assert await restarted.backfill_created_days() == 0  # once per database
        assert [d["_id"] for d in await store.search(unit, {}, 0, 50)] == whole
        # quiet days (fewer than a busy day's referrals): the rest of a week is read at once, in the same order
        await referral("closed-saturday", "closed", 2, 1)  # the week of closed-new, a day later
        whole.insert(whole.index("closed-new"), "closed-saturday")
        for _ in range(2):  # by week; then a day at a time, as while the week's backfill is not done
            assert [d["_id"] for d in await restarted.search(unit, {}, 0, 50)] == whole
            assert sum([[d["_id"] for d in await restarted.search(unit, {}, n, 1)] for n in range(8)], []) == whole
            await restarted.markers.meta.delete_one({"_id": "created_weeks"})
            restarted = ReferralStore(db, OutboxRelay(lambda *a: asyncio.sleep(0)), ManualClock(START))
    finally:
        await client.close()


async def test_a_busy_day_is_listed_an_hour_at_a_time_in_the_same_order(infra, isolation, monkeypatch):
    """A day with many referrals (as its registry counts them, each referral once until the day is busy) is read an
    hour at a time, newest first, until the page is full: the pages are what one sort of the whole list gives."""
    from pymongo import AsyncMongoClient

    from services.referral import store as referral_store
    from services.referral.domain import created_day, created_hour, created_week
    from services.referral.store import ReferralStore
    from shared.outbox import OutboxRelay

    monkeypatch.setattr(referral_store, "BUSY_HOURS_DAY", 4)
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    db = client[f"{isolation['db_prefix']}_referral"]
    store = ReferralStore(db, OutboxRelay(lambda *a: asyncio.sleep(0), ManualClock(START)), ManualClock(START))
    await store.ensure_indexes()
    await store.backfill_created_days()  # nothing to fill in: the lists may read by week and by hour
    region = ["36", "36.03", "36.03.11", "36.03.11.2005"]
    names = []

    async def referral(name, at, status="closed"):
        stamp = at.isoformat()
        await store.open({"_id": name, "referral_id": name, "case_id": f"case-{name}", "agency_id": "polresta_tangerang",
                          "region_path": region, "status": status, "priority_rank": 1, "created_at": stamp,
                          "created_day": created_day(stamp), "created_week": created_week(stamp),
                          "created_hour": created_hour(stamp)}, [], applied=None)
        await store.write_counts()  # a round of the service's loop after each
        names.append((stamp, name))

    busy = START - timedelta(days=2)
    for n, hour in enumerate((1, 1, 5, 9, 9, 9, 17, 23)):  # a busy day
        await referral(f"busy{n}", busy.replace(hour=hour, minute=n))
    await referral("quiet", START - timedelta(days=3, hours=4))  # a quiet day before it
    await referral("open", START - timedelta(days=2, hours=10), status="created")  # listed first
    try:
        unit = {"agency_id": "polresta_tangerang"}
        entry = await store.days.find_one({"_id": f"agency_id:polresta_tangerang|{created_day(busy.isoformat())}"})
        assert entry["n"] == 4  # counted once each until the day is known to be busy, then not counted on
        whole = ["open"] + [name for _, name in sorted(names, reverse=True) if name != "open"]
        assert [d["_id"] for d in await store.search(unit, {}, 0, 50)] == whole
        for size in (1, 2, 3):
            pages = [[d["_id"] for d in await store.search(unit, {}, n, size)] for n in range(0, len(whole), size)]
            assert sum(pages, []) == whole, size
        region_wide = [d["_id"] for d in await store.search({"region_path": "36.03"}, {}, 0, 4)]
        assert region_wide == whole[:4]
    finally:
        await client.close()


async def test_referrals_opened_between_rounds_are_counted_in_one_write_per_day_entry(infra, isolation, monkeypatch):
    from pymongo import AsyncMongoClient

    from services.referral.domain import created_day, created_hour, created_week
    from services.referral.store import ReferralStore
    from pymongo.errors import AutoReconnect

    from shared.outbox import OutboxRelay
    from tests.conftest import calls_to

    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    db = client[f"{isolation['db_prefix']}_referral"]
    store = ReferralStore(db, OutboxRelay(lambda *a: asyncio.sleep(0), ManualClock(START)), ManualClock(START))
    await store.ensure_indexes()
    region = ["36", "36.03", "36.03.11", "36.03.11.2005"]
    stamp = (START - timedelta(hours=1)).isoformat()
    day = created_day(stamp)
    try:
        for n in range(5):
            await store.open({"_id": f"r{n}", "referral_id": f"r{n}", "case_id": f"case-{n}",
                              "agency_id": "polresta_tangerang", "region_path": region, "status": "created",
                              "priority_rank": 1, "created_at": stamp, "created_day": day,
                              "created_week": created_week(stamp), "created_hour": created_hour(stamp)}, [],
                             applied=None)
        entry_ids = [f"agency_id:polresta_tangerang|{day}", *(f"region_path:{code}|{day}" for code in region)]
        assert [d.get("n") for d in await store.days.find({"_id": {"$in": entry_ids}}).to_list()] == [None] * 5
        writes = calls_to(monkeypatch, store.days, "find_one_and_update")
        assert await store.write_counts() == 5  # the unit and four regions: one command each for five referrals
        assert len(writes) == 5
        counted = {d["_id"]: d["n"] for d in await store.days.find({"_id": {"$in": entry_ids}}).to_list()}
        assert counted == dict.fromkeys(entry_ids, 5)
        assert await store.write_counts() == 0  # nothing gained since
        await store.count_day({"agency_id": "polresta_tangerang", "region_path": region, "created_day": day})
        update = store.days.find_one_and_update

        async def away_after_one(*args, **kwargs):
            if len(writes) > 5:
                raise AutoReconnect("database away (simulated)")
            return await update(*args, **kwargs)

        monkeypatch.setattr(store.days, "find_one_and_update", away_after_one)
        with pytest.raises(AutoReconnect):
            await store.write_counts()  # one entry written, the database gone for the rest
        monkeypatch.setattr(store.days, "find_one_and_update", update)
        assert await store.write_counts() == 4  # the rest kept for the next round, none counted twice
        counted = {d["_id"]: d["n"] for d in await store.days.find({"_id": {"$in": entry_ids}}).to_list()}
        assert counted == dict.fromkeys(entry_ids, 6)
    finally:
        await client.close()
