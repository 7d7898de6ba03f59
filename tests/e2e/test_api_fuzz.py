"""Property-based fuzzing of every service's OpenAPI document (schemathesis) against the running services.

Real ids (a verified case with its referral and trail, a case awaiting a decision) are seeded through the API
first, so most generated requests get past 404. Every answer must be declared by the route (status, media type,
body schema, headers) and none may be a 5xx. Bounded: a fixed number of examples per operation, derandomized
so a run is repeatable.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth, eventually
from tests.e2e.test_sign_in import _set_up

pytestmark = pytest.mark.e2e

EXAMPLES = 6  # per operation and generation mode: bounded, so the run stays well under two minutes
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
REGENCY = "36.03"
UNIT = "bp3mi_banten"
REPORTER = auth("reporter", PILOT_VILLAGE, sub="fuzz-reporter")
ROLES = {"reporter": REPORTER, "verifier": auth("verifier", REGENCY), "supervisor": auth("supervisor", REGENCY),
         "admin": auth("admin", REGENCY), "investigator": auth("investigator", "36", unit=UNIT)}


def _role(service: str, method: str, path: str) -> str:
    """The role each operation serves (the access-control test holds every route to its roles)."""
    if service == "identity":
        return "admin" if path.startswith("/v1/accounts") else "account"  # the seeded account's own token
    if service == "intake":
        return "reporter"
    if service == "verification":
        return "supervisor" if path.startswith("/v1/watchlist") else "verifier"
    if service == "referral":
        return "investigator" if method == "POST" or path == "/v1/referrals/{referral_id}" else "supervisor"
    return "admin" if method == "POST" else "supervisor"


@pytest.fixture(scope="module")
async def seeded(system) -> dict[str, str]:
    """A verified case (with a referral to BP3MI Banten and a trail), a case waiting for a decision, and a
    reporter's account (made by an admin, set up, signed in)."""
    verifier, supervisor = ROLES["verifier"], ROLES["supervisor"]
    async with httpx.AsyncClient(timeout=10) as http:
        ids = []
        for _ in range(2):
            filed = await http.post(system.url("intake") + "/v1/reports", json=report_body(), headers=REPORTER)
            assert filed.status_code == 201, filed.text
            ids.append(filed.json()["case_id"])
        verified, waiting = ids

        async def screened(case_id=verified):
            r = await http.get(system.url("verification") + f"/v1/cases/{case_id}", headers=verifier)
            return r.json() if r.status_code == 200 else None

        async def verify():  # a 409 (another change meanwhile) is tried again with the fresh version
            case = await eventually(screened, timeout=90)
            r = await http.post(system.url("verification") + f"/v1/cases/{verified}/decision",
                                json={"decision": "verify", "case_types": ["np_pmi"]},
                                headers={**verifier, "If-Match": f'"{case["version"]}"'})
            assert r.status_code in (200, 409), r.text
            return r.status_code == 200

        await eventually(lambda: screened(waiting), timeout=90)
        await eventually(verify, timeout=30)

        async def referred():
            r = await http.get(system.url("referral") + "/v1/referrals", headers=ROLES["investigator"],
                               params={"case_id": verified})
            return r.json()["items"] if r.status_code == 200 else None

        [referral] = await eventually(referred, timeout=90)

        async def trailed():
            r = await http.get(system.url("audit") + f"/v1/cases/{verified}/trail/verify", headers=supervisor)
            return r.status_code == 200

        await eventually(trailed, timeout=90)

        made = await http.post(system.url("identity") + "/v1/accounts", headers=ROLES["admin"], json={
            "username": f"fuzz-{uuid.uuid4().hex[:8]}", "name": "Pelapor Uji", "role": "reporter",
            "region": PILOT_VILLAGE})
        assert made.status_code == 201, made.text
        tokens = await _set_up(http, system.url("identity"), made.json()["username"],
                               made.json()["one_time_password"], staff=False)
    return {"verified": verified, "waiting": waiting, "referral_id": referral["referral_id"],
            "account_id": made.json()["id"], "account": f"Bearer {tokens['access_token']}"}


def _fuzz(system, service: str, ids: dict[str, str]) -> None:
    raw = httpx.get(system.url(service) + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(raw)
    base_url = system.url(service)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    failures = []
    session = requests.Session()  # one connection pool for the whole run
    for operation in operations:
        method, path = operation.method.upper(), operation.path
        guarded = path.startswith("/v1") and operation.definition.raw.get("security")
        role = _role(service, method, path)
        headers = ({"Authorization": ids["account"]} if role == "account" else dict(ROLES[role])) if guarded else {}
        real = {"case_id": ids["verified"], "referral_id": ids["referral_id"], "account_id": ids["account_id"]}
        if service == "verification" and path.endswith("/decision"):
            real["case_id"] = ids["waiting"]
        strategy = st.one_of(operation.as_strategy(mode) for mode in (schemathesis.GenerationMode.POSITIVE,
                                                                          schemathesis.GenerationMode.NEGATIVE))

        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy, use_real_ids=st.booleans())
        def check(case, use_real_ids):
            if use_real_ids and case.path_parameters:
                case.path_parameters = {k: real.get(k, v) for k, v in case.path_parameters.items()}
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=15)
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - every failing operation is reported, not just the first
            failures.append(f"{method} {path}: {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("service", ["intake", "verification", "referral", "audit", "identity"])
def test_no_generated_request_gets_a_5xx_or_an_undeclared_answer(system, seeded, service):
    _fuzz(system, service, seeded)
