"""Two processes changing one document at once (as two copies of a service do): every version has one writer, and
no write is lost. Both run the same storage code, on FerretDB here and on MongoDB in production."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from shared.clock import SystemClock
from shared.outbox import AggregateStore, OutboxRelay

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def _nothing(*_):
    return None


async def test_two_processes_changing_one_document_never_both_win_a_version(infra, isolation):
    db_name = f"{isolation['db_prefix']}_two"
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    store = AggregateStore(client[db_name]["things"], OutboxRelay(_nothing, SystemClock()))
    try:
        await store.create({"_id": "shared", "writers": []})
        procs = [subprocess.Popen([sys.executable, "-m", "tests.integration.two_writers", infra["mongo"], db_name,
                                   name, "60"], cwd=ROOT, stdout=subprocess.PIPE, text=True) for name in ("a", "b")]
        won = {name: json.loads(p.communicate(timeout=300)[0]) for name, p in zip(("a", "b"), procs)}
        doc = await store.load("shared")
    finally:
        await client.close()
    assert set(won["a"]).isdisjoint(won["b"]), "a version was won by both processes"
    assert len(won["a"]) + len(won["b"]) == doc["version"] - 1  # every win is in the document: none lost
    assert len(doc["writers"]) == doc["version"] - 1 and won["a"] and won["b"]
