"""Intake on the real database and broker: idempotent retries, case numbers under concurrency, own reports only,
failed requests that leave nothing behind, reports that need attention."""

import asyncio
import json
import uuid

import pytest
from pymongo import AsyncMongoClient

from services.intake import domain
from services.intake.app import IntakeSettings, create_app
from shared import topics
from shared.contracts.envelope import new_event
from shared.contracts.verification import CaseInfoRequested
from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth, eventually, serving
from tests.kafka_helpers import TopicReader, header, publish

pytestmark = pytest.mark.integration


def _app(infra, isolation):
    return create_app(IntakeSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                     **isolation))


async def test_a_retry_with_the_same_key_returns_the_first_answer(infra, isolation):
    reporter = auth("reporter", PILOT_VILLAGE)
    body = report_body()
    async with serving(_app(infra, isolation)) as http, TopicReader(infra["kafka"], topics.INTAKE) as out:
        first = await http.post("/v1/reports", json=body, headers={**reporter, "Idempotency-Key": "k-1"})
        again = await http.post("/v1/reports", json=body, headers={**reporter, "Idempotency-Key": "k-1"})
        other = await http.post("/v1/reports", json={**body, "narrative": "lain"},
                                headers={**reporter, "Idempotency-Key": "k-1"})
        published = await out.drain(lambda r: header(r, topics.HEADER_CASE_ID) == first.json()["case_id"], 2.0)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(published) == 1


async def test_an_urgent_report_reaches_kafka_marked_urgent_and_an_ordinary_one_does_not(infra, isolation):
    reporter = auth("reporter", PILOT_VILLAGE)
    urgent = report_body(indicators=["unlicensed_recruiter", "minor_or_altered_identity"])
    async with serving(_app(infra, isolation)) as http, TopicReader(infra["kafka"], topics.INTAKE) as out:
        ids = [(await http.post("/v1/reports", json=body, headers=reporter)).json()["case_id"]
               for body in (urgent, report_body())]
        published = await out.collect(lambda r: header(r, topics.HEADER_CASE_ID) in ids, count=2)
    marks = {header(r, topics.HEADER_CASE_ID): header(r, topics.HEADER_URGENT) for r in published}
    assert marks == {ids[0]: "1", ids[1]: None}


async def test_concurrent_first_submissions_with_one_key_create_one_case(infra, isolation):
    reporter = auth("reporter", PILOT_VILLAGE)
    body = report_body()
    async with serving(_app(infra, isolation)) as http:
        answers = await asyncio.gather(*(http.post("/v1/reports", json=body,
                                                   headers={**reporter, "Idempotency-Key": "same"}) for _ in range(8)))
        mine = (await http.get("/v1/reports", headers=reporter)).json()["items"]
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["case_id"] for a in answers}) == 1
    assert len(mine) == 1


async def test_case_numbers_are_unique_under_concurrency(infra, isolation):
    async with serving(_app(infra, isolation)) as http:
        answers = await asyncio.gather(*(http.post("/v1/reports", json=report_body(),
                                                   headers=auth("reporter", PILOT_VILLAGE)) for _ in range(25)))
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers if a.status_code != 201]
    numbers = [a.json()["case_number"] for a in answers]
    assert len(set(numbers)) == 25
    assert all(n.startswith("3603-") for n in numbers)


async def test_a_case_number_is_one_claim_and_numbers_follow_on_across_processes(database, monkeypatch):
    """A report's number costs the request one write, its claim (an insert by _id): the counter is read only by a
    process that has handed out no number yet or finds its next one claimed by another process, and it is moved on in
    the background. A counter left behind costs a later process some refused claims, never a number twice or a gap."""
    from services.intake.store import ReportStore
    from shared.clock import SystemClock
    from shared.outbox import OutboxRelay
    from tests.conftest import calls_to, no_publish

    db = database("intake")

    def process():
        return ReportStore(db, OutboxRelay(no_publish, SystemClock()), SystemClock())

    def number(seq):
        return f"3603-2026-{seq:06d}"

    first, second = process(), process()
    reads = calls_to(monkeypatch, first._counters, "find_one")
    got = [await first.claim_next_number("3603", 2026, f"c{n}", number) for n in range(3)]
    assert len(reads) == 1  # for its first number only
    got.append(await second.claim_next_number("3603", 2026, "c3", number))  # another copy of intake
    got.append(await first.claim_next_number("3603", 2026, "c4", number))  # its next one is taken: it reads on
    await asyncio.gather(*first._counter_moves.values(), *second._counter_moves.values())
    assert (await db["case_numbers"].find_one({"_id": "3603:2026"}))["seq"] == 5
    await db["case_numbers"].update_one({"_id": "3603:2026"}, {"$set": {"seq": 1}})  # a counter left behind
    got.append(await process().claim_next_number("3603", 2026, "c5", number))
    assert got == [number(n) for n in range(1, 7)]


