"""Kafka helpers: the broker, publishing raw event bytes with Waspada's headers, topic creation, readiness."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from shared import topics
from shared.outbox import Publish, Send

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (KafkaError, ConnectionError, asyncio.TimeoutError)


def create_broker(bootstrap_servers: str, client_id: str) -> KafkaBroker:
    # acks=all + idempotent producer: a publish that returned is on the log, and a producer retry is not a duplicate.
    return KafkaBroker(bootstrap_servers, client_id=client_id, acks="all", enable_idempotence=True,
                       request_timeout_ms=10000, logger=None)


def publisher_for(broker: KafkaBroker) -> Publish:
    async def publish(topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        await broker.publish(value, topic, key=key, headers=headers)

    return publish


def sender_for(broker: KafkaBroker) -> Send:
    """Queue a message on the producer and answer with its ack; the idempotent producer keeps one key's order."""
    async def send(topic: str, key: bytes, value: bytes, headers: dict[str, str]) -> Awaitable[Any]:
        return await broker.publish(value, topic, key=key, headers=headers, no_confirm=True)

    return send


async def ping(bootstrap_servers: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


def read_topic_list(path: Path) -> list[tuple[str, int]]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, *rest = line.split()
            out.append((name, int(rest[0]) if rest else topics.DEFAULT_PARTITIONS))
    return out


async def create_topics(bootstrap_servers: str, wanted: list[tuple[str, int]], timeout_s: float = 60) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [NewTopic(n, p, 1) for n, p in wanted if n not in existing]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
            return [t.name for t in missing]
        except KafkaError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(1)
        finally:
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Create Waspada's topics (idempotent).")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topics-file", default=str(Path(__file__).resolve().parent.parent / "infra" / "topics.txt"))
    args = parser.parse_args()
    created = asyncio.run(create_topics(args.bootstrap, read_topic_list(Path(args.topics_file))))
    print(f"topics created: {', '.join(created) if created else 'none (all exist)'}")


if __name__ == "__main__":
    main()
