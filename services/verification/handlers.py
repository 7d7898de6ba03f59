"""Verification's HTTP routes and Kafka subscribers: parse, load, call the domain, save."""

from collections import OrderedDict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query
from fastapi.responses import JSONResponse

from services.verification import domain, linking
from services.verification.schemas import ETAG, CaseView, QueueItem, WatchEntry
from services.verification.store import CaseStore
from shared import crypto, keyset, regions, topics
from shared.access import AccessLog
from shared.api_models import MAX_LIMIT, Page, decode_cursor, page
from shared.auth import Principal
from shared.contracts import intake
from shared.contracts.envelope import Envelope
from shared.crypto import KeyStore
from shared.http import ApiError, case_erased, errors, invalid, not_found
from shared.outbox import ConcurrentUpdate, KeyedLocks
from shared.service import Runtime

SHOWN_KEPT = 200
SHOWN_FOR_S = 900.0


def routes(runtime: Runtime, store: CaseStore, access_log: AccessLog, keys: KeyStore) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["verification"])
    verifier = runtime.require("verifier")

    async def in_region(case_id: str, principal: Principal) -> dict[str, Any]:
        doc = await store.load(case_id)
        if doc is None or not regions.covers(principal.region, doc["village_code"]):
            raise not_found()
        return doc

    async def link_entries(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The link-index entries the case is filed under (where later reports that share something show)."""
        index = doc.get("index") or {}
        buckets = linking.bucket_ids(intake.CaseReported.model_validate(doc["report"])) \
            if index.get("buckets") and doc.get("report") else []
        return await store.link_entries(index.get("identities", []), buckets)

    # The link-index entries each case page was built from (the last SHOWN_KEPT pages of this process): a decision
    # taken from that page within SHOWN_FOR_S lists the links the verifier was shown, without reading the entries
    # again. A report linked in between is linked all the same (in both trails, and on the case page from then on);
    # the decision records what its verifier saw. A decision without a page here reads them.
    shown: OrderedDict[str, tuple[float, list[tuple[str, dict[str, Any]]]]] = OrderedDict()

    async def both_ways(doc: dict[str, Any]) -> dict[str, Any]:
        """The case with the links of later reports too."""
        entries = await link_entries(doc)
        shown[doc["_id"]] = (runtime.clock.now().timestamp(), entries)
        shown.move_to_end(doc["_id"])
        while len(shown) > SHOWN_KEPT:
            shown.popitem(last=False)
        return domain.with_later_links(doc, entries)

    async def entries_shown(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        at, entries = shown.pop(doc["_id"], (0.0, None))
        if entries is None or runtime.clock.now().timestamp() - at > SHOWN_FOR_S:
            return await link_entries(doc)
        return entries

    @router.get("/queue", response_model=Page[QueueItem], responses=errors(401, 403, 422),
                summary="Cases awaiting a decision in your region, most urgent first, then oldest "
                        "(status=info_requested: those waiting for the reporter's answer)")
    async def queue(
        principal: Annotated[Principal, Depends(verifier)],
        priority: Literal["critical", "high", "medium", "low"] | None = None,
        type: Literal["tppo", "tppm", "np_pmi", "unknown"] | None = None,
        village_code: Annotated[str | None, Query(pattern=r"^\d{2}\.\d{2}\.\d{2}\.\d{4}$")] = None,
        status: Literal["awaiting_decision", "info_requested"] = "awaiting_decision",
        cursor: Annotated[str | None, Query(max_length=500, description="`next` of the previous page: the page "
                                            "continues after its last case, whatever arrived meanwhile")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        filters: dict[str, Any] = {"status": status}
        if priority:
            filters["priority"] = priority
        if type:
            filters["suggested_types"] = type
        if village_code:
            filters["village_code"] = village_code
        after = keyset.decode(cursor, (int, str, str))
        docs = await store.queue(principal.region, filters, after, limit + 1)
        more = len(docs) > limit
        docs = docs[:limit]
        last = docs[-1] if docs else None
        return {"items": [domain.queue_item(d) for d in docs],
                "next": keyset.encode([last["priority_rank"], last["received_at"], last["_id"]]) if more and last
                else None}

    @router.get("/cases/{case_id}", response_model=CaseView,
                responses={200: {"headers": ETAG}, **errors(401, 403, 404)}, summary="A case with its report, screening, links and watch-list hits")
    async def get_case(case_id: str, principal: Annotated[Principal, Depends(verifier)]) -> JSONResponse:
        doc = await both_ways(await in_region(case_id, principal))
        await access_log.viewed(principal, case_id, "case")
        return JSONResponse(domain.verifier_view(doc, await keys.key(case_id)),
                            headers={"ETag": f'"{doc["version"]}"'})

    @router.post("/cases/{case_id}/decision", response_model=CaseView,
                 responses={200: {"headers": ETAG}, **errors(401, 403, 404, 409, 413, 422, 428)},
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
            raise invalid("If-Match", 'must be the case version, e.g. "3"') from exc
        found = await in_region(case_id, principal)
        entries = await entries_shown(found)  # as the verifier's page showed them; a decision does not change them
        doc = domain.with_later_links(found, entries)
        if doc["version"] != expected:
            raise ApiError(409, "version_conflict", "the case changed since you loaded it",
                           {"current": domain.current_state(doc)})
        try:
            change = domain.decide(doc, decision, principal, runtime.clock.now(), await keys.sealer(case_id))
            written = await store.update(found, change)
        except crypto.CaseErased as exc:
            raise case_erased() from exc
        except domain.InvalidTransition as exc:
            raise ApiError(409, "conflict", str(exc),
                           {"current": domain.current_state(doc)}) from exc
        except ConcurrentUpdate as exc:
            current = await store.load(case_id)
            raise ApiError(409, "version_conflict", "another decision was recorded first",
                           {"current": domain.current_state(current)
                            if current else None}) from exc
        doc = domain.with_later_links(written, entries)
        return JSONResponse(domain.verifier_view(doc, await keys.key(case_id)),
                            headers={"ETag": f'"{written["version"]}"'})

    supervisor = runtime.require("supervisor")
    id_key = runtime.settings.identifier_key.get_secret_value().encode()
    label_key = crypto.derived_key(crypto.master_key_from(runtime.settings.master_key.get_secret_value()),
                                   domain.WATCHLIST)

    @router.post("/watchlist", status_code=201, tags=["watchlist"], response_model=WatchEntry,
                 responses=errors(401, 403, 413, 422),
                 summary="Flag a recruiter, a phone number or an unlicensed agency in your region")
    async def add_watch(entry: domain.WatchEntryIn,
                        principal: Annotated[Principal, Depends(supervisor)]) -> dict[str, Any]:
        try:
            doc = domain.watch_entry(entry, principal, runtime.clock.now(), id_key=id_key,
                                     seal=crypto.Sealer(label_key, domain.WATCHLIST))
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc), [{"field": "value", "problem": str(exc)}]) from exc
        await store.add_watch_entry(doc)
        return domain.watch_view(doc, label_key)

    @router.get("/watchlist", tags=["watchlist"], response_model=Page[WatchEntry], responses=errors(401, 403, 422),
                summary="Watch-list entries of your region")
    async def list_watch(principal: Annotated[Principal, Depends(supervisor)], cursor: str | None = None,
                         limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50) -> dict[str, Any]:
        offset = decode_cursor(cursor)
        docs = await store.list_watch_entries(principal.region, offset, limit + 1)
        return page([domain.watch_view(d, label_key) for d in docs], offset, limit)

    return router


def subscribers(runtime: Runtime, store: CaseStore, keys: KeyStore) -> None:
    key = runtime.settings.identifier_key.get_secret_value().encode()
    linking_turns = KeyedLocks()

    async def screen_and_link(event: Envelope) -> None:
        sealed = domain.report_of(event)
        assert sealed is not None
        now = runtime.clock.now()
        case_key = await keys.key(event.case_id)
        report = domain.opened(sealed, case_key, event.case_id)
        if case_key is None and await keys.is_erased(event.case_id):
            # An erased case (a redelivered report) is filed under nothing and links to nothing.
            await store.apply_once(event.case_id, event.event_id,
                                   lambda doc: domain.on_reported(doc, event, now, key=None))
            return
        mine = linking.identities(report, key)
        this_case = linking.case_ref(report, event.case_id)
        # Reports applied side by side that share a person, a recruiter or a village-day take turns from reading
        # the index to adding themselves to it, so the later one finds the earlier one.
        async with linking_turns.hold_all([identity.digest for identity in mine] + [linking.own_bucket(report)]):
            entries = await store.entries_of([i.digest for i in mine], linking.bucket_ids(report))  # each read once
            matches, beyond = store.identity_matches(mine, event.case_id, entries)
            nearby = store.reported_near(linking.bucket_ids(report), event.case_id, entries)
            # The earlier cases are not rewritten (their pages find this one in the index), only told by event.
            await store.index_identities(this_case, mine, entries)
            await store.index_report(linking.own_bucket(report), this_case, entries)
        links = linking.shared_identity_links(matches)
        shared = {link["case_id"] for link in links}
        links += [linking.link_of(o, ["two reporters of the village within a day"], "corroborates")
                  for o in nearby if linking.corroborates(report, o, o["case_id"] in shared)]
        links, more = linking.most_recent(linking.merge_links([], links))
        more += beyond
        hits = linking.watchlist_hits(report, await store.watch_entries(regions.path(report.village_code)), key)
        indexed = {"identities": [identity.digest for identity in mine], "buckets": [linking.own_bucket(report)]}
        await store.apply_once(event.case_id, event.event_id,
                               lambda doc: domain.on_reported(doc, event, now, key=case_key, links=links,
                                                               watch_hits=hits, more_links=more, indexed=indexed),
                               fresh=event.type == "case.reported")  # a new case: no read of a document not there

    async def unfind(event: Envelope) -> None:
        """An erased case leaves the link index, the links of the cases it was linked to and its watch-list hits.
        Each step is idempotent, the case's own change last: a redelivery finishes what a crash left."""
        keys.forget(event.case_id)
        now = runtime.clock.now()
        doc = await store.load(event.case_id)
        if doc is None or event.event_id in doc.get("applied", ()):
            return
        index = doc.get("index") or {}
        await store.unindex(event.case_id, index.get("identities", []), index.get("buckets", []))
        for other in await store.linking_to(event.case_id):  # the later cases that found it when screened
            await store.apply_once(other, f"unlink:{event.event_id}",
                                   lambda current: domain.unlink(current, event.case_id, now))
        await store.apply_once(event.case_id, event.event_id, lambda current: domain.on_erased(current, now))

    async def on_event(event: Envelope) -> None:
        if event.type in ("case.reported", "case.amended"):
            await screen_and_link(event)
        elif event.type == "case.withdrawn":
            now = runtime.clock.now()
            await store.apply_once(event.case_id, event.event_id, lambda doc: domain.on_withdrawn(doc, event, now))
        elif event.type == "case.erased":
            await unfind(event)

    runtime.consume(topics.INTAKE, topics.ACCESS, apply=on_event,
                    description="New and amended reports are screened, linked and enter the verifier's queue; "
                                "an erased case leaves the link index")
