"""Referral's HTTP routes and Kafka subscribers: parse, load, call the domain, save."""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Depends, Query

from services.referral import domain
from services.referral.schemas import OpenedReferral, Referral, ReferralNeedingAttention
from services.referral.store import CaseStore, ReferralStore
from shared import crypto, topics
from shared.access import AccessLog
from shared.api_models import MAX_LIMIT, Page, decode_cursor, page
from shared.auth import Principal
from shared.crypto import KeyStore
from shared.contracts.envelope import Envelope
from shared.http import ApiError, case_erased, errors, not_found
from shared.outbox import Change, ConcurrentUpdate
from shared.service import Runtime

log = structlog.get_logger()
ATTEMPTS = 5

Decide = Callable[[dict[str, Any], datetime, domain.Seal], Change]
ACTION: dict[str, Any] = {"response_model": Referral, "responses": errors(401, 403, 404, 409, 413, 422)}


def _scope(principal: Principal) -> dict[str, Any]:
    """What a caller may see: an investigator their unit's referrals, a supervisor everything in their region."""
    if principal.role == "investigator":
        return {"agency_id": principal.unit}
    return {"region_path": principal.region}


def _visible(doc: dict[str, Any] | None, principal: Principal) -> bool:
    if doc is None:
        return False
    if principal.role == "investigator":
        return doc["agency_id"] == principal.unit
    return principal.region in doc["region_path"]


