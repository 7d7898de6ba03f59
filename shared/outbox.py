"""The transactional outbox: state, events to publish and applied event ids change in ONE write.

That write is the insert of the aggregate's next version claim (`shared.versions`): the claim holds the new
document and the events the change causes (`outbox.<event_id>`, eShop's states `pending -> published | failed`,
attempts, last error; the message itself as one JSON text `m`, dropped once it is published). A relay publishes a
change's events right after its write; a sweeper publishes whatever is still pending (a crash or a broker outage between write and publish), so every event is published at least once.
An entry that the broker refuses for good (a message over its size limit) is marked `failed` after
`max_attempts`, no longer holds back the aggregate's later events, is counted on `/readyz`, and is sent again by
`python -m shared.outbox resend` once the cause is fixed.

Bounded: an aggregate keeps the ids of the last `APPLIED_WINDOW` events it applied; older ones are kept as one
small marker document each (`<collection>_applied`), so a very late redelivery is still ignored. Outbox entries live
in the claims, which are deleted once published, written through and older than the retention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiokafka.errors import KafkaError, KafkaTimeoutError
from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.clock import Clock, SystemClock
from shared.contracts.envelope import Envelope
from shared.mongo import commands_of
from shared.versions import SUFFIX, ConcurrentUpdate, VersionedCollection, set_path
from shared.logging import describe

log = structlog.get_logger()

# (topic, key, value, headers) -> awaits the broker's acknowledgement
Publish = Callable[[str, bytes, bytes, dict[str, str]], Awaitable[None]]
# Hands a message to the producer and answers with its ack to await (so a claim's entries need not wait in turn)
Send = Callable[[str, bytes, bytes, dict[str, str]], Awaitable[Awaitable[Any]]]

APPLIED_WINDOW = 100  # event ids kept in the aggregate document; older ones become markers
APPLIED_SUFFIX = "_applied"

__all__ = ["AggregateStore", "Change", "ConcurrentUpdate", "KeyedLocks", "OutboxRelay", "Outgoing", "Publish", "Send",
           "document_writes"]


@dataclass(frozen=True)
class Outgoing:
    """An event a change causes, and the topic it goes to."""

    topic: str
    event: Envelope
    headers: Mapping[str, str] = field(default_factory=dict)  # more Kafka headers (`shared/urgency.py`'s mark)


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

    @contextlib.asynccontextmanager
    async def hold_all(self, keys: Iterable[Any]) -> AsyncIterator[None]:
        """Every lock of `keys`, taken in sorted order (two holders of overlapping keys never wait on each other)."""
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(set(keys)):
                await stack.enter_async_context(self.hold(key))
            yield


# Fewer wasted retries inside one process (e.g. a counter's $inc); correctness across processes never rests on it.
document_writes = KeyedLocks()


@dataclass
class Change:
    """What a domain decision does to one aggregate document."""

    set: dict[str, Any]
    events: list[Outgoing] = field(default_factory=list)
    push: dict[str, Any] = field(default_factory=dict)


def applied_to(doc: Mapping[str, Any], change: Change, applied: str | None) -> tuple[dict[str, Any], list[str]]:
    """The document after `change` (its next version), and the applied ids that left the window."""
    new = copy.deepcopy(dict(doc))
    for path, value in change.set.items():
        set_path(new, path, value)
    for name, value in change.push.items():
        new[name] = [*new.get(name, []), value]
    ids = [*doc.get("applied", []), *([applied] if applied else [])]
    evicted, new["applied"] = ids[:-APPLIED_WINDOW], ids[-APPLIED_WINDOW:]
    new["applied_evicted"] = int(doc.get("applied_evicted", 0)) + len(evicted)
    new["version"] = int(doc["version"]) + 1
    return new, evicted


async def _raise(exc: BaseException) -> None:
    raise exc


def is_permanent(exc: BaseException) -> bool:
    """A publish error that retrying will not cure (the broker refuses the message itself)."""
    if isinstance(exc, KafkaError):
        return not exc.retriable and not isinstance(exc, KafkaTimeoutError)
    return not isinstance(exc, OSError | asyncio.TimeoutError)


def _entry(out: Outgoing, order: int, now: str) -> dict[str, Any]:
    """A pending entry as stored: its message as one JSON text (`m`), which FerretDB keeps as one value instead of
    decoding its dozen fields at every read of the claim (a prolific recruiter's report causes some fifty links in
    one claim); `expanded` gives every field back."""
    message = {"topic": out.topic, "key": out.event.case_id, "payload": out.event.to_json(),
               "headers": {**out.event.headers(), **out.headers}, "order": order, "created_at": now}
    return {"m": json.dumps(message, separators=(",", ":")), "type": out.event.type, "status": "pending"}


def expanded(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An outbox entry with every field (`topic`, `key`, `payload`, `headers`, `type`, `order`, `status`,
    `attempts`, `last_error`, `created_at`, `published_at`), whether stored with its message as one text or, written
    before, field by field. A published entry keeps no message."""
    fields = {"attempts": 0, "last_error": None, "published_at": None}
    if "m" in entry:
        return {**fields, **json.loads(entry["m"]), **{k: v for k, v in entry.items() if k != "m"}}
    return {**fields, **entry}