async def test_a_reporter_sees_only_their_own_reports(infra, isolation):
    alice, bob = auth("reporter", PILOT_VILLAGE), auth("reporter", PILOT_VILLAGE)
    async with serving(_app(infra, isolation)) as http:
        filed = (await http.post("/v1/reports", json=report_body(), headers=alice)).json()
        assert (await http.get(f"/v1/reports/{filed['case_id']}", headers=bob)).status_code == 404
        assert (await http.get("/v1/reports", headers=bob)).json()["items"] == []
        mine = (await http.get(f"/v1/reports/{filed['case_id']}", headers=alice)).json()
        assert mine["status"] == "reported" and mine["next_step"]
        withdrawn = await http.post(f"/v1/reports/{filed['case_id']}/withdraw", headers=alice, json={"reason": "salah"})
        assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
        again = await http.post(f"/v1/reports/{filed['case_id']}/withdraw", headers=alice, json={"reason": "salah"})
        assert again.status_code == 409
        no_question = await http.post(f"/v1/reports/{filed['case_id']}/amendments", headers=alice,
                                      json={"answer": "x"})
        assert no_question.status_code == 409


async def test_a_key_names_its_case_for_good_and_a_retry_leaves_no_gap_in_the_numbers(infra, isolation):
    """A phone that retries days after its answer was lost gets that answer (not a second case), and the number its
    retry claimed beside the key goes to the next report."""
    from datetime import UTC, datetime, timedelta

    from shared.clock import ManualClock

    clock = ManualClock(datetime(2026, 6, 1, 3, tzinfo=UTC))  # the retry a month later falls in the same year
    app = create_app(IntakeSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                    **isolation), clock=clock)
    reporter = auth("reporter", PILOT_VILLAGE)
    headers, body = {**reporter, "Idempotency-Key": "k-day"}, report_body(observed_at="2026-05-31T09:00:00+07:00")
    async with serving(app) as http:
        first = (await http.post("/v1/reports", json=body, headers=headers)).json()
        clock.advance(timedelta(days=30))
        assert await app.state.expire_idempotency_keys_once() == 0
        again = await http.post("/v1/reports", json=body, headers=headers)
        other = await http.post("/v1/reports", json={**body, "narrative": "lain"}, headers=headers)
        following = (await http.post("/v1/reports", json=body, headers=reporter)).json()
    assert again.json() == first and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409 and other.json()["error"]["details"]["case_id"] == first["case_id"]
    assert domain.seq_of(following["case_number"]) == domain.seq_of(first["case_number"]) + 1


async def test_a_key_claimed_before_case_ids_were_made_from_keys_answers_until_its_claim_expires(infra, isolation):
    from datetime import UTC, datetime, timedelta

    from shared.clock import ManualClock

    clock = ManualClock(datetime.now(UTC))
    app = create_app(IntakeSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                    **isolation), clock=clock)
    reporter, body = auth("reporter", PILOT_VILLAGE, sub="reporter-old-phone"), report_body()
    claimed = str(uuid.uuid4())  # the case id the old claim gave; its request failed before filing it
    client = AsyncMongoClient(infra["mongo"])
    try:
        await client[f"{isolation['db_prefix']}_intake"]["idempotency_keys"].insert_one(
            {"_id": "reporter-old-phone:k-old", "case_id": claimed,
             "request_hash": domain.request_hash(domain.ReportIn.model_validate(body)), "at": clock.now().isoformat()})
    finally:
        await client.close()
    headers = {**reporter, "Idempotency-Key": "k-old"}
    async with serving(app) as http:
        filed = (await http.post("/v1/reports", json=body, headers=headers)).json()
        again = (await http.post("/v1/reports", json=body, headers=headers)).json()
        reused = await http.post("/v1/reports", json={**body, "narrative": "lain"}, headers=headers)
        clock.advance(timedelta(hours=25))
        assert await app.state.expire_idempotency_keys_once() == 1
        later = (await http.post("/v1/reports", json=body, headers=headers)).json()
    assert filed["case_id"] == again["case_id"] == claimed
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"
    assert later["case_id"] == domain.case_id_for("reporter-old-phone:k-old") != claimed


