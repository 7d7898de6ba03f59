"""A writer process for test_two_processes: change one document as fast as it can; print the versions it made."""

import asyncio
import json
import sys

from pymongo import AsyncMongoClient

from shared.clock import SystemClock
from shared.outbox import AggregateStore, Change, ConcurrentUpdate, OutboxRelay


async def main(uri: str, db: str, name: str, attempts: int) -> None:
    async def nothing(*_):
        return None

    client = AsyncMongoClient(uri, tz_aware=True)
    store = AggregateStore(client[db]["things"], OutboxRelay(nothing, SystemClock()))
    won = []
    try:
        for _ in range(attempts):
            doc = await store.load("shared")
            try:
                won.append(await store.change("shared", doc["version"], Change(set={"last": name},
                                                                               push={"writers": name})))
            except ConcurrentUpdate:
                continue
    finally:
        await client.close()
    print(json.dumps(won))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
