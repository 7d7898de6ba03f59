"""Consuming events: parse the envelope, apply with retries, dead-letter what cannot be processed, then acknowledge.

Offsets are committed only after the handler returns (FastStream `AckPolicy.ACK`), and the handler returns only
after the write — or after the message is safely on the dead-letter topic. While the database or broker is down,
the consumer waits and retries instead of dead-lettering good messages.

A subscriber takes what the broker has (up to `batch` records, `getmany`) and applies it in lanes: the records of
one key (one case) in their order, one after the other; different cases side by side, up to `concurrency` at once.
So one slow database round trip no longer holds up every other case, and the offsets are committed once the whole
batch is applied: a crash redelivers the batch, which the handlers' idempotence makes harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Hashable, Iterable
from typing import Any

import structlog
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from shared import topics
from shared.contracts.envelope import ContractError, Envelope
from shared.kafka import TRANSIENT_ERRORS as KAFKA_TRANSIENT
from shared.logging import describe
from shared.mongo import TRANSIENT_ERRORS as MONGO_TRANSIENT
from shared.outbox import Publish

log = structlog.get_logger()

Apply = Callable[[Envelope], Awaitable[None]]
TRANSIENT = MONGO_TRANSIENT + KAFKA_TRANSIENT
MAX_BACKOFF_S = 10.0

# What the records of the batch being applied left to do once, after all of them (see `at_batch_end`).
_batch_end: contextvars.ContextVar[dict[Hashable, Callable[[], Awaitable[None]]] | None] = \
    contextvars.ContextVar("batch_end", default=None)


async def at_batch_end(key: Hashable, action: Callable[[], Awaitable[None]]) -> None:
    """Run `action` once the batch being applied is all applied, before its offsets are committed; once per `key`
    however many records of the batch ask (a weekly figure's token touched by 100 events is touched once). Outside
    a batch (a request, a test) it runs now. A crash before it runs redelivers the batch: an action deferred here
    must also be done by the redelivered records' handlers (idempotent ones do it again)."""
    pending = _batch_end.get()
    if pending is None:
        await action()
    else:
        pending.setdefault(key, action)


@contextlib.asynccontextmanager
async def batch_end() -> AsyncIterator[None]:
    """What the work inside asks for with `at_batch_end` runs once per key as it ends, as after a consumer's batch
    (a background round's writes ask as the records of a batch do)."""
    pending: dict[Hashable, Callable[[], Awaitable[None]]] = {}
    token = _batch_end.set(pending)  # tasks started inside copy this context: they add to `pending` too
    try:
        yield
    finally:
        _batch_end.reset(token)
    await _run_deferred(pending)


async def _run_deferred(pending: dict[Hashable, Callable[[], Awaitable[None]]], attempts: int = 3,
                        backoff_s: float = 0.2, concurrency: int = 16) -> None:
    """The batch's deferred actions, side by side: waiting out a database outage, a few tries for anything else
    (then logged: what it does is done again by the next record that asks)."""
    slots = asyncio.Semaphore(concurrency)

    async def run(key: Hashable, action: Callable[[], Awaitable[None]]) -> None:
        failures, wait = 0, backoff_s
        async with slots:
            while True:
                try:
                    await action()
                    return
                except asyncio.CancelledError:
                    raise
                except TRANSIENT as exc:
                    log.warning("batch_end_waiting", key=str(key), error_type=type(exc).__name__, retry_in_s=wait)
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, MAX_BACKOFF_S)
                except Exception as exc:  # noqa: BLE001 - the records are applied; this is their follow-up
                    failures += 1
                    if failures >= attempts:
                        log.error("batch_end_failed", key=str(key), error=describe(exc))
                        return
                    await asyncio.sleep(backoff_s * 2 ** (failures - 1))

    await asyncio.gather(*(run(key, action) for key, action in pending.items()))


