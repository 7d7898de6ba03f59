"""The only module of verification that touches the database."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.verification import domain, linking
from shared import keyset
from shared.clock import Clock
from shared.mongo import Markers
from shared.outbox import AggregateStore, OutboxRelay, document_writes
from shared.versions import UNREAD, VersionedCollection

# An identifier's entry keeps the references of this many most recently received cases (a report links to at most
# as many, `linking.MAX_LINKS`) and counts the rest, so a common name never grows one document without bound.
INDEX_KEEP = 25
BUCKET_KEEP = 200  # reports of one village on one day that corroboration compares


WATCHLIST_STAMP = "watchlist"
WATCHLIST_REREAD_S = 300.0

QUEUE_ORDER = ("priority_rank", "received_at", "_id")
QUEUE_VIEWS_READY = "queue_views"  # the meta marker: every open case has its queue entry


class QueueView:
    """The verifier's queue as its own small documents (`domain.queue_entry`: no personal data, ~0.4 KB), one per
    case, kept by the case collection's writes (`VersionedCollection.view`). FerretDB sorts in memory, so a poll
    of the queue decoded every waiting case of the region whole (≈ 8.5 KB each, the sealed report): in a burst,
    every poll of every verifier grew with the backlog."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.collection = db["queue"]
        self.markers = Markers(db["queue_meta"])

    async def write(self, doc: dict[str, Any]) -> bool:
        """The case's entry, unless the entry there is of its version or a later one; whether it was written."""
        entry = domain.queue_entry(doc)
        try:  # only over an older version's entry (one of this version or later is there: the insert is refused)
            if entry["version"] == 1:  # a new case's: an insert (FerretDB's upsert reads first, to find none)
                await self.collection.insert_one(entry)
            else:
                await self.collection.replace_one({"_id": entry["_id"], "version": {"$lt": entry["version"]}}, entry,
                                                  upsert=True)
            return True
        except DuplicateKeyError:
            return False

    async def version_of(self, doc_id: Any) -> int:
        entry = await self.collection.find_one({"_id": doc_id}, {"version": 1})
        return int(entry["version"]) if entry else 0

    async def ready(self) -> bool:
        return await self.markers.done(QUEUE_VIEWS_READY)


