"""Audit on the real broker and database: dead letters and checkpoints shown only for the caller's region, cases
with a dead-lettered event flagged for supervisors, one erasure however often it is asked for, the export's CSP."""

import uuid

import pytest
from pymongo import AsyncMongoClient

from services.audit.app import AuditSettings, create_app
from shared import topics
from tests.builders import case_reported
from tests.conftest import auth, eventually, in_read_model, serving
from tests.kafka_helpers import publish

pytestmark = pytest.mark.integration
HERE, ELSEWHERE = "36.03.11.2009", "36.71.01.1001"  # Kabupaten Tangerang; Kota Tangerang
SUPERVISOR, OTHER_SUPERVISOR = auth("supervisor", "36.03"), auth("supervisor", "36.71")
ADMIN = auth("admin", "36.03")


def _app(infra, isolation):
    return create_app(AuditSettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                                    consumer_backoff_s=0.05, **isolation))


async def _dead_letter(infra, case_id: str | None) -> None:
    headers = {topics.DLQ_SOURCE_TOPIC: topics.INTAKE, topics.DLQ_CONSUMER: "verification",
               topics.DLQ_ERROR: "ValueError: year 0 is out of range", topics.HEADER_EVENT_TYPE: "case.reported"}
    if case_id:
        headers[topics.HEADER_CASE_ID] = case_id
    await publish(infra["kafka"], topics.DEADLETTER, b'{"secret": "body"}', key=case_id, headers=headers)


async def _recorded(http, case_id: str, db_prefix: str) -> None:
    """In the trail and in the read model (which the regions of dead letters, the search and checkpoints read)."""
    async def probe():
        r = await http.get(f"/v1/cases/{case_id}/trail/verify", headers=ADMIN)
        r = r if r.status_code == 200 else await http.get(f"/v1/cases/{case_id}/trail/verify",
                                                          headers=auth("admin", "36.71"))
        return r.status_code == 200 and r.json()["entries"] >= 1

    await eventually(probe, timeout=30)
    await in_read_model(db_prefix, case_id)


async def test_dead_letters_are_shown_only_to_the_region_of_their_case_and_flag_it(infra, isolation):
    mine, theirs = case_reported(village_code=HERE), case_reported(village_code=ELSEWHERE)
    later = str(uuid.uuid4())  # dead-lettered before audit ever saw its case
    nobodys = str(uuid.uuid4())
    async with serving(_app(infra, isolation)) as http:
        for event in (mine, theirs):
            await publish(infra["kafka"], topics.INTAKE, event)
            await _recorded(http, event.case_id, isolation["db_prefix"])
        for case_id in (mine.case_id, theirs.case_id, later, nobodys):
            await _dead_letter(infra, case_id)
        await publish(infra["kafka"], topics.INTAKE, case_reported(case_id=later, village_code=HERE))
        await _recorded(http, later, isolation["db_prefix"])

        async def listed(headers, n):
            r = await http.get("/v1/deadletters", headers=headers)
            items = r.json()["items"]
            return items if len(items) >= n else None

        seen_by_admin = {d["case_id"] for d in await eventually(lambda: listed(ADMIN, 3), timeout=30)}
        seen_here = {d["case_id"] for d in await eventually(lambda: listed(SUPERVISOR, 2), timeout=30)}
        seen_there = {d["case_id"] for d in (await http.get("/v1/deadletters", headers=OTHER_SUPERVISOR)).json()["items"]}
        by_case_id = (await http.get("/v1/deadletters", headers=SUPERVISOR, params={"case_id": theirs.case_id})).json()
        flagged = (await http.get("/v1/cases", headers=SUPERVISOR, params={"needs_attention": "true"})).json()["items"]
        stats = (await http.get("/v1/stats", headers=SUPERVISOR)).json()
    assert seen_here == {mine.case_id, later}
    assert seen_there == {theirs.case_id}
    assert seen_by_admin == {mine.case_id, later, nobodys}  # an admin also sees what names no known case
    assert by_case_id["items"] == []
    assert {c["case_id"] for c in flagged} == {mine.case_id, later} and all(c["needs_attention"] for c in flagged)
    assert stats["needing_attention"] == 2


async def test_checkpoints_show_a_supervisor_only_their_regions_trails(infra, isolation):
    mine, theirs = case_reported(village_code=HERE), case_reported(village_code=ELSEWHERE)
    async with serving(_app(infra, isolation)) as http:
        for event in (mine, theirs):
            await publish(infra["kafka"], topics.INTAKE, event)
            await _recorded(http, event.case_id, isolation["db_prefix"])
        taken = await http.post("/v1/checkpoints", headers=ADMIN)
        listed = (await http.get("/v1/checkpoints", headers=OTHER_SUPERVISOR)).json()["items"]
        client = AsyncMongoClient(infra["mongo"])
        try:  # both trails removed whole: each supervisor learns only about their own
            await client[f"{isolation['db_prefix']}_audit"]["trail"].delete_many({})
        finally:
            await client.close()
        here = (await http.get("/v1/checkpoints/verify", headers=SUPERVISOR)).json()
        there = (await http.get("/v1/checkpoints/verify", headers=OTHER_SUPERVISOR)).json()
    assert taken.status_code == 201 and taken.json()["cases"] == 1
    assert listed[0]["seq"] == taken.json()["seq"] and listed[0]["cases"] == 1
    assert here["trails_not_matching"] == [mine.case_id] and there["trails_not_matching"] == [theirs.case_id]


async def test_erasing_an_erased_case_is_one_erasure_in_the_trail(infra, isolation):
    event = case_reported(village_code=HERE)
    async with serving(_app(infra, isolation)) as http:
        await publish(infra["kafka"], topics.INTAKE, event)
        await _recorded(http, event.case_id, isolation["db_prefix"])
        answers = [await http.post(f"/v1/cases/{event.case_id}/erasure", headers=ADMIN, json={"reason": "retensi"})
                   for _ in range(3)]
        unknown = await http.post(f"/v1/cases/{uuid.uuid4()}/erasure", headers=ADMIN, json={"reason": "retensi"})

        client = AsyncMongoClient(infra["mongo"])
        try:  # each recorded erasure is written to the access log before its answer is sent
            count = await client[f"{isolation['db_prefix']}_audit"]["access_log"].count_documents(
                {"case_id": event.case_id, "type": "case.erased"})
        finally:
            await client.close()
        html = await http.get(f"/v1/cases/{event.case_id}/trail/export", headers=SUPERVISOR, params={"format": "html"})
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert count == 1
    assert unknown.status_code == 404
    csp = html.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert html.headers["cache-control"] == "no-store" and html.headers["x-content-type-options"] == "nosniff"
