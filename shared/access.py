"""Recording reads of personal data (UU 27/2022 PDP: "perekaman seluruh kegiatan pemrosesan").

Every service that shows a case's personal data records the read as an access event (`case.viewed`,
`case.exported`, `cases.listed`, `case.erased`) on `waspada.access.v1`; the audit service appends it to the
case's trail (a listing to the trail of every case it showed). A read is recorded through the service's own
outbox (one small document per request, written before the answer is sent), so a read that was answered is a
read that reaches the trail, even if Kafka is down at that moment. Free text in a record is sealed.
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared import topics
from shared.auth import Principal
from shared.clock import Clock
from shared.contracts import access
from shared.contracts.envelope import Actor, Contract, new_event
from shared.crypto import Sealer
from shared.outbox import AggregateStore, OutboxRelay, Outgoing

# Ids of records that must exist once per case (its erasure), derived so that a retry writes nothing new.
NAMESPACE = uuid.UUID("0c6f2f7e-4a51-4d8e-9a59-2b7d3c1f8e10")


class AccessLog:
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock, service: str) -> None:
        self._store = AggregateStore(db["access_log"], relay, clock)
        self._clock = clock
        self._service = service

    async def _record(self, principal: Principal, subject_id: str, payload: Contract, *, record_id: str | None = None,
                      fields: dict[str, Any] | None = None) -> bool:
        """One document and one event; False if a record with `record_id` exists already (a retry)."""
        now = self._clock.now()
        actor = Actor(id=principal.sub, role=principal.role, unit=principal.unit, region=principal.region)
        event_id = str(uuid.uuid5(NAMESPACE, record_id)) if record_id else None
        event = new_event(payload, case_id=subject_id, producer=self._service, actor=actor, correlation_id=subject_id,
                          causation_id=None, occurred_at=now, event_id=event_id)
        try:
            await self._store.create({"_id": record_id or str(uuid.uuid4()), "case_id": subject_id, "type": event.type,
                                      "actor_id": principal.sub, "at": now.isoformat(), **(fields or {})},
                                     [Outgoing(topics.ACCESS, event)])
        except DuplicateKeyError:
            return False
        return True

    async def viewed(self, principal: Principal, case_id: str, resource: str) -> None:
        await self._record(principal, case_id, access.CaseViewed(service=self._service, resource=resource))

    async def exported(self, principal: Principal, case_id: str, fmt: str, purpose: str | None, seal: Sealer) -> None:
        """`purpose` is sealed with the case's key (`seal` raises CaseErased for an erased case)."""
        await self._record(principal, case_id,
                           access.CaseExported(service=self._service, format=fmt, purpose=seal(purpose)))

    async def erased(self, principal: Principal, case_id: str, reason: str, seal: Sealer) -> bool:
        """The record of a case's erasure, once per case; `reason` (its legal basis) is sealed with the records
        key, since it must outlive the case's own key. Returns whether this call wrote it."""
        return await self._record(principal, case_id, access.CaseErased(service=self._service, reason=seal(reason)),
                                  record_id=f"erasure:{case_id}")

    async def listed(self, principal: Principal, case_ids: list[str], resource: str, query: dict[str, Any]) -> None:
        """One record for a whole list answer, naming every case it showed (none: nothing was shown)."""
        if not case_ids:
            return
        shown = {k: str(v) for k, v in query.items() if v is not None}
        listing_id = f"listing:{uuid.uuid4()}"
        await self._record(principal, listing_id, access.CasesListed(service=self._service, resource=resource,
                                                                     query=shown, case_ids=list(case_ids)),
                           record_id=listing_id, fields={"case_ids": list(case_ids)})