class CaseStore(AggregateStore):
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock) -> None:
        # The sealed report, read and rewritten whole and never queried into: one value (shared.mongo.packed)
        super().__init__(db["cases"], relay, clock, packed=("report",))
        # _id: keyed hash of an identifier -> the most recent cases that name it (`refs`, one JSON text:
        # `linking.refs_of`), and how many there are
        self.identities = VersionedCollection(db["identities"], clock)
        # _id: "<village>:<day>" -> the cases observed there that day (`refs` as above)
        self.buckets = VersionedCollection(db["village_days"], clock)
        self.queue_view = QueueView(db)
        self.versions.view = self.queue_view  # before the relay's sweeper meets a claim
        relay.watch(self.identities)  # the sweeper repairs and prunes their version claims
        relay.watch(self.buckets)
        self.watchlist = db["watchlist"]
        # Every screened report is checked against the watch list. Read whole each time it cost a decode of every
        # entry ever added (FerretDB pushes no `$in` down), growing with the list; so each process keeps the list
        # with the version of its stamp (one small document, moved on by a version claim after every addition) and
        # reads the list again only when the stamp has moved, or after WATCHLIST_REREAD_S (an addition whose
        # stamp was never moved: its writer died in between).
        self.watch_stamp = VersionedCollection(db["watchlist_stamp"], clock)
        relay.watch(self.watch_stamp)
        self._watch_kept: tuple[int, float, list[dict[str, Any]]] | None = None

    async def ensure_indexes(self) -> None:
        await self.collection.create_index(
            [("status", ASCENDING), ("region_path", ASCENDING), ("priority_rank", ASCENDING), ("received_at", ASCENDING)]
        )
        await self.watchlist.create_index([("region_path", ASCENDING)])
        await self.collection.create_index([("links.case_id", ASCENDING)])
        await self.queue_view.collection.create_index([("status", ASCENDING), ("region_path", ASCENDING)])

    async def backfill_queue(self) -> int:
        """Open cases stored before the queue had entries get theirs (once per database; until then the queue is
        read from the cases). Returns how many were written."""
        if await self.queue_view.ready():
            return 0
        written = 0
        for status in domain.OPEN:  # the queue lists no other status
            async for doc in self.collection.find({"status": status}, {"outbox": 0, "applied": 0}):
                written += await self.queue_view.write(doc)
        await self.queue_view.markers.mark(QUEUE_VIEWS_READY)
        return written

    # The link index is keyed by _id (a digest, a village-day), so a lookup is a primary-key read on any server.

    async def entries_of(self, identity_ids: list[str], bucket_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """The link-index entries of identifier digests and of village-days, each read once by _id (None: no entry
        yet); pass them on to the matches below and to the writes that add a case to them."""
        wanted = {doc_id: collection for collection, doc_ids in ((self.identities, identity_ids),
                                                                  (self.buckets, bucket_ids)) for doc_id in doc_ids}
        # Side by side: a report's ~7 entries cost one round trip's wait, not seven in a row (the verifier's case
        # page and decision wait for them; screening holds the entries' turns while it reads).
        found = await asyncio.gather(*(collection.load(doc_id) for doc_id, collection in wanted.items()))
        return dict(zip(wanted, found))

    @staticmethod
    def identity_matches(identities: list[Any], case_id: str, entries: dict[str, dict[str, Any] | None]
                         ) -> tuple[list[dict[str, Any]], int]:
        """References to OTHER cases sharing one of `identities`, each with the `kind` of identifier shared, and
        how many more cases the entries counted beyond the ones they keep (`entries`: as `entries_of` read them)."""
        matches, beyond = [], 0
        for identity in identities:
            doc = entries.get(identity.digest) or {}
            kept = linking.refs_of(doc)
            matches += [{**ref, "kind": identity.kind} for ref in kept if ref["case_id"] != case_id]
            beyond += max(0, int(doc.get("total", len(kept))) - len(kept))
        return matches, beyond

    async def index_identities(self, ref: dict[str, Any], identities: list[Any],
                               entries: dict[str, dict[str, Any] | None] | None = None) -> None:
        for identity in identities:
            await self._add_ref(self.identities, identity.digest, ref, {"kind": identity.kind}, INDEX_KEEP,
                                (entries or {}).get(identity.digest, UNREAD))

    async def unindex(self, case_id: str, identity_ids: list[str], bucket_ids: list[str]) -> None:
        """Take a case out of the link index: it can no longer be found by its identifiers."""
        for collection, doc_ids in ((self.identities, identity_ids), (self.buckets, bucket_ids)):
            for doc_id in doc_ids:
                await self._remove_ref(collection, doc_id, case_id)

    async def _remove_ref(self, index: VersionedCollection, doc_id: str, case_id: str) -> None:
        async with document_writes.hold((index.collection.full_name, doc_id)):
            await self._remove_ref_once(index, doc_id, case_id)

    @staticmethod
    async def _remove_ref_once(index: VersionedCollection, doc_id: str, case_id: str) -> None:
        def without(doc: dict[str, Any] | None) -> dict[str, Any] | None:
            kept = linking.refs_of(doc)
            if doc is None or not any(r["case_id"] == case_id for r in kept):
                return None
            # the entry keeps no reference to the case (an empty entry names no case)
            return {**linking.with_refs(doc, [r for r in kept if r["case_id"] != case_id]),
                    "total": max(0, int(doc.get("total", 1)) - 1)}

        await index.modify(doc_id, without)

    async def link_entries(self, identity_ids: list[str], bucket_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """The link-index entries of a case's identifiers (with their kind) and of the village-days around its
        own ("bucket"), each read by _id."""
        entries = await self.entries_of(identity_ids, bucket_ids)
        return [(entry.get("kind", ""), entry) for i in identity_ids if (entry := entries[i]) is not None] + \
               [("bucket", entry) for b in bucket_ids if (entry := entries[b]) is not None]

    async def linking_to(self, case_id: str) -> list[str]:
        """Ids of the cases whose links name `case_id` (an erasure's rare query; an index on MongoDB)."""
        return [doc["_id"] async for doc in self.collection.find({"links.case_id": case_id}, {"_id": 1})]

    @staticmethod
    def reported_near(bucket_ids: list[str], case_id: str,
                      entries: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
        """References to other cases of the same village observed around the same days (`entries`: as `entries_of`
        read them)."""
        return [r for bucket_id in bucket_ids for r in linking.refs_of(entries.get(bucket_id))
                if r["case_id"] != case_id]

    async def index_report(self, bucket_id: str, ref: dict[str, Any],
                           entries: dict[str, dict[str, Any] | None] | None = None) -> None:
        await self._add_ref(self.buckets, bucket_id, ref, {}, BUCKET_KEEP, (entries or {}).get(bucket_id, UNREAD))

    @staticmethod
    async def _add_ref(index: VersionedCollection, doc_id: str, ref: dict[str, Any], fields: dict[str, Any],
                       keep: int, known: Any = UNREAD) -> None:
        """Add a case to an index entry: the `keep` most recently received stay, the rest are counted. The cases
        a consumer applies side by side take turns at one entry (a shared recruiter's), so they do not spend their
        retries on each other; other copies of the service are met by the version claim. `known`: the entry as the
        caller just read it, the base of the first attempt (a stale one only costs a DuplicateKeyError and a read)."""
        async with document_writes.hold((index.collection.full_name, doc_id)):
            await CaseStore._add_ref_once(index, doc_id, ref, fields, keep, known)

    @staticmethod
    async def _add_ref_once(index: VersionedCollection, doc_id: str, ref: dict[str, Any], fields: dict[str, Any],
                            keep: int, known: Any = UNREAD) -> None:
        def with_ref(doc: dict[str, Any] | None) -> dict[str, Any] | None:
            doc = doc or {"_id": doc_id, **fields, "total": 0}
            kept = linking.refs_of(doc)
            if any(r["case_id"] == ref["case_id"] for r in kept):
                return None  # already indexed (redelivery or amendment)
            cases = sorted([*kept, ref], key=lambda r: (r.get("received_at") or "", r["case_id"]),
                           reverse=True)[:keep]
            if ref not in cases:
                return None  # older than every case kept (a new report is always the newest): indexed before
            return {**linking.with_refs(doc, cases), "total": int(doc["total"]) + 1}

        await index.modify(doc_id, with_ref, first=known)

    async def watch_entries(self, region_path: list[str]) -> list[dict[str, Any]]:
        """Watch-list entries that apply to a case in `region_path` (entries of its village or any wider region)."""
        regions = set(region_path)
        return [entry for entry in await self._whole_watchlist() if entry["region"] in regions]

    async def _whole_watchlist(self) -> list[dict[str, Any]]:
        stamp = await self.watch_stamp.load(WATCHLIST_STAMP)  # first: an entry stamped by then is in the read below
        version, now = int(stamp["version"]) if stamp else 0, self._clock.now().timestamp()
        kept = self._watch_kept
        if kept is None or kept[0] != version or now - kept[1] > WATCHLIST_REREAD_S:
            kept = self._watch_kept = (version, now, await self.watchlist.find({}).to_list())
        return kept[2]

    async def add_watch_entry(self, entry: dict[str, Any]) -> None:
        await self.watchlist.insert_one(entry)
        # then the stamp moves on (past another addition's too), so every process reads the list again
        await self.watch_stamp.modify(WATCHLIST_STAMP, lambda stamp: stamp or {}, attempts=50)

    async def list_watch_entries(self, region: str, offset: int, limit: int) -> list[dict[str, Any]]:
        return await (self.watchlist.find({"region_path": region}).sort([("added_at", ASCENDING), ("_id", ASCENDING)])
                      .skip(offset).limit(limit).to_list())

    async def queue(self, region: str, filters: dict[str, Any], after: list[Any] | None,
                    limit: int) -> list[dict[str, Any]]:
        """Queue entries (`domain.queue_entry`) of a status (awaiting a decision by default) in `region`: most
        urgent first, then oldest; `after` is the sort key of the last case of the previous page. `filters` on
        the entry's fields."""
        query = {"status": "awaiting_decision", "region_path": region, **filters}
        if after is not None:
            query.update(keyset.after(list(QUEUE_ORDER), after))
        order = [(f, ASCENDING) for f in QUEUE_ORDER]
        if await self.queue_view.ready():
            return await self.queue_view.collection.find(query).sort(order).limit(limit).to_list()
        fields = {"priority": "screening.priority"}  # not backfilled yet: from the cases themselves
        cases = {fields.get(k, k): v for k, v in query.items()}
        return [domain.queue_entry(doc) for doc in await self.collection.find(cases, {"outbox": 0, "applied": 0})
                .sort(order).limit(limit).to_list()]
