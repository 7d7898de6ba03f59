"""Every request's log lines say which service, method and path they belong to, and nothing of the request before."""

import contextlib

import httpx
from fastapi import Response
import structlog

from shared.http import create_api


@contextlib.asynccontextmanager
async def _no_lifespan(_):
    yield


def _app():
    app = create_api(title="waspada-example", description="", lifespan=_no_lifespan, readiness=[], max_body_bytes=1024)

    @app.post("/v1/things/{thing}")
    async def thing(thing: str) -> dict:
        seen = structlog.contextvars.get_contextvars()
        structlog.contextvars.bind_contextvars(actor_id=f"someone-{thing}")  # as the token check binds its actor
        return seen

    return app


async def test_a_request_is_logged_with_its_service_method_and_path_and_nothing_of_the_one_before():
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        first = (await http.post("/v1/things/a")).json()
        second = (await http.post("/v1/things/b")).json()
        too_big = await http.post("/v1/things/c", content=b"x" * 2048)
    assert first == {"service": "example", "method": "POST", "path": "/v1/things/a"}
    assert second == {"service": "example", "method": "POST", "path": "/v1/things/b"}  # no actor of the first
    assert too_big.status_code == 413 and too_big.headers["x-content-type-options"] == "nosniff"


async def test_every_answer_says_nosniff_and_the_api_s_are_never_stored_unless_a_route_says_otherwise():
    app = _app()

    @app.get("/v1/public-keys")
    async def keys() -> Response:
        return Response("{}", media_type="application/json", headers={"Cache-Control": "max-age=300"})

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        api, own, health = (await http.post("/v1/things/a"), await http.get("/v1/public-keys"),
                            await http.get("/healthz"))
    assert [r.headers.get_list("x-content-type-options") for r in (api, own, health)] == [["nosniff"]] * 3
    assert api.headers["cache-control"] == "no-store"
    assert own.headers.get_list("cache-control") == ["max-age=300"]
    assert "cache-control" not in health.headers
