"""A report travels intake -> verification -> referral -> trail through HTTP and Kafka only."""

import httpx
import pytest

from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth, eventually

pytestmark = pytest.mark.e2e

REGENCY = "36.03"


async def _queue_ids(http: httpx.AsyncClient, base: str, headers: dict) -> list[str]:
    """Every case id in the verifier's queue, following the cursor (the shared broker may hold older cases)."""
    ids, cursor = [], None
    while True:
        page = (await http.get(base + "/v1/queue", headers=headers,
                               params={"limit": 200, **({"cursor": cursor} if cursor else {})})).json()
        ids += [item["case_id"] for item in page["items"]]
        if not (cursor := page["next"]):
            return ids


async def test_a_report_is_screened_verified_referred_and_trailed(system):
    reporter = auth("reporter", PILOT_VILLAGE)
    verifier = auth("verifier", REGENCY)
    supervisor = auth("supervisor", REGENCY)
    async with httpx.AsyncClient(timeout=10) as http:
        filed = await http.post(system.url("intake") + "/v1/reports", json=report_body(), headers=reporter)
        assert filed.status_code == 201, filed.text
        case_id = filed.json()["case_id"]
        assert filed.json()["case_number"].startswith("3603-")

        async def screened():
            r = await http.get(system.url("verification") + f"/v1/cases/{case_id}", headers=verifier)
            return r if r.status_code == 200 else None

        case = (await eventually(screened)).json()
        assert case["screening"]["score"] == 9 and case["screening"]["priority"] == "high"
        assert {i["id"] for i in case["screening"]["indicators"]} == {
            "unlicensed_recruiter", "no_written_contract", "non_work_visa"}
        assert case_id in await _queue_ids(http, system.url("verification"), verifier)

        decided = await http.post(system.url("verification") + f"/v1/cases/{case_id}/decision",
                                  json={"decision": "verify", "case_types": ["np_pmi"], "note": "cocok"},
                                  headers={**verifier, "If-Match": f'"{case["version"]}"'})
        assert decided.status_code == 200, decided.text
        assert decided.json()["status"] == "verified"

        bp3mi = auth("investigator", "36", unit="bp3mi_banten")

        async def referred():
            r = await http.get(system.url("referral") + "/v1/referrals", headers=bp3mi, params={"case_id": case_id})
            return r.json()["items"] if r.status_code == 200 else None

        [referral] = await eventually(referred)
        assert referral["agency_id"] == "bp3mi_banten" and referral["status"] == "created"
        assert referral["priority"] == "high"

        async def trail_complete():
            r = await http.get(system.url("audit") + f"/v1/cases/{case_id}/trail", headers=supervisor)
            if r.status_code != 200:
                return None
            types = sorted(e["type"] for e in r.json()["entries"]
                           if e["type"] not in ("case.linked", "case.viewed", "cases.listed", "case.exported"))
            # np_pmi -> BP3MI; a planned departure -> the airport's immigration checkpoint
            expected = ["case.reported", "case.screened", "case.verified", "referral.created", "referral.created"]
            return r.json() if types == expected else None

        trail = await eventually(trail_complete)
        entries = trail["entries"]
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert all(len(e["hash"]) == 64 for e in entries)
        assert all(entries[i]["prev_hash"] == entries[i - 1]["hash"] for i in range(1, len(entries)))
        assert {e["correlation_id"] for e in entries} == {case_id}
        verdict = (await http.get(system.url("audit") + f"/v1/cases/{case_id}/trail/verify", headers=supervisor)).json()
        # reading the trail is itself recorded, so the chain may have grown since
        assert verdict["valid"] is True and verdict["entries"] >= len(entries)

        async def reporter_sees_verified():
            r = await http.get(system.url("intake") + f"/v1/reports/{case_id}", headers=reporter)
            return r.json() if r.json()["status"] == "verified" else None

        mine = await eventually(reporter_sees_verified)
        assert "referred" in mine["next_step"]


async def test_bad_reports_get_a_4xx_naming_the_problem_and_nothing_is_stored(system):
    sub = "reporter-bad-input"
    reporter = auth("reporter", PILOT_VILLAGE, sub=sub)
    url = system.url("intake") + "/v1/reports"
    async with httpx.AsyncClient(timeout=10) as http:
        no_token = await http.post(url, json=report_body())
        assert no_token.status_code == 401 and no_token.json()["error"]["code"] == "unauthorized"
        unknown_village = await http.post(url, json=report_body(village_code="36.03.11.2999"), headers=reporter)
        assert unknown_village.status_code == 422
        assert unknown_village.json()["error"]["details"][0]["field"] == "village_code"
        missing = await http.post(url, json={"village_code": PILOT_VILLAGE}, headers=reporter)
        assert missing.status_code == 422
        assert {"observed_at", "suspected_types", "narrative"} <= {d["field"] for d in missing.json()["error"]["details"]}
        not_json = await http.post(url, content=b"{nope", headers={**reporter, "content-type": "application/json"})
        assert not_json.status_code == 422
        too_big = await http.post(url, json=report_body(narrative="x" * 400_000), headers=reporter)
        assert too_big.status_code == 413
        wrong_role = await http.post(url, json=report_body(), headers=auth("verifier", "36.03"))
        assert wrong_role.status_code == 403
        mine = await http.get(url, headers=reporter)
        assert mine.status_code == 200 and mine.json()["items"] == []


async def test_a_report_filed_while_verification_is_down_is_screened_after_restart(system):
    reporter = auth("reporter", PILOT_VILLAGE)
    verifier = auth("verifier", REGENCY)
    system.kill("verification")
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            filed = await http.post(system.url("intake") + "/v1/reports", json=report_body(), headers=reporter)
            assert filed.status_code == 201
            case_id = filed.json()["case_id"]
            system.start("verification")
            system.wait_ready(["verification"])

            async def screened():
                r = await http.get(system.url("verification") + f"/v1/cases/{case_id}", headers=verifier)
                return r.json() if r.status_code == 200 else None

            assert (await eventually(screened, timeout=30))["status"] == "awaiting_decision"
    finally:
        if not system.running("verification"):
            system.start("verification")
            system.wait_ready(["verification"])
