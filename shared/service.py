"""Service defaults: one process serves a service's HTTP API (FastAPI) and its Kafka subscribers (FastStream).

Each service's `app.py` calls `build_runtime(settings)`, registers its subscribers and routes, and returns
`create_service_api(...)`. Nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared import kafka, mongo
from shared.auth import load_public_keys
from shared.clock import Clock, SystemClock
from shared.consumer import EventConsumer, consumers_assigned, subscribe
from shared.http import authenticator, create_api
from shared.logging import configure_logging, describe
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings

log = structlog.get_logger()


def every(interval_s: float, step: Callable[[], Awaitable[Any]], what: str, *, at_start: bool = False,
          at_stop: bool = False) -> Callable[[], Awaitable[None]]:
    """A loop for `Runtime.background`: `step` every `interval_s` (a failure is logged as `<what>_failed` and the
    step tried again next time); `at_start`: first at once; `at_stop`: once more as the service stops, so what the
    step writes late (audit's trail heads, referral's day counts) is written before the process ends."""

    async def loop() -> None:
        try:
            first = at_start
            while True:
                if not first:
                    await asyncio.sleep(interval_s)
                first = False
                try:
                    await step()
                except Exception as exc:  # noqa: BLE001 - the loop outlives a database or broker outage
                    log.warning(f"{what}_failed", error=describe(exc))
        except asyncio.CancelledError:
            if at_stop:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(step(), 5.0)
            raise

    return loop


@dataclass
class Runtime:
    settings: ServiceSettings
    clock: Clock
    client: AsyncMongoClient
    db: AsyncDatabase
    broker: KafkaBroker
    relay: OutboxRelay
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Long-running loops started as tasks once the broker runs, cancelled on shutdown (e.g. deadline checks).
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Counts an operator should see on /readyz (failed outbox entries, dead letters not stored yet).
    details: list[Callable[[], Awaitable[dict[str, Any]]]] = field(default_factory=list)

    @functools.cached_property
    def require(self) -> Callable[..., Callable[..., Awaitable[object]]]:
        return authenticator(load_public_keys(self.settings.jwt_public_key))

    def backfill_once(self, name: str, step: Callable[[], Awaitable[int]]) -> None:
        """Run `step` (a once-per-database backfill; it returns how many documents it gave what they lacked) in
        the background at start; a failure is logged and the step tried again at the next start."""
        async def run() -> None:
            try:
                if done := await step():
                    log.info("backfilled", what=name, documents=done)
            except Exception as exc:  # noqa: BLE001 - tried again at the next start; readers use the old way
                log.warning("backfill_failed", what=name, error=describe(exc))

        self.background.append(run)

    def consume(self, *topic_names: str, apply: Callable, description: str, serial_topics: tuple[str, ...] = ()
                ) -> None:
        """Subscribe `apply(envelope)` to `topic_names` in this service's consumer group; the events of one case
        are applied in order, different cases side by side, and a topic of `serial_topics` one event at a time."""
        consumer = EventConsumer(
            name=self.settings.service, apply=apply, dead_letter=kafka.publisher_for(self.broker),
            attempts=self.settings.consumer_attempts, backoff_s=self.settings.consumer_backoff_s,
        )
        subscribe(self.broker, consumer, *topic_names, group_id=self.settings.group_id, description=description,
                  offset_reset=self.settings.consumer_offset_reset, batch=self.settings.consumer_batch,
                  concurrency=self.settings.consumer_concurrency, serial_topics=serial_topics)


def build_runtime(settings: ServiceSettings, clock: Clock | None = None) -> Runtime:
    configure_logging(settings.service, settings.log_level, settings.log_json)
    clock = clock or SystemClock()
    client = mongo.connect(settings.mongodb_uri, settings.mongo_pool_size)
    broker = kafka.create_broker(settings.kafka_bootstrap_servers, client_id=f"waspada-{settings.service}")
    relay = OutboxRelay(kafka.publisher_for(broker), send=kafka.sender_for(broker), clock=clock,
                        grace_s=settings.outbox_sweep_grace_s,
                        max_attempts=settings.outbox_max_attempts, retention_s=settings.version_retention_s,
                        background=settings.outbox_publish_in_background)
    return Runtime(settings=settings, clock=clock, client=client, db=client[settings.database_name],
                   broker=broker, relay=relay)


def create_service_api(runtime: Runtime, *, title: str, description: str) -> FastAPI:
    settings = runtime.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.relay.ensure_indexes()
        for step in runtime.startup:
            await step()
        await runtime.broker.start()
        sweeper = asyncio.create_task(runtime.relay.run_sweeper(settings.outbox_sweep_interval_s))
        tasks = [asyncio.create_task(loop()) for loop in runtime.background]
        log.info("service_started", port=settings.port, database=settings.database_name, group_id=settings.group_id)
        try:
            yield
        finally:
            for task in (*tasks, sweeper):
                task.cancel()
            for task in (*tasks, sweeper):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runtime.relay.drain()
            await runtime.broker.stop()
            await runtime.client.close()
            log.info("service_stopped")

    async def database_ready() -> None:
        await mongo.ping(runtime.client)

    async def outbox_details() -> dict[str, Any]:
        shown: dict[str, Any] = {"outbox_failed": await runtime.relay.failed_entries()}
        for more in runtime.details:
            shown |= await more()
        return shown

    async def kafka_ready() -> None:
        await kafka.ping(settings.kafka_bootstrap_servers)

    return create_api(title=title, description=description, lifespan=lifespan,
                      readiness=[("database", database_ready), ("kafka", kafka_ready),
                                 ("consumers", lambda: consumers_assigned(runtime.broker))],
                      max_body_bytes=settings.max_body_bytes, details=outbox_details)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=10)


def main(settings_cls: type[ServiceSettings], create_app: Callable[[ServiceSettings], FastAPI]) -> None:
    """Entry point of `python -m services.<name>`: refuse clearly on bad settings, else serve until SIGTERM."""
    import sys

    from pydantic import ValidationError

    try:
        settings = settings_cls()
    except ValidationError as exc:
        print(f"waspada: refusing to start: {exc.errors()[0]['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(create_app(settings), settings)
