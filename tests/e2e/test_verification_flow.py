"""Intake and verification in depth, through HTTP and Kafka only: retries, the information loop, linking, races."""

import asyncio
import uuid

import httpx
import pytest

from tests.builders import OTHER_VILLAGE, PILOT_VILLAGE, report_body
from tests.conftest import auth, eventually

pytestmark = pytest.mark.e2e
VERIFIER = auth("verifier", "36.03")


def _unique_people(**recruiter):
    n = uuid.uuid4().int
    return [{"role": "potential_victim", "name": f"Korban {n % 10**6}", "nik": f"3603{n % 10**12:012d}", "age": 22},
            {"role": "recruiter", **recruiter}]


async def _case(http, system, case_id, **expect):
    async def probe():
        r = await http.get(system.url("verification") + f"/v1/cases/{case_id}", headers=VERIFIER)
        if r.status_code != 200:
            return None
        body = r.json()
        return body if all(body.get(k) == v for k, v in expect.items()) else None

    return await eventually(probe, timeout=30)


async def _reporter_view(http, system, reporter, case_id, status):
    async def probe():
        r = await http.get(system.url("intake") + f"/v1/reports/{case_id}", headers=reporter)
        return r.json() if r.json()["status"] == status else None

    return await eventually(probe, timeout=30)


async def test_a_retry_with_the_same_key_gives_the_same_case_and_one_screening(system):
    reporter = auth("reporter", PILOT_VILLAGE)
    body = report_body(persons=_unique_people(name="Calo Satu"))
    headers = {**reporter, "Idempotency-Key": str(uuid.uuid4())}
    async with httpx.AsyncClient(timeout=10) as http:
        first, again = [await http.post(system.url("intake") + "/v1/reports", json=body, headers=headers)
                        for _ in range(2)]
        assert first.status_code == again.status_code == 201 and first.json() == again.json()
        case = await _case(http, system, first.json()["case_id"], status="awaiting_decision")
        assert case["version"] == 1  # screened once
        mine = (await http.get(system.url("intake") + "/v1/reports", headers=reporter)).json()["items"]
        assert [r["case_id"] for r in mine] == [first.json()["case_id"]]


async def test_the_information_loop_returns_the_case_to_the_queue(system):
    reporter = auth("reporter", PILOT_VILLAGE)
    async with httpx.AsyncClient(timeout=10) as http:
        filed = await http.post(system.url("intake") + "/v1/reports", headers=reporter,
                                json=report_body(indicators=["social_media_recruitment"],
                                                 persons=_unique_people(name="Calo Dua")))
        case_id = filed.json()["case_id"]
        case = await _case(http, system, case_id, status="awaiting_decision")
        assert case["screening"]["score"] == 2
        asked = await http.post(system.url("verification") + f"/v1/cases/{case_id}/decision",
                                json={"decision": "request_info", "question": "Apakah paspornya dipegang sponsor?"},
                                headers={**VERIFIER, "If-Match": str(case["version"])})
        assert asked.status_code == 200, asked.text
        view = await _reporter_view(http, system, reporter, case_id, "info_requested")
        assert view["question"] == "Apakah paspornya dipegang sponsor?"
        amended = await http.post(system.url("intake") + f"/v1/reports/{case_id}/amendments", headers=reporter,
                                  json={"answer": "Ya, paspor dipegang sponsor", "add_indicators": ["documents_withheld"]})
        assert amended.status_code == 200, amended.text
        again = await _case(http, system, case_id, status="awaiting_decision")
        assert again["screening"]["score"] == 2 + 3 and again["screening"]["submission"] == 2
        assert again["report"]["narrative"].endswith("Ya, paspor dipegang sponsor")
        await _reporter_view(http, system, reporter, case_id, "screened")


async def test_two_reports_from_different_villages_sharing_a_recruiter_are_linked(system):
    phone = f"0813{uuid.uuid4().int % 10**8:08d}"
    async with httpx.AsyncClient(timeout=10) as http:
        ids = []
        for village in (PILOT_VILLAGE, OTHER_VILLAGE):
            r = await http.post(system.url("intake") + "/v1/reports", headers=auth("reporter", village),
                                json=report_body(village_code=village,
                                                 persons=_unique_people(name="Bu Marni", phone=phone)))
            assert r.status_code == 201
            ids.append(r.json()["case_id"])
            await _case(http, system, ids[-1], status="awaiting_decision")

        async def linked(case_id, other):
            body = await _case(http, system, case_id)
            return body if any(link["case_id"] == other for link in body["links"]) else None

        newer = await eventually(lambda: linked(ids[1], ids[0]), timeout=30)
        older = await eventually(lambda: linked(ids[0], ids[1]), timeout=30)
        link = next(link for link in newer["links"] if link["case_id"] == ids[0])
        assert link["kind"] == "shared_recruiter" and "same recruiter phone" in link["reasons"]
        assert any(link["case_id"] == ids[1] for link in older["links"])


async def test_two_verifiers_deciding_at_once_one_wins_the_other_gets_409(system):
    async with httpx.AsyncClient(timeout=10) as http:
        filed = await http.post(system.url("intake") + "/v1/reports", headers=auth("reporter", PILOT_VILLAGE),
                                json=report_body(persons=_unique_people(name="Calo Tiga")))
        case_id = filed.json()["case_id"]
        case = await _case(http, system, case_id, status="awaiting_decision")
        url = system.url("verification") + f"/v1/cases/{case_id}/decision"
        answers = await asyncio.gather(
            http.post(url, json={"decision": "verify", "case_types": ["np_pmi"]},
                      headers={**auth("verifier", "36.03"), "If-Match": str(case["version"])}),
            http.post(url, json={"decision": "reject", "reason": "bukan kasus"},
                      headers={**auth("verifier", "36.03"), "If-Match": str(case["version"])}))
        assert sorted(a.status_code for a in answers) == [200, 409]
        winner = next(a for a in answers if a.status_code == 200).json()["status"]
        final = await _case(http, system, case_id)
        assert final["status"] == winner
