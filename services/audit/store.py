"""The only module of audit that touches the database: the trail, the case read model and the dead letters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.audit import domain
from shared.clock import Clock
from shared.outbox import document_writes

BuildEntry = Callable[[Mapping[str, Any] | None], dict[str, Any]]


class TrailContention(Exception):
    """Other writers kept taking the next seq of a case: the consumer retries the event later."""


class AuditStore:
    def __init__(self, db: AsyncDatabase[Any], clock: Clock) -> None:
        self.trail = db["trail"]
        self.cases = db["cases"]
        self.dead_letters = db["deadletters"]
        self.checkpoints = db["checkpoints"]
        self.directory = db["directory_trail"]
        self.directory_head = db["directory_head"]
        self._clock = clock

    async def ensure_indexes(self) -> None:
        # The two unique indexes make appending safe without transactions: one entry per seq, one per event.
        await self.trail.create_index([("case_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        await self.trail.create_index([("case_id", ASCENDING), ("event_id", ASCENDING)], unique=True)
        await self.cases.create_index([("region_path", ASCENDING), ("reported_at", DESCENDING)])
        await self.cases.create_index([("region_path", ASCENDING), ("status", ASCENDING)])
        await self.dead_letters.create_index([("recorded_at", DESCENDING)])
        await self.directory.create_index([("trail", ASCENDING), ("seq", ASCENDING)], unique=True)
        await self.directory.create_index([("trail", ASCENDING), ("event_id", ASCENDING)], unique=True)
        await self.directory.create_index([("account_id", ASCENDING), ("seq", ASCENDING)])

    # --- the trail ------------------------------------------------------------------------------------------

    async def append(self, case_id: str, event_id: str, build: BuildEntry, attempts: int = 20
                     ) -> tuple[dict[str, Any], bool]:
        """Append the entry `build(last entry)` once per event; returns the event's entry and whether it is new.
        The head is first read from the case document (a read by _id, which every server answers from its
        primary key; FerretDB scans for anything else), else found by searching the trail."""
        return await _append(self.trail, "case_id", case_id, event_id, build, attempts,
                             lambda: self.cases.find_one({"_id": case_id}, {"trail_seq": 1, "trail_hash": 1}))

    async def append_to_directory(self, event_id: str, build: BuildEntry, attempts: int = 20
                                  ) -> tuple[dict[str, Any], bool]:
        """The directory trail: one chain for every account, appended like a case's trail, its head kept apart."""
        entry, new = await _append(self.directory, "trail", domain.DIRECTORY, event_id, build, attempts,
                                   lambda: self.directory_head.find_one({"_id": domain.DIRECTORY}))
        async with document_writes.hold((self.directory_head.full_name, domain.DIRECTORY)):
            head = await self.directory_head.find_one({"_id": domain.DIRECTORY})
            if head is None or int(head.get("trail_seq") or 0) < entry["seq"]:
                await self.directory_head.replace_one(
                    {"_id": domain.DIRECTORY}, {"_id": domain.DIRECTORY, "trail_seq": entry["seq"],
                                                "trail_hash": entry["hash"]}, upsert=True)
        return entry, new

    async def directory_trail(self, region: str, account_id: str | None, after_seq: int, limit: int
                              ) -> list[dict[str, Any]]:
        filters: dict[str, Any] = {"trail": domain.DIRECTORY, "seq": {"$gt": after_seq},
                                   "region_path": {"$in": [region, domain.UNSCOPED]}}
        if account_id:
            filters["account_id"] = account_id
        return await self.directory.find(filters).sort([("seq", ASCENDING)]).limit(limit).to_list()

    async def whole_directory(self) -> tuple[list[dict[str, Any]], domain.TrailHead]:
        head = await self.directory_head.find_one({"_id": domain.DIRECTORY}) or {}  # the head first: see verify
        entries = await self.directory.find({"trail": domain.DIRECTORY}).sort([("seq", ASCENDING)]).to_list()
        return entries, domain.head_of(head)

    async def trail_of(self, case_id: str) -> list[dict[str, Any]]:
        return await self.trail.find({"case_id": case_id}).sort([("seq", ASCENDING)]).to_list()

    # --- the case read model --------------------------------------------------------------------------------

    async def project(self, case_id: str, entry: Mapping[str, Any], updates: list[domain.CaseUpdate]) -> None:
        """Bring the case document up to date with an entry; idempotent and tolerant of reordering.

        One read and one write by _id, under the document's lock: conditions are checked here rather than in
        the filter, which FerretDB would answer by scanning the whole collection."""
        now = self._clock.now()
        stamp = domain.timestamp(now)
        async with document_writes.hold((self.cases.full_name, case_id)):
            case = await self.cases.find_one({"_id": case_id})
            if case is None:
                try:
                    await self.cases.insert_one({"_id": case_id, **domain.new_case(now)})
                except DuplicateKeyError:
                    pass  # another process created it
                case = await self.cases.find_one({"_id": case_id}) or {}
            fields: dict[str, Any] = {}
            for update in updates:
                if update.earliest:
                    for path, value in update.fields.items():
                        current = fields.get(path) or domain.field_at(case, path)
                        if not current or value < current:
                            fields[path] = value
                    continue
                facet_at = f"{update.facet}_at"
                if (fields.get(facet_at) or case.get(facet_at) or "") <= update.at:
                    fields.update({**update.fields, facet_at: update.at})
            # The head moves with them: a case document at trail_seq n has taken in every entry up to n.
            if int(case.get("trail_seq") or 0) < entry["seq"]:
                fields.update({"trail_seq": entry["seq"], "trail_hash": entry["hash"]})
            if fields:
                await self.cases.update_one({"_id": case_id}, {"$set": {**fields, "updated_at": stamp}})

    async def case(self, case_id: str) -> dict[str, Any] | None:
        return await self.cases.find_one({"_id": case_id})

    async def search(self, region: str, filters: dict[str, Any], offset: int, limit: int) -> list[dict[str, Any]]:
        cursor = (self.cases.find({"region_path": region, **filters})
                  .sort([("reported_at", DESCENDING), ("_id", ASCENDING)]).skip(offset).limit(limit))
        return await cursor.to_list()

    async def timings(self, region: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.cases.find({"region_path": region, **filters},
                                     {"reported_at": 1, "decided_at": 1, "first_ack_at": 1, "escalated": 1,
                                      "village_code": 1, "types": 1, "suspected_types": 1}).to_list()

    async def counts(self, region: str, filters: dict[str, Any], field: str) -> list[dict[str, Any]]:
        """`{"_id": value of field, "n": cases}` for the region's cases (an array field groups by whole array)."""
        pipeline = [{"$match": {"region_path": region, **filters}},
                    {"$group": {"_id": f"${field}", "n": {"$sum": 1}}}]
        return await (await self.cases.aggregate(pipeline)).to_list()

    # --- dead letters ---------------------------------------------------------------------------------------

    async def record_dead_letter(self, doc: dict[str, Any]) -> bool:
        try:
            await self.dead_letters.insert_one(doc)
        except DuplicateKeyError:
            return False  # already stored: the dead-letter topic was read again
        return True

    async def dead_letters_page(self, filters: dict[str, Any], offset: int, limit: int) -> list[dict[str, Any]]:
        cursor = (self.dead_letters.find(filters)
                  .sort([("recorded_at", DESCENDING), ("_id", DESCENDING)]).skip(offset).limit(limit))
        return await cursor.to_list()

    # --- checkpoints ----------------------------------------------------------------------------------------

    async def heads(self) -> list[dict[str, Any]]:
        """The head of every case's trail, as the case documents hold it."""
        docs = await self.cases.find({"trail_seq": {"$gt": 0}}, {"trail_seq": 1, "trail_hash": 1}).to_list()
        return [{"case_id": d["_id"], "seq": d["trail_seq"], "hash": d["trail_hash"]} for d in docs]

    async def trail_hashes(self) -> dict[tuple[str, int], str]:
        docs = await self.trail.find({}, {"case_id": 1, "seq": 1, "hash": 1}).to_list()
        return {(d["case_id"], int(d["seq"])): d["hash"] for d in docs}

    async def last_checkpoint(self) -> dict[str, Any] | None:
        return await self.checkpoints.find_one({}, sort=[("_id", DESCENDING)])

    async def add_checkpoint(self, checkpoint: dict[str, Any]) -> bool:
        """Insert keyed by seq: of two writers racing for the same seq, one wins."""
        try:
            await self.checkpoints.insert_one(checkpoint)
        except DuplicateKeyError:
            return False
        return True

    async def checkpoint_chain(self) -> list[dict[str, Any]]:
        return await self.checkpoints.find({}).sort([("_id", ASCENDING)]).to_list()


async def _append(collection: Any, key_field: str, key: str, event_id: str, build: BuildEntry, attempts: int,
                  read_head: Callable[[], Awaitable[Mapping[str, Any] | None]]) -> tuple[dict[str, Any], bool]:
    """Append once per event to one chain; the unique (key, seq) and (key, event_id) indexes make it safe
    without transactions."""
    for attempt in range(attempts):
        last = await _last_entry(collection, key_field, key, read_head if attempt == 0 else None)
        entry = build(last)
        try:
            await collection.insert_one(dict(entry))
            return entry, True
        except DuplicateKeyError:
            # Either this event is already recorded (a redelivery) or another writer took the seq (retry).
            existing = await collection.find_one({key_field: key, "event_id": event_id})
            if existing is not None:
                return existing, False
    raise TrailContention(f"could not append {event_id} to the trail of {key} after {attempts} attempts")


async def _last_entry(collection: Any, key_field: str, key: str,
                      read_head: Callable[[], Awaitable[Mapping[str, Any] | None]] | None
                      ) -> Mapping[str, Any] | None:
    if read_head is not None:
        head = await read_head()
        if head is None:
            return None  # a first event; if entries exist after all, seq 1 collides and the retry searches
        if head.get("trail_seq"):
            return {"seq": head["trail_seq"], "hash": head["trail_hash"]}
    return await collection.find_one({key_field: key}, sort=[("seq", DESCENDING)])
