"""A report becomes a verified case whose every referral is acknowledged, accepted, updated and closed by its unit
over HTTP; the referral service then closes the case, and `case.closed` lands in the audit trail."""

import httpx
import pytest

from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth, eventually

pytestmark = pytest.mark.e2e

REGENCY = "36.03"
UNIT_REGION = {"bp3mi_banten": "36", "tpi_soekarno_hatta": "36.71"}
OUTCOMES = {"bp3mi_banten": "victim_handed_to_services", "tpi_soekarno_hatta": "departure_deferred"}


async def test_a_case_closes_when_every_referral_is_closed_and_the_trail_says_so(system):
    reporter = auth("reporter", PILOT_VILLAGE)
    verifier = auth("verifier", REGENCY)
    supervisor = auth("supervisor", REGENCY)
    async with httpx.AsyncClient(timeout=10) as http:
        filed = await http.post(system.url("intake") + "/v1/reports", json=report_body(), headers=reporter)
        assert filed.status_code == 201, filed.text
        case_id = filed.json()["case_id"]

        async def screened():
            r = await http.get(system.url("verification") + f"/v1/cases/{case_id}", headers=verifier)
            return r.json() if r.status_code == 200 else None

        case = await eventually(screened)
        decided = await http.post(system.url("verification") + f"/v1/cases/{case_id}/decision",
                                  json={"decision": "verify", "case_types": ["np_pmi"]},
                                  headers={**verifier, "If-Match": f'"{case["version"]}"'})
        assert decided.status_code == 200, decided.text

        async def referred():
            r = await http.get(system.url("referral") + "/v1/referrals", headers=supervisor,
                               params={"case_id": case_id})
            items = r.json()["items"] if r.status_code == 200 else []
            return items if len(items) == 2 else None

        referrals = await eventually(referred)
        assert sorted(r["agency_id"] for r in referrals) == sorted(OUTCOMES)

        for referral in referrals:
            agency = referral["agency_id"]
            unit = auth("investigator", UNIT_REGION[agency], unit=agency)
            url = system.url("referral") + f"/v1/referrals/{referral['referral_id']}"
            early = await http.post(url + "/close", headers=unit, json={"outcome": OUTCOMES[agency]})
            assert early.status_code == 409  # not accepted yet
            for step, body in [("acknowledge", {}), ("accept", {}),
                               ("updates", {"note": "Pendampingan berjalan", "milestone": {"kind": "note"}}),
                               ("close", {"outcome": OUTCOMES[agency]})]:
                r = await http.post(f"{url}/{step}", headers=unit, json=body)
                assert r.status_code == 200, (step, r.text)
            assert r.json()["status"] == "closed"

        async def closed_in_trail():
            r = await http.get(system.url("audit") + f"/v1/cases/{case_id}/trail", headers=supervisor)
            if r.status_code != 200:
                return None
            entries = r.json()["entries"]
            return entries if any(e["type"] == "case.closed" for e in entries) else None

        entries = await eventually(closed_in_trail, timeout=30)
        types = [e["type"] for e in entries]
        assert types.count("case.closed") == 1
        assert types.count("referral.closed") == 2
        # the case closes only after both referrals have
        assert types.index("case.closed") > max(i for i, t in enumerate(types) if t == "referral.closed")
        [closure] = [e for e in entries if e["type"] == "case.closed"]
        assert closure["data"]["outcomes"] == OUTCOMES and closure["correlation_id"] == case_id
        verdict = (await http.get(system.url("audit") + f"/v1/cases/{case_id}/trail/verify",
                                  headers=supervisor)).json()
        assert verdict["valid"] is True and verdict["entries"] >= len(entries)  # reading the trail is recorded too
