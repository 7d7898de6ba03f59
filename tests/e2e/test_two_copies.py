"""Two copies of every service against one database: each race the other tests run inside one process, here run
through both copies at once, still has exactly one winner."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth, eventually

pytestmark = pytest.mark.e2e
REGENCY = "36.03"
VERIFIER = auth("verifier", REGENCY)
SUPERVISOR = auth("supervisor", REGENCY)


def _report(n=0, **over):
    """A report that shares no person with others, and observed on a day of its own (corroboration links reports
    of one village within a day: a dozen such reports would keep verification busy linking them pairwise)."""
    day = 30 + uuid.uuid4().int % 3000 + 3 * n
    return report_body(persons=_people(), observed_at=(datetime.now(UTC) - timedelta(days=day)).isoformat(), **over)


def _people():
    n = uuid.uuid4().int
    return [{"role": "potential_victim", "name": f"Korban {n % 10**6}", "nik": f"3603{n % 10**12:012d}", "age": 22},
            {"role": "recruiter", "name": f"Calo {n % 10**5}"}]


async def _screened(http, system, case_id, copy=0):
    async def probe():
        r = await http.get(system.url("verification", copy) + f"/v1/cases/{case_id}", headers=VERIFIER)
        return r.json() if r.status_code == 200 and r.json()["status"] == "awaiting_decision" else None

    return await eventually(probe, timeout=30)


async def test_concurrent_reports_with_one_key_through_both_copies_make_one_case(system):
    reporter = auth("reporter", PILOT_VILLAGE)
    body = _report()
    headers = {**reporter, "Idempotency-Key": str(uuid.uuid4())}
    async with httpx.AsyncClient(timeout=20) as http:
        answers = await asyncio.gather(*(http.post(system.url("intake", n % 2) + "/v1/reports", json=body,
                                                   headers=headers) for n in range(8)))
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        assert len({a.json()["case_id"] for a in answers}) == 1
        for copy in (0, 1):
            mine = (await http.get(system.url("intake", copy) + "/v1/reports", headers=reporter)).json()["items"]
            assert [r["case_id"] for r in mine] == [answers[0].json()["case_id"]]


async def test_case_numbers_stay_unique_when_both_copies_hand_them_out(system):
    async with httpx.AsyncClient(timeout=20) as http:
        answers = await asyncio.gather(*(http.post(system.url("intake", n % 2) + "/v1/reports",
                                                   json=_report(n), headers=auth("reporter", PILOT_VILLAGE))
                                         for n in range(12)))
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers if a.status_code != 201]
    assert len({a.json()["case_number"] for a in answers}) == 12


async def test_verifiers_on_two_copies_deciding_at_once_one_wins(system):
    # Several cases, four verifiers each (two per copy), so the copies' writes really meet.
    async with httpx.AsyncClient(timeout=30) as http:
        filed = await asyncio.gather(*(http.post(system.url("intake", n % 2) + "/v1/reports", json=_report(n),
                                                 headers=auth("reporter", PILOT_VILLAGE)) for n in range(4)))
        cases = [await _screened(http, system, f.json()["case_id"]) for f in filed]
        decisions = [{"decision": "verify", "case_types": ["np_pmi"]}, {"decision": "reject", "reason": "bukan kasus"}]

        async def race(case):
            url = "/v1/cases/{}/decision".format(case["case_id"])
            return await asyncio.gather(*(
                http.post(system.url("verification", n % 2) + url, json=decisions[n // 2],
                          headers={**auth("verifier", REGENCY), "If-Match": str(case["version"])}) for n in range(4)))

        for case, answers in zip(cases, await asyncio.gather(*(race(c) for c in cases))):
            assert sorted(a.status_code for a in answers) == [200, 409, 409, 409], [a.text for a in answers]
            winner = next(a for a in answers if a.status_code == 200).json()
            for copy in (0, 1):
                seen = (await http.get(system.url("verification", copy) + f"/v1/cases/{case['case_id']}",
                                       headers=VERIFIER)).json()
                assert (seen["status"], seen["version"]) == (winner["status"], winner["version"])


async def test_two_investigators_on_two_copies_acknowledging_at_once_one_wins_and_the_trail_verifies(system):
    unit = {"bp3mi_banten": "36"}
    async with httpx.AsyncClient(timeout=20) as http:
        filed = await http.post(system.url("intake") + "/v1/reports", headers=auth("reporter", PILOT_VILLAGE),
                                json=_report(departure=None))
        case_id = filed.json()["case_id"]
        case = await _screened(http, system, case_id, copy=1)
        decided = await http.post(system.url("verification", 1) + f"/v1/cases/{case_id}/decision",
                                  json={"decision": "verify", "case_types": ["np_pmi"]},
                                  headers={**VERIFIER, "If-Match": str(case["version"])})
        assert decided.status_code == 200, decided.text
        investigator = auth("investigator", unit["bp3mi_banten"], unit="bp3mi_banten")

        async def referred():
            r = await http.get(system.url("referral", 1) + "/v1/referrals", headers=investigator,
                               params={"case_id": case_id})
            return r.json()["items"] if r.status_code == 200 and r.json()["items"] else None

        [referral] = await eventually(referred, timeout=30)
        answers = await asyncio.gather(*(
            http.post(system.url("referral", copy) + f"/v1/referrals/{referral['referral_id']}/acknowledge",
                      headers=investigator, json={}) for copy in (0, 1)))
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]

        # Reads through both copies of every service at once: each is recorded once, in one gapless chain.
        reads = [http.get(system.url("audit", n % 2) + f"/v1/cases/{case_id}/trail", headers=SUPERVISOR)
                 for n in range(6)]
        reads += [http.get(system.url("verification", n % 2) + f"/v1/cases/{case_id}", headers=VERIFIER)
                  for n in range(6)]
        assert {r.status_code for r in await asyncio.gather(*reads)} == {200}

        async def settled():
            r = await http.get(system.url("audit", 1) + f"/v1/cases/{case_id}/trail", headers=SUPERVISOR)
            entries = r.json()["entries"]
            viewed = [e for e in entries if e["type"] == "case.viewed"]
            return entries if len(viewed) >= 12 + 1 and any(e["type"] == "referral.acknowledged"
                                                           for e in entries) else None

        entries = await eventually(settled, timeout=45)
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert len({e["event_id"] for e in entries}) == len(entries)
        types = [e["type"] for e in entries]
        assert types.count("referral.acknowledged") == 1 and types.count("case.verified") == 1
        for copy in (0, 1):
            verdict = (await http.get(system.url("audit", copy) + f"/v1/cases/{case_id}/trail/verify",
                                      headers=SUPERVISOR)).json()
            assert verdict["valid"] is True and verdict["entries"] >= len(entries)


async def test_two_admins_on_two_copies_taking_a_checkpoint_at_once_make_one_chain(system):
    admin = auth("admin", "36")
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(*(http.post(system.url("audit", copy) + "/v1/checkpoints", headers=admin)
                                         for copy in (0, 1)))
        assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
        assert answers[0].json()["seq"] != answers[1].json()["seq"]
        verdict = (await http.get(system.url("audit", 1) + "/v1/checkpoints/verify", headers=SUPERVISOR)).json()
    assert verdict["first_broken_seq"] is None
