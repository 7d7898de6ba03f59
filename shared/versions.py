"""Versioned documents: every write of a document is first the insert of a claim on its next version.

FerretDB v1 applies an update as a query followed by a replace, outside one transaction
(`internal/handler/msg_update.go`), so two processes updating one document can lose an update, and a condition in
the filter does not make it atomic. An insert against a unique `_id` is atomic on FerretDB and MongoDB alike. So a
document at version n becomes version n+1 only through inserting the claim `<id>#<n+1>` into `<collection>_versions`:
of two writers, exactly one inserts it; the other gets DuplicateKeyError, reloads and decides again.

A new document that causes no events is inserted without a claim (its insert is atomic on its `_id` and leaves
nothing to publish or repair). The claim is the commit record: it holds what the version changes (the top-level fields set and removed, and for
aggregates the events the change causes). The document in the collection is written from the claim right after (a replace by `_id`); a writer that
crashed in between, or a late replace of an older version, is repaired by whoever next meets the claim
(`catch_up`): by the next writer, or by the outbox sweeper. Claims are deleted once they are older than the
retention, fully published and written through, so the claims collection holds only recent changes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import bson
import structlog

from pymongo.asynchronous.collection import AsyncCollection
from pymongo import DeleteOne
from pymongo.errors import DuplicateKeyError

from shared.clock import Clock, SystemClock
from shared.logging import describe
from shared.mongo import GroupedInserts, packed

log = structlog.get_logger()

SUFFIX = "_versions"
# Documents this process wrote last, kept (encoded) as the base of its next write of them, which then needs no read
# (a consumer applying a case's next event, audit appending to a case's trail). Never an answer to a reader.
RECENT = 1000
# Documents this process wrote through itself, with the last version it wrote, as long as it met no other writer of
# them: the sweeper's repair and prune take such a document as showing that version without reading it (a read decodes
# the whole document; they read each document of a claim about ten seconds and ten minutes after it, about eight per
# report). A document whose write met another writer (a refused claim, a write-through that did not match, a catch-up)
# is read as before: only there could FerretDB's query-then-replace land an older version over a newer one late.
THROUGH = 50_000
# The sweeper reads claims a minute at a time (`minute`, an equality FerretDB pushes into its SQL and an index
# answers) rather than by a range of `at` (which FerretDB filters only after decoding every claim it holds); a window
# longer than this is read in one pass instead.
MINUTES_READ_ONE_BY_ONE = 180


UNREAD: Any = object()  # a document the caller has not read (None: read, and there is none)


class ConcurrentUpdate(Exception):
    """The document changed since it was loaded (its version moved): reload and decide again."""


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """`doc` with `value` at a dotted path, as `$set` would write it."""
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = value


def claim_id(doc_id: str, version: int) -> str:
    return f"{doc_id}#{version:010d}"


def minute_of(at: datetime | str) -> str:
    """A claim's minute in UTC, `YYYY-MM-DDTHH:MM` (a timestamp or its ISO text)."""
    when = datetime.fromisoformat(at) if isinstance(at, str) else at
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def minutes_between(first: str, last: str) -> list[str]:
    """Every minute from `first` to `last` (both `minute_of` values), both included."""
    at, end = datetime.fromisoformat(first + "+00:00"), datetime.fromisoformat(last + "+00:00")
    found = []
    while at <= end:
        found.append(at.strftime("%Y-%m-%dT%H:%M"))
        at += timedelta(minutes=1)
    return found


class View(Protocol):
    """A small read model kept beside a versioned collection, one entry per document (e.g. the verifier's queue,
    which would otherwise decode every waiting case's whole document on each poll). Written from each claimed
    version before the document itself, so a document never shows a version its view has not been given; the
    entry carries the version and an older one never replaces a newer."""

    async def write(self, doc: dict[str, Any]) -> bool: ...

    async def version_of(self, doc_id: Any) -> int: ...


