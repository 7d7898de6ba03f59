"""The only module of verification that touches the database."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.clock import Clock
from shared.outbox import AggregateStore, OutboxRelay


class CaseStore(AggregateStore):
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock) -> None:
        super().__init__(db["cases"], relay, clock)
        self.identities = db["identities"]  # keyed hashes of identifiers -> case, for linking
        self.watchlist = db["watchlist"]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index(
            [("status", ASCENDING), ("region_path", ASCENDING), ("priority_rank", ASCENDING), ("received_at", ASCENDING)]
        )
        await self.collection.create_index([("village_code", ASCENDING), ("observed_at", ASCENDING)])
        await self.identities.create_index([("digest", ASCENDING)])
        await self.watchlist.create_index([("region_path", ASCENDING)])

    async def identity_matches(self, digests: list[str], case_id: str) -> list[dict[str, Any]]:
        if not digests:
            return []
        rows = await self.identities.find({"digest": {"$in": digests}}).to_list()
        return [r for r in rows if r["case_id"] != case_id]

    async def save_identities(self, case_id: str, identities: list[Any]) -> None:
        for identity in identities:
            try:
                await self.identities.insert_one({"_id": f"{identity.digest}:{case_id}", "digest": identity.digest,
                                                  "kind": identity.kind, "case_id": case_id})
            except DuplicateKeyError:
                pass  # already indexed (redelivery or amendment)

    async def by_ids(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        docs = await self.collection.find({"_id": {"$in": ids}}, {"outbox": 0, "applied": 0}).to_list()
        return {d["_id"]: d for d in docs}

    async def reported_near(self, village_code: str, start: str, end: str, case_id: str) -> list[dict[str, Any]]:
        """Cases of the same village observed between two ISO instants."""
        docs = await self.collection.find(
            {"village_code": village_code, "observed_at": {"$gte": start, "$lte": end}},
            {"outbox": 0, "applied": 0}).limit(200).to_list()
        return [d for d in docs if d["_id"] != case_id]

    async def watch_entries(self, region_path: list[str]) -> list[dict[str, Any]]:
        """Watch-list entries that apply to a case in `region_path` (entries of its village or any wider region)."""
        return await self.watchlist.find({"region": {"$in": region_path}}).to_list()

    async def add_watch_entry(self, entry: dict[str, Any]) -> None:
        await self.watchlist.insert_one(entry)

    async def list_watch_entries(self, region: str, offset: int, limit: int) -> list[dict[str, Any]]:
        return await (self.watchlist.find({"region_path": region}).sort([("added_at", ASCENDING), ("_id", ASCENDING)])
                      .skip(offset).limit(limit).to_list())

    async def queue(self, region: str, filters: dict[str, Any], offset: int, limit: int) -> list[dict[str, Any]]:
        """Cases awaiting a decision in `region`: most urgent first, then oldest."""
        query = {"status": "awaiting_decision", "region_path": region, **filters}
        cursor = (self.collection.find(query, {"outbox": 0, "applied": 0})
                  .sort([("priority_rank", ASCENDING), ("received_at", ASCENDING), ("_id", ASCENDING)])
                  .skip(offset).limit(limit))
        return await cursor.to_list()
