"""Inputs at the edges, and what every answer declares and carries, checked on every service's own routes.

The apps run without their lifespan: each input here is refused (or answered) before any database or broker
is reached, so a 500 or an answer outside the declared ones shows as such.
"""

import base64

import httpx
import pytest

from shared.auth import ROLES
from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth
from tests.unit.test_access_control import APPS, _routes

ROLE_FOR = {"reporter": auth("reporter", PILOT_VILLAGE), "verifier": auth("verifier", "36.03"),
            "supervisor": auth("supervisor", "36.03"), "admin": auth("admin", "36"),
            "investigator": auth("investigator", "36", unit="bp3mi_banten")}
SPECS = {service: make().openapi() for service, make in APPS.items()}


def _guards():
    """(service, METHOD, path) -> the route's auth dependency (its `roles`, `setup`, `public`)."""
    guards = {}
    for service, make in APPS.items():
        for route in _routes(make().routes):
            for call in (d.call for d in getattr(route, "dependant", None).dependencies if route.path.startswith("/v1")) \
                    if hasattr(route, "dependant") else ():
                if hasattr(call, "roles"):
                    guards.update({(service, m, route.path): call for m in route.methods})
    return guards


GUARDS = _guards()


def _operations(predicate=lambda path, method, op: True):
    return [(service, method.upper(), path, op) for service, spec in SPECS.items()
            for path, ops in spec["paths"].items() for method, op in ops.items() if predicate(path, method, op)]


def _query(op, *, name=None, fmt=None):
    return [p["name"] for p in op.get("parameters", []) if p["in"] == "query"
            and (name is None or p["name"] == name) and (fmt is None or p.get("schema", {}).get("format") == fmt
                                                         or fmt in str(p.get("schema", {})))]


async def _get(service, path, params):
    """The answer to the first role the route serves."""
    transport = httpx.ASGITransport(app=APPS[service](), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for headers in ROLE_FOR.values():
            r = await http.get(path, params=params, headers=headers)
            if r.status_code != 403:
                return r
    raise AssertionError(f"no role may use {path}")


LISTS = _operations(lambda path, method, op: method == "get" and _query(op, name="cursor"))
HUGE_CURSOR = base64.urlsafe_b64encode(str(2**63).encode()).decode()


@pytest.mark.parametrize(("service", "method", "path", "op"), LISTS, ids=[f"{s}:{p}" for s, _, p, _ in LISTS])
@pytest.mark.parametrize("cursor", [HUGE_CURSOR, "LTE", "%%", "MDAwMDAwMDAwMDAw"])
async def test_a_cursor_this_api_never_gave_out_is_a_422_naming_the_cursor(service, method, path, op, cursor):
    assert len(LISTS) >= 7
    r = await _get(service, path, {"cursor": cursor})
    assert r.status_code == 422, r.text
    assert [p["field"] for p in r.json()["error"]["details"]] == ["cursor"]


EDGES = ["0001-01-01T00:00:00+07:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-05:00",
         "9999-12-31T23:59:59-12:00"]
DATED = [(s, m, p, op, name) for s, m, p, op in _operations(lambda path, method, op: method == "get")
         for name in _query(op, fmt="date-time")]


@pytest.mark.parametrize(("service", "method", "path", "op", "name"), DATED,
                         ids=[f"{s}:{p}:{n}" for s, _, p, _, n in DATED])
@pytest.mark.parametrize("moment", EDGES)
async def test_an_instant_outside_the_calendar_in_utc_is_a_422_naming_the_field(service, method, path, op, name,
                                                                                   moment):
    assert len(DATED) >= 4  # search and stats, from and to
    r = await _get(service, path, {name: moment})
    assert r.status_code == 422, r.text
    assert [p["field"] for p in r.json()["error"]["details"]] == [name]


@pytest.mark.parametrize(("observed_at", "problem"), [
    ("0001-01-01T00:00:00+07:00", "outside the calendar"),
    ("0001-01-01T10:00:00+00:00", "more than 10 years ago"),
    ("9999-12-31T23:59:59-05:00", "outside the calendar"),
    ("9999-12-31T10:00:00+00:00", "in the future"),
])
async def test_a_report_observed_at_the_edges_of_the_calendar_is_a_422_naming_observed_at(observed_at, problem):
    transport = httpx.ASGITransport(app=APPS["intake"](), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.post("/v1/reports", json=report_body(observed_at=observed_at), headers=ROLE_FOR["reporter"])
    assert r.status_code == 422, r.text
    [detail] = r.json()["error"]["details"]
    assert detail["field"] == "observed_at" and problem in detail["problem"]


async def test_a_departure_years_away_is_a_422_naming_it():
    transport = httpx.ASGITransport(app=APPS["intake"](), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.post("/v1/reports", headers=ROLE_FOR["reporter"],
                            json=report_body(departure={"planned_date": "9999-12-31"}))
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "departure.planned_date"


async def test_a_body_over_the_limit_without_content_length_is_a_413():
    async def chunks():
        for _ in range(40):
            yield b" " * 10_000  # 400 kB, over the 256 KiB default, streamed with no Content-Length

    transport = httpx.ASGITransport(app=APPS["intake"](), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.post("/v1/reports", content=chunks(),
                            headers={**ROLE_FOR["reporter"], "Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert r.headers["x-content-type-options"] == "nosniff"


# --- what every route declares -----------------------------------------------------------------------------

V1 = _operations(lambda path, method, op: path.startswith("/v1"))


@pytest.mark.parametrize(("service", "method", "path", "op"), V1, ids=[f"{s}:{m}:{p}" for s, m, p, _ in V1])
def test_every_route_declares_its_answer_model_and_every_error_it_can_give(service, method, path, op):
    responses = op["responses"]
    [success] = [s for s in responses if s.startswith("2")]
    content = responses[success].get("content", {}) if success != "204" else {"none": {"schema": {"type": "-"}}}
    assert content and all("$ref" in c["schema"] or c["schema"].get("type") for c in content.values()), content
    errors = {s: r for s, r in responses.items() if not s.startswith("2")}
    guard = GUARDS[(service, method, path)]
    if not getattr(guard, "public", False):
        assert "401" in errors
        if set(guard.roles) != set(ROLES) or not getattr(guard, "setup", False):
            assert "403" in errors  # a role it does not serve, or a token that must finish its setup first
    if "{" in path:
        assert "404" in errors
    if "requestBody" in op:
        assert {"413", "422"} <= set(errors)
    if op.get("parameters") or "requestBody" in op:
        assert "422" in errors
    for status, answer in errors.items():
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, status


def test_no_route_declares_the_frameworks_default_error_shape():
    for spec in SPECS.values():
        assert "HTTPValidationError" not in str(spec)


def test_the_export_declares_its_real_media_types():
    export = SPECS["audit"]["paths"]["/v1/cases/{case_id}/trail/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/x-ndjson", "text/html"}


# --- headers -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("service", list(APPS))
async def test_every_answer_says_nosniff_and_api_answers_are_never_stored(service):
    transport = httpx.ASGITransport(app=APPS[service](), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        answers = {
            "health": await http.get("/healthz"),
            "unknown path": await http.get("/nothing-here"),
            "no token": await http.get(next(p for p, ops in SPECS[service]["paths"].items()
                                            if p.startswith("/v1") and "get" in ops and "security" in ops["get"])),
            "openapi": await http.get("/openapi.json"),
        }
    for what, r in answers.items():
        assert r.headers.get("x-content-type-options") == "nosniff", what
    assert answers["no token"].status_code == 401 and answers["no token"].headers["cache-control"] == "no-store"
