"""No personal data in the services' logs, after a report has gone through every service."""

import uuid

import httpx
import pytest

from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth, eventually

pytestmark = pytest.mark.e2e


async def test_names_identifiers_phones_and_narrative_never_reach_a_log(system):
    n = uuid.uuid4().int
    nik, name, phone = f"3603{n % 10**12:012d}", f"Kartika{n % 10**6}", f"0858{n % 10**8:08d}"
    narrative = f"Calo-{n % 10**7} menjanjikan kerja di Malaysia"
    verifier = auth("verifier", "36.03")
    async with httpx.AsyncClient(timeout=10) as http:
        filed = await http.post(system.url("intake") + "/v1/reports", headers=auth("reporter", PILOT_VILLAGE),
                                json=report_body(narrative=narrative, persons=[
                                    {"role": "potential_victim", "name": name, "nik": nik, "phone": phone}]))
        case_id = filed.json()["case_id"]

        async def screened():
            r = await http.get(system.url("verification") + f"/v1/cases/{case_id}", headers=verifier)
            return r.json() if r.status_code == 200 else None

        case = await eventually(screened, timeout=30)
        await http.post(system.url("verification") + f"/v1/cases/{case_id}/decision",
                        headers={**verifier, "If-Match": str(case["version"])},
                        json={"decision": "verify", "case_types": ["np_pmi"], "note": f"{name} {phone}"})

        async def trailed():
            r = await http.get(system.url("audit") + f"/v1/cases/{case_id}/trail/verify",
                               headers=auth("supervisor", "36.03"))
            return r.status_code == 200 and r.json()["entries"] >= 4

        await eventually(trailed, timeout=30)
    logs = "".join(p.read_text(errors="replace") for p in system.logs.glob("*.log"))
    assert case_id in logs  # the logs are there, and name the case
    for secret in (nik, name, phone, "+62" + phone[1:], narrative):
        assert secret not in logs
