"""Every /v1 endpoint of every service: 401 without a valid token, 403 for a role it does not serve.

The table is built from the apps' own routes and the roles each route's auth dependency declares, so a new
endpoint is covered the day it is added (and one without auth fails here).
"""

from datetime import timedelta

import httpx
import jwt
import pytest

from services.audit.app import AuditSettings
from services.audit.app import create_app as audit_app
from services.intake.app import IntakeSettings
from services.intake.app import create_app as intake_app
from services.referral.app import ReferralSettings
from services.referral.app import create_app as referral_app
from services.verification.app import VerificationSettings
from services.verification.app import create_app as verification_app
from shared.auth import ROLES, issue_token
from shared.settings import DEV_JWT_SECRET

APPS = {
    "intake": lambda: intake_app(IntakeSettings(env="dev")),
    "verification": lambda: verification_app(VerificationSettings(env="dev")),
    "referral": lambda: referral_app(ReferralSettings(env="dev")),
    "audit": lambda: audit_app(AuditSettings(env="dev")),
}


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
            roles = [getattr(d.call, "roles", None) for d in route.dependant.dependencies]
            roles = next((r for r in roles if r is not None), None)
            for method in sorted(route.methods - {"HEAD"}):
                rows.append((service, method, path.replace("{", "").replace("}", ""), roles))
    return rows


ENDPOINTS = _endpoints()


def _token(role="supervisor", secret=DEV_JWT_SECRET, **kw):
    unit = "polresta_tangerang" if role == "investigator" else None
    return issue_token(secret, role=role, region="36.03", unit=unit, **kw)


async def _call(service, method, path, token=None):
    transport = httpx.ASGITransport(app=APPS[service]())  # no lifespan: auth answers before any I/O
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.request(method, path, headers=headers, json={} if method == "POST" else None)


def test_every_endpoint_declares_who_may_use_it():
    assert ENDPOINTS, "no endpoints found"
    assert [e for e in ENDPOINTS if e[3] is None] == []


BAD_TOKENS = {
    "missing": None,
    "forged": _token(secret="not-the-secret-" * 3),
    "expired": _token(ttl=timedelta(seconds=-1)),
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