def entries_of(claim: Mapping[str, Any]) -> dict[str, Any]:
    """A claim's outbox entries by event id as stored: field by field, or (once every one went out on the first try,
    `deliver`) as one JSON text of what is left of them."""
    stored = claim.get("outbox") or {}
    return json.loads(stored) if isinstance(stored, str) else dict(stored)


def outbox_record(events: list[Outgoing], now: str) -> dict[str, Any]:
    entries = {o.event.event_id: _entry(o, i, now) for i, o in enumerate(events)}
    return {"outbox": entries, "outbox_open": bool(entries), "outbox_failed": False}


class OutboxRelay:
    def __init__(self, publish: Publish, clock: Clock | None = None, grace_s: float = 1.0, max_attempts: int = 5,
                 retention_s: float = 600.0, send: Send | None = None, background: bool = False,
                 mark_delay_s: float = 0.05, repair_after_s: float = 10.0) -> None:
        self._publish = publish
        self._send = send
        self._background = background
        self._in_turn = KeyedLocks()  # one aggregate's changes go out in the order they were written
        self._publishing: set[asyncio.Task[None]] = set()
        self._clock = clock or SystemClock()
        self._grace_s = grace_s
        self._max_attempts = max_attempts
        self._retention_s = retention_s
        self._stores: list[VersionedCollection] = []
        # The sweeper checks each claim for a writer that stopped halfway: at start every claim (a copy that died
        # just before), then each full sweep those claimed since the last one's bound once they are `repair_after_s`
        # old (their writer has long finished or died, and a claim stamped just before a bound is stored by then).
        self._repair_after_s = repair_after_s
        self._repaired_until: str | None = None
        # Claims whose immediate publish failed in this process: retried every sweep, read by _id. A full scan
        # runs at start and now and then for what a crashed process (or another copy) left behind.
        self._retry: dict[tuple[str, str], tuple[AsyncCollection, str]] = {}
        # Marks of claims whose events all went out on the first try, written together shortly after (one bulk
        # write per claims collection instead of one update per change): by collection, claim id -> update.
        self._marks: dict[str, tuple[AsyncCollection, dict[str, dict[str, Any]]]] = {}
        self._mark_delay_s = mark_delay_s
        self._marking: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()

    def remember(self, claims: AsyncCollection, claim_id: str) -> None:
        self._retry[(claims.full_name, claim_id)] = (claims, claim_id)

    def watch(self, store: VersionedCollection) -> None:
        if all(s.claims.full_name != store.claims.full_name for s in self._stores):
            self._stores.append(store)

    async def ensure_indexes(self) -> None:
        for store in self._stores:
            await store.claims.create_index([("outbox_open", ASCENDING)])
            await store.claims.create_index([("minute", ASCENDING)])  # the sweeper reads claims a minute at a time

    async def deliver(self, claims: AsyncCollection, claim_id: str, entries: list[tuple[str, Mapping[str, Any]]],
                      together: bool = False) -> tuple[int, bool]:
        """Publish pending entries of one claim in their order, then mark them all (and close the claim once
        nothing is pending) in one update; returns how many went out and whether all of them are settled
        (published or failed). With a `send` (the producer's send, answering with the broker's ack to await) the
        entries are all handed to the producer first and their acks awaited together: the idempotent producer
        keeps the order of one key. A transient failure stops the claim there, so later entries are sent again
        with it; an entry refused for good `max_attempts` times is marked failed and skipped. `entries` are all
        the claim's pending ones (the sweeper and the writer both pass them all). `together` (a writer's first
        delivery): if every entry went out, the marks join the next bulk write of marks (`flush_marks`, within
        `mark_delay_s`) instead of an update of their own; a crash before it only means the sweeper sends them again."""
        ordered = sorted(((eid, expanded(e)) for eid, e in entries), key=lambda kv: kv[1].get("order", 0))
        outcomes = await (self._send_all(ordered) if self._send else self._publish_each(ordered))
        sent, settled = 0, True
        marks: dict[str, Any] = {}
        dropped: dict[str, str] = {}
        counts: dict[str, int] = {}
        for (event_id, entry), error in zip(ordered, outcomes, strict=False):
            where = f"outbox.{event_id}"
            context = {"event_id": event_id, "case_id": entry.get("key"),
                       "correlation_id": (entry.get("headers") or {}).get("correlation-id")}
            counts[f"{where}.attempts"] = 1
            if error is not None:
                attempts = int(entry.get("attempts", 0)) + 1
                marks[f"{where}.last_error"] = describe(error)
                if is_permanent(error) and attempts >= self._max_attempts:
                    marks |= {f"{where}.status": "failed", "outbox_failed": True}
                    log.error("outbox_entry_failed", attempts=attempts, error_type=type(error).__name__, **context)
                    continue  # the aggregate's later events are not held back by one the broker refuses
                self.remember(claims, claim_id)
                log.warning("outbox_publish_failed", error_type=type(error).__name__, attempts=attempts, **context)
                settled = False
                break
            marks |= {f"{where}.status": "published", f"{where}.published_at": self._clock.now().isoformat()}
            # Out: its message is no longer needed here, and every later read of the claim (the sweeper's repair
            # and prune) decodes what is left. A prolific recruiter's report causes some fifty links in one claim.
            dropped |= {f"{where}.m": "", f"{where}.payload": "", f"{where}.headers": ""}
            sent += 1
            log.info("event_published", event_type=entry.get("type"), topic=entry["topic"], **context)
        if settled:
            marks["outbox_open"] = False
        if together and settled and sent == len(ordered):
            # Every entry of the claim went out at once: the outbox is rewritten as one text of what is left of the
            # entries, which FerretDB writes, and decodes at each later read of the claim (the sweeper's repair and
            # prune), as one value instead of four per entry: a recruiter's report causes some fifty in one claim.
            now = self._clock.now().isoformat()
            done = {event_id: {"type": entry.get("type"), "status": "published", "published_at": now, "attempts": 1}
                    for event_id, entry in ordered}
            update = {"$set": {"outbox": json.dumps(done, separators=(",", ":")), "outbox_open": False}}
            self._marks.setdefault(claims.full_name, (claims, {}))[1][claim_id] = update
            self._mark_soon()
        else:
            update = {"$set": marks, "$inc": counts, **({"$unset": dropped} if dropped else {})}
            await claims.update_one({"_id": claim_id}, update)
        return sent, settled

    def _mark_soon(self) -> None:
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._mark_while_queued())

    async def _mark_while_queued(self) -> None:
        delay_s = self._mark_delay_s
        while True:
            await asyncio.sleep(delay_s)
            delay_s = self._mark_delay_s if await self.flush_marks() else 1.0
            if not self._marks:
                return  # no await since the check: a mark queued from now on starts a new task

    async def flush_marks(self) -> bool:
        """Write the queued marks: one unordered bulk write per claims collection; False if one failed. What
        fails (a database outage) is queued again for the next flush or sweep. One flush at a time: a caller that
        comes while the background one writes waits for it (the sweeper must not find those claims still open)."""
        async with self._flushing:
            return await self._flush_marks()

    async def _flush_marks(self) -> bool:
        marks, self._marks, written = self._marks, {}, True
        for name, (claims, updates) in marks.items():
            pending = list(updates.items())
            for part in commands_of(pending):  # shared/mongo.py: never one command of many updates
                try:
                    await claims.bulk_write([UpdateOne({"_id": cid}, update) for cid, update in part], ordered=False)
                    pending = pending[len(part):]
                except Exception as exc:  # noqa: BLE001 - the claims stay open until a later flush or the sweeper
                    if isinstance(exc, BulkWriteError):  # the others of this command were written: not again ($inc)
                        refused = {e["index"] for e in exc.details.get("writeErrors", [])}
                        pending = [m for i, m in enumerate(part) if i in refused] + pending[len(part):]
                    log.warning("outbox_marks_deferred", claims=len(pending), error=describe(exc))
                    written = False
                    self._marks[name] = (claims, {**dict(pending), **self._marks.get(name, (claims, {}))[1]})
                    break
        if self._marks:
            self._mark_soon()
        return written

    async def _publish_each(self, ordered: list[tuple[str, Mapping[str, Any]]]) -> list[BaseException | None]:
        """One at a time, each awaited; stops at the first failure that does not mark its entry failed."""
        outcomes: list[BaseException | None] = []
        for _, entry in ordered:
            try:
                await self._publish(entry["topic"], entry["key"].encode(), entry["payload"].encode(),
                                    dict(entry.get("headers") or {}))
                outcomes.append(None)
            except Exception as exc:  # noqa: BLE001 - recorded on the entry; the sweeper retries
                outcomes.append(exc)
                if not (is_permanent(exc) and int(entry.get("attempts", 0)) + 1 >= self._max_attempts):
                    break
        return outcomes

    async def _send_all(self, ordered: list[tuple[str, Mapping[str, Any]]]) -> list[BaseException | None]:
        """Every entry handed to the producer in order, then all acks awaited at once."""
        assert self._send is not None
        acks: list[Awaitable[Any]] = []
        for _, entry in ordered:
            try:
                acks.append(await self._send(entry["topic"], entry["key"].encode(), entry["payload"].encode(),
                                             dict(entry.get("headers") or {})))
            except Exception as exc:  # noqa: BLE001 - refused before it was queued (a message over the size limit)
                acks.append(_raise(exc))
        results = await asyncio.gather(*acks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled: the entries stay pending for the sweeper
        return [r if isinstance(r, Exception) else None for r in results]

    async def after_write(self, claims: AsyncCollection, claim_id: str, aggregate_id: Any,
                          entries: list[tuple[str, Mapping[str, Any]]]) -> None:
        """Publish a change's events right after its write: awaited, or (`background`) in a task of its own so the
        request or the consumer goes on. Either way one aggregate's changes go out in the order written."""
        if not self._background:
            await self._deliver_or_defer(claims, claim_id, aggregate_id, entries)
            return
        task = asyncio.create_task(self._deliver_or_defer(claims, claim_id, aggregate_id, entries))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _deliver_or_defer(self, claims: AsyncCollection, claim_id: str, aggregate_id: Any,
                                entries: list[tuple[str, Mapping[str, Any]]]) -> None:
        async with self._in_turn.hold((claims.full_name, aggregate_id)):
            try:
                await self.deliver(claims, claim_id, entries, together=True)
            except Exception as exc:  # noqa: BLE001 - the write stands; the sweeper publishes later
                self.remember(claims, claim_id)
                log.warning("outbox_deliver_deferred", error_type=type(exc).__name__)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """At shutdown (and for tests): let background publishes finish and write their marks; what does not is left
        pending for the sweeper."""
        if self._publishing:
            await asyncio.wait(list(self._publishing), timeout=timeout_s)
        for store in self._stores:
            await store.settle(timeout_s)  # first versions written after their answer
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush_marks(), timeout_s)
        if self._marking is not None:
            await asyncio.wait([self._marking], timeout=timeout_s)

    async def _close_if_settled(self, claims: AsyncCollection, claim_id: str) -> None:
        claim = await claims.find_one({"_id": claim_id}, {"outbox": 1})
        if claim is not None and not any(e.get("status") == "pending" for e in entries_of(claim).values()):
            await claims.update_one({"_id": claim_id}, {"$set": {"outbox_open": False}})

    async def sweep_once(self, full: bool = True) -> int:
        """Publish entries left pending longer than the grace period; returns how many went out.

        full: search every watched claims collection (and repair and prune them); else only the claims this process
        failed to publish. The marks this process has queued are written first, so it does not send those again."""
        await self.flush_marks()
        if full:
            candidates = [(s.claims, c) for s in self._stores
                          async for c in s.claims.find({"outbox_open": True}, {"set": 0}).limit(1000)]
        else:
            candidates = []
            for key, (claims, cid) in list(self._retry.items()):
                self._retry.pop(key, None)  # re-added by deliver if it fails again
                if (claim := await claims.find_one({"_id": cid}, {"set": 0})) is not None:
                    candidates.append((claims, claim))
        cutoff = self._clock.now().timestamp() - self._grace_s
        sent = 0
        blocked: set[tuple[str, str]] = set()  # aggregates whose earlier event could not go out this round
        for claims, claim in sorted(candidates, key=lambda cc: (cc[0].full_name, cc[1]["doc_id"], cc[1]["version"])):
            aggregate = (claims.full_name, claim["doc_id"])
            pending = [(eid, expanded(e)) for eid, e in entries_of(claim).items() if e.get("status") == "pending"]
            if aggregate in blocked:
                continue
            if not pending:
                await self._close_if_settled(claims, claim["_id"])
                continue
            if any(_created_ts(e) > cutoff for _, e in pending):
                self.remember(claims, claim["_id"])  # its writer is probably publishing it right now
                blocked.add(aggregate)
                continue
            went, settled = await self.deliver(claims, claim["_id"], pending)
            sent += went
            if not settled:
                blocked.add(aggregate)
        if full:
            await self._maintain()
        return sent

    async def _maintain(self) -> None:
        """Write through what a crashed writer left half done, and delete claims that are no longer needed."""
        # Whole minutes: each minute of claims is read by one sweep's repair, not by the two whose windows it straddles.
        until = (self._clock.now() - timedelta(seconds=self._repair_after_s)).replace(second=0, microsecond=0).isoformat()
        starting = self._repaired_until is None  # at start every claim, the freshest again next time
        for store in self._stores:
            if repaired := await store.repair(self._repaired_until, None if starting else until):
                log.warning("versions_repaired", collection=store.collection.full_name, documents=repaired)
            await store.prune(self._retention_s)
        self._repaired_until = until

    async def failed_entries(self) -> int:
        """How many entries are marked failed (for /readyz)."""
        total = 0
        for store in self._stores:
            async for claim in store.claims.find({"outbox_failed": True}, {"outbox": 1}):
                total += sum(1 for e in entries_of(claim).values() if e.get("status") == "failed")
        return total

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

    def __init__(self, collection: AsyncCollection, relay: OutboxRelay, clock: Clock | None = None,
                 packed: Collection[str] = ()) -> None:
        self.collection = collection
        self.relay = relay
        self._clock = clock or SystemClock()
        self.versions = VersionedCollection(collection, self._clock, packed=packed)
        self._applied = collection.database[collection.name + APPLIED_SUFFIX]
        relay.watch(self.versions)

    async def load(self, aggregate_id: Any) -> dict[str, Any] | None:
        return await self.versions.load(aggregate_id)

    async def outbox(self, aggregate_id: str) -> dict[str, dict[str, Any]]:
        """The outbox entries of the aggregate's retained versions, by event id (for tests and operators)."""
        entries: dict[str, dict[str, Any]] = {}
        async for claim in self.versions.claims.find({"doc_id": aggregate_id}, {"outbox": 1}):
            entries |= {eid: expanded(e) for eid, e in entries_of(claim).items()}
        return entries

    async def create(self, doc: dict[str, Any], events: list[Outgoing] = (), applied: str | None = None,  # type: ignore[assignment]
                     known_new: bool = False) -> dict[str, Any]:
        """Insert a new aggregate with its outbox; DuplicateKeyError if its _id exists. `known_new`: see
        `VersionedCollection.write`."""
        new = {**doc, "version": 1, "applied": [applied] if applied else [], "applied_evicted": 0}
        await self._write(new, list(events), None, known_new)
        return new

    async def change(self, aggregate_id: Any, version: int, change: Change, applied: str | None = None) -> int:
        """Apply a change if the document is still at `version`; returns the new version or raises ConcurrentUpdate."""
        doc = await self.load(aggregate_id)
        if doc is not None and int(doc["version"]) < version:  # a writer stopped before writing it through
            await self.versions.catch_up(aggregate_id)
            doc = await self.load(aggregate_id)
        if doc is None or int(doc["version"]) != version:
            raise ConcurrentUpdate(f"{aggregate_id} is no longer at version {version}")
        return int((await self._change(doc, change, applied))["version"])

    async def update(self, doc: dict[str, Any], change: Change) -> dict[str, Any]:
        """Apply a change to `doc` as the caller just loaded it (no second read); returns the document as written.
        ConcurrentUpdate if another writer moved it since."""
        return await self._change(doc, change, None)

    async def _change(self, doc: dict[str, Any], change: Change, applied: str | None) -> dict[str, Any]:
        new, evicted = applied_to(doc, change, applied)
        if evicted:  # before the claim: a marker for an event not yet applied only costs a skipped redelivery
            with contextlib.suppress(DuplicateKeyError):  # already there from an earlier attempt
                await self._applied.insert_many([{"_id": f"{doc['_id']}|{e}"} for e in evicted], ordered=False)
        try:
            claim = await self._write(new, change.events, doc)
        except DuplicateKeyError as exc:
            raise ConcurrentUpdate(f"{doc['_id']} is no longer at version {doc['version']}") from exc
        return {**new, "rev": claim["set"]["rev"]}

    async def was_applied(self, doc: Mapping[str, Any] | None, event_id: str) -> bool:
        if doc is None:
            return False
        if event_id in doc.get("applied", ()):
            return True
        return bool(doc.get("applied_evicted")) and \
            await self._applied.find_one({"_id": f"{doc['_id']}|{event_id}"}) is not None

    async def apply_once(self, aggregate_id: Any, event_id: str,
                         decide: Callable[[dict[str, Any] | None], Change | None], attempts: int = 10,
                         fresh: bool = False) -> bool:
        """Apply an incoming event at most once: skip it if already applied, else decide and write.

        `decide` gets the current document (None if there is none yet) and returns the change, or None for
        "nothing to do". Returns whether something was written. `fresh`: the event is the one that makes the
        aggregate (a case's first event), so the first attempt takes it as absent without reading it: a document
        that exists after all (a redelivery) refuses the insert of its first version, and the next attempt reads it.
        """
        for attempt in range(attempts):
            # First as this process last wrote it (no read, if it did); after a refused write as stored.
            if attempt == 0 and fresh:
                doc, from_memory = self.versions.remembered(aggregate_id), True
            elif attempt == 0:
                doc, from_memory = await self.versions.base_for_write(aggregate_id)
            else:
                doc, from_memory = await self.load(aggregate_id), False
            if await self.was_applied(doc, event_id):  # applied ids only grow: believed of a remembered one too
                log.info("event_already_applied", event_id=event_id)
                return False
            change = decide(doc)
            if change is None:
                if from_memory:
                    continue  # "nothing to do" is only believed of the stored document
                return False
            try:
                if doc is None:
                    initial = {k: [v] for k, v in change.push.items()}
                    new = {"_id": aggregate_id, **change.set, **initial}
                    for path in [p for p in new if "." in p]:
                        set_path(new, path, new.pop(path))
                    await self.create(new, change.events, applied=event_id)
                else:
                    await self._change(doc, change, applied=event_id)
                return True
            except (DuplicateKeyError, ConcurrentUpdate):
                continue  # someone else wrote first: reload, and maybe find the event applied
        raise ConcurrentUpdate(f"could not apply {event_id} to {aggregate_id} after {attempts} attempts")

    async def _write(self, new: dict[str, Any], events: list[Outgoing], base: dict[str, Any] | None,
                     known_new: bool = False) -> dict[str, Any]:
        record = outbox_record(events, self._clock.now().isoformat())
        claim = await self.versions.write(new["_id"], new, record, base, known_new)
        if record["outbox"]:
            await self.relay.after_write(self.versions.claims, claim["_id"], new["_id"],
                                         list(record["outbox"].items()))
        return claim


