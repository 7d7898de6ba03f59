"""Audit's HTTP routes and Kafka subscribers: record every case event in its trail; let supervisors read it."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, cast

import structlog
from aiokafka import ConsumerRecord
from fastapi import APIRouter, Depends, Query, Response
from faststream import AckPolicy
from faststream.kafka.annotations import KafkaMessage

from services.audit import domain, records
from services.audit.schemas import (
    EXPORT_CSP,
    EXPORT_MEDIA,
    CaseSummary,
    ChainVerdict,
    DirectoryVerdict,
    Checkpoint,
    CheckpointVerdict,
    DeadLetter,
    DirectoryTrail,
    Erasure,
    ErasureIn,
    Stats,
    Trail,
)
from services.audit.store import AuditStore
from shared import topics
from shared.access import AccessLog
from shared.api_models import MAX_LIMIT, Instant, Page, decode_cursor, page
from shared.contracts import access
from shared.contracts.envelope import parse_data
from shared.crypto import CaseErased, KeyStore, Sealer
from shared.auth import Principal
from shared.consumer import MAX_BACKOFF_S, record_headers
from shared.contracts.envelope import Envelope
from shared.contracts.intake import CaseType
from shared.http import ApiError, case_erased, errors, invalid, not_found
from shared.logging import describe
from shared.mongo import TRANSIENT_ERRORS
from shared.service import Runtime

log = structlog.get_logger()

VILLAGE_CODE = r"^\d{2}\.\d{2}\.\d{2}\.\d{4}$"


def _reported_between(reported_from: datetime | None, reported_to: datetime | None) -> dict[str, Any]:
    if reported_from and reported_to and reported_from > reported_to:
        raise ApiError(422, "invalid_request", "reported_from is after reported_to",
                       [{"field": "reported_from", "problem": "is after reported_to"}])
    window: dict[str, str] = {}
    if reported_from:
        window["$gte"] = domain.timestamp(reported_from)
    if reported_to:
        window["$lt"] = domain.timestamp(reported_to)
    return {"reported_at": window} if window else {}


async def check_whole_directory(store: AuditStore, clock: Any) -> dict[str, Any]:
    """Recompute the directory's chain from its first entry; if intact, note how far (a page's check goes on from
    there: `GET /v1/directory/trail/verify?since_checked=true`)."""
    at = domain.timestamp(clock.now())
    entries, head = await store.whole_directory()
    verdict = domain.verify_chain(entries, head)
    if verdict["valid"] and entries:
        await store.note_directory_checked(entries[-1]["seq"], entries[-1]["hash"], at)
    return {**verdict, "whole_checked_at": at, "checked_from_seq": 1}


async def check_directory(store: AuditStore, clock: Any, since_checked: bool) -> dict[str, Any]:
    """The directory's chain recomputed whole, or (`since_checked`) from the last entry found intact on top of the
    last whole recomputation: what the accounts trail page shows, at the cost of what was appended since."""
    if not since_checked:
        whole = await check_whole_directory(store, clock)
        return {k: whole[k] for k in ("valid", "entries", "first_broken_seq")}
    if (checked := await store.directory_checked()) is None:
        return await check_whole_directory(store, clock)
    entries, head = await store.directory_after(int(checked["seq"]))
    verdict = domain.verify_chain(entries, head, after=(int(checked["seq"]), checked["hash"]))
    if verdict["valid"] and entries:
        await store.note_directory_checked(entries[-1]["seq"], entries[-1]["hash"], checked["whole_at"])
    return {**verdict, "whole_checked_at": checked["whole_at"], "checked_from_seq": int(checked["seq"]) + 1}


async def directory_checks(store: AuditStore, clock: Any, interval_s: float) -> None:
    """Give old directory entries their block (once per database), then recompute the whole directory chain every
    `interval_s`: the accounts trail page checks only what was appended since, on top of the latest of these."""
    try:
        if given := await store.backfill_directory_blocks():
            log.info("directory_blocks_backfilled", entries=given)
    except Exception as exc:  # noqa: BLE001 - tried again at the next start; pages read the old way meanwhile
        log.warning("directory_blocks_backfill_failed", error=describe(exc))
    while True:
        try:
            verdict = await check_whole_directory(store, clock)
            if not verdict["valid"]:
                log.error("directory_chain_broken", first_broken_seq=verdict["first_broken_seq"])
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("directory_check_failed", error=describe(exc))
        await asyncio.sleep(interval_s)


def routes(runtime: Runtime, store: AuditStore, access_log: AccessLog, keys: KeyStore,
           records_key: bytes) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["audit"])
    supervisor = runtime.require("supervisor", "admin")
    admin = runtime.require("admin")

    async def in_region(case_id: str, principal: Principal) -> dict[str, Any]:
        case = await store.case(case_id)
        if case is None or not domain.in_region(case, principal.region):
            raise not_found()
        return case

    @router.get("/cases", response_model=Page[CaseSummary], responses=errors(401, 403, 422),
                summary="Cases in your region, newest report first, by status, type, village, date, needing attention")
    async def search_cases(
        principal: Annotated[Principal, Depends(supervisor)],
        status: domain.Status | None = None,
        type: CaseType | None = None,
        village_code: Annotated[str | None, Query(pattern=VILLAGE_CODE)] = None,
        reported_from: Annotated[Instant | None, Query(description="inclusive")] = None,
        reported_to: Annotated[Instant | None, Query(description="exclusive")] = None,
        needs_attention: Annotated[bool | None, Query(description="only cases with a dead-lettered event")] = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        filters = _reported_between(reported_from, reported_to)
        if needs_attention is not None:
            filters["needs_attention"] = True if needs_attention else {"$ne": True}
        if status:
            filters["status"] = status
        if type:
            filters["types"] = type
        if village_code:
            filters["village_code"] = village_code
        offset = decode_cursor(cursor)
        docs = await store.search(principal.region, filters, offset, limit + 1, reported_from, reported_to)
        await access_log.listed(principal, [d["_id"] for d in docs[:limit]], "cases",
                                {"status": status, "type": type, "village_code": village_code,
                                 "reported_from": reported_from, "reported_to": reported_to})
        return page([domain.case_view(d) for d in docs], offset, limit)

    @router.get("/cases/{case_id}/trail", response_model=Trail, responses=errors(401, 403, 404),
                summary="Every recorded event of a case in order, with seq, hash, prev_hash")
    async def trail(case_id: str, principal: Annotated[Principal, Depends(supervisor)]) -> dict[str, Any]:
        await in_region(case_id, principal)
        entries = await store.trail_of(case_id)
        await access_log.viewed(principal, case_id, "trail")
        key = await keys.key(case_id)
        return {"case_id": case_id, "entries": [domain.trail_view(e, key, records_key) for e in entries]}

    @router.get("/cases/{case_id}/trail/export", response_class=Response,
                responses={200: {"content": EXPORT_MEDIA, "description": "JSON Lines, or a printable HTML document"},
                           **errors(401, 403, 404, 422)},
                summary="The trail as JSON Lines or a printable document; the export is itself recorded")
    async def export_trail(
        case_id: str,
        principal: Annotated[Principal, Depends(supervisor)],
        format: Literal["jsonl", "html"] = "jsonl",
        purpose: Annotated[str | None, Query(max_length=500, description="why it is exported (PDP)")] = None,
    ) -> Response:
        case = await in_region(case_id, principal)
        try:
            await access_log.exported(principal, case_id, format, purpose, await keys.sealer(case_id))
        except CaseErased as exc:
            raise case_erased() from exc
        entries = await store.trail_of(case_id)
        verdict = domain.verify_chain(entries, domain.head_of(case))
        key = await keys.key(case_id)
        views = [domain.trail_view(e, key, records_key) for e in entries]
        now = runtime.clock.now()
        name = f"trail-{case.get('case_number') or case_id}"
        headers = {"Content-Disposition": f'attachment; filename="{name}.{format}"'}
        if format == "html":
            body, media = records.export_html(case, views, verdict, principal.sub, now), "text/html; charset=utf-8"
            headers["Content-Security-Policy"] = EXPORT_CSP
        else:
            body, media = records.export_jsonl(case, views, verdict, principal.sub, now), "application/x-ndjson"
        return Response(body, media_type=media, headers=headers)

    @router.get("/cases/{case_id}/trail/verify", response_model=ChainVerdict, responses=errors(401, 403, 404),
                summary="Recompute the case's hash chain")
    async def verify_trail(case_id: str, principal: Annotated[Principal, Depends(supervisor)]) -> dict[str, Any]:
        case = await in_region(case_id, principal)  # its head is read before the entries, so an append between
        entries = await store.trail_of(case_id)  # the two reads cannot look like a deleted entry
        return domain.verify_chain(entries, domain.head_of(case))

    @router.get("/directory/trail", response_model=DirectoryTrail, responses=errors(401, 403, 422),
                summary="Account changes and sign-ins of your region in chain order, or newest first with `before` "
                        "(the directory's own hash chain)")
    async def directory_trail(
        principal: Annotated[Principal, Depends(supervisor)],
        account_id: Annotated[str | None, Query(max_length=200)] = None,
        after: Annotated[int, Query(ge=0, description="entries after this seq")] = 0,
        before: Annotated[int | None, Query(ge=0, description="newest first: entries before this seq (0: from "
                                                              "the newest); `next` is then the next page's")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        if before is not None and after:
            raise invalid("before", "give `after` (chain order) or `before` (newest first), not both")
        entries, resume = await store.directory_trail(principal.region, account_id, after, limit + 1, before)
        shown = entries[:limit]
        return {"trail": domain.DIRECTORY, "entries": [domain.directory_view(e) for e in shown],
                "next": shown[-1]["seq"] if len(entries) > limit else resume}

    @router.get("/directory/trail/verify", response_model=DirectoryVerdict, response_model_exclude_unset=True,
                responses=errors(401, 403, 422),
                summary="Recompute the directory's whole hash chain (since_checked: only the entries after the last "
                        "entry found intact, on top of the last whole recomputation, `whole_checked_at`)")
    async def verify_directory(principal: Annotated[Principal, Depends(supervisor)],
                               since_checked: bool = False) -> dict[str, Any]:
        return await check_directory(store, runtime.clock, since_checked)

    @router.get("/stats", response_model=Stats, responses=errors(401, 403, 422),
                summary="Cases in your region by status, type, district and village; median times; overdue referrals; "
                        "reports and escalations per week")
    async def stats(
        principal: Annotated[Principal, Depends(supervisor)],
        reported_from: Annotated[Instant | None, Query(description="inclusive")] = None,
        reported_to: Annotated[Instant | None, Query(description="exclusive")] = None,
    ) -> dict[str, Any]:
        _reported_between(reported_from, reported_to)  # refuses a backwards window
        return domain.stats_of(principal.region, await store.stats(principal.region, reported_from, reported_to))

    @router.get("/deadletters", response_model=Page[DeadLetter], responses=errors(401, 403, 422),
                summary="Messages a consumer gave up on about cases of your region, newest first, with the error and "
                        "source (an admin also sees those that name no known case)")
    async def dead_letters(
        principal: Annotated[Principal, Depends(supervisor)],
        source_topic: Annotated[str | None, Query(max_length=200)] = None,
        consumer: Annotated[str | None, Query(max_length=200)] = None,
        case_id: Annotated[str | None, Query(max_length=200)] = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        filters = {k: v for k, v in (("source_topic", source_topic), ("consumer", consumer), ("case_id", case_id)) if v}
        offset = decode_cursor(cursor)
        regions = [principal.region, domain.NO_REGION] if principal.role == "admin" else [principal.region]
        docs = await store.dead_letters_page(regions, filters, offset, limit + 1)
        return page([domain.dead_letter_view(d) for d in docs], offset, limit)

    @router.post("/cases/{case_id}/erasure", response_model=Erasure, responses=errors(401, 403, 404, 413, 422),
                 summary="End of retention: destroy the case's data key, so its personal data is unreadable "
                         "everywhere while its trail still verifies; erasing an erased case changes nothing")
    async def erase(case_id: str, body: ErasureIn,
                    principal: Annotated[Principal, Depends(admin)]) -> dict[str, Any]:
        await in_region(case_id, principal)
        # The record first, then the key: a crash between the two is finished when audit consumes the record.
        await access_log.erased(principal, case_id, body.reason, Sealer(records_key, case_id))
        await keys.erase(case_id, domain.timestamp(runtime.clock.now()))
        return {"case_id": case_id, "erased": True}

    # A checkpoint covers every region's trails; a caller sees only the part about their region's cases.

    @router.get("/checkpoints", response_model=Page[Checkpoint], responses=errors(401, 403, 422),
                summary="Checkpoints of every trail's head, newest first (counting your region's trails)")
    async def list_checkpoints(principal: Annotated[Principal, Depends(supervisor)], cursor: str | None = None,
                               limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50) -> dict[str, Any]:
        offset = decode_cursor(cursor)
        docs = await store.checkpoints_page(offset, limit + 1)
        return page([records.checkpoint_view(c, principal.region) for c in docs], offset, limit)

    @router.post("/checkpoints", status_code=201, response_model=Checkpoint, responses=errors(401, 403, 409),
                 summary="Take a checkpoint now (one is also taken daily)")
    async def take_checkpoint_now(principal: Annotated[Principal, Depends(admin)]) -> dict[str, Any]:
        checkpoint = await take_checkpoint(store, runtime.clock)
        return records.checkpoint_view(checkpoint, principal.region)

    @router.get("/checkpoints/verify", response_model=CheckpointVerdict, responses=errors(401, 403),
                summary="Recompute the checkpoint chain and check your region's trails still end where the last "
                        "checkpoint saw them")
    async def verify_checkpoints(principal: Annotated[Principal, Depends(supervisor)]) -> dict[str, Any]:
        chain = await store.checkpoint_chain()
        last_heads = await store.heads_in(chain[-1]["pages_id"]) if chain else []
        visible = await store.case_ids_in(principal.region) | {domain.DIRECTORY}
        return records.verify_checkpoints(chain, await store.page_hashes(), last_heads,
                                          await store.trail_hashes({(h["case_id"], int(h["seq"])) for h in last_heads}),
                                          visible)

    return router


async def checkpoint_daily(store: AuditStore, clock: Any, check_every_s: float) -> None:
    """Take a checkpoint whenever the last one is from an earlier UTC day (or there is none)."""
    while True:
        try:
            last = await store.last_checkpoint()
            if last is None or last["at"][:10] < domain.timestamp(clock.now())[:10]:
                await take_checkpoint(store, clock)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - tried again at the next check
            log.warning("checkpoint_failed", error_type=type(exc).__name__)
        await asyncio.sleep(check_every_s)


async def take_checkpoint(store: AuditStore, clock: Any) -> dict[str, Any]:
    """Every trail's head, written page by page, then the checkpoint with the pages' Merkle root."""
    for _ in range(5):
        previous = await store.last_checkpoint()
        pages_id, hashes, buffer, cases, paths = uuid.uuid4().hex, [], [], 0, []
        async for head in store.heads():
            buffer.append(head)
            paths.append(head.get("region_path") or [])
            if len(buffer) == records.PAGE_SIZE:
                hashes.append(await _write_page(store, pages_id, len(hashes), buffer))
                cases, buffer = cases + len(buffer), []
        if buffer:
            hashes.append(await _write_page(store, pages_id, len(hashes), buffer))
            cases += len(buffer)
        checkpoint = records.checkpoint(previous, hashes, cases, clock.now(), pages_id, records.region_counts(paths))
        if await store.add_checkpoint(checkpoint):
            log.info("checkpoint_taken", seq=checkpoint["seq"], cases=cases, pages=len(hashes))
            return checkpoint
        await store.drop_pages(pages_id)  # another process took this seq first
    raise ApiError(409, "conflict", "another checkpoint was being taken; try again")


async def _write_page(store: AuditStore, pages_id: str, number: int, heads: list[dict[str, Any]]) -> str:
    page = records.page(number, heads)
    await store.add_page(pages_id, page)
    return page["hash"]


def subscribers(runtime: Runtime, store: AuditStore, keys: KeyStore) -> None:
    async def record_listing(event: Envelope) -> None:
        """One list answer, in the trail of every case it showed: batched writes, off the request's path."""
        now = runtime.clock.now()
        entries = domain.listing_entries(event, parse_data(event, access.CasesListed))
        builds = {e.case_id: (e.event_id, lambda last, e=e: domain.chain_entry(e, last, now)) for e in entries}
        appended = await store.append_batch(builds)
        log.info("listing_recorded", cases=len(entries), appended=appended)

    async def record(event: Envelope) -> None:
        if event.type == "cases.listed":
            await record_listing(event)
            return
        if event.type == "case.erased":
            # Idempotent: finishes an erasure whose key was not destroyed yet when its record was written.
            await keys.erase(event.case_id, domain.timestamp(event.occurred_at))
        now = runtime.clock.now()
        if domain.is_directory_event(event):
            entry, appended = await store.append_to_directory(
                event.event_id, lambda last: domain.directory_entry(event, last, now))
            log.info("directory_appended" if appended else "directory_entry_exists", seq=entry["seq"])
            return
        entry, appended = await store.record(event.case_id, event.event_id,
                                             lambda last: domain.chain_entry(event, last, now), domain.case_updates(event),
                                             opens=event.type == "case.reported")
        log.info("trail_appended" if appended else "trail_entry_exists", seq=entry["seq"])

    # The directory is one chain for every account: its events are appended one at a time, in order.
    runtime.consume(*topics.CASE_TOPICS, topics.IDENTITY, apply=record, serial_topics=(topics.IDENTITY,),
                    description="Every case event and every access event is appended to its case's hash-chained "
                                "trail; every account change and sign-in to the directory's trail")

    settings = runtime.settings

    # Not runtime.consume: a dead letter that cannot be stored must not be dead-lettered again.
    @runtime.broker.subscriber(
        topics.DEADLETTER,
        group_id=settings.group_id + ".deadletters",
        auto_offset_reset=settings.consumer_offset_reset,
        ack_policy=AckPolicy.ACK,
        title="audit:deadletters",
        description="Messages any consumer gave up on are kept for supervisors to inspect",
    )
    async def on_dead_letter(message: KafkaMessage) -> None:
        raw = cast(ConsumerRecord, message.raw_message)  # one record: not a batch subscriber
        headers = record_headers(raw)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(service=settings.service, topic=raw.topic,
                                               partition=raw.partition, offset=raw.offset)
        doc = domain.dead_letter(topic=raw.topic, partition=raw.partition, offset=raw.offset,
                                 key=raw.key, headers=headers, body=message.body, now=runtime.clock.now())
        await keep_dead_letter(store.record_dead_letter, doc, attempts=settings.consumer_attempts,
                               backoff_s=settings.consumer_backoff_s, waiting=waiting)

    waiting = DeadLettersWaiting()
    runtime.details.append(waiting.details)


