"""The only module of intake that touches the database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.clock import Clock
from shared.logging import describe
from shared.mongo import GroupedInserts
from shared.outbox import AggregateStore, OutboxRelay

log = structlog.get_logger()


class ReportStore(AggregateStore):
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock) -> None:
        # The sealed report, read and rewritten whole and never queried into: one value (shared.mongo.packed)
        super().__init__(db["reports"], relay, clock, packed=("report",))
        self._counters = db["case_numbers"]  # _id: "<regency>:<year>" -> seq, the highest number claimed (a hint)
        self._next_seq: dict[str, int] = {}  # the next number this process hands out, per regency and year
        self._counter_wanted: dict[str, int] = {}  # the highest number claimed here, per key: the counter's aim
        self._counter_moves: dict[str, asyncio.Task[None]] = {}
        self._numbers = db["case_number_claims"]  # _id: a case number -> the case that holds it
        self._keys = db["idempotency_keys"]
        # Requests at once claim their numbers and keys in one command each (`GroupedInserts`).
        self._number_inserts = GroupedInserts(self._numbers)
        self._key_inserts = GroupedInserts(self._keys)

    async def ensure_indexes(self) -> None:
        # Uniqueness lives in claims inserted by _id (case numbers, idempotency keys), not in unique indexes of
        # `reports`: a report is written through its version claim, which must not fail after it was inserted.
        await self.collection.create_index([("reporter_id", ASCENDING), ("received_at", DESCENDING)])
        await self._keys.create_index([("at", ASCENDING)])

    async def claim_next_number(self, regency_code: str, year: int, case_id: str,
                                number_of: Callable[[int], str], attempts: int = 50) -> str | None:
        """The next number of a regency's yearly sequence, claimed for `case_id` (None if none could be). The claim
        (an insert by _id) is the guard and the only write a request waits for: this process hands out the numbers
        after the last one it claimed, and reads the counter (a hint of the highest number claimed, moved on in the
        background) only when it has none yet or another process claimed its next one."""
        key = f"{regency_code}:{year}"
        for _ in range(attempts):
            if (seq := self._next_seq.get(key)) is None:
                seq = max(await self._claimed_up_to(key) + 1, self._next_seq.get(key, 0))
            # a request beside this one takes the following number, not this one
            self._next_seq[key] = max(self._next_seq.get(key, 0), seq + 1)
            number = number_of(seq)
            if await self.claim_case_number(number, case_id):
                self._move_counter(key, seq)
                return number
            # Another process claimed it: go on after what the counter says, or after this one.
            self._next_seq[key] = max(self._next_seq[key], await self._claimed_up_to(key) + 1)
        return None

    async def _claimed_up_to(self, key: str) -> int:
        doc = await self._counters.find_one({"_id": key})
        return int(doc["seq"]) if doc else 0

    def _move_counter(self, key: str, seq: int) -> None:
        """Raise the counter to `seq` in the background (one write at a time per key, the latest wins): a counter
        left behind (a crash, a race between FerretDB's query and its update) only costs a later process a few
        refused claims."""
        self._counter_wanted[key] = max(self._counter_wanted.get(key, 0), seq)
        if key in self._counter_moves:
            return

        async def move() -> None:
            written = 0
            try:
                while (wanted := self._counter_wanted[key]) > written:
                    for upsert in (True, False):  # two first writes at once: one inserts, the other updates
                        try:
                            await self._counters.update_one({"_id": key}, {"$max": {"seq": wanted}}, upsert=upsert)
                            break
                        except DuplicateKeyError:
                            continue
                    written = wanted
            except Exception as exc:  # noqa: BLE001 - a hint: the next claim moves it again
                log.warning("case_number_counter_behind", key=key, error=describe(exc))
            finally:
                self._counter_moves.pop(key, None)

        self._counter_moves[key] = asyncio.create_task(move())

    async def claim_case_number(self, number: str, case_id: str) -> bool:
        """Whether `number` is this case's (claimed now, or by an earlier attempt for the same case)."""
        try:
            await self._number_inserts.insert({"_id": number, "case_id": case_id})
            return True
        except DuplicateKeyError:
            holder = await self._numbers.find_one({"_id": number})
            return holder is not None and holder["case_id"] == case_id

    async def expire_keys(self, before: str) -> int:
        """Delete Idempotency-Key claims made before `before` (FerretDB has no TTL index: run periodically)."""
        return (await self._keys.delete_many({"at": {"$lt": before}})).deleted_count

    async def claim_key(self, idempotency_id: str, case_id: str, request_hash: str, now: Any) -> dict[str, Any]:
        """The claim on an Idempotency-Key: this request's if it is the first, else the first request's."""
        claim = {"_id": idempotency_id, "case_id": case_id, "request_hash": request_hash, "at": now.isoformat()}
        try:
            await self._key_inserts.insert(claim)
            return claim
        except DuplicateKeyError:
            first = await self._keys.find_one({"_id": idempotency_id})
            return first or claim

    async def release_claim(self, idempotency_id: str, case_id: str) -> None:
        """Drop this request's claim on a key (read and deleted by _id: FerretDB scans any other filter)."""
        claim = await self._keys.find_one({"_id": idempotency_id})
        if claim is not None and claim["case_id"] == case_id:
            await self._keys.delete_one({"_id": idempotency_id})

    async def of_reporter(self, reporter_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
        cursor = (self.collection.find({"reporter_id": reporter_id}, {"outbox": 0, "applied": 0})
                  .sort([("received_at", DESCENDING), ("_id", ASCENDING)]).skip(offset).limit(limit))
        return await cursor.to_list()
