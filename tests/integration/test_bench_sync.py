"""The benchmark's synchronous alternative (tests/bench_sync.py) does the whole path in its request handlers: a
report is screened, verified, referred to its unit and acknowledged, and the trail holds each event once, chained."""

import uuid

import httpx
import pytest
from pymongo import AsyncMongoClient

from tests import bench, bench_sync
from tests.conftest import auth

pytestmark = pytest.mark.integration


async def test_a_report_goes_the_whole_path_in_the_synchronous_app_and_its_trail_is_chained(infra):
    database = f"t{uuid.uuid4().hex[:10]}sync"
    app = bench_sync.build(database, infra["mongo"])
    verifier, unit = auth("verifier", bench.REGENCY), auth("investigator", bench.REGENCY, unit=bench.UNIT)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sync") as http:
        [body] = bench.scenario_bodies("distinct", 1)
        assert (await http.post("/v1/reports", json=body)).status_code == 401
        filed = await http.post("/v1/reports", json=body, headers=auth("reporter", bench.PILOT_VILLAGE))
        assert filed.status_code == 201, filed.text
        case_id = filed.json()["case_id"]
        assert case_id in [i["case_id"] for i in (await http.get("/v1/queue", headers=verifier)).json()["items"]]
        version = (await http.get(f"/v1/cases/{case_id}", headers=verifier)).json()["version"]
        decide = {"decision": "verify", "case_types": ["tppo"]}
        stale = await http.post(f"/v1/cases/{case_id}/decision", json=decide,
                                headers={**verifier, "If-Match": f'"{version + 1}"'})
        assert stale.status_code == 412
        decided = await http.post(f"/v1/cases/{case_id}/decision", json=decide,
                                  headers={**verifier, "If-Match": f'"{version}"'})
        assert decided.status_code == 200, decided.text
        [referral] = (await http.get("/v1/referrals", headers=unit)).json()["items"]
        assert referral["case_id"] == case_id
        url = f"/v1/referrals/{referral['referral_id']}/acknowledge"
        assert (await http.post(url, headers=unit)).status_code == 200
        assert (await http.post(url, headers=unit)).status_code == 409
    client = AsyncMongoClient(infra["mongo"])
    try:
        trail = await client[database]["trail"].find({"case_id": case_id}).sort("seq", 1).to_list()
    finally:
        await client.drop_database(database)
        await client.close()
    assert [e["type"] for e in trail] == list(bench.PATH_EVENTS)
    assert [e["seq"] for e in trail] == [1, 2, 3, 4, 5]
    assert all(trail[i]["prev_hash"] == trail[i - 1]["hash"] for i in range(1, 5))
