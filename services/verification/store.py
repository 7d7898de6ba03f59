"""The only module of verification that touches the database."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared import keyset
from shared.clock import Clock
from shared.outbox import AggregateStore, OutboxRelay, document_writes


QUEUE_ORDER = ("priority_rank", "received_at", "_id")


class CaseStore(AggregateStore):
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock) -> None:
        super().__init__(db["cases"], relay, clock)
        self.identities = db["identities"]  # _id: keyed hash of an identifier -> the cases that name it
        self.buckets = db["village_days"]  # _id: "<village>:<day>" -> the cases observed there that day
        self.watchlist = db["watchlist"]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index(
            [("status", ASCENDING), ("region_path", ASCENDING), ("priority_rank", ASCENDING), ("received_at", ASCENDING)]
        )
        await self.watchlist.create_index([("region_path", ASCENDING)])

    # The link index is keyed by _id (a digest, a village-day), so a lookup is a primary-key read on any server.

    async def identity_matches(self, identities: list[Any], case_id: str) -> list[dict[str, Any]]:
        """References to OTHER cases sharing one of `identities`, each with the `kind` of identifier shared."""
        matches = []
        for identity in identities:
            doc = await self.identities.find_one({"_id": identity.digest})
            matches += [{**ref, "kind": identity.kind} for ref in (doc or {}).get("cases", [])
                        if ref["case_id"] != case_id]
        return matches

    async def index_identities(self, ref: dict[str, Any], identities: list[Any]) -> None:
        for identity in identities:
            await self._add_ref(self.identities, identity.digest, ref, {"kind": identity.kind})

    async def reported_near(self, bucket_ids: list[str], case_id: str) -> list[dict[str, Any]]:
        """References to other cases of the same village observed around the same days."""
        refs = []
        for bucket_id in bucket_ids:
            doc = await self.buckets.find_one({"_id": bucket_id})
            refs += [r for r in (doc or {}).get("cases", []) if r["case_id"] != case_id]
        return refs

    async def index_report(self, bucket_id: str, ref: dict[str, Any]) -> None:
        await self._add_ref(self.buckets, bucket_id, ref, {})

    async def _add_ref(self, collection: Any, doc_id: str, ref: dict[str, Any], fields: dict[str, Any]) -> None:
        async with document_writes.hold((collection.full_name, doc_id)):  # one writer per index document
            doc = await collection.find_one({"_id": doc_id})
            if doc is None:
                try:
                    await collection.insert_one({"_id": doc_id, **fields, "cases": [ref]})
                    return
                except DuplicateKeyError:
                    doc = await collection.find_one({"_id": doc_id})
            if any(r["case_id"] == ref["case_id"] for r in doc["cases"]):
                return  # already indexed (redelivery or amendment)
            await collection.update_one({"_id": doc_id}, {"$push": {"cases": ref}})

    async def watch_entries(self, region_path: list[str]) -> list[dict[str, Any]]:
        """Watch-list entries that apply to a case in `region_path` (entries of its village or any wider region)."""
        return await self.watchlist.find({"region": {"$in": region_path}}).to_list()

    async def add_watch_entry(self, entry: dict[str, Any]) -> None:
        await self.watchlist.insert_one(entry)

    async def list_watch_entries(self, region: str, offset: int, limit: int) -> list[dict[str, Any]]:
        return await (self.watchlist.find({"region_path": region}).sort([("added_at", ASCENDING), ("_id", ASCENDING)])
                      .skip(offset).limit(limit).to_list())

    async def queue(self, region: str, filters: dict[str, Any], after: list[Any] | None,
                    limit: int) -> list[dict[str, Any]]:
        """Cases of a status (awaiting a decision by default) in `region`: most urgent first, then oldest;
        `after` is the sort key of the last case of the previous page."""
        query = {"status": "awaiting_decision", "region_path": region, **filters}
        if after is not None:
            query.update(keyset.after(list(QUEUE_ORDER), after))
        cursor = (self.collection.find(query, {"outbox": 0, "applied": 0})
                  .sort([(f, ASCENDING) for f in QUEUE_ORDER]).limit(limit))
        return await cursor.to_list()