# --- re-sending failed entries (`python -m shared.outbox resend`) -----------------------------------------------


async def resend_failed(client: Any, databases: list[str], publish: Publish, event_id: str | None = None
                        ) -> tuple[int, int]:
    """Put failed entries back to pending and publish them now; returns (sent, still failing)."""
    relay = OutboxRelay(publish, max_attempts=1)
    sent = failing = 0
    for name in databases:
        db = client[name]
        for collection in await db.list_collection_names():
            if not collection.endswith(SUFFIX):
                continue
            claims = db[collection]
            async for claim in claims.find({"outbox_failed": True}, {"set": 0}):
                failed = {eid: expanded(e) for eid, e in entries_of(claim).items()
                          if e.get("status") == "failed" and event_id in (None, eid)}
                if not failed:
                    continue
                await claims.update_one({"_id": claim["_id"]}, {"$set": {
                    "outbox_open": True, "outbox_failed": False,
                    **{f"outbox.{eid}.status": "pending" for eid in failed},
                    **{f"outbox.{eid}.attempts": 0 for eid in failed}}})
                pending = [(eid, expanded(e)) for eid, e in entries_of(claim).items() if e.get("status") == "pending"]
                went, _ = await relay.deliver(claims, claim["_id"],  # all that is pending: it closes the claim
                                              [*((eid, {**e, "attempts": 0}) for eid, e in failed.items()), *pending])
                sent += went
                failing += len(failed) - went
    return sent, failing