async def test_a_reporters_list_is_one_access_record_naming_every_report_it_showed(infra, isolation):
    reporter = auth("reporter", PILOT_VILLAGE)
    client = AsyncMongoClient(infra["mongo"])
    try:
        async with serving(_app(infra, isolation)) as http, TopicReader(infra["kafka"], topics.ACCESS) as access:
            ids = [(await http.post("/v1/reports", json=report_body(), headers=reporter)).json()["case_id"]
                   for _ in range(3)]
            assert len((await http.get("/v1/reports", headers=reporter)).json()["items"]) == 3
            [event] = await access.collect(lambda r: header(r, topics.HEADER_EVENT_TYPE) == "cases.listed")
            more = await access.drain(lambda r: True, 1.0)
            records = await client[f"{isolation['db_prefix']}_intake"]["access_log"].find({}).to_list()
    finally:
        await client.close()
    assert more == [] and [(r["type"], sorted(r["case_ids"])) for r in records] == [("cases.listed", sorted(ids))]
    assert sorted(json.loads(event.value)["data"]["case_ids"]) == sorted(ids)


async def test_a_failed_report_leaves_nothing_behind_and_a_corrected_retry_with_its_key_is_accepted(
        infra, isolation, monkeypatch):
    reporter = auth("reporter", PILOT_VILLAGE)
    client = AsyncMongoClient(infra["mongo"])
    keys = client[f"{isolation['db_prefix']}_keys"]["case_keys"]
    try:
        async with serving(_app(infra, isolation)) as http:
            edge = await http.post("/v1/reports", json=report_body(observed_at="0001-01-01T00:00:00+07:00"),
                                   headers={**reporter, "Idempotency-Key": "k-edge"})
            assert edge.status_code == 422 and edge.json()["error"]["details"][0]["field"] == "observed_at"
            fixed = await http.post("/v1/reports", json=report_body(), headers={**reporter, "Idempotency-Key": "k-edge"})
            assert fixed.status_code == 201, fixed.text

            def broken(*args, **kwargs):
                raise RuntimeError("a fault after the key was claimed")

            monkeypatch.setattr(domain, "file_report", broken)
            with pytest.raises(RuntimeError):  # answered 500 to the client; the in-process transport re-raises it
                await http.post("/v1/reports", json=report_body(), headers={**reporter, "Idempotency-Key": "k-2"})
            left = await keys.count_documents({})
            monkeypatch.undo()
            retried = await http.post("/v1/reports", json=report_body(narrative="lain"),
                                      headers={**reporter, "Idempotency-Key": "k-2"})
    finally:
        await client.close()
    assert left == 1  # only the first accepted report's key: the failed request left none
    assert retried.status_code == 201, retried.text


async def test_an_amendment_to_a_report_that_does_not_exist_is_a_404(infra, isolation):
    async with serving(_app(infra, isolation)) as http:
        r = await http.post(f"/v1/reports/{uuid.uuid4()}/amendments", json={"answer": "x"},
                            headers=auth("reporter", PILOT_VILLAGE))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_a_report_whose_event_was_dead_lettered_needs_attention_until_it_moves_on(infra, isolation):
    reporter = auth("reporter", PILOT_VILLAGE)
    async with serving(_app(infra, isolation)) as http:
        case_id = (await http.post("/v1/reports", json=report_body(), headers=reporter)).json()["case_id"]
        await publish(infra["kafka"], topics.DEADLETTER, b'{"type": "case.reported"}', key=case_id,
                      headers={topics.HEADER_CASE_ID: case_id, topics.HEADER_EVENT_TYPE: "case.reported",
                               topics.DLQ_SOURCE_TOPIC: topics.INTAKE, topics.DLQ_CONSUMER: "verification"})

        async def flagged():
            view = (await http.get(f"/v1/reports/{case_id}", headers=reporter)).json()
            return view if view["needs_attention"] else None

        view = await eventually(flagged, timeout=30)
        assert "Supervisors" in view["next_step"] and view["status"] == "reported"
        listed = (await http.get("/v1/reports", headers=reporter)).json()["items"]
        assert listed[0]["needs_attention"] is True
        screened = new_event(CaseInfoRequested(question="sealed"), case_id=case_id, producer="verification",
                             actor=None, correlation_id=case_id, causation_id=None)
        await publish(infra["kafka"], topics.VERIFICATION, screened)

        async def moved_on():
            view = (await http.get(f"/v1/reports/{case_id}", headers=reporter)).json()
            return view if view["status"] == "info_requested" else None

        view = await eventually(moved_on, timeout=30)
    assert view["needs_attention"] is False
