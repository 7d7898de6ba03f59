"""The database client and the checks every service shares."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import bson
from bson.binary import Binary
from bson.codec_options import CodecOptions, TypeDecoder, TypeRegistry
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError, \
    WriteError

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


# A sub-document or a list stored as one value: BSON binary of a user-defined subtype holding its own BSON (a list as
# the document {"v": list}). FerretDB decodes and encodes a stored document value by value (some 40 µs each) at every
# read and write, so a field read and rewritten whole, never queried into (a case's sealed report, some fifty values;
# a referral's sealed persons and its history), costs it one value instead. The clients `connect` makes read it back
# as it was.
PACKED_SUBTYPE = 0x80  # a document
PACKED_LIST_SUBTYPE = 0x81  # a list
_INNER = CodecOptions(tz_aware=True)


def packed(value: Mapping[str, Any] | list[Any]) -> Binary:
    if isinstance(value, Mapping):
        return Binary(bson.encode(value, codec_options=_INNER), PACKED_SUBTYPE)
    return Binary(bson.encode({"v": list(value)}, codec_options=_INNER), PACKED_LIST_SUBTYPE)


class _Unpacked(TypeDecoder):
    bson_type = Binary

    def transform_bson(self, value: Any) -> Any:
        if value.subtype == PACKED_SUBTYPE:
            return bson.decode(value, codec_options=_INNER)
        if value.subtype == PACKED_LIST_SUBTYPE:
            return bson.decode(value, codec_options=_INNER)["v"]
        return value


def connect(uri: str, pool_size: int = POOL_SIZE) -> AsyncMongoClient:
    # Created lazily by pymongo: no I/O until the first operation.
    return AsyncMongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                            appname="waspada", maxPoolSize=pool_size, type_registry=TypeRegistry([_Unpacked()]))


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


# A command of grouped inserts holds at most this many documents (FerretDB writes them in one statement).
INSERTS_PER_COMMAND = 100


class GroupedInserts:
    """Inserts into one collection from many writers at once, sent together (a group commit): while one command is
    in flight, the documents of the writers that come meanwhile wait and go in the next one, as one `insert_many`
    (FerretDB writes it in one PostgreSQL statement and transaction, where each `insert_one` is one of each). Alone,
    a writer's document goes at once and alone, as before. Each writer learns what happened to its own document: a
    duplicate key raises DuplicateKeyError in that writer only (the others' documents are inserted: unordered), and an
    error of the whole command (the database away) is raised in every writer of it, which then does what it does
    after a failed insert. (A cancellation, the process stopping, is not an Exception: `_send_all` tells them.)"""

    def __init__(self, collection: AsyncCollection, most: int = INSERTS_PER_COMMAND) -> None:
        self.collection = collection
        self._most = most
        self._waiting: list[tuple[Mapping[str, Any], asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commands = 0  # insert commands sent (the tests count them)

    async def insert(self, doc: Mapping[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a test's): nothing of the old one's is still coming
            self._loop, self._waiting, self._sender = loop, [], None
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((doc, done))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())
        await done

    async def _send_all(self) -> None:
        batch: list[tuple[Mapping[str, Any], asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:self._most], self._waiting[self._most:]
                await self._send(batch)
                batch = []
        finally:
            self._sender = None
            if batch:  # cancelled in flight (the process stopping): its writers and those waiting learn it
                for _, done in batch + self._waiting:
                    if not done.done():
                        done.cancel()
                self._waiting = []

    async def _send(self, batch: list[tuple[Mapping[str, Any], asyncio.Future[None]]]) -> None:
        self.commands += 1
        try:
            await self.collection.insert_many([doc for doc, _ in batch], ordered=False)
        except BulkWriteError as exc:
            failed = {error["index"]: error for error in exc.details.get("writeErrors", [])}
            for index, (_, done) in enumerate(batch):
                if (error := failed.get(index)) is None:
                    _settle(done, None)
                else:
                    kind = DuplicateKeyError if error.get("code") == DUPLICATE_KEY else WriteError
                    _settle(done, kind(error.get("errmsg", "write error"), error.get("code"), error))
        except Exception as exc:  # noqa: BLE001 - the whole command failed: each of its writers is told
            for _, done in batch:
                _settle(done, exc)
        else:
            for _, done in batch:
                _settle(done, None)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return  # its writer stopped waiting
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


__all__ = ["DUPLICATE_KEY", "INSERTS_PER_COMMAND", "POOL_SIZE", "GroupedInserts", "Markers", "TRANSIENT_ERRORS",
           "UPDATES_PER_COMMAND", "OperationFailure", "PyMongoError", "commands_of", "connect", "ping"]
