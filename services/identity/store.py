"""The only module of identity that touches the database: accounts, usernames, failed-sign-in counters, sessions.

Every lookup on a hot path is by `_id` (FerretDB answers only those from its primary key): a username is its
own document pointing at the account, counters are keyed by a digest of the username, a session by its id.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.clock import Clock
from shared.outbox import AggregateStore, Change, ConcurrentUpdate, OutboxRelay, Outgoing


class UsernameTaken(Exception):
    pass


class AccountStore(AggregateStore):
    def __init__(self, db: AsyncDatabase, relay: OutboxRelay, clock: Clock) -> None:
        super().__init__(db["accounts"], relay, clock)
        self.usernames = db["usernames"]
        self.attempts = AggregateStore(db["login_attempts"], relay, clock)
        self.sessions = AggregateStore(db["sessions"], relay, clock)
        self.login_events = AggregateStore(db["login_events"], relay, clock)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("username", ASCENDING)], unique=True)
        await self.collection.create_index([("region_path", ASCENDING), ("username", ASCENDING)])
        await self.sessions.collection.create_index([("account_id", ASCENDING), ("revoked_at", ASCENDING)])

    # --- accounts -----------------------------------------------------------------------------------------------

    async def create_account(self, doc: dict[str, Any], events: list[Outgoing]) -> dict[str, Any]:
        """Claim the username (an insert keyed by it: atomic everywhere), then insert the account."""
        try:
            await self.usernames.insert_one({"_id": doc["username"], "account_id": doc["_id"]})
        except DuplicateKeyError:
            raise UsernameTaken(doc["username"]) from None
        try:
            return await self.create(doc, events)
        except DuplicateKeyError:
            await self.usernames.delete_one({"_id": doc["username"], "account_id": doc["_id"]})
            raise UsernameTaken(doc["username"]) from None

    async def by_username(self, username: str) -> dict[str, Any] | None:
        claim = await self.usernames.find_one({"_id": username})
        # An account is read either way, so an unknown username costs the same reads as a known one.
        return await self.load(claim["account_id"] if claim else "~no-account")

    async def in_region(self, region: str, filters: dict[str, Any], offset: int, limit: int) -> list[dict[str, Any]]:
        cursor = (self.collection.find({"region_path": region, **filters}, {"outbox": 0, "applied": 0})
                  .sort([("username", ASCENDING)]).skip(offset).limit(limit))
        return await cursor.to_list()

    async def change_account(self, account: dict[str, Any], change: Change) -> None:
        await self.change(account["_id"], account["version"], change)

    # --- failed sign-ins ----------------------------------------------------------------------------------------

    async def failures(self, key: str) -> dict[str, Any] | None:
        return await self.attempts.load(key)

    async def record_failure(self, key: str, fields: dict[str, Any] | None, event: Outgoing | None,
                             recount=None, attempts: int = 10) -> None:
        """Record a refused attempt: its event as a small document of its own (like a recorded read), so a
        hammered username never grows one document, then the username's counters (`fields`, or `recount(doc)`
        after a concurrent writer moved them)."""
        if event is not None:
            await self.login_events.create({"_id": event.event.event_id, "account_id": event.event.case_id,
                                            "type": event.event.type, "at": event.event.occurred_at.isoformat()},
                                           [event])
        for _ in range(attempts):
            if not fields:
                return
            doc = await self.attempts.load(key)
            try:
                if doc is None:
                    await self.attempts.create({"_id": key, **fields})
                else:
                    await self.attempts.change(key, doc["version"], Change(set=fields))
                return
            except (DuplicateKeyError, ConcurrentUpdate):
                fields = recount(await self.attempts.load(key)) if recount else fields  # count on top of theirs
        raise ConcurrentUpdate(f"could not count a failure for {key}")

    async def clear_failures(self, key: str) -> None:
        for _ in range(5):
            doc = await self.attempts.load(key)
            if doc is None or not (doc.get("failures") or doc.get("not_before")):
                return
            try:
                await self.attempts.change(key, doc["version"], Change(
                    set={"failures": 0, "not_before": None, "locked_until": None}))
                return
            except ConcurrentUpdate:
                continue

    # --- sessions -----------------------------------------------------------------------------------------------

    async def create_session(self, doc: dict[str, Any], events: list[Outgoing]) -> None:
        await self.sessions.create(doc, events)

    async def session(self, session_id: str) -> dict[str, Any] | None:
        return await self.sessions.load(session_id)

    async def change_session(self, session: dict[str, Any], change: Change) -> None:
        await self.sessions.change(session["_id"], session["version"], change)

    async def open_sessions(self, account_id: str) -> list[dict[str, Any]]:
        return await self.sessions.collection.find({"account_id": account_id, "revoked_at": None}).to_list()
