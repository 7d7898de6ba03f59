"""Every /v1 endpoint of every service: 401 without a valid token, 403 for a role it does not serve, 403
`setup_required` for the token of an account that must first change its password or enrol its second factor.

The table is built from the apps' own routes and the roles each route's auth dependency declares, so a new
endpoint is covered the day it is added (and one without auth fails here). Only the endpoints listed in PUBLIC
are open to anyone.
"""

from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.audit.app import AuditSettings
from services.audit.app import create_app as audit_app
from services.identity.app import IdentitySettings
from services.identity.app import create_app as identity_app
from services.intake.app import IntakeSettings
from services.intake.app import create_app as intake_app
from services.referral.app import ReferralSettings
from services.referral.app import create_app as referral_app
from services.verification.app import VerificationSettings
from services.verification.app import create_app as verification_app
from shared.auth import ROLES, issue_token, key_id, load_private_key
from shared.settings import DEV_JWT_PRIVATE_KEY

APPS = {
    "intake": lambda: intake_app(IntakeSettings(env="dev")),
    "verification": lambda: verification_app(VerificationSettings(env="dev")),
    "referral": lambda: referral_app(ReferralSettings(env="dev")),
    "audit": lambda: audit_app(AuditSettings(env="dev")),
    "identity": lambda: identity_app(IdentitySettings(env="dev")),
}
# Open to anyone, on purpose: signing in, renewing with a refresh token, and the public keys.
PUBLIC = {("identity", "POST", "/v1/login"), ("identity", "POST", "/v1/token/refresh"),
          ("identity", "GET", "/v1/jwks.json")}


def _routes(routes):
    """APIRoutes, also those of included routers (FastAPI keeps them behind an include wrapper)."""
    for route in routes:
        context = getattr(route, "include_context", None)
        if context is not None:
            yield from _routes(context.included_router.routes)
        else:
            yield route


def _endpoints():
    rows = []
    for service, make in APPS.items():
        app = make()
        for route in _routes(app.routes):
            path = getattr(route, "path", "")
            if not path.startswith("/v1"):
                continue
            deps = [d.call for d in route.dependant.dependencies]
            roles = next((getattr(c, "roles") for c in deps if getattr(c, "roles", None) is not None), None)
            setup = any(getattr(c, "setup", False) for c in deps)
            for method in sorted(route.methods - {"HEAD"}):
                rows.append((service, method, path.replace("{", "").replace("}", ""), roles, setup))
    return rows


ALL_ENDPOINTS = _endpoints()
ENDPOINTS = [e[:4] for e in ALL_ENDPOINTS if e[:3] not in PUBLIC]


def _token(role="supervisor", key=DEV_JWT_PRIVATE_KEY, **kw):
    unit = "polresta_tangerang" if role == "investigator" else None
    return issue_token(key, role=role, region="36.03", unit=unit, **kw)


def _hs256_with_the_old_shared_secret():
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": "x", "role": "supervisor", "region": "36.03", "iat": now, "exp": now + 600, "sid": "s"}
    return jwt.encode(claims, "waspada-dev-secret-do-not-use-in-production", algorithm="HS256")


async def _call(service, method, path, token=None):
    transport = httpx.ASGITransport(app=APPS[service]())  # no lifespan: auth answers before any I/O
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.request(method, path, headers=headers, json={} if method == "POST" else None)


def test_every_endpoint_declares_who_may_use_it():
    assert ENDPOINTS, "no endpoints found"
    assert [e for e in ALL_ENDPOINTS if e[3] is None] == []


def test_only_sign_in_refresh_and_the_public_keys_are_open_to_anyone():
    assert {e[:3] for e in ALL_ENDPOINTS if e[3] == ()} == PUBLIC


BAD_TOKENS = {
    "missing": None,
    "forged": _token(key=Ed25519PrivateKey.generate()),
    "forged-with-the-dev-kid": jwt.encode(
        {"sub": "x", "role": "supervisor", "region": "36.03", "iat": int(datetime.now(UTC).timestamp()),
         "exp": int(datetime.now(UTC).timestamp()) + 600, "sid": "s"},
        Ed25519PrivateKey.generate(), algorithm="EdDSA",
        headers={"kid": key_id(load_private_key(DEV_JWT_PRIVATE_KEY).public_key())}),
    "hs256-old-shared-secret": _hs256_with_the_old_shared_secret(),
    "expired": _token(now=datetime.now(UTC) - timedelta(minutes=16)),
    "alg-none": jwt.encode({"sub": "x", "role": "supervisor", "region": "36.03", "exp": 9999999999}, None,
                           algorithm="none"),
}


@pytest.mark.parametrize(("service", "method", "path", "roles"), ENDPOINTS,
                         ids=[f"{s}:{m}:{p}" for s, m, p, _ in ENDPOINTS])
@pytest.mark.parametrize("bad", list(BAD_TOKENS))
async def test_a_missing_or_bad_token_gets_401(service, method, path, roles, bad):
    response = await _call(service, method, path, BAD_TOKENS[bad])
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("service", "method", "path", "roles"), ENDPOINTS,
                         ids=[f"{s}:{m}:{p}" for s, m, p, _ in ENDPOINTS])
async def test_a_role_the_endpoint_does_not_serve_gets_403(service, method, path, roles):
    for role in ROLES:
        if role in roles:
            continue
        response = await _call(service, method, path, _token(role))
        assert response.status_code == 403, (role, response.text)


SETUP_ENDPOINTS = {("identity", "GET", "/v1/me"), ("identity", "POST", "/v1/password"),
                   ("identity", "POST", "/v1/totp/enroll"), ("identity", "POST", "/v1/totp/confirm"),
                   ("identity", "POST", "/v1/logout")}


def test_only_the_setup_endpoints_take_a_setup_token():
    assert {e[:3] for e in ALL_ENDPOINTS if e[4]} == SETUP_ENDPOINTS


@pytest.mark.parametrize(("service", "method", "path", "roles"),
                         [e for e in ENDPOINTS if e[:3] not in SETUP_ENDPOINTS],
                         ids=[f"{s}:{m}:{p}" for s, m, p, _ in ENDPOINTS if (s, m, p) not in SETUP_ENDPOINTS])
async def test_a_setup_token_gets_403_setup_required_everywhere_else(service, method, path, roles):
    for role in roles:
        response = await _call(service, method, path, _token(role, setup=True))
        assert response.status_code == 403, (role, response.text)
        assert response.json()["error"]["code"] == "setup_required"