def routes(runtime: Runtime, store: ReferralStore, access_log: AccessLog, keys: KeyStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["referrals"])
    reader = runtime.require("investigator", "supervisor")
    investigator = runtime.require("investigator")
    clock = runtime.clock

    @router.get("/referrals", response_model=Page[Referral], responses=errors(401, 403, 422), summary="Referrals to your unit (investigator) or in your region (supervisor): "
                                      "open ones first, most urgent then oldest, then the others newest first "
                                      "(with a status: most urgent first, then oldest)")
    async def list_referrals(
        principal: Annotated[Principal, Depends(reader)],
        case_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        status: domain.Status | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        filters: dict[str, Any] = {}
        if case_id:
            filters["case_id"] = case_id
        if status:
            filters["status"] = status
        offset = decode_cursor(cursor)
        docs = await store.search(_scope(principal), filters, offset, limit + 1)
        return page([domain.referral_view(d) for d in docs], offset, limit)

    supervisor = runtime.require("supervisor")

    # Declared before /referrals/{referral_id}, which would otherwise take "overdue" for an id.
    @router.get("/referrals/overdue", response_model=Page[ReferralNeedingAttention],
                responses=errors(401, 403, 422), summary="Referrals in your region past a deadline, or declined with no unit "
                                              "left to take them (needs_supervisor), unassigned and longest late first")
    async def overdue(principal: Annotated[Principal, Depends(supervisor)], cursor: str | None = None,
                      limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50) -> dict[str, Any]:
        offset = decode_cursor(cursor)
        now = clock.now()
        docs = await store.needing_attention(principal.region, now.timestamp(), offset, limit + 1)
        return page([domain.attention_view(d, now) for d in docs], offset, limit)

    @router.get("/referrals/{referral_id}", response_model=OpenedReferral, responses=errors(401, 403, 404),
                summary="One referral with its deadlines, milestones and history")
    async def get_referral(referral_id: str, principal: Annotated[Principal, Depends(reader)]) -> dict[str, Any]:
        doc = await store.load(referral_id)
        if not _visible(doc, principal):
            raise not_found("referral")
        await access_log.viewed(principal, doc["case_id"], "referral")
        return domain.referral_view(doc, await keys.key(doc["case_id"]), opened=True)

    async def move(referral_id: str, principal: Principal, decide: Decide) -> dict[str, Any]:
        """Load, decide, write guarded by the version; a concurrent write makes us decide again on the new state."""
        for _ in range(ATTEMPTS):
            doc = await store.load(referral_id)
            if doc is None or doc["agency_id"] != principal.unit:
                raise not_found("referral")
            seal = await keys.sealer(doc["case_id"])
            try:
                written = await store.update(doc, decide(doc, clock.now(), seal))
            except domain.InvalidTransition as exc:
                raise ApiError(409, "conflict", str(exc), {"status": doc["status"]}) from exc
            except crypto.CaseErased as exc:
                raise case_erased() from exc
            except ConcurrentUpdate:
                continue
            return domain.referral_view(written)  # masked: the answer to an action
        raise ApiError(409, "conflict", "the referral changed while recording this; try again")

    @router.post("/referrals/{referral_id}/acknowledge", **ACTION, summary="Your unit has received the referral")
    async def acknowledge(referral_id: str, principal: Annotated[Principal, Depends(investigator)],
                          body: Annotated[domain.Acknowledge | None, Body()] = None) -> dict[str, Any]:
        return await move(referral_id, principal, lambda doc, now, _: domain.acknowledge(doc, principal, now))

    @router.post("/referrals/{referral_id}/accept", **ACTION, summary="Your unit takes the case on")
    async def accept(referral_id: str, principal: Annotated[Principal, Depends(investigator)],
                     body: Annotated[domain.Accept | None, Body()] = None) -> dict[str, Any]:
        return await move(referral_id, principal, lambda doc, now, _: domain.accept(doc, principal, now))

    @router.post("/referrals/{referral_id}/decline", **ACTION, summary="Your unit does not take the case on, with a reason")
    async def decline(referral_id: str, body: domain.Decline,
                      principal: Annotated[Principal, Depends(investigator)]) -> dict[str, Any]:
        return await move(referral_id, principal, lambda doc, now, seal: domain.decline(doc, principal, body, now, seal))

    @router.post("/referrals/{referral_id}/updates", **ACTION,
                 summary="Progress: a note and/or a milestone (police report filed, SP2HP sent, departure deferred…)")
    async def record_update(referral_id: str, body: domain.Update,
                            principal: Annotated[Principal, Depends(investigator)]) -> dict[str, Any]:
        return await move(referral_id, principal, lambda doc, now, seal: domain.record_update(doc, principal, body, now,
                                                                                     seal))

    @router.post("/referrals/{referral_id}/close", **ACTION, summary="Close an accepted referral with its outcome")
    async def close(referral_id: str, body: domain.Close,
                    principal: Annotated[Principal, Depends(investigator)]) -> dict[str, Any]:
        return await move(referral_id, principal, lambda doc, now, seal: domain.close(doc, principal, body, now, seal))

    return router


def subscribers(runtime: Runtime, store: ReferralStore, cases: CaseStore) -> None:
    clock = runtime.clock

    async def on_case_verified(event: Envelope) -> None:
        opened = domain.open_referrals(event, clock.now())
        # The case lists its referrals first, so it cannot close while one of them is still being written.
        await cases.apply_once(event.case_id, event.event_id,
                               lambda case: domain.case_opened(case, event, opened, clock.now()),
                               fresh=True)  # usually the case's first referrals (a re-verification reads it then)
        for doc, events in opened:
            new = await store.open(doc, events, applied=event.event_id)
            log.info("referral_opened" if new else "referral_already_open", referral_id=doc["_id"],
                     agency_id=doc["agency_id"], fallback=doc["fallback"])

    async def on_referral_declined(event: Envelope) -> None:
        declined = await store.load(event.data.get("referral_id"))
        built = domain.reroute(declined, event) if declined is not None else None
        if built is not None:
            doc, events = built
            new = await store.open(doc, events, applied=event.event_id)
            log.info("referral_rerouted" if new else "referral_already_rerouted", referral_id=doc["_id"],
                     agency_id=doc["agency_id"], rerouted_from=doc["rerouted_from"])
        elif event.data.get("needs_supervisor"):
            log.warning("referral_needs_supervisor", referral_id=event.data.get("referral_id"))
        await follow_case(event)

    async def follow_case(event: Envelope) -> None:
        await cases.apply_once(event.case_id, domain.derived_event_id("case", event.event_id),
                               lambda case: domain.case_followed(case, event, clock.now()))

    async def on_event(event: Envelope) -> None:
        if event.type == "case.verified":
            await on_case_verified(event)
        elif event.type == "referral.declined":
            await on_referral_declined(event)
        elif event.type == "referral.closed":
            await follow_case(event)

    runtime.consume(topics.VERIFICATION, topics.REFERRAL, apply=on_event,
                    description="Verified cases are routed (one referral per agency, with deadlines by priority); "
                                "declined referrals are re-routed; a case closes when all its referrals are closed")


def deadline_checker(runtime: Runtime, store: ReferralStore) -> Callable[[], Awaitable[int]]:
    """`check_deadlines_once()`: one `referral.escalated` per breached deadline, however often it runs."""
    clock = runtime.clock

    async def check_deadlines_once() -> int:
        now = clock.now()
        escalated = 0
        for row in await store.due_for_escalation(now.timestamp()):
            doc = await store.load(row["_id"])
            due = domain.next_deadline(doc) if doc is not None else None
            if due is None:
                continue
            key = due[0]

            def decide(current: dict[str, Any] | None, key: str = key) -> Change | None:
                if current is None or (domain.next_deadline(current) or ("",))[0] != key:
                    return None  # the unit acted meanwhile: this deadline is met
                return domain.escalate(current, now)

            # The derived id and the `escalations` list written with the event make a retry or a second
            # checker find the breach already reported.
            if await store.apply_once(row["_id"], domain.derived_event_id("escalate", row["_id"], key), decide):
                escalated += 1
                log.warning("referral_escalated", referral_id=row["_id"], agency_id=doc["agency_id"], deadline=key)
        return escalated

    return check_deadlines_once


