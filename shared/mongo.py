"""The database client and the checks every service shares."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

# Errors that say "the database is not reachable now", not "this message or request is wrong".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailure,)
DUPLICATE_KEY = 11000

# FerretDB v1 (internal/handler/msg_update.go) keeps each update statement's read of its document open until the
# whole update command is done, one PostgreSQL connection each, out of a pool of 50; writing a document takes one
# more. A bulk write of 50 updates therefore waits for itself forever, and FerretDB answers nobody again until it is
# restarted. Bulk updates go in commands of at most this many statements (MongoDB would take them in one).
UPDATES_PER_COMMAND = 4

T = TypeVar("T")


def commands_of(requests: Sequence[T], size: int = UPDATES_PER_COMMAND) -> Iterator[Sequence[T]]:
    """`requests` in slices of at most `size`: one bulk write command each."""
    for start in range(0, len(requests), size):
        yield requests[start:start + size]


# The same holds for single updates: each holds one connection while it waits for another to write, so 50 update
# commands at once can wait for each other forever. Each process keeps at most this many commands in flight
# (WASPADA_MONGO_POOL_SIZE), and infra/local/infra.sh gives FerretDB a pool of 190 connections: two copies of the
# six services and the web app, each at this bound and one bulk command of marks, stay below it.
POOL_SIZE = 10


def connect(uri: str, pool_size: int = POOL_SIZE) -> AsyncMongoClient:
    # Created lazily by pymongo: no I/O until the first operation.
    return AsyncMongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                            appname="waspada", maxPoolSize=pool_size)


async def ping(client: AsyncMongoClient) -> None:
    await client.admin.command("ping")


class Markers:
    """Once-per-database facts in a service's `meta` collection (a backfill done, so readers may rely on a field):
    a marker found is believed for the life of the process, one not found yet is asked again."""

    def __init__(self, meta: AsyncCollection) -> None:
        self.meta = meta
        self._found: set[str] = set()

    async def done(self, name: str) -> bool:
        if name not in self._found and await self.meta.find_one({"_id": name}) is not None:
            self._found.add(name)
        return name in self._found

    async def mark(self, name: str) -> None:
        await self.meta.replace_one({"_id": name}, {"done": True}, upsert=True)
        self._found.add(name)


__all__ = ["DUPLICATE_KEY", "POOL_SIZE", "Markers", "TRANSIENT_ERRORS", "UPDATES_PER_COMMAND", "OperationFailure",
           "PyMongoError", "commands_of", "connect", "ping"]