def main() -> None:
    from pydantic import AliasChoices, Field
    from pydantic_settings import BaseSettings, SettingsConfigDict

    from shared import kafka, mongo

    class Where(BaseSettings):  # the part of ServiceSettings this command needs (no secrets)
        model_config = SettingsConfigDict(env_prefix="WASPADA_", extra="ignore")
        kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "WASPADA_KAFKA_BOOTSTRAP_SERVERS"))
        mongodb_uri: str = Field("mongodb://127.0.0.1:27017/?directConnection=true",
                                 validation_alias=AliasChoices("MONGODB_URI", "WASPADA_MONGODB_URI"))
        db_prefix: str = "waspada"

    parser = argparse.ArgumentParser(prog="python -m shared.outbox", description="Outbox operations.")
    parser.add_argument("command", choices=["resend"], help="publish the entries marked failed again")
    parser.add_argument("--service", action="append", help="only this service's database (repeatable)")
    parser.add_argument("--event-id", help="only this event")
    args = parser.parse_args()
    where = Where()

    async def run() -> tuple[int, int]:
        client = mongo.connect(where.mongodb_uri)
        broker = kafka.create_broker(where.kafka_bootstrap_servers, client_id="waspada-resend")
        await broker.connect()
        try:
            names = [n for n in await client.list_database_names() if n.startswith(f"{where.db_prefix}_")
                     and (not args.service or n.removeprefix(f"{where.db_prefix}_") in args.service)]
            return await resend_failed(client, names, kafka.publisher_for(broker), args.event_id)
        finally:
            await broker.stop()
            await client.close()

    sent, failing = asyncio.run(run())
    print(f"re-sent {sent} failed outbox entries; {failing} failed again")
    raise SystemExit(1 if failing else 0)


if __name__ == "__main__":
    main()
