"""The only module of intake that touches the database."""

from __future__ import annotations

import asyncio
import heapq
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

COUNTER_DELAY_S = 0.1  # a claimed number's counter move waits this long (and takes the numbers claimed meanwhile)


class ReportStore(AggregateStore):
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock) -> None:
        # The sealed report, read and rewritten whole and never queried into: one value (shared.mongo.packed)
        super().__init__(db["reports"], relay, clock, packed=("report",))
        # A new report is accepted once its version claim (the commit record, with its outbox) is in; its document
        # is written right after, not waited for: one round trip less before the reporter's phone hears back.
        self.versions.first_through_later = True
        self._counters = db["case_numbers"]  # _id: "<regency>:<year>" -> seq, the highest number claimed (a hint)
        self._next_seq: dict[str, int] = {}  # the next number this process hands out, per regency and year
        self._counter_wanted: dict[str, int] = {}  # the highest number claimed here, per key: the counter's aim
        self._counter_moves: dict[str, asyncio.Task[None]] = {}
        self._given_back: dict[str, list[int]] = {}  # numbers claimed here and released, handed out first (a heap)
        self._numbers = db["case_number_claims"]  # _id: a case number -> the case that holds it
        # _id: "<reporter>:<Idempotency-Key>" -> the case it filed. Written until case ids were made from the key
        # (`domain.case_id_for`); read only while claims of that time remain (`legacy_keys`), until they expire.
        self._keys = db["idempotency_keys"]
        self.legacy_keys = True  # until the first look (`ensure_indexes`) finds none
        # Requests at once claim their numbers in one command (`GroupedInserts`).
        self._number_inserts = GroupedInserts(self._numbers)

    async def ensure_indexes(self) -> None:
        # Uniqueness lives in claims inserted by _id (case numbers, idempotency keys), not in unique indexes of
        # `reports`: a report is written through its version claim, which must not fail after it was inserted.
        await self.collection.create_index([("reporter_id", ASCENDING), ("received_at", DESCENDING)])
        await self._keys.create_index([("at", ASCENDING)])
        await self._look_for_legacy_keys()

    async def _look_for_legacy_keys(self) -> None:
        self.legacy_keys = await self._keys.find_one({}, {"_id": 1}) is not None

    async def claim_next_number(self, regency_code: str, year: int, case_id: str,
                                number_of: Callable[[int], str], attempts: int = 50) -> str | None:
        """The next number of a regency's yearly sequence, claimed for `case_id` (None if none could be). The claim
        (an insert by _id) is the guard and the only write a request waits for: this process hands out the numbers
        after the last one it claimed, and reads the counter (a hint of the highest number claimed, moved on in the
        background) only when it has none yet or another process claimed its next one."""
        key = f"{regency_code}:{year}"
        for _ in range(attempts):
            if given_back := self._given_back.get(key):
                seq = heapq.heappop(given_back)
            elif (seq := self._next_seq.get(key)) is None:
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
                # After the requests of this moment have their answers (its write would take the event loop and a
                # connection just as they send their version claims), and once for the numbers claimed meanwhile.
                await asyncio.sleep(COUNTER_DELAY_S)
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

    async def release_number(self, regency_code: str, year: int, seq: int, number: str, case_id: str) -> None:
        """Give back a number claimed for `case_id` by a request that then found the case filed already (a retry
        whose number was claimed beside its key): this process hands it out next, so a retry leaves no gap in the
        register (unless the process stops before it is handed out)."""
        if not (await self._numbers.delete_one({"_id": number, "case_id": case_id})).deleted_count:
            return
        heapq.heappush(self._given_back.setdefault(f"{regency_code}:{year}", []), seq)

    async def expire_keys(self, before: str) -> int:
        """Delete Idempotency-Key claims made before `before` (FerretDB has no TTL index: run periodically); no new
        ones are written, so once none is left they are no longer read."""
        if not self.legacy_keys:
            return 0
        expired = (await self._keys.delete_many({"at": {"$lt": before}})).deleted_count
        await self._look_for_legacy_keys()
        return expired

    async def legacy_claim(self, idempotency_id: str) -> dict[str, Any] | None:
        """The claim a request made on an Idempotency-Key before case ids were made from it, if any."""
        return await self._keys.find_one({"_id": idempotency_id}) if self.legacy_keys else None

    async def of_reporter(self, reporter_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
        await self.versions.settle()  # a report accepted here a moment ago is listed
        cursor = (self.collection.find({"reporter_id": reporter_id}, {"outbox": 0, "applied": 0})
                  .sort([("received_at", DESCENDING), ("_id", ASCENDING)]).skip(offset).limit(limit))
        return await cursor.to_list()
