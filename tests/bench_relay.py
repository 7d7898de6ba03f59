"""One hop of the benchmark's ceilings (tests/bench.py), run as its own process like a Waspada service:
consume a batch (getmany), [insert it into the database with one bulk write], produce each message on, commit.

    python -m tests.bench_relay --source T0 --target T1 --group G [--database NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import os

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true")


async def relay(source: str, target: str, group: str, database: str | None) -> None:
    consumer = AIOKafkaConsumer(source, bootstrap_servers=KAFKA, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    # The same producer settings as the services' broker (shared/kafka.py): acks=all, idempotent.
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all", enable_idempotence=True)
    client = AsyncMongoClient(MONGO) if database else None
    collection = client[database][source] if client is not None else None
    await consumer.start()
    await producer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                continue
            if collection is not None:
                await collection.insert_many([{"_id": f"{r.partition}:{r.offset}", "value": r.value}
                                              for r in records], ordered=False)
            sent = [await producer.send(target, r.value, key=r.key) for r in records]
            await asyncio.gather(*sent)
            await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()
        if client is not None:
            await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--database")
    args = parser.parse_args()
    asyncio.run(relay(args.source, args.target, args.group, args.database))
