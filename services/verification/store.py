"""The only module of verification that touches the database."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.clock import Clock
from shared.outbox import AggregateStore, OutboxRelay


class CaseStore(AggregateStore):
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock) -> None:
        super().__init__(db["cases"], relay, clock)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index(
            [("status", ASCENDING), ("region_path", ASCENDING), ("priority_rank", ASCENDING), ("received_at", ASCENDING)]
        )

    async def queue(self, region: str, filters: dict[str, Any], offset: int, limit: int) -> list[dict[str, Any]]:
        """Cases awaiting a decision in `region`: most urgent first, then oldest."""
        query = {"status": "awaiting_decision", "region_path": region, **filters}
        cursor = (self.collection.find(query, {"outbox": 0, "applied": 0})
                  .sort([("priority_rank", ASCENDING), ("received_at", ASCENDING), ("_id", ASCENDING)])
                  .skip(offset).limit(limit))
        return await cursor.to_list()