class DeadLettersWaiting:
    """Dead letters that could not be stored yet (shown on /readyz)."""

    def __init__(self) -> None:
        self.count = 0

    async def details(self) -> dict[str, Any]:
        return {"deadletters_not_recorded": self.count}


async def keep_dead_letter(record: Callable[[dict[str, Any]], Awaitable[bool]], doc: dict[str, Any], *,
                           attempts: int, backoff_s: float, waiting: DeadLettersWaiting) -> str:
    """Store a dead letter, and never drop one: as it is; if the database refuses it (not merely unreachable)
    `attempts` times, as a raw copy (the message in base64, with why it could not be stored); if even that is
    refused, keep trying with backoff, the message unacknowledged and counted on /readyz. Returns how it was stored."""
    failures, wait, counted = 0, backoff_s, False
    current, how = doc, "recorded"
    try:
        while True:
            try:
                first = await record(current)  # with its case's region; the case flagged
                log.info("dead_letter_recorded", first=first, source_topic=doc["source_topic"],
                         consumer=doc["consumer"], raw=how == "recorded_raw")
                return how
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:  # the database is away: wait, never skip a dead letter for that
                log.warning("dead_letter_record_waiting", error_type=type(exc).__name__, retry_in_s=wait)
            except Exception as exc:  # noqa: BLE001 - refused: store a raw copy, and never drop it
                failures += 1
                if failures == attempts and how == "recorded":
                    log.error("dead_letter_stored_raw", error_type=type(exc).__name__, error=describe(exc))
                    current, how = domain.raw_dead_letter(doc, describe(exc)), "recorded_raw"
                elif failures >= attempts:
                    if not counted:
                        waiting.count, counted = waiting.count + 1, True
                    log.error("dead_letter_not_recorded", error_type=type(exc).__name__, error=describe(exc),
                              retry_in_s=wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2 or 0.1, MAX_BACKOFF_S)
    finally:
        if counted:
            waiting.count -= 1
