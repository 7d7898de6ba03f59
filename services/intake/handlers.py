"""Intake's HTTP routes and Kafka subscribers: parse, load, call the domain, save."""


import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

import structlog

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pymongo.errors import DuplicateKeyError

from services.intake import domain
from services.intake.store import ReportStore
from shared import regions, topics
from shared.access import AccessLog
from shared.crypto import CaseErased, KeyStore, Sealer
from shared.api_models import MAX_LIMIT, decode_cursor, page
from shared.auth import Principal
from shared.contracts.envelope import Envelope
from shared.http import ApiError, case_erased, not_found
from shared.outbox import ConcurrentUpdate
from shared.service import Runtime

log = structlog.get_logger()


class ReportAccepted(BaseModel):
    case_id: str
    case_number: str
    status: str
    received_at: str


class WithdrawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000)


def _accepted(doc: dict[str, Any]) -> dict[str, Any]:
    return {"case_id": doc["_id"], "case_number": doc["case_number"], "status": "reported",
            "received_at": doc["received_at"]}


def routes(runtime: Runtime, store: ReportStore, access_log: AccessLog, keys: KeyStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["reports"])
    reporter = runtime.require("reporter")
    clock = runtime.clock

    @router.post("/reports", status_code=201, response_model=ReportAccepted,
                 summary="File a report; a retry with the same Idempotency-Key returns the first answer")
    async def file_report(
        report: domain.ReportIn,
        principal: Annotated[Principal, Depends(reporter)],
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)] = None,
    ) -> Any:
        now = clock.now()
        try:
            domain.check_against_reference(report, principal, now)
        except domain.FieldProblem as exc:
            raise ApiError(422, "invalid_request", str(exc), exc.problems) from exc
        fingerprint = domain.request_hash(report)
        case_id = str(uuid.uuid4())
        idempotency_id = f"{principal.sub}:{idempotency_key}" if idempotency_key else f"case:{case_id}"
        if idempotency_key:
            # The key is claimed first (an insert keyed by _id: atomic everywhere); a retry, or a concurrent
            # twin, finds the claim and answers for the same case id.
            claim = await store.claim_key(idempotency_id, case_id, fingerprint, now)
            if claim["request_hash"] != fingerprint:
                raise ApiError(409, "idempotency_key_reused", "this Idempotency-Key was used for a different report",
                               {"case_id": claim["case_id"]})
            case_id = claim["case_id"]
            if first := await store.load(case_id):
                return _replay(first)
        try:
            seal = Sealer(await keys.key_for_new_case(case_id), case_id)
        except CaseErased as exc:
            raise case_erased() from exc
        regency = regions.regency_of(report.village_code)
        for _ in range(10):
            seq = await store.next_case_seq(regency, now.year)
            number = domain.case_number(regency, now.year, seq)
            if not await store.claim_case_number(number, case_id):
                continue  # another process's counter handed this number out too: take the next one
            doc, events = domain.file_report(report, principal, case_id=case_id, number=number,
                                             idempotency_id=idempotency_id, fingerprint=fingerprint, now=now,
                                             seal=seal)
            try:
                await store.create(doc, events)
                return JSONResponse(_accepted(doc), status_code=201)
            except DuplicateKeyError:
                if first := await store.load(case_id):
                    return _replay(first)  # a concurrent submission with the same key created it
        raise ApiError(409, "conflict", "could not allocate a case number; retry with the same Idempotency-Key")

    @router.get("/reports", summary="Your own reports, newest first, each with its status and what happens next")
    async def list_reports(
        principal: Annotated[Principal, Depends(reporter)],
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        offset = decode_cursor(cursor)
        docs = await store.of_reporter(principal.sub, offset, limit + 1)
        await access_log.listed(principal, [doc["_id"] for doc in docs[:limit]], "reports",
                                {"cursor": cursor, "limit": limit})
        views = [domain.reporter_view(doc, await keys.key(doc["_id"])) for doc in docs[:limit]]
        return page(views + docs[limit:], offset, limit)

    @router.get("/reports/{case_id}", summary="One of your reports")
    async def get_report(case_id: str, principal: Annotated[Principal, Depends(reporter)]) -> dict[str, Any]:
        doc = await _own(case_id, principal)
        await access_log.viewed(principal, case_id, "report")
        return domain.reporter_view(doc, await keys.key(case_id))

    @router.post("/reports/{case_id}/withdraw", summary="Withdraw your report before a decision")
    async def withdraw(case_id: str, body: WithdrawIn,
                       principal: Annotated[Principal, Depends(reporter)]) -> dict[str, Any]:
        await _own(case_id, principal)
        seal = await keys.sealer(case_id)
        return await _move(case_id, principal,
                           lambda doc: domain.withdraw(doc, principal, body.reason, clock.now(), seal))

    @router.post("/reports/{case_id}/amendments", summary="Answer the verifier's question; the report is screened again")
    async def amend(case_id: str, amendment: domain.AmendmentIn,
                    principal: Annotated[Principal, Depends(reporter)]) -> dict[str, Any]:
        try:
            domain.check_amendment(amendment)
        except domain.FieldProblem as exc:
            raise ApiError(422, "invalid_request", str(exc), exc.problems) from exc
        await _own(case_id, principal)
        seal = await keys.sealer(case_id)
        return await _move(case_id, principal, lambda doc: domain.amend(doc, amendment, principal, clock.now(), seal))

    async def _move(case_id: str, principal: Principal, decide) -> dict[str, Any]:
        for _ in range(5):
            doc = await _own(case_id, principal)
            try:
                await store.change(case_id, doc["version"], decide(doc))
            except domain.InvalidTransition as exc:
                raise ApiError(409, "conflict", str(exc), {"status": doc["status"]}) from exc
            except domain.FieldProblem as exc:
                raise ApiError(422, "invalid_request", str(exc), exc.problems) from exc
            except CaseErased as exc:
                raise case_erased() from exc
            except ConcurrentUpdate:
                continue
            return domain.reporter_view(await _own(case_id, principal), await keys.key(case_id))
        raise ApiError(409, "conflict", "the report changed meanwhile; try again")

    async def _own(case_id: str, principal: Principal) -> dict[str, Any]:
        doc = await store.load(case_id)
        if doc is None or doc["reporter_id"] != principal.sub:
            raise not_found("report")
        return doc

    return router


def _replay(first: dict[str, Any]) -> JSONResponse:
    return JSONResponse(_accepted(first), status_code=201, headers={"Idempotent-Replayed": "true"})


def idempotency_key_expiry(runtime: Runtime, store: ReportStore) -> Callable[[], Awaitable[int]]:
    """`expire_idempotency_keys_once()`: delete Idempotency-Key claims older than `idempotency_key_ttl_s` (24 h);
    a key used again after that files a new report."""
    async def expire_once() -> int:
        before = runtime.clock.now() - timedelta(seconds=runtime.settings.idempotency_key_ttl_s)
        if expired := await store.expire_keys(before.isoformat()):
            log.info("idempotency_keys_expired", count=expired)
        return expired

    return expire_once


def run_every(interval_s: float, step: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
    async def loop() -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - tried again at the next round
                log.warning("idempotency_key_expiry_failed", error_type=type(exc).__name__)
            await asyncio.sleep(interval_s)

    return loop


def subscribers(runtime: Runtime, store: ReportStore) -> None:
    async def on_verification_event(event: Envelope) -> None:
        await store.apply_once(event.case_id, event.event_id,
                               lambda doc: domain.on_verification_event(doc, event, runtime.clock.now()))

    runtime.consume(topics.VERIFICATION, apply=on_verification_event,
                    description="Screening outcomes, information requests and decisions update the reporter's view")
