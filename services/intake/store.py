"""The only module of intake that touches the database."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.clock import Clock
from shared.outbox import AggregateStore, OutboxRelay, document_writes


class ReportStore(AggregateStore):
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock) -> None:
        super().__init__(db["reports"], relay, clock)
        self._counters = db["case_numbers"]
        self._numbers = db["case_number_claims"]  # _id: a case number -> the case that holds it
        self._keys = db["idempotency_keys"]

    async def ensure_indexes(self) -> None:
        # Uniqueness lives in claims inserted by _id (case numbers, idempotency keys), not in unique indexes of
        # `reports`: a report is written through its version claim, which must not fail after it was inserted.
        await self.collection.create_index([("reporter_id", ASCENDING), ("received_at", DESCENDING)])
        await self._keys.create_index([("at", ASCENDING)])

    async def next_case_seq(self, regency_code: str, year: int) -> int:
        """The next number in a regency's yearly sequence. The number's claim is the real guard: a number
        handed out twice (FerretDB's $inc is not atomic across processes) is claimed once; the other takes the next."""
        key = f"{regency_code}:{year}"
        for _ in range(3):
            try:
                async with document_writes.hold((self._counters.full_name, key)):
                    doc = await self._counters.find_one_and_update(
                        {"_id": key}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER
                    )
                return int(doc["seq"])
            except DuplicateKeyError:
                continue  # two first upserts raced; the counter exists now
        raise RuntimeError(f"could not allocate a case number for {key}")

    async def claim_case_number(self, number: str, case_id: str) -> bool:
        """Whether `number` is this case's (claimed now, or by an earlier attempt for the same case)."""
        try:
            await self._numbers.insert_one({"_id": number, "case_id": case_id})
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
            await self._keys.insert_one(claim)
            return claim
        except DuplicateKeyError:
            first = await self._keys.find_one({"_id": idempotency_id})
            return first or claim

    async def of_reporter(self, reporter_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
        cursor = (self.collection.find({"reporter_id": reporter_id}, {"outbox": 0, "applied": 0})
                  .sort([("received_at", DESCENDING), ("_id", ASCENDING)]).skip(offset).limit(limit))
        return await cursor.to_list()