class EventConsumer:
    def __init__(self, *, name: str, apply: Apply, dead_letter: Publish, attempts: int = 3,
                 backoff_s: float = 0.2) -> None:
        self.name = name
        self._apply = apply
        self._dead_letter = dead_letter
        self._attempts = attempts
        self._backoff_s = backoff_s

    async def consume(self, topic: str, partition: int, offset: int, key: bytes | None, body: bytes,
                      headers: dict[str, str]) -> str:
        """Process one message; returns 'applied' or 'dead_lettered'. Raises only on cancellation."""
        structlog.contextvars.bind_contextvars(topic=topic, partition=partition, offset=offset, consumer=self.name)
        try:
            envelope = Envelope.from_bytes(body)
        except ContractError as exc:
            await self._to_dead_letter(topic, partition, offset, key, body, headers, describe(exc), 1)
            return "dead_lettered"
        structlog.contextvars.bind_contextvars(case_id=envelope.case_id, event_id=envelope.event_id,
                                               correlation_id=envelope.correlation_id, event_type=envelope.type)
        failures = 0
        transient_wait = self._backoff_s
        while True:
            try:
                await self._apply(envelope)
                return "applied"
            except asyncio.CancelledError:
                raise
            except ContractError as exc:
                await self._to_dead_letter(topic, partition, offset, key, body, headers, describe(exc),
                                           failures + 1)
                return "dead_lettered"
            except TRANSIENT as exc:
                # The database or broker is unreachable: the message is fine, so wait rather than dead-letter it.
                log.warning("event_apply_waiting", error_type=type(exc).__name__, retry_in_s=transient_wait)
                await asyncio.sleep(transient_wait)
                transient_wait = min(transient_wait * 2, MAX_BACKOFF_S)
            except Exception as exc:  # noqa: BLE001 - a processing failure: retry, then dead-letter
                failures += 1
                log.warning("event_apply_failed", attempt=failures, error=describe(exc))
                if failures >= self._attempts:
                    await self._to_dead_letter(topic, partition, offset, key, body, headers, describe(exc), failures)
                    return "dead_lettered"
                await asyncio.sleep(self._backoff_s * 2 ** (failures - 1))

    async def _to_dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None, body: bytes,
                              headers: dict[str, str], error: str, attempts: int) -> None:
        dlq_headers = {
            **{k: v for k, v in headers.items() if not k.startswith("dlq-")},
            topics.DLQ_SOURCE_TOPIC: topic,
            topics.DLQ_SOURCE_PARTITION: str(partition),
            topics.DLQ_SOURCE_OFFSET: str(offset),
            topics.DLQ_CONSUMER: self.name,
            topics.DLQ_ERROR: error[:1000],
            topics.DLQ_ATTEMPTS: str(attempts),
        }
        wait = self._backoff_s
        while True:
            try:
                await self._dead_letter(topics.DEADLETTER, key or b"", body, dlq_headers)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - never acknowledge a message that is not dead-lettered yet
                log.warning("dead_letter_publish_waiting", error_type=type(exc).__name__)
                await asyncio.sleep(wait)
                wait = min(wait * 2, MAX_BACKOFF_S)
        log.error("event_dead_lettered", error=error[:300], attempts=attempts)


def lanes(records: Iterable[Any], serial_topics: Collection[str] = ()) -> list[list[Any]]:
    """Records grouped by what must stay in order: a key's records (a case's events) in their order; a topic in
    `serial_topics` as one lane (a chain shared by every key); a record without a key with its partition.
    Lanes holding an urgent report (`shared/urgency.py`'s header) come first, so they take the first free slots
    rather than waiting behind a batch of others (say, a recruiter's many reports taking turns at his entries)."""
    grouped: dict[Any, list[Any]] = {}
    for record in records:
        if record.topic in serial_topics:
            lane: Any = (record.topic,)
        elif record.key:
            lane = record.key
        else:
            lane = (record.topic, record.partition)
        grouped.setdefault(lane, []).append(record)
    return sorted(grouped.values(), key=lambda lane: not any(_urgent(r) for r in lane))  # stable: else in order


def _urgent(record: Any) -> bool:
    return any(name == topics.HEADER_URGENT and value in (b"1", "1") for name, value in (record.headers or ()))


async def consume_batch(consumer: EventConsumer, records: Iterable[Any], concurrency: int,
                        serial_topics: Collection[str] = ()) -> None:
    """Apply a batch: each lane in order, up to `concurrency` lanes at once, then what they left for the batch's end
    (`at_batch_end`); returns when every record is applied or dead-lettered and that is done (only then may the
    batch's offsets be committed)."""
    slots = asyncio.Semaphore(max(1, concurrency))

    async def run(lane: list[Any]) -> None:
        async with slots:
            for record in lane:
                structlog.contextvars.clear_contextvars()
                structlog.contextvars.bind_contextvars(service=consumer.name)
                await consumer.consume(record.topic, record.partition, record.offset, record.key,
                                       record.value or b"", record_headers(record))

    async with batch_end(), asyncio.TaskGroup() as group:  # the lanes' tasks copy its context: they all ask it
        for lane in lanes(records, serial_topics):
            group.create_task(run(lane))


def record_headers(record: Any) -> dict[str, str]:
    """A Kafka record's headers as text."""
    return {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)) for k, v in (record.headers or ())}


def subscribe(broker: KafkaBroker, consumer: EventConsumer, *topic_names: str, group_id: str,
              description: str, offset_reset: str = "earliest", batch: int = 100, concurrency: int = 16,
              serial_topics: Collection[str] = ()) -> Any:
    """Register `consumer` on `broker` for `topic_names` in consumer group `group_id`: batches of up to `batch`
    records, applied in lanes (`consume_batch`), acknowledged after the whole batch is written."""

    @broker.subscriber(
        *topic_names,
        group_id=group_id,
        auto_offset_reset=offset_reset,
        ack_policy=AckPolicy.ACK,
        batch=True,
        max_records=batch,
        title=f"{consumer.name}:consume",
        description=description,
    )
    async def on_batch(message: KafkaMessage) -> None:
        await consume_batch(consumer, message.raw_message, concurrency, serial_topics)

    return on_batch


async def consumers_assigned(broker: KafkaBroker) -> None:
    """Readiness: every subscriber has joined its group, holds partitions and knows where it reads from."""
    for subscriber in broker.subscribers:
        kafka_consumer = getattr(subscriber, "consumer", None)
        if kafka_consumer is None:
            raise RuntimeError("subscriber not started")
        assignment = kafka_consumer.assignment()
        if not assignment:
            raise RuntimeError("no partitions assigned yet")
        for tp in assignment:
            await kafka_consumer.position(tp)
