"""Recording reads of personal data (UU 27/2022 PDP: "perekaman seluruh kegiatan pemrosesan").

Every service that shows a case's personal data records the read as an access event (`case.viewed`,
`case.exported`, `case.searched`) on `waspada.access.v1`; the audit service appends it to the case's trail.
A read is recorded through the service's own outbox (one small document per read, written before the answer
is sent), so a read that was answered is a read that reaches the trail, even if Kafka is down at that moment.
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from shared import topics
from shared.auth import Principal
from shared.clock import Clock
from shared.contracts import access
from shared.contracts.envelope import Actor, Contract, new_event
from shared.outbox import AggregateStore, OutboxRelay, Outgoing


class AccessLog:
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock, service: str) -> None:
        self._store = AggregateStore(db["access_log"], relay, clock)
        self._clock = clock
        self._service = service

    async def _record(self, principal: Principal, case_id: str, payload: Contract) -> None:
        now = self._clock.now()
        actor = Actor(id=principal.sub, role=principal.role, unit=principal.unit, region=principal.region)
        event = new_event(payload, case_id=case_id, producer=self._service, actor=actor, correlation_id=case_id,
                          causation_id=None, occurred_at=now)
        await self._store.create({"_id": str(uuid.uuid4()), "case_id": case_id, "type": event.type,
                                  "actor_id": principal.sub, "at": now.isoformat()},
                                 [Outgoing(topics.ACCESS, event)])

    async def viewed(self, principal: Principal, case_id: str, resource: str, purpose: str | None = None) -> None:
        await self._record(principal, case_id,
                           access.CaseViewed(service=self._service, resource=resource, purpose=purpose))

    async def exported(self, principal: Principal, case_id: str, fmt: str, purpose: str | None = None) -> None:
        await self._record(principal, case_id,
                           access.CaseExported(service=self._service, format=fmt, purpose=purpose))

    async def erased(self, principal: Principal, case_id: str, reason: str) -> None:
        await self._record(principal, case_id, access.CaseErased(service=self._service, reason=reason))

    async def searched(self, principal: Principal, case_ids: list[str], query: dict[str, Any]) -> None:
        """One event per case the search showed, so each case's trail says who saw it listed, and why."""
        shown = {k: str(v) for k, v in query.items() if v is not None}
        for case_id in case_ids:
            await self._record(principal, case_id, access.CaseSearched(service=self._service, query=shown))
