"""The only module of referral that touches the database."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.referral.domain import PRIORITY_RANK, created_day, created_hour, created_week

OPEN_STATUSES = ("created", "acknowledged", "accepted")  # the ones with a next deadline
from shared.clock import Clock
from shared.mongo import Markers
from shared.outbox import AggregateStore, OutboxRelay, Outgoing

_HIDDEN = {"outbox": 0, "applied": 0}
# A day with at least this many referrals of a list: the list reads the next day of its week alone.
BUSY_DAY = 40
# A day with at least this many referrals of a list (as its registry counts them): the list reads it an hour at a
# time, newest first, until the page is full, rather than all of it.
BUSY_HOURS_DAY = 150
_URGENT_FIRST = [("priority_rank", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]


class ReferralStore(AggregateStore):
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock) -> None:
        # Read and rewritten whole, never queried into: one value each (shared.mongo.packed)
        super().__init__(db["referrals"], relay, clock,
                         packed=("persons", "history", "deadlines", "milestones", "escalations"))
        # The days referrals were created on (`created_day`), per unit and per region ("agency_id:<id>",
        # "region_path:<code>"): where a full list walks back from the newest, skipping days it has none of.
        self.days = db["referral_days"]
        self._known_days: set[str] = set()
        # The backfills done (e.g. every referral carries its creation week and hour: lists may read by them).
        self.markers = Markers(db["meta"])
        # Referrals opened per registry entry, not added to its count yet: added every few seconds (`write_counts`),
        # one command per entry however many referrals it gained meanwhile.
        self._day_counts: dict[str, int] = {}
        self._busy_days: set[str] = set()  # registry entries counted busy: not counted on

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("agency_id", ASCENDING), *_URGENT_FIRST[:2]])
        await self.collection.create_index([("region_path", ASCENDING), *_URGENT_FIRST[:2]])
        await self.collection.create_index([("case_id", ASCENDING)])
        await self.collection.create_index([("escalation_pending", ASCENDING), ("next_due_ts", ASCENDING)])
        await self.collection.create_index([("region_path", ASCENDING), ("next_due_ts", ASCENDING)])
        await self.collection.create_index([("region_path", ASCENDING), ("needs_supervisor", ASCENDING)])
        # Led by the fields the inbox and the overdue list select on: on FerretDB over PostgreSQL an index's first
        # field also gets the index its equality filters can use (infra/local/postgres/lookups.sql).
        await self.collection.create_index([("status", ASCENDING), ("agency_id", ASCENDING)])
        await self.collection.create_index([("needs_supervisor", ASCENDING)])
        await self.collection.create_index([("created_day", ASCENDING), ("agency_id", ASCENDING)])
        await self.collection.create_index([("created_week", ASCENDING), ("agency_id", ASCENDING)])
        await self.collection.create_index([("created_hour", ASCENDING), ("agency_id", ASCENDING)])
        await self.days.create_index([("scope", ASCENDING)])

    async def open(self, doc: dict[str, Any], events: list[Outgoing], applied: str) -> bool:
        """Insert a new referral with its outbox; False if it exists (its id is derived from case and agency).
        Its day is registered first, so a referral is never stored on a day the full lists do not know."""
        await self.note_day(doc)
        try:
            await self.create(doc, events, applied=applied)
        except DuplicateKeyError:
            return False
        await self.count_day(doc)
        return True

    async def count_day(self, doc: dict[str, Any]) -> None:
        """Count the referral in its days' counts (`n`), added by `write_counts`, until a day is known to be busy:
        how busy a day is decides whether a list reads it an hour at a time, so past BUSY_HOURS_DAY it is not counted
        on (a busy region's referrals then cost no count at all). A count, not a guard: a crash before the count is
        written leaves the day short, which costs a list some speed, never a referral."""
        for scope in day_scopes(doc):
            entry_id = f"{scope}|{doc['created_day']}"
            if entry_id not in self._busy_days:
                self._day_counts[entry_id] = self._day_counts.get(entry_id, 0) + 1

    async def write_counts(self) -> int:
        """Add what the days gained since the last round to their counts; returns how many were written. A count
        that could not be written is kept for the next round."""
        counts, self._day_counts = self._day_counts, {}
        written = 0
        try:
            for entry_id, n in list(counts.items()):
                counted = await self.days.find_one_and_update({"_id": entry_id}, {"$inc": {"n": n}},
                                                              return_document=ReturnDocument.AFTER)
                del counts[entry_id]
                written += 1
                if counted is not None and int(counted.get("n") or 0) >= BUSY_HOURS_DAY:
                    self._busy_days.add(entry_id)
        finally:
            for entry_id, n in counts.items():  # not written: kept for the next round
                self._day_counts[entry_id] = self._day_counts.get(entry_id, 0) + n
        return written

    async def note_day(self, doc: dict[str, Any]) -> None:
        """Register the referral's day under its unit and each region it is in (once per process and key)."""
        for scope in day_scopes(doc):
            entry_id = f"{scope}|{doc['created_day']}"
            if entry_id in self._known_days:
                continue
            try:
                await self.days.insert_one({"_id": entry_id, "scope": scope, "day": doc["created_day"]})
            except DuplicateKeyError:
                pass  # known already (another referral, another process)
            self._known_days.add(entry_id)

    async def search(self, scope: dict[str, Any], filters: dict[str, Any], offset: int,
                     limit: int) -> list[dict[str, Any]]:
        """Referrals within `scope` (a unit or a region). With a status: most urgent first, then oldest, read one
        priority at a time until the page is full (an equality on the priority narrows what FerretDB reads; a
        sort over the whole unit would read every referral it ever had). Without one: the open ones first in that
        order (a unit's work, never many), then all the others newest first, read by creation week, day or hour
        from the newest until the page is full, so a unit's year of closed referrals is not read for its first
        page. A case's referrals (`case_id`) are few: read at once, in the same order."""
        if "status" in filters:
            return (await self._urgent_first({**filters, **scope}, offset + limit))[offset:offset + limit]
        if "case_id" in filters:
            docs = await self.collection.find({**filters, **scope}, _HIDDEN).to_list()
            return _open_then_newest(docs)[offset:offset + limit]
        found: list[dict[str, Any]] = []
        for status in OPEN_STATUSES:  # every open one is listed first: one read per status, ordered here
            found += await self.collection.find({**filters, **scope, "status": status}, _HIDDEN).to_list()
        found = _open_then_newest(found)
        if len(found) < offset + limit:
            [(field, value)] = scope.items()  # a unit or a region (`_scope`)
            known = await self.days.find({"scope": f"{field}:{value}"}, {"day": 1, "n": 1}).to_list()
            days = sorted({d["day"] for d in known}, reverse=True)
            busy = {d["day"] for d in known if int(d.get("n") or 0) >= BUSY_HOURS_DAY}
            listed = {d["_id"] for d in found}  # one closed since it was read as open is not listed twice

            def closed(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return _open_then_newest([d for d in docs
                                          if d.get("status") not in OPEN_STATUSES and d["_id"] not in listed])

            by_week, by_hour = await self.markers.done("created_weeks"), await self.markers.done("created_hours")
            for week in sorted({created_week(day) for day in days}, reverse=True):
                # A day at a time while the week's days are busy, else the rest of the week in one read; a very
                # busy day an hour at a time.
                week_days, read = [day for day in days if created_week(day) == week], []
                for day in week_days:
                    if by_hour and day in busy:
                        docs = []
                        for hour in range(23, -1, -1):
                            got = await self.collection.find(
                                {**filters, **scope, "created_hour": f"{day}T{hour:02d}"}, _HIDDEN).to_list()
                            docs += got
                            found += closed(got)
                            if len(found) >= offset + limit:
                                break
                    else:
                        docs = await self.collection.find({**filters, **scope, "created_day": day}, _HIDDEN).to_list()
                        found += closed(docs)
                    read.append(day)
                    if len(found) >= offset + limit or (by_week and len(docs) < BUSY_DAY):
                        break
                if len(found) < offset + limit and len(read) < len(week_days):
                    docs = await self.collection.find({**filters, **scope, "created_week": week}, _HIDDEN).to_list()
                    found += closed([d for d in docs if d.get("created_day") not in read])
                if len(found) >= offset + limit:
                    break
        return found[offset:offset + limit]

    async def _urgent_first(self, query: dict[str, Any], enough: int | None) -> list[dict[str, Any]]:
        """Most urgent first, then oldest: one priority at a time, until `enough` (None: all)."""
        found: list[dict[str, Any]] = []
        for rank in sorted(set(PRIORITY_RANK.values())):
            docs = await self.collection.find({**query, "priority_rank": rank}, _HIDDEN).to_list()
            found += sorted(docs, key=lambda d: (str(d.get("created_at") or ""), d["_id"]))
            if enough is not None and len(found) >= enough:
                break
        return found

    async def backfill_created_days(self) -> int:
        """Once per database: referrals stored before they carried their creation day, or week, get them (the
        full lists find the others by them); returns how many."""
        filled = 0
        if not await self.markers.done("created_days"):
            async for doc in self.collection.find({"created_day": {"$exists": False}},
                                                  {"created_at": 1, "agency_id": 1, "region_path": 1}):
                day = created_day(doc["created_at"])
                await self.note_day({**doc, "created_day": day})
                result = await self.collection.update_one({"_id": doc["_id"], "created_day": {"$exists": False}},
                                                          {"$set": {"created_day": day}})
                filled += result.modified_count
            await self.markers.mark("created_days")
        for field, of, marker in (("created_week", created_week, "created_weeks"),
                                  ("created_hour", created_hour, "created_hours")):
            if await self.markers.done(marker):
                continue
            async for doc in self.collection.find({field: {"$exists": False}}, {"created_at": 1}):
                result = await self.collection.update_one({"_id": doc["_id"], field: {"$exists": False}},
                                                          {"$set": {field: of(doc["created_at"])}})
                filled += result.modified_count
            await self.markers.mark(marker)
        return filled

    async def due_for_escalation(self, now_ts: float, limit: int = 1000) -> list[dict[str, Any]]:
        """Referrals whose next deadline has passed without an escalation for it (a scan on FerretDB: periodic)."""
        cursor = self.collection.find({"escalation_pending": True, "next_due_ts": {"$lt": now_ts}},
                                      {"_id": 1}).limit(limit)
        return await cursor.to_list()

    async def needing_attention(self, region: str, now_ts: float, offset: int, limit: int) -> list[dict[str, Any]]:
        """Referrals in a region that are past a deadline or declined with nobody left to take them: unassigned
        first, then the longest overdue. Read as equalities FerretDB hands to PostgreSQL (an `$or` or a range it
        would answer by reading every referral of the region): declined with nobody left; open with their
        deadline's breach already escalated; open with a deadline not yet escalated, kept when it has passed."""
        region_path = {"region_path": region}
        reads = [{**region_path, "needs_supervisor": True},
                 *({**region_path, "status": status, "escalation_pending": False} for status in OPEN_STATUSES),
                 {**region_path, "escalation_pending": True}]
        found: dict[str, dict[str, Any]] = {}
        for query in reads:
            for doc in await self.collection.find(query, _HIDDEN).to_list():
                due = doc.get("next_due_ts")
                if doc.get("needs_supervisor") is True or (isinstance(due, int | float) and due < now_ts):
                    found[doc["_id"]] = doc
        ordered = sorted(found.values(), key=lambda d: (not d.get("needs_supervisor"), d.get("next_due_ts") or 0,
                                                        d["_id"]))
        return ordered[offset:offset + limit]


class CaseStore(AggregateStore):
    """One document per case (`_id` = case id) listing its referrals' standings; it carries `case.closed`."""

    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock) -> None:
        super().__init__(db["cases"], relay, clock)


def _open_then_newest(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open referrals most urgent first, then oldest; then the others, newest first."""
    opened = sorted((d for d in docs if d.get("status") in OPEN_STATUSES),
                    key=lambda d: (d.get("priority_rank", 99), str(d.get("created_at") or ""), d["_id"]))
    rest = sorted((d for d in docs if d.get("status") not in OPEN_STATUSES),
                  key=lambda d: (str(d.get("created_at") or ""), d["_id"]), reverse=True)
    return opened + rest


def day_scopes(doc: dict[str, Any]) -> list[str]:
    """The keys a referral's day is registered under: its unit, and every region it is in."""
    return [f"agency_id:{doc['agency_id']}", *(f"region_path:{r}" for r in doc.get("region_path") or [])]
