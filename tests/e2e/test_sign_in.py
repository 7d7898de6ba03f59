"""Real people sign in: the first admin from the command line, a verifier and a reporter from the admin's API,
each through their setup; the verifier decides a case with an identity-issued token, is disabled, and can no
longer refresh; the directory trail shows all of it and verifies."""

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from services.identity import credentials
from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import eventually
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e


def _bearer(tokens: dict) -> dict:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def _set_up(http: httpx.AsyncClient, identity: str, username: str, one_time: str, staff: bool) -> dict:
    """Sign in with the one-time password, choose a password, enrol the second factor: a full token pair."""
    login = await http.post(identity + "/v1/login", json={"username": username, "password": one_time})
    assert login.status_code == 200, login.text
    setup = login.json()
    assert setup["must_change_password"] is True and setup["must_enroll_totp"] is staff
    changed = await http.post(identity + "/v1/password", headers=_bearer(setup),
                              json={"current": one_time, "new": f"sandi-baru-{uuid.uuid4().hex[:6]}"})
    assert changed.status_code == 204, changed.text
    if staff:
        uri = (await http.post(identity + "/v1/totp/enroll", headers=_bearer(setup))).json()["otpauth_uri"]
        secret = parse_qs(urlparse(uri).query)["secret"][0]
        confirmed = await http.post(identity + "/v1/totp/confirm", headers=_bearer(setup),
                                    json={"code": credentials.code_at(secret, _now())})
        assert confirmed.status_code == 200, confirmed.text
    full = await http.post(identity + "/v1/token/refresh", json={"refresh_token": setup["refresh_token"]})
    assert full.status_code == 200, full.text
    assert (full.json()["must_change_password"], full.json()["must_enroll_totp"]) == (False, False)
    return full.json()


def _now() -> datetime:
    return datetime.now(UTC)


async def test_an_admin_made_verifier_signs_in_decides_is_disabled_and_the_directory_trail_shows_it(system):
    identity, intake, verification, audit = (system.url(s) for s in ("identity", "intake", "verification", "audit"))
    admin_name, admin_password = f"admin-{uuid.uuid4().hex[:6]}", "sandi-admin-2026"
    made = subprocess.run([sys.executable, "-m", "services.identity", "admin", "--username", admin_name,
                           "--region", "36.03", "--password-stdin"], input=admin_password + "\n", cwd=ROOT,
                          env={**system.env, "WASPADA_PORT": "0"}, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    uri = next(line for line in made.stdout.splitlines() if line.startswith("otpauth://"))
    admin_secret = parse_qs(urlparse(uri).query)["secret"][0]

    async with httpx.AsyncClient(timeout=15) as http:
        admin_login = await http.post(identity + "/v1/login", json={
            "username": admin_name, "password": admin_password, "totp": credentials.code_at(admin_secret, _now())})
        assert admin_login.status_code == 200, admin_login.text
        admin = _bearer(admin_login.json())

        async def create(role: str, region: str) -> dict:
            r = await http.post(identity + "/v1/accounts", headers=admin, json={
                "username": f"{role}-{uuid.uuid4().hex[:6]}", "name": f"Petugas {role}", "role": role,
                "region": region})
            assert r.status_code == 201, r.text
            return r.json()

        verifier_account = await create("verifier", "36.03")
        reporter_account = await create("reporter", PILOT_VILLAGE)
        reporter = _bearer(await _set_up(http, identity, reporter_account["username"],
                                         reporter_account["one_time_password"], staff=False))
        verifier_tokens = await _set_up(http, identity, verifier_account["username"],
                                        verifier_account["one_time_password"], staff=True)
        verifier = _bearer(verifier_tokens)

        filed = await http.post(intake + "/v1/reports", json=report_body(), headers=reporter)
        assert filed.status_code == 201, filed.text
        case_id = filed.json()["case_id"]

        async def screened():
            r = await http.get(verification + f"/v1/cases/{case_id}", headers=verifier)
            return r.json() if r.status_code == 200 else None

        case = await eventually(screened, timeout=60)
        decided = await http.post(verification + f"/v1/cases/{case_id}/decision",
                                  json={"decision": "verify", "case_types": ["np_pmi"]},
                                  headers={**verifier, "If-Match": f'"{case["version"]}"'})
        assert decided.status_code == 200, decided.text

        disabled = await http.patch(identity + f"/v1/accounts/{verifier_account['id']}", headers=admin,
                                    json={"status": "disabled"})
        assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
        refused = await http.post(identity + "/v1/token/refresh",
                                  json={"refresh_token": verifier_tokens["refresh_token"]})
        assert refused.status_code == 401

        wanted = ["account.created", "login.succeeded", "account.changed", "account.changed", "account.disabled",
                  "session.revoked"]

        async def directory_complete():
            r = await http.get(audit + "/v1/directory/trail", headers=admin,
                               params={"account_id": verifier_account["id"]})
            assert r.status_code == 200, r.text
            types = [e["type"] for e in r.json()["entries"]]
            return r.json()["entries"] if sorted(types) == sorted(wanted) else None

        entries = await eventually(directory_complete, timeout=40)
        by_type = {e["type"]: e for e in entries}
        assert by_type["account.created"]["actor"]["role"] == "admin"
        assert by_type["account.disabled"]["actor"]["role"] == "admin"
        assert by_type["session.revoked"]["data"]["reason"] == "account_disabled"
        assert {tuple(e["data"]["changed"]) for e in entries if e["type"] == "account.changed"} == {
            ("password",), ("totp",)}
        verdict = (await http.get(audit + "/v1/directory/trail/verify", headers=admin)).json()
        assert verdict["valid"] is True and verdict["entries"] >= len(entries)

        async def decision_trailed():
            r = await http.get(audit + f"/v1/cases/{case_id}/trail", headers=admin)
            verified = [e for e in r.json().get("entries", []) if e["type"] == "case.verified"]
            return verified[0] if verified else None

        entry = await eventually(decision_trailed, timeout=40)
        assert entry["actor"]["id"] == verifier_account["id"] and entry["actor"]["role"] == "verifier"
