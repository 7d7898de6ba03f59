"""Verification's HTTP routes and Kafka subscribers: parse, load, call the domain, save."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query
from fastapi.responses import JSONResponse

from services.verification import domain
from services.verification.store import CaseStore
from shared import regions, topics
from shared.api_models import MAX_LIMIT, decode_cursor, page
from shared.auth import Principal
from shared.contracts.envelope import Envelope
from shared.http import ApiError, not_found
from shared.outbox import ConcurrentUpdate
from shared.service import Runtime


def routes(runtime: Runtime, store: CaseStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["verification"])
    verifier = runtime.require("verifier")

    async def in_region(case_id: str, principal: Principal) -> dict[str, Any]:
        doc = await store.load(case_id)
        if doc is None or not regions.covers(principal.region, doc["village_code"]):
            raise not_found()
        return doc

    @router.get("/queue", summary="Cases awaiting a decision in your region, most urgent first, then oldest")
    async def queue(
        principal: Annotated[Principal, Depends(verifier)],
        priority: Literal["critical", "high", "medium", "low"] | None = None,
        type: Literal["tppo", "tppm", "np_pmi", "unknown"] | None = None,
        village_code: Annotated[str | None, Query(pattern=r"^\d{2}\.\d{2}\.\d{2}\.\d{4}$")] = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        filters: dict[str, Any] = {}
        if priority:
            filters["screening.priority"] = priority
        if type:
            filters["suggested_types"] = type
        if village_code:
            filters["village_code"] = village_code
        offset = decode_cursor(cursor)
        docs = await store.queue(principal.region, filters, offset, limit + 1)
        return page([domain.queue_item(d) for d in docs], offset, limit)

    @router.get("/cases/{case_id}", summary="A case with its report, screening, links and watch-list hits")
    async def get_case(case_id: str, principal: Annotated[Principal, Depends(verifier)]) -> JSONResponse:
        doc = await in_region(case_id, principal)
        return JSONResponse(domain.verifier_view(doc), headers={"ETag": f'"{doc["version"]}"'})

    @router.post("/cases/{case_id}/decision",
                 summary="verify / reject / request_info, with If-Match: the case version you looked at")
    async def decide(
        case_id: str,
        decision: Annotated[domain.Decision, Body()],
        principal: Annotated[Principal, Depends(verifier)],
        if_match: Annotated[str | None, Header(alias="If-Match")] = None,
    ) -> JSONResponse:
        if if_match is None:
            raise ApiError(428, "precondition_required", "If-Match with the case version is required")
        try:
            expected = int(if_match.strip().removeprefix("W/").strip('"'))
        except ValueError as exc:
            raise ApiError(400, "bad_request", "If-Match must be the case version, e.g. \"3\"") from exc
        doc = await in_region(case_id, principal)
        if doc["version"] != expected:
            raise ApiError(409, "version_conflict", "the case changed since you loaded it",
                           {"current": domain.verifier_view(doc)})
        try:
            change = domain.decide(doc, decision, principal, runtime.clock.now())
            new_version = await store.change(case_id, expected, change)
        except domain.InvalidTransition as exc:
            raise ApiError(409, "conflict", str(exc), {"current": domain.verifier_view(doc)}) from exc
        except ConcurrentUpdate as exc:
            current = await store.load(case_id)
            raise ApiError(409, "version_conflict", "another decision was recorded first",
                           {"current": domain.verifier_view(current) if current else None}) from exc
        doc = await store.load(case_id)
        return JSONResponse(domain.verifier_view(doc), headers={"ETag": f'"{new_version}"'})

    return router


def subscribers(runtime: Runtime, store: CaseStore) -> None:
    async def on_intake_event(event: Envelope) -> None:
        now = runtime.clock.now()
        if event.type in ("case.reported", "case.amended"):
            await store.apply_once(event.case_id, event.event_id, lambda doc: domain.on_reported(doc, event, now))
        elif event.type == "case.withdrawn":
            await store.apply_once(event.case_id, event.event_id, lambda doc: domain.on_withdrawn(doc, event, now))

    runtime.consume(topics.INTAKE, apply=on_intake_event,
                    description="New and amended reports are screened and enter the verifier's queue")
