"""The verifier's API on the real database and broker: queue order and scope, decisions with If-Match."""

import asyncio

import pytest

from services.verification.app import VerificationSettings, create_app
from shared import topics
from shared.contracts import intake
from tests.builders import OTHER_VILLAGE, case_reported
from tests.conftest import auth, eventually, serving
from tests.kafka_helpers import publish

pytestmark = pytest.mark.integration
VERIFIER = auth("verifier", "36.03")


def _app(infra, isolation):
    return create_app(VerificationSettings(env="dev", kafka_bootstrap_servers=infra["kafka"],
                                           mongodb_uri=infra["mongo"], **isolation))


async def _screened(http, case_id):
    async def probe():
        r = await http.get(f"/v1/cases/{case_id}", headers=VERIFIER)
        return r if r.status_code == 200 else None

    return await eventually(probe)


async def test_two_verifiers_deciding_at_once_exactly_one_wins(infra, isolation):
    event = case_reported()
    async with serving(_app(infra, isolation)) as http:
        await publish(infra["kafka"], topics.INTAKE, event)
        case = await _screened(http, event.case_id)
        version = case.headers["ETag"]
        other = auth("verifier", "36.03")
        results = await asyncio.gather(
            http.post(f"/v1/cases/{event.case_id}/decision", headers={**VERIFIER, "If-Match": version},
                      json={"decision": "verify", "case_types": ["np_pmi"]}),
            http.post(f"/v1/cases/{event.case_id}/decision", headers={**other, "If-Match": version},
                      json={"decision": "reject", "reason": "tidak cukup bukti"}),
        )
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 409], [r.text for r in results]
        loser = next(r for r in results if r.status_code == 409).json()
        assert loser["error"]["details"]["current"]["status"] in ("verified", "rejected")
        missing = await http.post(f"/v1/cases/{event.case_id}/decision", headers=VERIFIER,
                                  json={"decision": "reject", "reason": "x"})
        assert missing.status_code == 428


async def test_the_queue_is_most_urgent_first_then_oldest_and_only_the_verifiers_region(infra, isolation):
    child = [intake.Person(person_id="p", role="potential_victim", name="Anak", age=15)]
    low = case_reported(indicators=["family_pressed_to_sign"])
    critical = case_reported(indicators=["family_pressed_to_sign"], persons=child)
    high = case_reported(indicators=["unlicensed_recruiter", "no_written_contract", "non_work_visa"],
                         village_code=OTHER_VILLAGE)
    async with serving(_app(infra, isolation)) as http:
        for event in (low, critical, high):
            await publish(infra["kafka"], topics.INTAKE, event)
        for event in (low, critical, high):
            await _screened(http, event.case_id)
        queue = (await http.get("/v1/queue", headers=VERIFIER)).json()["items"]
        assert [i["case_id"] for i in queue] == [critical.case_id, high.case_id, low.case_id]
        only_critical = (await http.get("/v1/queue", headers=VERIFIER, params={"priority": "critical"})).json()
        assert [i["case_id"] for i in only_critical["items"]] == [critical.case_id]
        village = (await http.get("/v1/queue", headers=VERIFIER, params={"village_code": OTHER_VILLAGE})).json()
        assert [i["case_id"] for i in village["items"]] == [high.case_id]
        elsewhere = auth("verifier", "36.01")
        assert (await http.get("/v1/queue", headers=elsewhere)).json()["items"] == []
        assert (await http.get(f"/v1/cases/{low.case_id}", headers=elsewhere)).status_code == 404
        assert (await http.get("/v1/queue", headers=auth("reporter", "36.03.11.2009"))).status_code == 403
        assert (await http.get("/v1/queue")).status_code == 401
        first = (await http.get("/v1/queue", headers=VERIFIER, params={"limit": 2})).json()
        second = (await http.get("/v1/queue", headers=VERIFIER, params={"limit": 2, "cursor": first["next"]})).json()
        assert [i["case_id"] for i in first["items"] + second["items"]] == [critical.case_id, high.case_id,
                                                                             low.case_id]
        assert second["next"] is None
