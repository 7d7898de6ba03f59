"""The transactional outbox: state, events to publish and applied event ids change in ONE single-document update.

A relay publishes a change's events right after its write; a sweeper publishes whatever is still pending
(a crash or a broker outage between write and publish), so every event is published at least once.
Entries live in the aggregate document as `outbox.<event_id>` with eShop's states `pending -> published`,
attempts and the last error; `outbox_pending` counts the pending ones so the sweeper finds them with an index.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.clock import Clock, SystemClock
from shared.contracts.envelope import Envelope
from shared.logging import describe

log = structlog.get_logger()

# (topic, key, value, headers) -> awaits the broker's acknowledgement
Publish = Callable[[str, bytes, bytes, dict[str, str]], Awaitable[None]]


@dataclass(frozen=True)
class Outgoing:
    """An event a change causes, and the topic it goes to."""

    topic: str
    event: Envelope


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Any, asyncio.Lock] = {}
        self._users: dict[Any, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Any) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]


# FerretDB v1 applies an update as query-then-replace outside a transaction (handler/msg_update.go), so two
# concurrent updates of one document can lose one. MongoDB's version-guarded update is atomic on its own; this
# process-wide lock per document makes it so on FerretDB too, for one process per service (README, "Design").
document_writes = KeyedLocks()


def _doc_key(collection: AsyncCollection, doc_id: Any) -> tuple[str, Any]:
    return (collection.full_name, doc_id)


class ServerTraits:
    """What the connected server does well; detected once at start (`detect`)."""

    # FerretDB v1 (SQLite) evaluates any filter but a bare {_id: …} by scanning the whole collection, and its
    # conditional update is not atomic anyway: there, read by _id, check in Python and write by _id, all under
    # the document's lock. MongoDB gets the condition in the filter, atomic and indexed.
    conditions_in_filter: bool = True

    @classmethod
    async def detect(cls, client: Any) -> None:
        info = await client.admin.command("buildInfo")
        cls.conditions_in_filter = "ferretdbVersion" not in info
        log.info("database_detected", server="ferretdb" if "ferretdbVersion" in info else "mongodb",
                 version=info.get("version"))


def _field(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


async def update_if(collection: AsyncCollection, doc_id: Any, condition: dict[str, Any],
                    update: dict[str, Any]) -> bool:
    """Apply `update` to one document if its fields equal `condition` (dotted paths); returns whether it did."""
    async with document_writes.hold(_doc_key(collection, doc_id)):
        if ServerTraits.conditions_in_filter:
            result = await collection.update_one({"_id": doc_id, **condition}, update)
            return result.matched_count == 1
        doc = await collection.find_one({"_id": doc_id})
        if doc is None or any(_field(doc, path) != value for path, value in condition.items()):
            return False
        await collection.update_one({"_id": doc_id}, update)
        return True


class ConcurrentUpdate(Exception):
    """The document changed since it was loaded (its version moved): reload and decide again."""


@dataclass
class Change:
    """What a domain decision does to one aggregate document."""

    set: dict[str, Any]
    events: list[Outgoing] = field(default_factory=list)
    push: dict[str, Any] = field(default_factory=dict)


def _entry(out: Outgoing, order: int, now: str) -> dict[str, Any]:
    return {
        "topic": out.topic,
        "key": out.event.case_id,
        "payload": out.event.to_json(),
        "headers": out.event.headers(),
        "type": out.event.type,
        "order": order,
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "created_at": now,
        "published_at": None,
    }


class OutboxRelay:
    def __init__(self, publish: Publish, clock: Clock | None = None, grace_s: float = 1.0) -> None:
        self._publish = publish
        self._clock = clock or SystemClock()
        self._grace_s = grace_s
        self._collections: list[AsyncCollection] = []
        # Documents whose immediate publish failed in this process: retried every sweep, read by _id. A full
        # scan (`outbox_pending > 0`) runs at start and now and then for what a crashed process left behind.
        self._retry: dict[tuple[str, Any], tuple[AsyncCollection, Any]] = {}

    def remember(self, collection: AsyncCollection, doc_id: Any) -> None:
        self._retry[_doc_key(collection, doc_id)] = (collection, doc_id)

    def watch(self, collection: AsyncCollection) -> None:
        if collection not in self._collections:
            self._collections.append(collection)

    async def ensure_indexes(self) -> None:
        for collection in self._collections:
            await collection.create_index([("outbox_pending", ASCENDING)])

    async def deliver(self, collection: AsyncCollection, doc_id: Any,
                      entries: list[tuple[str, Mapping[str, Any]]]) -> int:
        """Publish pending entries of one document, in their order, marking each published; returns how many
        went out. Stops at the first failure (recorded on the entry) so later entries keep their order."""
        sent = 0
        for event_id, entry in sorted(entries, key=lambda kv: kv[1].get("order", 0)):
            try:
                await self._publish(entry["topic"], entry["key"].encode(), entry["payload"].encode(),
                                    dict(entry.get("headers") or {}))
            except Exception as exc:  # noqa: BLE001 - recorded on the entry; the sweeper retries
                await update_if(collection, doc_id, {f"outbox.{event_id}.status": "pending"},
                                {"$inc": {f"outbox.{event_id}.attempts": 1},
                                 "$set": {f"outbox.{event_id}.last_error": describe(exc)}})
                self.remember(collection, doc_id)
                log.warning("outbox_publish_failed", event_id=event_id, case_id=entry.get("key"),
                            correlation_id=(entry.get("headers") or {}).get("correlation-id"),
                            error_type=type(exc).__name__)
                break  # keep the order: later entries of this document wait for this one
            first = await update_if(
                collection, doc_id, {f"outbox.{event_id}.status": "pending"},
                {"$set": {f"outbox.{event_id}.status": "published",
                          f"outbox.{event_id}.published_at": self._clock.now().isoformat()},
                 "$inc": {f"outbox.{event_id}.attempts": 1, "outbox_pending": -1}})
            sent += 1
            log.info("event_published", event_id=event_id, case_id=entry.get("key"), event_type=entry.get("type"),
                     correlation_id=(entry.get("headers") or {}).get("correlation-id"), topic=entry["topic"],
                     first=first)
        return sent

    async def sweep_once(self, full: bool = True) -> int:
        """Publish entries left pending longer than the grace period; returns how many went out.

        full: search every watched collection; else only the documents this process failed to publish."""
        if full:
            candidates = [(c, doc) for c in self._collections
                          async for doc in c.find({"outbox_pending": {"$gt": 0}}, {"outbox": 1}).limit(1000)]
        else:
            candidates = []
            for key, (collection, doc_id) in list(self._retry.items()):
                doc = await collection.find_one({"_id": doc_id}, {"outbox": 1})
                self._retry.pop(key, None)  # re-added by deliver if it fails again
                if doc is not None:
                    candidates.append((collection, doc))
        cutoff = self._clock.now().timestamp() - self._grace_s
        sent = 0
        for collection, doc in candidates:
            due = [(eid, e) for eid, e in (doc.get("outbox") or {}).items()
                   if e.get("status") == "pending" and _created_ts(e) <= cutoff]
            not_yet = any(e.get("status") == "pending" and _created_ts(e) > cutoff
                          for e in (doc.get("outbox") or {}).values())
            if not_yet:
                self.remember(collection, doc["_id"])
            if due:
                sent += await self.deliver(collection, doc["_id"], due)
        return sent

    async def run_sweeper(self, interval_s: float, full_every: int = 30) -> None:
        rounds = 0
        while True:
            try:
                swept = await self.sweep_once(full=rounds % full_every == 0)
                if swept:
                    log.info("outbox_swept", published=swept)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the sweeper outlives a database or broker outage
                log.warning("outbox_sweep_failed", error=describe(exc))
            rounds += 1
            await asyncio.sleep(interval_s)


def _created_ts(entry: Mapping[str, Any]) -> float:
    try:
        return datetime.fromisoformat(entry.get("created_at") or "").timestamp()
    except ValueError:
        return 0.0


class AggregateStore:
    """One document per aggregate, written only through `create` and `change` so the outbox rule always holds."""

    def __init__(self, collection: AsyncCollection, relay: OutboxRelay, clock: Clock | None = None) -> None:
        self.collection = collection
        self.relay = relay
        self._clock = clock or SystemClock()
        relay.watch(collection)

    async def load(self, aggregate_id: Any) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": aggregate_id})

    def _entries(self, events: list[Outgoing], version: int) -> dict[str, dict[str, Any]]:
        now = self._clock.now().isoformat()
        return {o.event.event_id: _entry(o, version * 1000 + i, now) for i, o in enumerate(events)}

    async def create(self, doc: dict[str, Any], events: list[Outgoing] = (), applied: str | None = None  # type: ignore[assignment]
                     ) -> dict[str, Any]:
        """Insert a new aggregate with its outbox; DuplicateKeyError if its _id (or another unique key) exists."""
        entries = self._entries(list(events), 1)
        new = {**doc, "version": 1, "applied": [applied] if applied else [], "outbox": entries,
               "outbox_pending": len(entries)}
        await self.collection.insert_one(new)
        await self._deliver(new["_id"], entries)
        return new

    async def change(self, aggregate_id: Any, version: int, change: Change, applied: str | None = None
                     ) -> int:
        """Apply a change if the document is still at `version`; returns the new version or raises ConcurrentUpdate."""
        new_version = version + 1
        entries = self._entries(change.events, new_version)
        update: dict[str, Any] = {"$set": {**change.set, **{f"outbox.{k}": v for k, v in entries.items()},
                                           "version": new_version}}
        if change.events:
            update["$inc"] = {"outbox_pending": len(change.events)}
        pushes = dict(change.push)
        if applied:
            pushes["applied"] = applied
        if pushes:
            update["$push"] = pushes
        if not await update_if(self.collection, aggregate_id, {"version": version}, update):
            raise ConcurrentUpdate(f"{aggregate_id} is no longer at version {version}")
        await self._deliver(aggregate_id, entries)
        return new_version

    async def apply_once(self, aggregate_id: Any, event_id: str,
                         decide: Callable[[dict[str, Any] | None], Change | None], attempts: int = 10) -> bool:
        """Apply an incoming event at most once: skip it if recorded in `applied`, else decide and write.

        `decide` gets the current document (None if there is none yet) and returns the change, or None for
        "nothing to do". Returns whether something was written.
        """
        for _ in range(attempts):
            doc = await self.load(aggregate_id)
            if doc is not None and event_id in doc.get("applied", ()):
                log.info("event_already_applied", event_id=event_id)
                return False
            change = decide(doc)
            if change is None:
                return False
            try:
                if doc is None:
                    initial = {k: [v] for k, v in change.push.items()}
                    await self.create({"_id": aggregate_id, **change.set, **initial}, change.events, applied=event_id)
                else:
                    await self.change(aggregate_id, doc["version"], change, applied=event_id)
                return True
            except (DuplicateKeyError, ConcurrentUpdate):
                continue  # someone else wrote first: reload, and maybe find the event applied
        raise ConcurrentUpdate(f"could not apply {event_id} to {aggregate_id} after {attempts} attempts")

    async def _deliver(self, aggregate_id: Any, entries: dict[str, dict[str, Any]]) -> None:
        if not entries:
            return
        try:
            await self.relay.deliver(self.collection, aggregate_id, list(entries.items()))
        except Exception as exc:  # noqa: BLE001 - the write stands; the sweeper publishes later
            self.relay.remember(self.collection, aggregate_id)
            log.warning("outbox_deliver_deferred", error_type=type(exc).__name__)
