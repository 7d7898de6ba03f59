"""Intake on the real database and broker: idempotent retries, case numbers under concurrency, own reports only."""

import asyncio
import json

import pytest
from pymongo import AsyncMongoClient

from services.intake.app import IntakeSettings, create_app
from shared import topics
from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth, serving
from tests.kafka_helpers import TopicReader, header

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


async def test_an_idempotency_key_expires_after_a_day(infra, isolation):
    from datetime import UTC, datetime, timedelta

    from shared.clock import ManualClock

    clock = ManualClock(datetime.now(UTC))
    app = create_app(IntakeSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                    **isolation), clock=clock)
    reporter = auth("reporter", PILOT_VILLAGE)
    headers, body = {**reporter, "Idempotency-Key": "k-day"}, report_body()
    async with serving(app) as http:
        first = (await http.post("/v1/reports", json=body, headers=headers)).json()
        clock.advance(timedelta(hours=23))
        assert await app.state.expire_idempotency_keys_once() == 0
        assert (await http.post("/v1/reports", json=body, headers=headers)).json() == first
        clock.advance(timedelta(hours=2))
        assert await app.state.expire_idempotency_keys_once() == 1
        later = await http.post("/v1/reports", json=body, headers=headers)
    assert later.status_code == 201 and later.json()["case_id"] != first["case_id"]


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
