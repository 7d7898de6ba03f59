"""What a unit of work costs the database as what is stored grows (issue #12: flat as history grows).

`make bench-growth` runs it against a fresh test Kafka and FerretDB, each measurement in a database of its own:
  - sweep: a service sweeper's full round (repair and prune) once N documents have had 2 changes each over 9
    minutes, a round every minute meanwhile (the retention is 10 minutes: none is pruned yet);
  - watchlist: screening's watch-list lookup for one report with N entries in the province;
  - directory: the accounts trail page (the chain checked since the last whole recomputation, then its first 100
    entries) with N account events recorded, each view after one more sign-in.
Each prints wall time and the CPU FerretDB and PostgreSQL spent (`tests.bench.database_cpu_s`), per round, per
report or per page; never part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from services.audit import domain as audit_domain
from services.audit.handlers import check_directory
from services.audit.store import AuditStore
from services.verification.store import CaseStore
from shared.clock import ManualClock, SystemClock
from shared.mongo import connect
from shared.contracts.envelope import Envelope
from shared.outbox import OutboxRelay
from shared.versions import VersionedCollection
from tests.bench import MONGO, database_cpu_s


async def _nothing(*_: Any, **__: Any) -> None:
    return None


async def _cost(call: Callable[[], Awaitable[Any]], rounds: int) -> tuple[float, float | None]:
    """Milliseconds of wall time and of database CPU per call."""
    cpu, started = database_cpu_s(), time.perf_counter()
    for _ in range(rounds):
        await call()
    wall, after = (time.perf_counter() - started) * 1000 / rounds, database_cpu_s()
    return wall, (after - cpu) * 1000 / rounds if cpu is not None and after is not None else None


def _line(what: str, n: int, unit: str, wall: float, cpu: float | None) -> str:
    cpu_text = f"{cpu:.2f} ms" if cpu is not None else "n/a"
    return f"{what:<10} {n:>7} {unit:<26} {wall:>9.2f} ms wall {cpu_text:>12} database CPU"


async def sweep(db: Any, n: int) -> str:
    """Claims written over 9 minutes while a sweeper runs its full round every minute, as in a service; then the
    next round is measured (steady state: the claims of the minute just past are new to it)."""
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    written, sweeping = ManualClock(start), ManualClock(start)
    things = VersionedCollection(db["things"], written)
    relay = OutboxRelay(_nothing, sweeping)
    # Another process's sweeper: it reads each document it did not write (its own writes it takes as written:
    # shared.versions.THROUGH), the dearer case.
    relay.watch(VersionedCollection(db["things"], written))
    await relay.ensure_indexes()
    await relay.sweep_once(full=True)  # a process's first round reads every claim (none yet)
    pad = "x" * 2000  # about a claim's size

    async def one(i: int) -> None:
        await things.write(f"d{i}", {"n": 0, "pad": pad, "version": 1})
        for version in (2, 3):
            doc = await things.load(f"d{i}")
            await things.write(f"d{i}", {**doc, "n": version, "version": version}, base=doc)

    per_minute = max(1, n // 9)
    for minute in range(9):  # n documents, 2 claims each, over 9 minutes; a round after each minute
        await asyncio.gather(*(one(i) for i in range(minute * per_minute, min(n, (minute + 1) * per_minute))))
        written.advance(timedelta(minutes=1))
        sweeping.advance(timedelta(minutes=1))
        await relay.sweep_once(full=True)
    written.advance(timedelta(minutes=1))
    sweeping.advance(timedelta(minutes=1))
    wall, cpu = await _cost(lambda: relay.sweep_once(full=True), 1)
    return _line("sweep", 2 * per_minute * 9, f"claims ({2 * per_minute} new): a round", wall, cpu)


async def watchlist(db: Any, n: int) -> str:
    store = CaseStore(db, OutboxRelay(_nothing, SystemClock()), SystemClock())
    await store.ensure_indexes()
    regencies = [f"36.{r:02d}" for r in range(1, 9)]
    entries = [{"_id": uuid.uuid4().hex, "kind": "phone", "digest": uuid.uuid4().hex * 2, "note": "x" * 200,
                "region": regencies[i % 8], "region_path": ["36", regencies[i % 8]],
                "added_at": datetime.now(UTC).isoformat()} for i in range(max(n - 1, 0))]
    if entries:
        await db["watchlist"].insert_many(entries)
    await store.add_watch_entry({"_id": "last", "region": "36.03", "region_path": ["36", "36.03"]})
    path = ["36", "36.03", "36.03.11", "36.03.11.2009"]
    await store.watch_entries(path)
    wall, cpu = await _cost(lambda: store.watch_entries(path), 100)
    return _line("watchlist", n, "entries: per report", wall, cpu)


async def directory(db: Any, n: int) -> str:
    """N entries recorded, the whole chain recomputed once (as audit does every 15 minutes), then page views, each
    after one more sign-in: the page's check of the chain since, and its first page."""
    store = AuditStore(db, SystemClock())
    await store.ensure_indexes()
    await store.backfill_directory_blocks()  # an empty directory: every entry will carry its block
    clock = SystemClock()
    previous: dict[str, Any] | None = None
    batch: list[dict[str, Any]] = []

    def sign_in(i: int) -> Envelope:
        return Envelope(event_id=uuid.uuid4().hex, type="identity.signed_in", schema_version=1,
                        occurred_at=datetime.now(UTC), case_id=f"account-{i % 300}", producer="identity",
                        correlation_id=uuid.uuid4().hex, data={"method": "password+totp", "region": "36.03"})

    for i in range(n):
        previous = audit_domain.directory_entry(sign_in(i), previous, datetime.now(UTC))
        batch.append(dict(previous))
        if len(batch) == 500 or i == n - 1:
            await store.directory.insert_many(batch)
            batch = []
    if previous is not None:
        await store.directory_head.insert_one({"_id": audit_domain.DIRECTORY, "trail_seq": previous["seq"],
                                               "trail_hash": previous["hash"], "version": 1})
    assert (await check_directory(store, clock, since_checked=False))["valid"]
    walls, cpus = [], []
    for i in range(3):
        event = sign_in(n + i)
        await store.append_to_directory(event.event_id, lambda last, e=event: audit_domain.directory_entry(
            e, last, datetime.now(UTC)))

        async def page() -> None:
            assert (await check_directory(store, clock, since_checked=True))["valid"]
            await store.directory_trail("36.03", None, 0, 101)

        wall, cpu = await _cost(page, 1)
        walls.append(wall)
        cpus.append(cpu or 0.0)
    return _line("directory", n, "entries: a page view", sum(walls) / 3, sum(cpus) / 3)


MEASURES = {"sweep": sweep, "watchlist": watchlist, "directory": directory}


async def main(args: argparse.Namespace) -> None:
    client: AsyncMongoClient[Any] = connect(MONGO)  # as the services make theirs: packed fields read back
    try:
        for what in args.measures:
            for n in args.sizes:
                db = client[f"growth_{what}_{uuid.uuid4().hex[:6]}"]
                try:
                    print(await MEASURES[what](db, n), flush=True)
                finally:
                    await client.drop_database(db.name)
    finally:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measures", nargs="+", default=list(MEASURES), choices=list(MEASURES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 1000, 5000])
    asyncio.run(main(parser.parse_args()))