class VersionedCollection:
    """One collection whose documents carry `version` and `rev` and are written only through `write`. `packed`: the
    top-level fields (sub-documents, lists) stored as one value each (`shared.mongo.packed`; read back as they were by
    the clients `shared.mongo.connect` makes)."""

    def __init__(self, collection: AsyncCollection, clock: Clock | None = None, recent: int = RECENT,
                 packed: Collection[str] = ()) -> None:
        self.collection = collection
        self._packed = tuple(packed)
        self.claims = collection.database[collection.name + SUFFIX]
        # Claims and first versions of writers at once (a consumer's lanes, concurrent requests) go in one command.
        self._claim_inserts = GroupedInserts(self.claims)
        self._inserts = GroupedInserts(collection)
        self.clock = clock or SystemClock()
        self._recent: OrderedDict[Any, bytes] = OrderedDict()
        self._recent_max = recent
        self._through: OrderedDict[Any, int] = OrderedDict()
        self._contended: OrderedDict[Any, None] = OrderedDict()
        # Pruning: the claims of minutes before this one have been read once (None: not yet in this process, whose
        # first prune reads every old claim, those of earlier versions without a minute too); and earlier minutes
        # that still held a claim that could not go (an event not out yet, a document behind), read again.
        self._pruned_before: str | None = None
        self._prune_again: set[str] = set()
        self.view: View | None = None
        # New documents whose claim is in but whose first version is still being written (`first_through_later`:
        # the writer answers after its claim, one round trip sooner), by id.
        self.first_through_later = False
        self._writing: dict[Any, asyncio.Task[None]] = {}

    async def load(self, doc_id: str) -> dict[str, Any] | None:
        if (writing := self._writing.get(doc_id)) is not None:
            await asyncio.wait([writing])  # its first version, being written through here
        doc = await self.collection.find_one({"_id": doc_id})
        if doc is None and self.first_through_later and \
                await self.claims.find_one({"_id": claim_id(doc_id, 1)}, {"_id": 1}) is not None:
            await self.catch_up(doc_id)  # claimed by a writer (another process) that has not written it yet
            doc = await self.collection.find_one({"_id": doc_id})
        return doc

    def remembered(self, doc_id: Any) -> dict[str, Any] | None:
        """The document as this process last wrote it, if among its recent writes (else None): the base for a next
        write only. If another process wrote it since, that write's claim is refused (the version is taken) and the
        writer reads it again; but "nothing to change" decided on it must be checked against the stored one."""
        raw = self._recent.get(doc_id)
        if raw is None:
            return None
        self._recent.move_to_end(doc_id)
        return bson.decode(raw, codec_options=self.collection.codec_options)  # as a read would return it

    async def base_for_write(self, doc_id: Any) -> tuple[dict[str, Any] | None, bool]:
        """The remembered copy if there is one, else the stored document; and whether it is the remembered copy."""
        doc = self.remembered(doc_id)
        return (doc, True) if doc is not None else (await self.load(doc_id), False)

    def forget(self, doc_id: Any) -> None:
        self._recent.pop(doc_id, None)

    def _stored(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The document as written to the collection: its packed fields as one value each."""
        if not any(isinstance(doc.get(field), Mapping | list) for field in self._packed):
            return doc
        return {k: packed(v) if k in self._packed and isinstance(v, Mapping | list) else v for k, v in doc.items()}

    def _wrote_through(self, doc_id: Any, version: int) -> None:
        if doc_id in self._contended:
            return
        self._through[doc_id] = max(version, self._through.get(doc_id, 0))  # a first version written late
        self._through.move_to_end(doc_id)
        while len(self._through) > THROUGH:
            self._through.popitem(last=False)

    def _met_another_writer(self, doc_id: Any) -> None:
        self._through.pop(doc_id, None)
        self._contended[doc_id] = None
        self._contended.move_to_end(doc_id)
        while len(self._contended) > THROUGH:
            self._contended.popitem(last=False)

    def _remember(self, doc_id: Any, doc: dict[str, Any]) -> None:
        if self._recent_max:
            self._recent[doc_id] = bson.encode(doc, codec_options=self.collection.codec_options)
            self._recent.move_to_end(doc_id)
            while len(self._recent) > self._recent_max:
                self._recent.popitem(last=False)

    async def write(self, doc_id: str, new: dict[str, Any], record: dict[str, Any] | None = None,
                    base: Mapping[str, Any] | None = None, known_new: bool = False) -> dict[str, Any]:
        """Make `new` the document's next version: `base` is the version it was computed from (None for a new
        document), `new["version"]` is base's + 1 (or 1).

        The claim records what changed (top-level fields set and removed) and `record`'s fields (the outbox).
        Returns the claim. Raises DuplicateKeyError if that version is taken (a new document that exists, or another
        writer first), after bringing the document up to date. `known_new`: the caller knows no document of this id
        was ever written (so none can exist whose claims were pruned); with `first_through_later` set, the document
        is then written after this returns."""
        version = int(new["version"])
        new = {**new, "_id": doc_id, "rev": uuid.uuid4().hex}
        changed = {k: v for k, v in new.items() if base is None or k not in base or base[k] != v}
        removed = [k for k in (base or {}) if k not in new]
        now = self.clock.now()
        claim = {"_id": claim_id(doc_id, version), "doc_id": doc_id, "version": version,
                 "base_rev": base.get("rev") if base else None, "at": now.isoformat(), "minute": minute_of(now),
                 "set": changed, "unset": removed, **(record or {})}
        # Stored with what it sets as one BSON value: read only to write a version through, it would otherwise be
        # decoded field by field by FerretDB at every read of the claim (the sweeper's two), some 40 µs each.
        stored = {**claim, "set": bson.encode(changed, codec_options=self.collection.codec_options)}
        self.forget(doc_id)
        if base is None and version == 1 and not (record or {}).get("outbox") and self.view is None:
            # A new document that causes no events needs no claim: its insert is atomic on its _id (of two first
            # writers one inserts, the other gets DuplicateKeyError), and there is nothing to publish or repair.
            try:
                await self._inserts.insert(self._stored(new))
            except DuplicateKeyError:
                await self.catch_up(doc_id)
                raise
            self._remember(doc_id, new)
            return claim
        try:
            await self._claim_inserts.insert(stored)
        except DuplicateKeyError:
            await self.catch_up(doc_id)
            raise
        if known_new and base is None and self.first_through_later and self.view is None:
            # The claim is the commit record: the new document is written through in the background (a reader in
            # this process waits for it, one in another process writes it through from the claim: `load`; a crash
            # leaves it to the sweeper's repair). The next write here builds on it as remembered. Only for an id
            # the caller knows is new: where a document of it might exist (its claims pruned long ago), the writer
            # must learn it from the document's insert before it answers (see `_write_version`).
            self._remember(doc_id, new)
            task = asyncio.create_task(self._first_version_later(doc_id, new, claim))
            self._writing[doc_id] = task
            task.add_done_callback(lambda _, doc_id=doc_id, task=task: self._first_written(doc_id, task))
            return claim
        return await self._write_version(doc_id, new, base, claim)

    def _first_written(self, doc_id: Any, task: asyncio.Task[Any]) -> None:
        if self._writing.get(doc_id) is task:
            del self._writing[doc_id]

    async def _first_version_later(self, doc_id: str, new: dict[str, Any], claim: dict[str, Any]) -> None:
        try:
            if await self._write_through(doc_id, new, None):
                self._wrote_through(doc_id, 1)  # (remembered when claimed: a later version may be remembered now)
            else:
                await self._met_write(doc_id, new, claim)  # a reader or a retry wrote it through from the claim
        except Exception as exc:  # noqa: BLE001 - the claim stands: a reader, the next writer or the repair writes it
            log.warning("version_write_through_deferred", doc_id=doc_id, error=describe(exc))

    async def settle(self, timeout_s: float | None = None) -> None:
        """Wait until the first versions being written through in the background are in the collection (before a
        list query, at shutdown)."""
        if self._writing:
            await asyncio.wait(list(self._writing.values()), timeout=timeout_s)

    async def _write_version(self, doc_id: str, new: dict[str, Any], base: Mapping[str, Any] | None,
                             claim: dict[str, Any]) -> dict[str, Any]:
        """Write a claimed version through to the document (`write`, after its claim is in)."""
        version = int(new["version"])
        if self.view is not None:  # the version is this writer's now; its view first, then the document
            await self.view.write(new)
        if await self._write_through(doc_id, new, base):
            self._remember(doc_id, new)
            self._wrote_through(doc_id, version)
            # No catch-up read: a later version is built on this one's rev, which nobody could read before this
            # write unless a catch-up wrote this claim first, and then the rev no longer matched. (Only FerretDB's
            # query-then-replace could interleave one: the next writer, or the sweeper's repair, writes it through.)
            return claim
        return await self._met_write(doc_id, new, claim)

    async def _met_write(self, doc_id: str, new: dict[str, Any], claim: dict[str, Any]) -> dict[str, Any]:
        """The claimed version's write-through found the document elsewhere than its base: read it and decide."""
        version = int(new["version"])
        self._met_another_writer(doc_id)
        current = await self.collection.find_one({"_id": doc_id}, {"version": 1, "rev": 1})
        if current is not None and int(current["version"]) >= version and current.get("rev") != new["rev"]:
            following = await self.claims.find_one({"_id": claim_id(doc_id, version + 1)}, {"base_rev": 1})
            if following is None or following.get("base_rev") != new["rev"]:
                # The version was written long ago and its claim since deleted: this writer is stale.
                await self.claims.delete_one({"_id": claim["_id"]})
                raise DuplicateKeyError(f"{doc_id} is past version {version}")
            return claim  # written through and built upon already
        if current is None or int(current["version"]) < version:
            await self._replace(doc_id, new)
        await self.catch_up(doc_id, new)  # a newer version written meanwhile must not be hidden by ours
        return claim

    async def modify(self, doc_id: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
                     attempts: int = 20, first: Any = UNREAD) -> dict[str, Any] | None:
        """Write `change(current)` as the document's next version (`current` None: there is none yet); when another
        writer claimed that version first, read the document again and decide again. `change` returns the new
        document without its `version`, or None when there is nothing to write. `first`: the document as the caller
        has just read it, the base of the first attempt (a stale one costs only a refused claim and a read).
        Returns what was written (None: nothing); raises ConcurrentUpdate after `attempts` refused claims."""
        for attempt in range(attempts):
            base = first if attempt == 0 and first is not UNREAD else await self.load(doc_id)
            new = change(base)
            if new is None:
                return None
            new = {**new, "version": int((base or {}).get("version") or 0) + 1}
            try:
                await self.write(doc_id, new, base=base)
                return new
            except DuplicateKeyError:
                continue  # another writer first: decide again on what it wrote
        raise ConcurrentUpdate(f"{doc_id}: another writer came first {attempts} times")

    async def _write_through(self, doc_id: str, new: dict[str, Any], base: Mapping[str, Any] | None) -> bool:
        """The usual case in one statement: the document is still the version the claim was built on (replaced
        only where its `rev` is the base's), or is new (inserted). False when anything else happened (another
        writer, a catch-up, a stale base): `write` then reads the document and decides."""
        if base is None:
            try:
                await self._inserts.insert(self._stored(new))
                return True
            except DuplicateKeyError:
                return False
        if not base.get("rev"):
            return False  # written before versions carried a rev
        result = await self.collection.replace_one({"_id": doc_id, "rev": base["rev"]}, self._stored(new))
        return result.matched_count == 1

    async def catch_up(self, doc_id: str, known: dict[str, Any] | None = None) -> int:
        """Write through every claimed version the document does not show yet; returns its version.
        `known`: the document as the caller just wrote it (saves a read)."""
        self.forget(doc_id)
        self._met_another_writer(doc_id)  # a write left half done, or met by another writer
        doc = known
        version = int(doc["version"]) if doc else await self._version(doc_id)
        while (claim := await self.claims.find_one({"_id": claim_id(doc_id, version + 1)})) is not None:
            if claim["base_rev"] is not None:
                if doc is None or int(doc["version"]) != version:
                    doc = await self.collection.find_one({"_id": doc_id})
                if doc is not None and int(doc["version"]) > version:
                    version = int(doc["version"])  # written meanwhile by its own writer
                    continue
                if doc is None or doc.get("rev") != claim["base_rev"]:
                    log.error("version_claim_unusable", doc_id=doc_id, version=version + 1)
                    break  # not built on what the collection holds (should not happen): leave it to a person
            doc = {k: v for k, v in (doc or {}).items() if k not in claim.get("unset", ())} | self.set_of(claim)
            if self.view is not None:
                await self.view.write(doc)
            await self._replace(doc_id, doc)
            version += 1
        return version

    def set_of(self, claim: Mapping[str, Any]) -> dict[str, Any]:
        """What a stored claim sets: one BSON value, or (a claim written before it was) a document."""
        changed = claim["set"]
        if isinstance(changed, bytes):
            return bson.decode(changed, codec_options=self.collection.codec_options)
        return dict(changed)

    async def _version(self, doc_id: str) -> int:
        current = await self.collection.find_one({"_id": doc_id}, {"version": 1})
        return int(current["version"]) if current else 0

    async def _replace(self, doc_id: str, doc: dict[str, Any]) -> None:
        doc = self._stored(doc)
        try:
            await self.collection.replace_one({"_id": doc_id}, doc, upsert=True)
        except DuplicateKeyError:
            # Two first writes raced to insert it; if it is not there even so, another unique index refused it.
            if (await self.collection.replace_one({"_id": doc_id}, doc)).matched_count == 0:
                raise

    async def repair(self, since: str | None, until: str | None = None) -> int:
        """Write through the changes claimed in [since, until) whose writer stopped before writing the document.

        One read per document, not per claim: a document's versions are written in order, so a document at or past
        its latest claimed version shows every earlier one too, and one behind is brought up to date by catch_up.
        A window of a few minutes is read a minute at a time (claims of other minutes are not decoded at all);
        without `since` (a process's first sweep) every claim is read."""
        repaired = 0
        for doc_id, version in _latest(await self._claims_in(since, until, {"doc_id": 1, "version": 1, "at": 1})):
            if self._through.get(doc_id, 0) >= version:
                continue  # this process wrote it through, meeting nobody (THROUGH)
            if (current := await self._version(doc_id)) < version:
                await self.catch_up(doc_id)  # gives the view each version it writes through
                repaired += 1
            elif self.view is not None and await self.view.version_of(doc_id) < current:
                # The view lags its document: a stalled writer gave it an older version's entry after the newer
                # one (FerretDB runs a conditional replace as a query, then a replace).
                if (doc := await self.load(doc_id)) is not None:
                    await self.view.write(doc)
                repaired += 1
        return repaired

    async def _claims_in(self, since: str | None, until: str | None,
                         projection: dict[str, int]) -> list[dict[str, Any]]:
        """The claims stamped in [since, until) (either end open when None)."""
        last = minute_of(datetime.fromisoformat(until) - timedelta(microseconds=1) if until else self.clock.now())
        if since is not None and len(span := minutes_between(minute_of(since), last)) <= MINUTES_READ_ONE_BY_ONE:
            found = [c for minute in span for c in await self.claims.find({"minute": minute}, projection).to_list()]
        else:
            window = {op: at for op, at in (("$gte", since), ("$lt", until)) if at}
            found = await self.claims.find({"at": window} if window else {}, projection).to_list()
        return [c for c in found if (since is None or c["at"] >= since) and (until is None or c["at"] < until)]

    async def prune(self, retention_s: float, limit: int = 1000, rounds: int = 10) -> int:
        """Delete claims older than the retention whose events are all out and whose document shows them, one read
        per document. The first prune of a process reads every old claim (`limit` at a time, up to `rounds` times);
        later ones read only the minutes that have passed the retention since, each once, and the earlier minutes
        that still held a claim that could not go."""
        cutoff = (self.clock.now() - timedelta(seconds=retention_s)).isoformat()
        if self._pruned_before is None:
            deleted, finished = await self._prune_all(cutoff, limit, rounds)
            if finished:
                self._pruned_before = minute_of(cutoff)  # its claims may be younger than the cutoff: read next time
                # Old claims it had to leave (and those with an event not out yet) are read again by their minute.
                for flag in ("outbox_open", "outbox_failed"):
                    for claim in await self.claims.find({flag: True}, {"at": 1, "minute": 1}).to_list():
                        if claim.get("minute") and claim["at"] < cutoff:
                            self._prune_again.add(claim["minute"])
            return deleted
        now_minute = minute_of(cutoff)
        todo = sorted(self._prune_again | set(minutes_between(self._pruned_before, now_minute)[:-1]))
        if len(todo) > MINUTES_READ_ONE_BY_ONE:  # the process slept through hours (a suspended machine)
            self._pruned_before, self._prune_again = None, set()
            return await self.prune(retention_s, limit, rounds)
        deleted = 0
        for minute in todo:
            claims = await self.claims.find({"minute": minute}, {"doc_id": 1, "version": 1, "at": 1, "outbox_open": 1,
                                                                  "outbox_failed": 1}).to_list()
            settled = [c for c in claims if c["at"] < cutoff and not c.get("outbox_open") and not c.get("outbox_failed")]
            done = await self._written_through(settled)
            if not claims:
                self._prune_again.discard(minute)
            elif len(done) == len(claims):  # the whole minute goes: one statement
                deleted += (await self.claims.delete_many({"minute": minute, "outbox_open": {"$ne": True},
                                                           "outbox_failed": {"$ne": True}})).deleted_count
                self._prune_again.discard(minute)
            else:
                if done:
                    deleted += (await self.claims.bulk_write([DeleteOne({"_id": c["_id"]}) for c in done],
                                                             ordered=False)).deleted_count
                self._prune_again.add(minute)
        self._pruned_before = now_minute
        return deleted

    async def _prune_all(self, cutoff: str, limit: int, rounds: int) -> tuple[int, bool]:
        deleted = 0
        for _ in range(rounds):
            old = await self.claims.find({"at": {"$lt": cutoff}, "outbox_open": {"$ne": True},
                                          "outbox_failed": {"$ne": True}},
                                         {"doc_id": 1, "version": 1, "minute": 1}).limit(limit).to_list()
            done = await self._written_through(old)
            gone = {c["_id"] for c in done}
            self._prune_again.update(c["minute"] for c in old if c.get("minute") and c["_id"] not in gone)
            if done:
                deleted += (await self.claims.bulk_write([DeleteOne({"_id": c["_id"]}) for c in done],
                                                         ordered=False)).deleted_count
            if len(old) < limit:
                return deleted, True
            if not done:
                break
        return deleted, False

    async def _written_through(self, claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Those of `claims` whose document shows their version (one read per document, none for one this process
        wrote through meeting nobody: THROUGH)."""
        current: dict[str, int] = {}
        for doc_id, version in _latest(claims):
            known = self._through.get(doc_id, 0)
            current[doc_id] = known if known >= version else await self._version(doc_id)
        return [c for c in claims if current[c["doc_id"]] >= int(c["version"])]


def _latest(claims: list[dict[str, Any]]) -> list[tuple[Any, int]]:
    """Each document of `claims` with its latest claimed version."""
    latest: dict[Any, int] = {}
    for claim in claims:
        latest[claim["doc_id"]] = max(latest.get(claim["doc_id"], 0), int(claim["version"]))
    return list(latest.items())
