"""Test fixtures shared by every tier.

Integration and e2e tests use the real Kafka broker and the real database. Their addresses come from
KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI; when nothing answers there, the session starts `infra/local` itself
(the Makefile normally has already). testcontainers is used only when WASPADA_TEST_CONTAINERS=1 and a Docker
engine exists. Every test gets its own database prefix and consumer-group prefix, so tests share the
broker and the database without cleaning up after each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared import topics
from shared.auth import issue_token
from shared.settings import DEV_JWT_PRIVATE_KEY

ROOT = Path(__file__).resolve().parent.parent
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true")
PRIVATE_KEY = os.environ.get("WASPADA_JWT_PRIVATE_KEY") or DEV_JWT_PRIVATE_KEY
# Sign-in in tests hashes with cheap Argon2id parameters; the production default is measured in README.
os.environ.setdefault("WASPADA_PASSWORD_HASH_PROFILE", "cheapest_for_tests")


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


def _mongo_address(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0].split(",")[0]


@pytest.fixture(scope="session")
def infra() -> dict[str, str]:
    """Real Kafka and database addresses, started from infra/local when nothing is listening."""
    global KAFKA, MONGO
    if not (_port_open(KAFKA) and _port_open(_mongo_address(MONGO))):
        if os.environ.get("WASPADA_TEST_CONTAINERS") == "1":  # pragma: no cover - needs a Docker engine
            from testcontainers.kafka import KafkaContainer
            from testcontainers.mongodb import MongoDbContainer

            kafka_c = KafkaContainer("apache/kafka:3.9.1").with_kraft().start()
            mongo_c = MongoDbContainer("mongo:7").start()
            KAFKA, MONGO = kafka_c.get_bootstrap_server(), mongo_c.get_connection_url() + "/?directConnection=true"
        else:
            subprocess.run([str(ROOT / "infra/local/infra.sh"), "start"], check=True)
    from shared.kafka import create_topics

    asyncio.run(create_topics(KAFKA, [(t, topics.DEFAULT_PARTITIONS) for t in topics.ALL]))
    os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["MONGODB_URI"] = KAFKA, MONGO
    return {"kafka": KAFKA, "mongo": MONGO}


@pytest.fixture
def isolation() -> dict[str, str]:
    """Per-test database and consumer-group prefixes; one-shot in-process consumers skip the broker's history."""
    tag = uuid.uuid4().hex[:10]
    return {"db_prefix": f"t{tag}", "group_prefix": f"test-{tag}", "consumer_offset_reset": "latest"}


def token(role: str, region: str, *, unit: str | None = None, sub: str | None = None) -> str:
    return issue_token(PRIVATE_KEY, role=role, region=region, unit=unit, sub=sub or f"{role}-{uuid.uuid4().hex[:8]}")


class BearerHeader(Mapping[str, str]):
    """`{"Authorization": "Bearer …"}` whose 15-minute token is made anew once it is 10 minutes old, so a header
    built when a test module is imported still works however long the run before that test takes."""

    def __init__(self, role: str, region: str, unit: str | None, sub: str) -> None:
        self._claims = {"role": role, "region": region, "unit": unit, "sub": sub}
        self._token, self._made = "", -1e9

    def __getitem__(self, name: str) -> str:
        if name != "Authorization":
            raise KeyError(name)
        if time.monotonic() - self._made > 600:
            self._token, self._made = token(**self._claims), time.monotonic()
        return f"Bearer {self._token}"

    def __iter__(self) -> Iterator[str]:
        return iter(("Authorization",))

    def __len__(self) -> int:
        return 1


def auth(role: str, region: str, *, unit: str | None = None, sub: str | None = None) -> BearerHeader:
    return BearerHeader(role, region, unit, sub or f"{role}-{uuid.uuid4().hex[:8]}")


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan (broker, subscribers, sweeper) in this process and talk to it over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async def ready():
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout=30)  # consumers hold their partitions before the test publishes
            yield client


@pytest.fixture
async def database(infra, isolation):
    """`database(name)`: a database of this test's own on the real server, its client closed after the test (made
    as the services make theirs: it reads packed fields back)."""
    from shared.mongo import connect

    client = connect(infra["mongo"])
    yield lambda name: client[f"{isolation['db_prefix']}_{name}"]
    await client.close()


async def no_publish(*_: Any) -> None:
    """A relay's publish that sends nothing: for tests of a store on its own."""


async def eventually(probe, timeout: float = 20.0, interval: float = 0.2):
    """Poll `probe()` (async) until it returns something truthy; fail with the last value after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


async def in_read_model(db_prefix: str, case_id: str, at_least: int = 1, timeout: float = 30.0) -> dict[str, Any]:
    """Audit's document of a case once it has taken in the case's trail up to `at_least` entries: the read model
    (search, stats, checkpoints, the regions of dead letters) takes in the events of a round every few seconds.
    Read from the database: a read over HTTP would itself be recorded in the trail."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO)
    try:
        cases = client[f"{db_prefix}_audit"]["cases"]
        return await eventually(lambda: cases.find_one({"_id": case_id, "trail_seq": {"$gte": at_least}}), timeout)
    finally:
        await client.close()


async def referrals_of(http: httpx.AsyncClient, case_id: str, headers: dict[str, str], count: int) -> list:
    """The referral service's referrals of a case, once there are at least `count`."""
    async def probe():
        r = await http.get("/v1/referrals", headers=headers, params={"case_id": case_id})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        return items if len(items) >= count else None

    return await eventually(probe, timeout=30)


def calls_to(monkeypatch, owner: Any, name: str) -> list:
    """The first argument of every call to `owner.name` from now on (an async method, still doing its work)."""
    calls: list = []
    method = getattr(owner, name)

    async def counted(first, *args, **kwargs):
        calls.append(first)
        return await method(first, *args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls
