"""Publishing to and reading from the real broker in tests."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contracts.envelope import Envelope


async def publish(bootstrap: str, topic: str, event: Envelope | bytes, key: str | None = None,
                  headers: dict[str, str] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        if isinstance(event, Envelope):
            await producer.send_and_wait(topic, event.to_json().encode(), key=event.case_id.encode(),
                                         headers=[(k, v.encode()) for k, v in event.headers().items()])
        else:
            await producer.send_and_wait(topic, event, key=(key or str(uuid.uuid4())).encode(),
                                         headers=[(k, v.encode()) for k, v in (headers or {}).items()])
    finally:
        await producer.stop()


class TopicReader:
    """Reads a topic from the offsets it had when the reader was opened: sees only what comes after."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                         enable_auto_commit=False, client_id=f"test-reader-{uuid.uuid4().hex[:6]}")
        await self.consumer.start()
        partitions = [TopicPartition(self.topic, p) for p in self.consumer.partitions_for_topic(self.topic) or []]
        if not partitions:
            await self.consumer._client.force_metadata_update()  # noqa: SLF001 - first use of a fresh client
            partitions = [TopicPartition(self.topic, p) for p in self.consumer.partitions_for_topic(self.topic)]
        self.consumer.assign(partitions)
        ends = await self.consumer.end_offsets(partitions)
        for tp, offset in ends.items():
            self.consumer.seek(tp, offset)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.consumer is not None
        await self.consumer.stop()

    async def collect(self, predicate, count: int = 1, timeout: float = 20.0) -> list:
        """Records matching `predicate` until `count` are seen; fails after `timeout` seconds."""
        assert self.consumer is not None
        found: list = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"saw {len(found)} of {count} expected records on {self.topic}")
            batches = await self.consumer.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
            for records in batches.values():
                found.extend(r for r in records if predicate(r))
        return found

    async def drain(self, predicate, seconds: float) -> list:
        """Everything matching `predicate` that arrives within `seconds` (to show something did NOT arrive)."""
        assert self.consumer is not None
        found: list = []
        deadline = asyncio.get_running_loop().time() + seconds
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            batches = await self.consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batches.values():
                found.extend(r for r in records if predicate(r))
        return found


def header(record, name: str) -> str | None:
    for k, v in record.headers or ():
        if k == name:
            return v.decode()
    return None
