"""Intake's HTTP routes and Kafka subscribers: parse, load, call the domain, save."""


import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, cast

import structlog
from aiokafka import ConsumerRecord
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage
from pymongo.errors import DuplicateKeyError

from services.intake import domain
from services.intake.schemas import REPLAYED, ReportAccepted, ReportView, WithdrawIn
from services.intake.store import ReportStore
from shared import regions, topics
from shared.access import AccessLog
from shared.api_models import MAX_LIMIT, Page, decode_cursor, page
from shared.auth import Principal
from shared.consumer import record_headers
from shared.contracts.envelope import Envelope
from shared.crypto import CaseErased, KeyStore, Sealer
from shared.http import ApiError, case_erased, errors, not_found
from shared.outbox import ConcurrentUpdate
from shared.service import Runtime

log = structlog.get_logger()


class InFlight(Exception):
    """A concurrent request with the same Idempotency-Key is writing the case right now."""


def _accepted(doc: dict[str, Any]) -> dict[str, Any]:
    return {"case_id": doc["_id"], "case_number": doc["case_number"], "status": "reported",
            "received_at": doc["received_at"]}


def routes(runtime: Runtime, store: ReportStore, access_log: AccessLog, keys: KeyStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["reports"])
    reporter = runtime.require("reporter")
    clock = runtime.clock

    @router.post("/reports", status_code=201, response_model=ReportAccepted,
                 responses={201: {"headers": REPLAYED}, **errors(401, 403, 409, 413, 422)},
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
        if idempotency_key:
            # The case id is made from the reporter and the key: a retry, however late, and a concurrent twin name
            # the same case, whose first version (an insert by _id) is the guard. Nothing is written for the key.
            idempotency_id = f"{principal.sub}:{idempotency_key}"
            case_id = domain.case_id_for(idempotency_id)
            if (claim := await store.legacy_claim(idempotency_id)) is not None:  # a key claimed before that
                if claim["request_hash"] != fingerprint:
                    raise key_reused(claim["case_id"])
                if first := await store.load(claim["case_id"]):
                    return _replay(first)
                case_id = claim["case_id"]
        else:
            case_id = str(uuid.uuid4())
            idempotency_id = f"case:{case_id}"
        try:
            return await create_case(report, principal, case_id, idempotency_id, fingerprint, now)
        except InFlight as exc:  # the case is the twin's as much as this request's: left to it
            raise ApiError(409, "conflict", "this report is being filed by another request; retry with the same "
                                            "Idempotency-Key") from exc
        except Exception:
            # A request that fails leaves no case key behind (a corrected retry with its key files the report).
            if await store.load(case_id) is None:
                await keys.discard_unused(case_id)
            raise

    async def create_case(report: domain.ReportIn, principal: Principal, case_id: str, idempotency_id: str,
                          fingerprint: str, now: Any) -> JSONResponse:
        # The case's key and its number are two writes that do not wait on each other: made side by side, a new
        # report is accepted after two round trips to the database (these, then its version claim) rather than
        # three. (A number claimed for a request that then fails stays unused, as when its report's write fails;
        # one claimed by a retry is given back.)
        regency = regions.regency_of(report.village_code)
        made, number = await asyncio.gather(keys.made_key(case_id), claim_number(regency, case_id, now.year),
                                            return_exceptions=True)
        key, new_id = made if isinstance(made, tuple) else (made, False)

        async def give_back(number: str) -> None:
            await store.release_number(regency, now.year, domain.seq_of(number), number, case_id)

        if isinstance(key, BaseException) and isinstance(number, str):  # no case comes of it: the number goes back
            await give_back(number)
        if isinstance(key, CaseErased):
            raise case_erased() from key
        if isinstance(key, BaseException):
            raise key
        if isinstance(number, BaseException):
            raise number
        if number is None:
            raise ApiError(409, "conflict", "could not allocate a case number; retry with the same Idempotency-Key")
        doc, events = domain.file_report(report, principal, case_id=case_id, number=number,
                                         idempotency_id=idempotency_id, fingerprint=fingerprint, now=now,
                                         seal=Sealer(key, case_id))
        try:
            # A case id whose key this request made names no case written before: the report is accepted once its
            # version claim is in, and its document is written right after (`first_through_later`).
            await store.create(doc, events, known_new=new_id)
        except DuplicateKeyError:
            # A request with the same key filed the case first (a retry's first attempt, or a twin), or has claimed
            # its first version and is writing it now: that claim is written through here (as the sweeper would),
            # and the first answer given. This request's number goes back.
            await give_back(number)
            await store.versions.catch_up(case_id)
            if first := await store.load(case_id):
                if first.get("request_hash") != fingerprint:
                    raise key_reused(case_id) from None
                return _replay(first)
            raise InFlight from None
        return JSONResponse(_accepted(doc), status_code=201)

    async def claim_number(regency: str, case_id: str, year: int) -> str | None:
        """The next case number of the regency and year, claimed for this case (None if none could be)."""
        return await store.claim_next_number(regency, year, case_id, lambda seq: domain.case_number(regency, year, seq))

    @router.get("/reports", response_model=Page[ReportView], responses=errors(401, 403, 422),
                summary="Your own reports, newest first, each with its status and what happens next")
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

    @router.get("/reports/{case_id}", response_model=ReportView, responses=errors(401, 403, 404),
                summary="One of your reports")
    async def get_report(case_id: str, principal: Annotated[Principal, Depends(reporter)]) -> dict[str, Any]:
        doc = await _own(case_id, principal)
        await access_log.viewed(principal, case_id, "report")
        return domain.reporter_view(doc, await keys.key(case_id))

    @router.post("/reports/{case_id}/withdraw", response_model=ReportView,
                 responses=errors(401, 403, 404, 409, 413, 422), summary="Withdraw your report before a decision")
    async def withdraw(case_id: str, body: WithdrawIn,
                       principal: Annotated[Principal, Depends(reporter)]) -> dict[str, Any]:
        await _own(case_id, principal)
        seal = await keys.sealer(case_id)
        return await _move(case_id, principal,
                           lambda doc: domain.withdraw(doc, principal, body.reason, clock.now(), seal))

    @router.post("/reports/{case_id}/amendments", response_model=ReportView,
                 responses=errors(401, 403, 404, 409, 413, 422),
                 summary="Answer the verifier's question; the report is screened again")
    async def amend(case_id: str, amendment: domain.AmendmentIn,
                    principal: Annotated[Principal, Depends(reporter)]) -> dict[str, Any]:
        await _own(case_id, principal)  # an unknown id is a 404 before anything else is looked up
        try:
            domain.check_amendment(amendment, clock.now())
        except domain.FieldProblem as exc:
            raise ApiError(422, "invalid_request", str(exc), exc.problems) from exc
        seal = await keys.sealer(case_id)
        return await _move(case_id, principal, lambda doc: domain.amend(doc, amendment, principal, clock.now(), seal))

    async def _move(case_id: str, principal: Principal, decide) -> dict[str, Any]:
        for _ in range(5):
            doc = await _own(case_id, principal)
            try:
                written = await store.update(doc, decide(doc))
            except domain.InvalidTransition as exc:
                raise ApiError(409, "conflict", str(exc), {"status": doc["status"]}) from exc
            except domain.FieldProblem as exc:
                raise ApiError(422, "invalid_request", str(exc), exc.problems) from exc
            except CaseErased as exc:
                raise case_erased() from exc
            except ConcurrentUpdate:
                continue
            return domain.reporter_view(written, await keys.key(case_id))
        raise ApiError(409, "conflict", "the report changed meanwhile; try again")

    async def _own(case_id: str, principal: Principal) -> dict[str, Any]:
        doc = await store.load(case_id)
        if doc is None or doc["reporter_id"] != principal.sub:
            raise not_found("report")
        return doc

    return router


def key_reused(case_id: str) -> ApiError:
    return ApiError(409, "idempotency_key_reused", "this Idempotency-Key was used for a different report",
                    {"case_id": case_id})


def _replay(first: dict[str, Any]) -> JSONResponse:
    return JSONResponse(_accepted(first), status_code=201, headers={"Idempotent-Replayed": "true"})


def idempotency_key_expiry(runtime: Runtime, store: ReportStore) -> Callable[[], Awaitable[int]]:
    """`expire_idempotency_keys_once()`: delete the Idempotency-Key claims written before case ids were made from
    the key, once older than `idempotency_key_ttl_s` (24 h); a key of that time used again after it files a new
    report. (A key used since names its case for good.)"""
    async def expire_once() -> int:
        before = runtime.clock.now() - timedelta(seconds=runtime.settings.idempotency_key_ttl_s)
        if expired := await store.expire_keys(before.isoformat()):
            log.info("idempotency_keys_expired", count=expired)
        return expired

    return expire_once


def subscribers(runtime: Runtime, store: ReportStore) -> None:
    async def on_verification_event(event: Envelope) -> None:
        if not domain.may_move(event.type):
            return  # no read: "nothing to do" is otherwise believed only of the stored report
        await store.apply_once(event.case_id, event.event_id,
                               lambda doc: domain.on_verification_event(doc, event, runtime.clock.now()))

    runtime.consume(topics.VERIFICATION, apply=on_verification_event,
                    description="Screening outcomes, information requests and decisions update the reporter's view")

    settings = runtime.settings

    @runtime.broker.subscriber(
        topics.DEADLETTER,
        group_id=settings.group_id + ".deadletters",
        auto_offset_reset=settings.consumer_offset_reset,
        ack_policy=AckPolicy.ACK,
        title="intake:deadletters",
        description="A report whose event any consumer gave up on is shown to its reporter as needing attention",
    )
    async def on_dead_letter(message: KafkaMessage) -> None:
        raw = cast(ConsumerRecord, message.raw_message)
        headers = record_headers(raw)
        case_id = headers.get(topics.HEADER_CASE_ID) or (raw.key.decode("utf-8", "replace") if raw.key else "")
        if not case_id:
            return
        for attempt in range(settings.consumer_attempts):
            try:
                await store.apply_once(case_id, f"dead-letter:{raw.partition}:{raw.offset}",
                                       lambda doc: domain.dead_lettered(doc, headers.get(topics.DLQ_SOURCE_TOPIC),
                                                                        headers.get(topics.HEADER_EVENT_TYPE),
                                                                        runtime.clock.now()))
                return
            except Exception as exc:  # noqa: BLE001 - the dead letter stays listed by audit whatever happens here
                log.warning("dead_letter_not_flagged", case_id=case_id, error_type=type(exc).__name__,
                            attempt=attempt + 1)
                await asyncio.sleep(settings.consumer_backoff_s * (attempt + 1))
