"""The only module of audit that touches the database: the trail, the case read model and the dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

import structlog
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.audit import domain, records
from shared import consumer, topics
from shared.clock import Clock
from shared.contracts.envelope import Envelope
from shared.logging import describe
from shared.mongo import TRANSIENT_ERRORS as MONGO_TRANSIENT
from shared.mongo import GroupedInserts, Markers
from shared.versions import ConcurrentUpdate, VersionedCollection, set_path

log = structlog.get_logger()

BuildEntry = Callable[[Mapping[str, Any] | None], dict[str, Any]]


# A day with at least this many of the region's matching cases: the search reads the next day of its week alone.
BUSY_DAY = 40
HOURS_READ_ONE_BY_ONE = 8  # a day with cases in this many hours or more is read an hour at a time
# A changed week with more changed days than this is read whole and parted by day, rather than a day at a time.
STALE_DAYS_READ_ONE_BY_ONE = 2
# A changed day with more changed hours than this is read whole and parted by hour, rather than an hour at a time.
STALE_HOURS_READ_ONE_BY_ONE = 3
# A page of the accounts trail reads at most this many blocks of the directory (domain.DIRECTORY_BLOCK entries
# each); one that found fewer of its region's entries than it wanted says where the next page goes on.
DIRECTORY_BLOCKS_PER_PAGE = 20


class TrailContention(Exception):
    """Other writers kept taking the next seq of a case: the consumer retries the event later."""


class AuditStore:
    def __init__(self, db: AsyncDatabase[Any], clock: Clock) -> None:
        self.trail = db["trail"]
        self._trail_inserts = GroupedInserts(self.trail)  # entries of cases appended side by side: one command
        self.cases = db["cases"]
        self.dead_letters = db["deadletters"]
        self.checkpoints = db["checkpoints"]
        self.checkpoint_pages = db["checkpoint_pages"]
        self.directory = db["directory_trail"]
        self.directory_head = db["directory_head"]
        self._directory_inserts = GroupedInserts(self.directory)
        self.directory_heads = VersionedCollection(self.directory_head, clock)
        self._clock = clock
        self.case_versions = VersionedCollection(self.cases, clock)
        # The region's figures week by week (domain.stats_part): a token per report week, changed whenever a
        # case of that week changes, and each region's part of a week kept with the token it was counted at.
        # Every event's entry is chained here and inserted with the batch's others as the consumer's batch ends,
        # before its offsets are committed (`_end_of_batch`; a recruiter's report sends some fifty links, each
        # otherwise an insert of its own), and the case documents are brought up to date every few seconds
        # (`write_heads`): with the new heads, and with what the events of the round tell the read model (their
        # `domain.case_updates`), each document written once per round however many of its events came: a prolific
        # recruiter's report links 25 earlier cases, the next report 24 of the same again; a report's own events
        # (reported, screened, verified, referred, acknowledged) come seconds apart. The heads inserted but not
        # written are noted in one journal document per batch (`head_journal`), which a process starting after a
        # crash writes through with the updates of the case's trail entries (`recover_heads`): no head and no update
        # is left behind its trail.
        self._tips: dict[str, dict[str, Any]] = {}  # case id -> the last entry chained here its document may not show
        self._pending: dict[str, list[tuple[str, BuildEntry, dict[str, Any], list[domain.CaseUpdate]]]] = {}
        self._heads: dict[str, dict[str, Any]] = {}  # case id -> its last entry inserted whose head is not written
        self._updates: dict[str, list[domain.CaseUpdate]] = {}  # case id -> what its inserted entries' events tell
        self._absent: set[str] = set()  # cases whose first entry was appended here with no document found
        # Cases whose head was found stale (another process appended, or a crash left the document behind): their
        # documents take in what every entry of their trail tells, not only the events seen here
        self._from_trail: set[str] = set()
        self._unsure: list[tuple[str, str, BuildEntry, list[domain.CaseUpdate]]] = []  # to append one by one
        self.head_journal = db["head_journal"]
        self._journal_inserts = GroupedInserts(self.head_journal)
        self._journaled: list[str] = []  # this process's journal documents whose heads are not all written yet
        self._unjournaled: set[str] = set()  # cases whose head moved since the last journal document
        self._writing_heads = asyncio.Lock()
        self.stats_weeks = db["stats_weeks"]
        # The days cases were reported on (`reported_day`), each registered before the first case of it is written
        # (once per process): the search reads busy weeks a day at a time, and only days that have cases. A week's
        # document in `stats_weeks` holds, beside its token, one per day changed whenever a case of that day changes:
        # a week whose figures are out of date is counted again from its days' kept parts, reading only the cases of
        # the days that changed.
        self.report_days = db["report_days"]
        self._known_days: set[str] = set()
        # And the hours (`reported_hour`), registered the same way with their week: a day with cases in many hours
        # is read an hour at a time, newest first, until the page is full (a province's day holds hundreds).
        self.report_hours = db["report_hours"]
        self._known_hours: set[str] = set()
        self._touched_days: dict[str, set[str]] = {}  # week -> its days changed in this batch, not yet touched
        self._touched_hours: dict[str, set[str]] = {}  # week -> the hours of those changes
        self._touched_wholes: dict[str, set[str]] = {}  # week -> days changed in an hour not known: counted whole
        self.stats_parts = db["stats_parts"]
        # A region's day's figures hour by hour (`_count_day`), read only when a case of that day changed: a busy day
        # whose current hour changed is counted from its other hours' parts and that hour's cases.
        self.stats_hours = db["stats_hours"]
        self.meta = db["meta"]
        # Backfills done: every case carries its day ("report_days": figures may use days) and its hour
        # ("report_hours": the search may use hours), every directory entry its block ("directory_blocks").
        self.markers = Markers(self.meta)

    async def ensure_indexes(self) -> None:
        # The two unique indexes make appending safe without transactions: one entry per seq, one per event.
        await self.trail.create_index([("case_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        await self.trail.create_index([("case_id", ASCENDING), ("event_id", ASCENDING)], unique=True)
        await self.cases.create_index([("region_path", ASCENDING), ("reported_at", DESCENDING)])
        await self.cases.create_index([("region_path", ASCENDING), ("status", ASCENDING)])
        # Led by fields searches select on: on FerretDB over PostgreSQL an index's first field also gets the index
        # its equality filters can use (infra/local/postgres/lookups.sql).
        await self.cases.create_index([("reported_week", ASCENDING), ("region_path", ASCENDING)])
        await self.cases.create_index([("reported_day", ASCENDING), ("region_path", ASCENDING)])
        await self.cases.create_index([("status", ASCENDING), ("region_path", ASCENDING)])
        await self.report_days.create_index([("week", ASCENDING)])
        await self.cases.create_index([("reported_hour", ASCENDING), ("region_path", ASCENDING)])
        await self.report_hours.create_index([("week", ASCENDING)])
        await self.dead_letters.create_index([("region_path", ASCENDING), ("recorded_at", DESCENDING)])
        await self.dead_letters.create_index([("case_id", ASCENDING)])
        await self.directory.create_index([("trail", ASCENDING), ("seq", ASCENDING)], unique=True)
        await self.directory.create_index([("trail", ASCENDING), ("event_id", ASCENDING)], unique=True)
        await self.directory.create_index([("account_id", ASCENDING), ("seq", ASCENDING)])
        await self.directory.create_index([("block", ASCENDING)])

    # --- the trail ------------------------------------------------------------------------------------------

    async def record(self, case_id: str, event_id: str, build: BuildEntry,
                     updates: list[domain.CaseUpdate], opens: bool = False) -> tuple[dict[str, Any], bool]:
        """Append an event to its case's trail; returns the entry and whether it is new (as far as known: a
        redelivered one is found as it is inserted). The entry is chained on the last entry chained here or, the
        first time, on the case as this process last wrote it (usually no read), and inserted with the batch's
        others as it ends; the case document takes in the head and `updates` with the next `write_heads`. A head
        that is stale (another process appended meanwhile, or a crash left the document behind) only costs a
        collision on (case_id, seq) and a search. `opens`: the event that opens a case (its report), whose document
        is not looked for unless remembered: there is usually none yet (where there is, a redelivery or a report
        that came after its case's other events, seq 1 collides and the trail is searched, as for a stale head)."""
        tip = self._tips.get(case_id)
        if tip is None:
            case = self.case_versions.remembered(case_id) if opens else \
                (await self.case_versions.base_for_write(case_id))[0]  # as this process last wrote it
            tip = self._tips.get(case_id)  # chained meanwhile by another lane (a listing)
            if tip is None and (case is None or not case.get("trail_seq")):
                entry, appended = await self.append(case_id, event_id, build, case=case)  # one it does not know
                if entry["seq"] != int((case or {}).get("trail_seq") or 0) + 1:
                    self._from_trail.add(case_id)  # the trail had more than its document showed
                self._inserted(case_id, entry, updates, absent=case is None)
                await consumer.at_batch_end("trail_heads", self._end_of_batch)
                return entry, appended
            tip = tip or {"seq": case["trail_seq"], "hash": case["trail_hash"]}  # type: ignore[index]
        entry = build(tip)
        self._tips[case_id] = entry
        self._pending.setdefault(case_id, []).append((event_id, build, entry, updates))
        await consumer.at_batch_end("trail_heads", self._end_of_batch)
        return entry, True

    def _inserted(self, case_id: str, entry: dict[str, Any], updates: list[domain.CaseUpdate],
                  absent: bool = False) -> None:
        """An entry is in the trail, its head and its event's updates not in the case document yet (`absent`: there
        was none when it was appended)."""
        for kept in (self._heads, self._tips):
            if (last := kept.get(case_id)) is None or entry["seq"] >= last["seq"]:
                kept[case_id] = entry
        if updates:
            self._updates.setdefault(case_id, []).extend(updates)
        if absent:
            self._absent.add(case_id)
        self._unjournaled.add(case_id)

    async def _insert_pending(self, case_ids: Iterable[str] | None = None) -> None:
        """Insert the chained entries (of `case_ids`, else all) in one ordered command. From the first that collides
        (a redelivered event, or a head another process moved on) the rest are appended one by one, each on the
        trail as it is; so are all of them if the command as a whole is refused, so one bad entry cannot hold the
        others. A database outage leaves them for the next try (the batch's end waits it out before its commit)."""
        wanted = None if case_ids is None else set(case_ids)
        again, self._unsure = _split(self._unsure, lambda item: wanted is None or item[0] in wanted)
        work = [(c, self._pending.pop(c)) for c in list(self._pending if wanted is None else wanted)
                if c in self._pending]
        entries = [entry for _, items in work for _, _, entry, _ in items]
        inserted = len(entries)
        try:
            if entries:
                await self.trail.insert_many([dict(e) for e in entries], ordered=True)
        except BulkWriteError as exc:
            inserted = min((err["index"] for err in exc.details.get("writeErrors", [])), default=0)
        except MONGO_TRANSIENT:
            for case_id, items in reversed(work):
                self._pending[case_id] = items + self._pending.get(case_id, [])
            self._unsure = again + self._unsure
            raise
        except Exception as exc:  # noqa: BLE001 - refused as a whole: each alone below
            log.warning("trail_entries_refused_together", entries=len(entries), error=describe(exc))
            inserted = 0
        at = 0
        for case_id, items in work:
            for event_id, build, entry, updates in items:
                if at < inserted:
                    self._inserted(case_id, entry, updates)
                else:
                    again.append((case_id, event_id, build, updates))
                at += 1
        for case_id in {item[0] for item in again}:
            self._tips.pop(case_id, None)
            self._from_trail.add(case_id)  # collided: its trail holds entries not chained here
        for i, (case_id, event_id, build, updates) in enumerate(again):  # in order: each case's events in theirs
            try:
                entry, _ = await self.append(case_id, event_id, build)
            except MONGO_TRANSIENT:
                self._unsure = again[i:] + self._unsure
                raise
            except Exception as exc:  # noqa: BLE001 - kept as a dead letter: listed for supervisors, never lost
                await self._refused(case_id, event_id, build, exc)
                continue
            self._inserted(case_id, entry, updates)  # a redelivered event's too: its write may not have been done

    async def _refused(self, case_id: str, event_id: str, build: BuildEntry, exc: Exception) -> None:
        """An entry the database refuses for good is stored as a dead letter of audit's (as the consumer would have
        dead-lettered its event), and the case is flagged as needing attention."""
        event = build(None).get("event") or {}
        error = describe(exc)
        log.error("trail_entry_refused", case_id=case_id, event_id=event_id, error=error)
        headers = {topics.HEADER_CASE_ID: case_id, topics.HEADER_EVENT_TYPE: event.get("type", ""),
                   topics.DLQ_CONSUMER: "audit", topics.DLQ_ERROR: error}
        doc = domain.dead_letter(topic="audit.trail", partition=-1, offset=-1, key=case_id.encode(), headers=headers,
                                 body=json.dumps(event, default=str).encode(), now=self._clock.now())
        await self.record_dead_letter({**doc, "_id": f"trail:{case_id}:{event_id}"})

    async def _end_of_batch(self) -> None:
        """The batch's chained entries go in, then its heads are journaled; only then are its offsets committed."""
        await self._insert_pending()
        await self._journal_heads()

    async def _journal_heads(self) -> None:
        """Note the heads inserted since the last note and not written yet in one journal document (before the
        batch's offsets are committed); earlier ones are in earlier notes, kept until their heads are written."""
        moved, self._unjournaled = self._unjournaled, set()
        heads = [{"case_id": case_id, "seq": self._heads[case_id]["seq"], "hash": self._heads[case_id]["hash"]}
                 for case_id in sorted(moved) if case_id in self._heads]
        if not heads:
            return
        note_id = uuid.uuid4().hex
        try:
            await self._journal_inserts.insert({"_id": note_id, "at": domain.timestamp(self._clock.now()),
                                                "heads": heads})
        except BaseException:
            self._unjournaled |= moved  # noted with the next try
            raise
        self._journaled.append(note_id)

    async def write_heads(self) -> int:
        """Write the heads held here and their events' updates into their case documents (heads forward only,
        through version claims), then drop the journal documents they cover; returns how many were written. One
        round at a time; the weeks' figures its writes change are touched once each, as the round ends."""
        async with self._writing_heads:
            began = time.monotonic()
            journaled, self._journaled = self._journaled, []
            held = dict(self._heads)
            updates = {case_id: self._updates.pop(case_id, []) for case_id in held}
            absent, self._absent = self._absent & set(held), self._absent - set(held)
            from_trail, self._from_trail = self._from_trail & set(held), self._from_trail - set(held)
            slots = asyncio.Semaphore(16)  # side by side: their claims go in shared commands

            async def write(case_id: str, entry: dict[str, Any]) -> bool:
                async with slots:
                    try:
                        if case_id in from_trail:
                            updates[case_id] += await self._updates_of_trail(case_id, entry["seq"])
                        # A case first appended here with no document: none to read (another process's insert
                        # meanwhile only costs a collision and a read)
                        await self.project(case_id, entry, updates[case_id],
                                           **({"case": None} if case_id in absent else {}))
                    except Exception as exc:  # noqa: BLE001 - held again by the next round; the journal stays
                        log.warning("trail_head_not_written", case_id=case_id, error=describe(exc))
                        self._updates[case_id] = updates[case_id] + self._updates.get(case_id, [])
                        if case_id in from_trail:
                            self._from_trail.add(case_id)
                        return False
                if self._heads.get(case_id) is entry:
                    del self._heads[case_id]
                    if self._tips.get(case_id) is entry:
                        del self._tips[case_id]  # nothing chained since: the document shows it
                return True

            async with consumer.batch_end():
                written = await asyncio.gather(*(write(case_id, entry) for case_id, entry in held.items()))
            if all(written):
                if journaled:  # every head they name is written (or was, by an event with updates)
                    await self.head_journal.delete_many({"_id": {"$in": journaled}})
            else:
                self._journaled = journaled + self._journaled
            if held:
                log.info("trail_heads_written", cases=sum(written), held=len(held),
                         seconds=round(time.monotonic() - began, 3))
            return sum(written)

    async def recover_heads(self) -> int:
        """At start: write through the heads journaled by a process that stopped before writing them (forward
        only: a head some event has moved past changes nothing) with what every entry of the case's trail up to
        the head tells the read model (its updates are idempotent: the ones written already change nothing), then
        drop those journal documents."""
        notes = await self.head_journal.find({}).to_list()
        latest: dict[str, dict[str, Any]] = {}
        for note in notes:
            for head in note.get("heads", []):
                if head["case_id"] not in latest or head["seq"] > latest[head["case_id"]]["seq"]:
                    latest[head["case_id"]] = {"seq": head["seq"], "hash": head["hash"]}
        slots = asyncio.Semaphore(16)  # side by side, as a round's writes

        async def recover(case_id: str, entry: dict[str, Any]) -> None:
            async with slots:
                await self.project(case_id, entry, await self._updates_of_trail(case_id, entry["seq"]))

        async with consumer.batch_end():
            await asyncio.gather(*(recover(case_id, entry) for case_id, entry in latest.items()))
        if notes:
            await self.head_journal.delete_many({"_id": {"$in": [n["_id"] for n in notes]}})
            log.info("trail_heads_recovered", notes=len(notes), cases=len(latest))
        return len(latest)

    async def _updates_of_trail(self, case_id: str, up_to_seq: int) -> list[domain.CaseUpdate]:
        """What the events of a case's trail entries up to `up_to_seq` tell its read model (an entry whose event
        does not read back as one tells nothing)."""
        return _updates_of(await self.trail.find({"case_id": case_id}, {"event": 1, "seq": 1}).to_list(), up_to_seq)

    async def append(self, case_id: str, event_id: str, build: BuildEntry, attempts: int = 20,
                     case: Mapping[str, Any] | None | Literal["unread"] = "unread") -> tuple[dict[str, Any], bool]:
        """Append the entry `build(last entry)` once per event; returns the event's entry and whether it is new.
        The head is first read from the case document (a read by _id, which every server answers from its
        primary key; FerretDB scans for anything else; `case`: as the caller just read it), else found by
        searching the trail."""

        async def head() -> Mapping[str, Any] | None:
            if case != "unread":
                return case  # type: ignore[return-value]
            return await self.cases.find_one({"_id": case_id}, {"trail_seq": 1, "trail_hash": 1})

        return await _append(self._trail_inserts, "case_id", case_id, event_id, build, attempts, head)

    async def append_batch(self, builds: Mapping[str, tuple[str, BuildEntry]]) -> int:
        """Append one entry to each of many cases' trails (case id -> (event id, build)): each is chained like any
        event that changes nothing but the head, and all go in with the batch's others. Returns how many are new
        (as far as known before they are inserted)."""
        new = 0
        for case_id in sorted(builds):
            event_id, build = builds[case_id]
            new += (await self.record(case_id, event_id, build, []))[1]
        return new

    async def append_to_directory(self, event_id: str, build: BuildEntry, attempts: int = 20
                                  ) -> tuple[dict[str, Any], bool]:
        """The directory trail: one chain for every account, appended like a case's trail, its head kept apart."""
        entry, new = await _append(self._directory_inserts, "trail", domain.DIRECTORY, event_id, build, attempts,
                                   lambda: self.directory_head.find_one({"_id": domain.DIRECTORY}))
        def moved(head: dict[str, Any] | None) -> dict[str, Any] | None:  # forward only
            if head is not None and int(head.get("trail_seq") or 0) >= entry["seq"]:
                return None
            return {**(head or {"_id": domain.DIRECTORY}), "trail_seq": entry["seq"], "trail_hash": entry["hash"]}

        try:  # through version claims (safe with several copies)
            await self.directory_heads.modify(domain.DIRECTORY, moved)
        except ConcurrentUpdate:
            pass  # a head left behind costs the next append a collision and a search, as after a crash
        return entry, new

    async def directory_trail(self, region: str, account_id: str | None, after_seq: int, limit: int,
                              before_seq: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """Up to `limit` entries of the region after `after_seq` in chain order, or (`before_seq` given; 0: from the
        newest) before it, newest first; and where the next page goes on from when this one stopped short of `limit`
        with more of the chain unread (None: nothing more). One account's entries are read by its id; the region's a
        block at a time, at most DIRECTORY_BLOCKS_PER_PAGE."""
        newest = before_seq is not None

        def mine(entry: Mapping[str, Any]) -> bool:
            seq = int(entry["seq"])
            return entry.get("trail") == domain.DIRECTORY and \
                (seq < before_seq if newest and before_seq else newest or seq > after_seq) and \
                bool({region, domain.UNSCOPED} & set(entry.get("region_path") or []))

        def ordered(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
            return sorted(entries, key=lambda e: e["seq"], reverse=newest)

        if account_id:
            return ordered(e for e in await self.directory.find({"account_id": account_id}).to_list()
                           if mine(e))[:limit], None
        if not await self.markers.done("directory_blocks"):
            return ordered(e for e in await self.directory.find({"trail": domain.DIRECTORY}).to_list()
                           if mine(e))[:limit], None
        head_seq = (await self._directory_head()).seq
        if newest:  # from the block of the newest entry (one more: an append the head lags), downwards
            first = domain.directory_block(before_seq - 1 if before_seq else head_seq + domain.DIRECTORY_BLOCK)
            blocks = range(max(first, 0), max(first - DIRECTORY_BLOCKS_PER_PAGE, -1), -1)
        else:
            first = domain.directory_block(after_seq + 1)
            last = domain.directory_block(max(head_seq, 1)) + 1
            blocks = range(first, min(first + DIRECTORY_BLOCKS_PER_PAGE, last + 1))
        found: list[dict[str, Any]] = []
        for block in blocks:
            found += ordered(e for e in await self.directory.find({"block": block}).to_list() if mine(e))
            if len(found) >= limit:
                return found[:limit], None
        if len(blocks) < DIRECTORY_BLOCKS_PER_PAGE or (newest and blocks[-1] == 0):
            return found, None  # the whole chain that way was read
        return found, blocks[-1] * domain.DIRECTORY_BLOCK + (1 if newest else domain.DIRECTORY_BLOCK)

    async def whole_directory(self) -> tuple[list[dict[str, Any]], domain.TrailHead]:
        head = await self._directory_head()  # the head first: see verify
        entries = await self.directory.find({"trail": domain.DIRECTORY}).sort([("seq", ASCENDING)]).to_list()
        return entries, head

    async def directory_after(self, seq: int) -> tuple[list[dict[str, Any]], domain.TrailHead]:
        """The head, then the directory's entries after `seq` in order, read a block at a time."""
        head = await self._directory_head()  # the head first: see verify
        found, block = [], domain.directory_block(seq + 1)
        while batch := [e for e in await self.directory.find({"block": block}).to_list()
                        if e.get("trail") == domain.DIRECTORY and int(e["seq"]) > seq]:
            found += batch
            block += 1
        return sorted(found, key=lambda e: e["seq"]), head

    async def directory_checked(self) -> dict[str, Any] | None:
        """How far the directory's chain was last found intact: `seq` and `hash` of that entry, and `whole_at`,
        when it was last recomputed from its first entry (None: never, or not since blocks)."""
        if not await self.markers.done("directory_blocks"):
            return None
        return await self.meta.find_one({"_id": "directory_checked"})

    async def note_directory_checked(self, seq: int, hash_: str, whole_at: str) -> None:
        await self.meta.replace_one({"_id": "directory_checked"}, {"seq": seq, "hash": hash_, "whole_at": whole_at},
                                    upsert=True)

    async def _directory_head(self) -> domain.TrailHead:
        return domain.head_of(await self.directory_head.find_one({"_id": domain.DIRECTORY}) or {})

    async def backfill_directory_blocks(self) -> int:
        """Directory entries recorded before they carried their block get it (once per database; the block is its
        seq's and not hashed). Returns how many were given one."""
        if await self.markers.done("directory_blocks"):
            return 0
        given = 0
        async for entry in self.directory.find({"trail": domain.DIRECTORY}, {"seq": 1, "block": 1}):
            if "block" not in entry:
                await self.directory.update_one({"_id": entry["_id"]},
                                                {"$set": {"block": domain.directory_block(entry["seq"])}})
                given += 1
        await self.markers.mark("directory_blocks")
        return given

    async def trail_of(self, case_id: str) -> list[dict[str, Any]]:
        return await self.trail.find({"case_id": case_id}).sort([("seq", ASCENDING)]).to_list()

    # --- the case read model --------------------------------------------------------------------------------

    async def project(self, case_id: str, entry: Mapping[str, Any], updates: list[domain.CaseUpdate],
                      case: dict[str, Any] | None | Literal["unread"] = "unread", remembered: bool = False) -> None:
        """Bring the case document up to date with an entry; idempotent and tolerant of reordering.

        One read by _id (none when the caller passes the `case` it just read) and one version claim: of two
        processes projecting into one case at once, one writes and the other reads again and adds its entry to
        what the first wrote. `remembered`: `case` is as this process last wrote it (`VersionedCollection.remembered`),
        so "nothing to change" is checked against the stored one."""
        now = self._clock.now()
        stamp = domain.timestamp(now)
        known = case
        for attempt in range(20):
            # First as this process last wrote it, if it did (no read); after a refused write as stored.
            if known != "unread":
                case, from_memory = known, remembered
            elif attempt == 0:
                case, from_memory = await self.case_versions.base_for_write(case_id)
            else:
                case, from_memory = await self.case_versions.load(case_id), False
            known = "unread"
            new = case is None
            if case is None:
                case = {"_id": case_id, **domain.new_case(now), "version": 0}
            fields = domain.taken_in(case, updates, entry)
            reported_at = fields.get("reported_at") or case.get("reported_at")
            week, day, hour = (domain.report_week(reported_at), domain.report_day(reported_at),
                               domain.report_hour(reported_at))
            if not fields and not new:
                if from_memory:
                    continue  # "nothing to change" is only believed of the stored document
                if updates:  # perhaps a redelivery after a crash between the write below and the touch
                    await self.touch_figures([(week, day, hour)])
                return
            if "reported_day" in fields:
                await self.note_day(day)
            if "reported_hour" in fields:
                await self.note_hour(hour)
            changed = dict(case)
            for path, value in {**fields, "updated_at": stamp}.items():
                set_path(changed, path, value)
            try:
                await self.case_versions.write(case_id, {**changed, "version": int(case["version"]) + 1},
                                               base=None if new else case)
                if updates or "reported_week" in fields or "reported_day" in fields:  # after the write: see `stats`
                    before = (case.get("reported_week") or domain.NO_WEEK, case.get("reported_day") or domain.NO_WEEK,
                              case.get("reported_hour") or domain.NO_WEEK)
                    await self.touch_figures({(week, day, hour)} if new else {(week, day, hour), before})
                if fields.get("region_path") and not case.get("region_path"):
                    await self.claim_dead_letters(case_id, fields["region_path"])
                return
            except DuplicateKeyError:
                continue  # another process projected first: take in its write and try again
        raise TrailContention(f"could not project {entry.get('event_id')} into case {case_id}")

    async def case(self, case_id: str) -> dict[str, Any] | None:
        """The case's document; a case whose trail holds entries its document does not show yet (taken in every
        few seconds, `write_heads`; none in a case's first seconds) is shown as its trail tells it."""
        doc = await self.cases.find_one({"_id": case_id})
        if doc is not None:
            return doc
        entries = await self.trail.find({"case_id": case_id}, {"event": 1, "seq": 1, "hash": 1}).to_list()
        if not entries:
            return None
        last = max(entries, key=lambda e: int(e.get("seq") or 0))
        case = {"_id": case_id, **domain.new_case(self._clock.now()), "version": 0}
        for path, value in domain.taken_in(case, _updates_of(entries, last["seq"]), last).items():
            set_path(case, path, value)
        return case

    async def note_day(self, day: str) -> None:
        """Register a day cases were reported on (before a case of it is written: a search never misses one)."""
        if day in self._known_days or day == domain.NO_WEEK:
            return
        try:
            await self.report_days.insert_one({"_id": day, "week": domain.week_of(day)})
        except DuplicateKeyError:
            pass  # known already (another case, another process)
        self._known_days.add(day)

    async def note_hour(self, hour: str) -> None:
        """Register an hour cases were reported in (before a case of it is written, as `note_day`)."""
        if hour in self._known_hours or hour == domain.NO_WEEK:
            return
        try:
            await self.report_hours.insert_one({"_id": hour, "week": domain.week_of(hour[:10])})
        except DuplicateKeyError:
            pass
        self._known_hours.add(hour)

    async def search(self, region: str, filters: dict[str, Any], offset: int, limit: int,
                     start: datetime | None = None, end: datetime | None = None) -> list[dict[str, Any]]:
        """The region's cases matching, newest report first, read from the newest report week until the page is
        full (an equality on the week or the day is what narrows what FerretDB reads; a sort over the whole region
        would read every case of it). Within a week a day at a time while its days are busy (a year of a province's
        reports puts thousands in a week; the page wants fifty), else the rest of the week in one read, and the weeks
        after a quiet one whole."""
        known = [d["_id"] for d in await self.stats_weeks.find({}, {"_id": 1}).to_list()]
        whole, partial = domain.weeks_between(start, end, sorted(known))
        weeks = sorted((w for w in whole + partial if w != domain.NO_WEEK), reverse=True)
        wanted, by_day = offset + limit, True
        found: list[dict[str, Any]] = []
        for week in weeks:
            read: list[str] = []
            days: list[str] = []
            in_week = 0
            if by_day:
                known_days = {d["_id"] for d in await self.report_days.find({"week": week}, {"_id": 1}).to_list()}
                hours: dict[str, list[str]] = {}  # the week's registered hours by day: how spread a day's cases are
                if await self.markers.done("report_hours"):
                    for d in await self.report_hours.find({"week": week}, {"_id": 1}).to_list():
                        hours.setdefault(d["_id"][:10], []).append(d["_id"])
                days = [day for day in domain.days_of(week, start, end) if day in known_days or day in hours]
                for day in days:
                    if len(hours.get(day, ())) >= HOURS_READ_ONE_BY_ONE:  # a busy day: an hour at a time
                        docs = []
                        for hour in sorted(hours[day], reverse=True):
                            docs += await self._search_read(region, {"reported_hour": hour}, filters)
                            if len(found) + len(docs) >= wanted:
                                break
                    else:
                        docs = await self._search_read(region, {"reported_day": day}, filters)
                    found += docs
                    in_week += len(docs)
                    read.append(day)
                    if len(found) >= wanted or len(docs) < BUSY_DAY:
                        break
            if len(found) < wanted and (len(read) < len(days) or not days):
                # The rest of the week at once (a case written before it carried its day is found here, and in no day)
                docs = [d for d in await self._search_read(region, {"reported_week": week}, filters)
                        if d.get("reported_day") not in read]
                found += docs
                in_week += len(docs)
            if len(found) >= wanted:
                break
            by_day = in_week >= 3 * BUSY_DAY  # a quiet week: the next one is likely read at once too
        if len(found) < wanted and domain.NO_WEEK in whole:  # no report time: last, as a sort puts them
            found += await self._search_read(region, {"reported_week": domain.NO_WEEK}, filters)
        return found[offset:offset + limit]

    async def _search_read(self, region: str, where: dict[str, Any], filters: dict[str, Any]) -> list[dict[str, Any]]:
        docs = await self.cases.find({"region_path": region, **where, **filters}).to_list()
        docs.sort(key=lambda d: d["_id"])
        docs.sort(key=lambda d: d.get("reported_at") or "", reverse=True)  # stable: ties stay in _id order
        return docs

    # --- the region's figures -------------------------------------------------------------------------------

    async def touch_figures(self, marks: Iterable[tuple[str, ...]]) -> None:
        """A case of these report weeks, days and hours (`(week, day, hour)`; a mark without an hour makes its whole
        day counted again) changed: their kept figures are out of date. Called after the case is written, so figures
        counted from a token read before the touch are counted again later. In a consumer's batch each week is
        touched once, when the whole batch is written (a crash before that redelivers the batch, and `project`
        touches the week, day and hour of an event it finds already projected)."""
        for week, day, *hour in marks:
            if day != domain.NO_WEEK:
                self._touched_days.setdefault(week, set()).add(day)
                if hour and hour[0] != domain.NO_WEEK:
                    self._touched_hours.setdefault(week, set()).add(hour[0])
                else:
                    self._touched_wholes.setdefault(week, set()).add(day)
            await consumer.at_batch_end(("stats_week", week), lambda week=week: self._touch_week(week))

    async def _touch_week(self, week: str) -> None:
        """The changed hours' tokens (on their `report_hours` entries) and the days' changed whole (on their
        `report_days` entries) first; then one write: the week's token and its changed days' (kept in the week's
        document, so a reader that sees the week's new token sees its days' too, and then their hours'). Hour
        tokens are not kept in the week's document: every view reads every week's (a year of hours is thousands of
        values to decode)."""
        token = uuid.uuid4().hex
        for hour in sorted(self._touched_hours.pop(week, ())):
            await self.report_hours.update_one({"_id": hour}, {"$set": {"token": token}})  # registered before
        for day in sorted(self._touched_wholes.pop(week, ())):
            await self.report_days.update_one({"_id": day}, {"$set": {"whole": token}})
        days = {f"days.{day}": token for day in sorted(self._touched_days.pop(week, ()))}
        for upsert in (True, False):  # two first touches of a week at once: one inserts, the other updates
            try:
                await self.stats_weeks.update_one({"_id": week}, {"$set": {"token": token, **days}}, upsert=upsert)
                return
            except DuplicateKeyError:
                continue

    async def stats(self, region: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
        """The figures of the region's cases reported in [start, end): each whole week's part as kept (counted
        again when a case of the week changed since, from its days' kept parts), the weeks cut by a bound counted
        case by case."""
        weeks = {d["_id"]: d for d in await self.stats_weeks.find({}).to_list()}
        tokens = {week: doc.get("token") for week, doc in weeks.items()}
        whole, partial = domain.weeks_between(start, end, sorted(tokens))

        async def kept(week: str) -> dict[str, Any]:
            key = f"{region}|{week}"
            kept = await self.stats_parts.find_one({"_id": key})
            if kept is not None and kept.get("form") != domain.PARTS_FORM:
                kept = None  # kept by an earlier release in another form: counted again, once
            if kept is not None and kept.get("token") == tokens[week]:
                return json.loads(kept["part"])
            counted, days = await self._count_week(region, week, json.loads((kept or {}).get("days") or "{}"),
                                                   weeks[week].get("days") or {})
            try:
                await self.stats_parts.replace_one({"_id": key}, {
                    "token": tokens[week], "part": json.dumps(counted), "days": json.dumps(days),
                    "form": domain.PARTS_FORM}, upsert=True)
            except DuplicateKeyError:
                pass  # another reader kept it first
            return counted

        async def cut(week: str) -> dict[str, Any]:
            low, high = start and domain.timestamp(start), end and domain.timestamp(end)
            return domain.stats_part([r for r in await self._stats_rows(region, {"reported_week": week})
                                      if (not low or r["reported_at"] >= low) and (not high or r["reported_at"] < high)])

        parts = await asyncio.gather(*(kept(w) for w in whole), *(cut(w) for w in partial))
        return domain.merge_parts(parts)

    async def _count_week(self, region: str, week: str, kept: dict[str, list[Any]], day_tokens: dict[str, str]
                          ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        """A week's figures counted anew, and its days' parts to keep with them (day -> [token, part]): each day's
        part as kept unless a case of that day changed since, and a changed day from its hours' kept parts but those
        of the hours that changed (`_count_day`), so a busy week whose current hour changed costs that hour's cases,
        not the day's or the week's. Where most days changed (the first count of a week) the week is read at once and
        parted by day; while older case documents are being given their day, case by case and no days kept."""
        if week == domain.NO_WEEK or not await self.markers.done("report_days"):
            return domain.stats_part(await self._stats_rows(region, {"reported_week": week})), {}
        # Every day of the week that has cases (registered before its first case was written), with its token (none
        # while no case of it has changed since it was registered).
        registered = await self.report_days.find({"week": week}).to_list()
        tokens = {d["_id"]: day_tokens.get(d["_id"]) for d in registered}
        wholes = {d["_id"]: d.get("whole") for d in registered}
        stale = [day for day, token in tokens.items() if day not in kept or kept[day][0] != token]
        if len(stale) > STALE_DAYS_READ_ONE_BY_ONE:
            rows = await self._stats_rows(region, {"reported_week": week})
            by_day: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_day.setdefault(row.get("reported_day") or domain.NO_WEEK, []).append(row)
            return domain.stats_part(rows), {day: [token, domain.stats_part(by_day.get(day, []))]
                                             for day, token in tokens.items()}
        days = {day: kept[day] for day in tokens if day not in stale}
        if stale:
            hours = await self._hours_of(week) if await self.markers.done("report_hours") else None
            counted = await asyncio.gather(*(self._count_day(region, day, None if hours is None else hours.get(day),
                                                             wholes[day]) for day in stale))
            days.update({day: [tokens[day], part] for day, part in zip(stale, counted, strict=True)})
        return domain.merge_parts([entry[1] for entry in days.values()]), days

    async def _hours_of(self, week: str) -> dict[str, dict[str, str | None]]:
        """The week's registered hours (each before its first case was written), by day, with their tokens (none
        while no case of the hour has changed since it was registered)."""
        hours: dict[str, dict[str, str | None]] = {}
        for doc in await self.report_hours.find({"week": week}).to_list():
            hours.setdefault(doc["_id"][:10], {})[doc["_id"]] = doc.get("token")
        return hours

    async def _count_day(self, region: str, day: str, hour_tokens: dict[str, str | None] | None, whole: str | None
                         ) -> dict[str, Any]:
        """A changed day's part: from its hours' parts kept in `stats_hours` (one document per region and day, read
        only when the day changed) and those of its changed hours counted again; or, when none are kept, the day
        was touched whole since (a change whose hour was not known), or many of its hours changed, from the whole
        day read again and parted by hour (kept for next time). `hour_tokens`: the day's registered hours and their
        tokens, read after the week's document (None: cases may not carry their hour yet); `whole`: the day's token
        of its last change in an hour not known."""
        if hour_tokens is None:
            return domain.stats_part(await self._stats_rows(region, {"reported_day": day}))
        key = f"{region}|{day}"
        kept = await self.stats_hours.find_one({"_id": key})
        parts: dict[str, list[Any]] | None = None
        if kept is not None and kept.get("whole") == whole and kept.get("form") == domain.PARTS_FORM:
            parts = json.loads(kept["hours"])
            stale = [hour for hour in hour_tokens if hour not in parts or parts[hour][0] != hour_tokens[hour]]
            if len(stale) > STALE_HOURS_READ_ONE_BY_ONE:
                parts = None
            else:
                counted = await asyncio.gather(*(self._stats_rows(region, {"reported_hour": hour}) for hour in stale))
                parts = {hour: parts[hour] for hour in hour_tokens if hour not in stale} | {
                    hour: [hour_tokens[hour], domain.stats_part(rows)] for hour, rows in zip(stale, counted,
                                                                                             strict=True)}
        if parts is None:
            rows = await self._stats_rows(region, {"reported_day": day})
            by_hour: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_hour.setdefault(row.get("reported_hour") or domain.NO_WEEK, []).append(row)
            if set(by_hour) - set(hour_tokens):  # a case whose hour is not registered (should not happen): none kept
                return domain.stats_part(rows)
            parts = {hour: [token, domain.stats_part(by_hour.get(hour, []))] for hour, token in hour_tokens.items()}
        with contextlib.suppress(DuplicateKeyError):  # another reader kept it first
            await self.stats_hours.replace_one({"_id": key}, {"whole": whole, "hours": json.dumps(parts),
                                                              "form": domain.PARTS_FORM}, upsert=True)
        return domain.merge_parts([part for _, part in parts.values()])

    async def _stats_rows(self, region: str, where: dict[str, str]) -> list[dict[str, Any]]:
        fields = dict.fromkeys((*domain.STATS_FIELDS, "reported_day", "reported_hour"), 1)
        return await self.cases.find({"region_path": region, **where}, fields).to_list()

    async def backfill_report_weeks(self) -> int:
        """Case documents written before they carried their report week, day or hour get them (once per database).
        Returns how many fields were given."""
        given = 0
        for field, of, marker in (("reported_week", domain.report_week, "report_weeks"),
                                  ("reported_day", domain.report_day, "report_days"),
                                  ("reported_hour", domain.report_hour, "report_hours")):
            if await self.markers.done(marker):
                continue
            weeks: set[str] = set()
            async for case in self.cases.find({field: {"$exists": False}}, {"reported_at": 1}):
                if field == "reported_day":
                    await self.note_day(of(case.get("reported_at")))
                if field == "reported_hour":
                    await self.note_hour(of(case.get("reported_at")))
                await self.cases.update_one({"_id": case["_id"], field: {"$exists": False}},
                                            {"$set": {field: of(case.get("reported_at"))}})
                weeks.add(domain.report_week(case.get("reported_at")))
                given += 1
            if field == "reported_week":
                await self.touch_figures((week, domain.NO_WEEK) for week in weeks)
            await self.markers.mark(marker)
        return given

    # --- dead letters ---------------------------------------------------------------------------------------

    async def record_dead_letter(self, doc: dict[str, Any]) -> bool:
        """Store a dead letter under its case's region and flag the case as needing attention.

        A case audit has not seen yet takes its dead letters when it is first projected (`claim_dead_letters`,
        after that write); this side reads the case again after its own insert, so of the two, one sees the other."""
        case_id = doc.get("case_id")
        case = await self.cases.find_one({"_id": case_id}) if case_id else None
        if case and case.get("region_path"):
            doc = {**doc, "region_path": case["region_path"]}
        try:
            await self.dead_letters.insert_one(doc)
        except DuplicateKeyError:
            return False  # already stored: the dead-letter topic was read again
        if case_id and not (case and case.get("region_path")):
            case = await self.cases.find_one({"_id": case_id})
            if case and case.get("region_path"):
                await self.dead_letters.update_one({"_id": doc["_id"]}, {"$set": {"region_path": case["region_path"]}})
        if case is not None:
            await self._flag(case_id, doc["recorded_at"])
        return True

    async def claim_dead_letters(self, case_id: str, region_path: list[str]) -> None:
        """A case seen for the first time takes the dead letters that named it before."""
        letters = await self.dead_letters.find({"case_id": case_id}, {"recorded_at": 1}).to_list()
        if letters:
            await self.dead_letters.update_many({"case_id": case_id}, {"$set": {"region_path": region_path}})
            await self._flag(case_id, max(d["recorded_at"] for d in letters))

    async def _flag(self, case_id: str, at: str) -> None:
        def flagged(case: dict[str, Any] | None) -> dict[str, Any] | None:
            if case is None or (case.get("needs_attention") and (case.get("attention_at") or "") >= at):
                return None
            return {**case, "needs_attention": True, "attention_at": max(at, case.get("attention_at") or "")}

        try:
            case = await self.case_versions.modify(case_id, flagged)
        except ConcurrentUpdate:
            return  # other writers kept moving the case: given up after 20 refused claims, as before
        if case is not None:
            reported_at = case.get("reported_at")
            await self.touch_figures([(case.get("reported_week") or domain.report_week(reported_at),
                                       case.get("reported_day") or domain.report_day(reported_at),
                                       case.get("reported_hour") or domain.report_hour(reported_at))])

    async def dead_letters_page(self, regions: list[str], filters: dict[str, Any], offset: int, limit: int
                                ) -> list[dict[str, Any]]:
        cursor = (self.dead_letters.find({"region_path": {"$in": regions}, **filters})
                  .sort([("recorded_at", DESCENDING), ("_id", DESCENDING)]).skip(offset).limit(limit))
        return await cursor.to_list()

    async def case_ids_in(self, region: str) -> set[str]:
        return {d["_id"] for d in await self.cases.find({"region_path": region}, {"_id": 1}).to_list()}

    # --- checkpoints ----------------------------------------------------------------------------------------

    async def heads(self) -> AsyncIterator[dict[str, Any]]:
        """The head of every case's trail, as the case documents hold it, ordered by case id (streamed)."""
        cursor = (self.cases.find({"trail_seq": {"$gt": 0}}, {"trail_seq": 1, "trail_hash": 1, "region_path": 1})
                  .sort([("_id", ASCENDING)]))
        async for d in cursor:  # the region is counted, not kept in the pages
            yield {"case_id": d["_id"], "seq": d["trail_seq"], "hash": d["trail_hash"],
                   "region_path": d.get("region_path") or []}
        # The directory trail's head last (its id "directory" is no case id), so deleting it whole shows too.
        directory = await self.directory_head.find_one({"_id": domain.DIRECTORY})
        if directory:
            yield {"case_id": domain.DIRECTORY, "seq": directory["trail_seq"], "hash": directory["trail_hash"]}

    async def add_page(self, pages_id: str, page: dict[str, Any]) -> None:
        await self.checkpoint_pages.insert_one({"_id": f"{pages_id}:{page['page']:06d}", "pages_id": pages_id, **page})

    async def drop_pages(self, pages_id: str) -> None:
        await self.checkpoint_pages.delete_many({"pages_id": pages_id})

    async def page_hashes(self) -> dict[str, list[str]]:
        """For every stored set of pages, the hashes recomputed from the pages' heads, in page order (streamed)."""
        found: dict[str, list[tuple[int, str]]] = {}
        async for p in self.checkpoint_pages.find({}, {"pages_id": 1, "page": 1, "heads": 1}):
            found.setdefault(p["pages_id"], []).append((int(p["page"]), records.page_hash(p.get("heads") or [])))
        return {k: [h for _, h in sorted(v)] for k, v in found.items()}

    async def heads_in(self, pages_id: str) -> list[dict[str, Any]]:
        docs = await self.checkpoint_pages.find({"pages_id": pages_id}, {"heads": 1}).to_list()
        return [h for d in docs for h in d.get("heads") or []]

    async def trail_hashes(self, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """The hashes stored in the trail now at the wanted (case_id, seq) places (one streamed pass)."""
        found = {}
        async for d in self.trail.find({}, {"case_id": 1, "seq": 1, "hash": 1}):
            if (key := (d["case_id"], int(d["seq"]))) in wanted:
                found[key] = d["hash"]
        async for d in self.directory.find({"trail": domain.DIRECTORY}, {"seq": 1, "hash": 1}):
            if (key := (domain.DIRECTORY, int(d["seq"]))) in wanted:
                found[key] = d["hash"]
        return found

    async def last_checkpoint(self) -> dict[str, Any] | None:
        return await self.checkpoints.find_one({}, sort=[("_id", DESCENDING)])

    async def add_checkpoint(self, checkpoint: dict[str, Any]) -> bool:
        """Insert keyed by seq: of two writers racing for the same seq, one wins."""
        try:
            await self.checkpoints.insert_one(checkpoint)
        except DuplicateKeyError:
            return False
        return True

    async def checkpoint_chain(self) -> list[dict[str, Any]]:
        return await self.checkpoints.find({}).sort([("_id", ASCENDING)]).to_list()

    async def checkpoints_page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        return await self.checkpoints.find({}).sort([("_id", DESCENDING)]).skip(offset).limit(limit).to_list()

def _split(items: list[Any], chosen: Callable[[Any], bool]) -> tuple[list[Any], list[Any]]:
    """`items` that are `chosen`, and the others, each in their order."""
    yes: list[Any] = []
    no: list[Any] = []
    for item in items:
        (yes if chosen(item) else no).append(item)
    return yes, no


def _updates_of(entries: Iterable[Mapping[str, Any]], up_to_seq: int) -> list[domain.CaseUpdate]:
    """What the events of trail entries up to `up_to_seq` tell the case's read model (an entry whose event does not
    read back as one tells nothing)."""
    updates: list[domain.CaseUpdate] = []
    for entry in sorted(entries, key=lambda e: int(e.get("seq") or 0)):
        if int(entry.get("seq") or 0) > up_to_seq:
            continue
        try:
            event = Envelope.model_validate(domain.from_storable(entry.get("event") or {}))
        except ValueError:
            continue
        updates += domain.case_updates(event)
    return updates


async def _append(inserts: GroupedInserts, key_field: str, key: str, event_id: str, build: BuildEntry, attempts: int,
                  read_head: Callable[[], Awaitable[Mapping[str, Any] | None]]) -> tuple[dict[str, Any], bool]:
    """Append once per event to one chain (the inserter's collection); the unique (key, seq) and (key, event_id)
    indexes make it safe without transactions."""
    collection = inserts.collection
    for attempt in range(attempts):
        last = await _last_entry(collection, key_field, key, read_head if attempt == 0 else None)
        entry = build(last)
        try:
            await inserts.insert(dict(entry))
            return entry, True
        except DuplicateKeyError:
            # Either this event is already recorded (a redelivery) or another writer took the seq (retry).
            existing = await collection.find_one({key_field: key, "event_id": event_id})
            if existing is not None:
                return existing, False
    raise TrailContention(f"could not append {event_id} to the trail of {key} after {attempts} attempts")


async def _last_entry(collection: Any, key_field: str, key: str,
                      read_head: Callable[[], Awaitable[Mapping[str, Any] | None]] | None
                      ) -> Mapping[str, Any] | None:
    if read_head is not None:
        head = await read_head()
        if head is None:
            return None  # a first event; if entries exist after all, seq 1 collides and the retry searches
        if head.get("trail_seq"):
            return {"seq": head["trail_seq"], "hash": head["trail_hash"]}
    return await collection.find_one({key_field: key}, sort=[("seq", DESCENDING)])
