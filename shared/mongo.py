"""The database client and the checks every service shares."""

from __future__ import annotations

from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

# Errors that say "the database is not reachable now", not "this message or request is wrong".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionFailure,)
DUPLICATE_KEY = 11000


def connect(uri: str) -> AsyncMongoClient:
    # Created lazily by pymongo: no I/O until the first operation.
    return AsyncMongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                            appname="waspada")


async def ping(client: AsyncMongoClient) -> None:
    await client.admin.command("ping")


__all__ = ["DUPLICATE_KEY", "TRANSIENT_ERRORS", "OperationFailure", "PyMongoError", "connect", "ping"]
