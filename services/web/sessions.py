"""Server-side sessions in `waspada_web`: the only thing the web service stores. The browser holds a random id;
the database keeps only its SHA-256, with the person's tokens and account summary."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from shared.clock import Clock


def _id_of(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


class SessionStore:
    def __init__(self, db: AsyncDatabase, clock: Clock, idle: timedelta, longest: timedelta) -> None:
        self.sessions = db["sessions"]
        self.clock, self.idle, self.longest = clock, idle, longest

    async def ensure_indexes(self) -> None:
        await self.sessions.create_index("expires_at")

    async def create(self, tokens: dict[str, Any], account: dict[str, Any], lang: str) -> tuple[str, dict[str, Any]]:
        """A new session for a sign-in; returns the cookie value (never stored) and the document."""
        cookie = secrets.token_urlsafe(32)
        now = self.clock.now()
        doc = {
            "_id": _id_of(cookie),
            "csrf": secrets.token_urlsafe(24),
            "account": account,
            "lang": lang,
            "created_at": now,
            "ends_at": now + self.longest,
            "expires_at": now + self.idle,
            **self._token_fields(tokens, now),
        }
        await self.sessions.insert_one(doc)
        return cookie, doc

    @staticmethod
    def _token_fields(tokens: dict[str, Any], now: datetime) -> dict[str, Any]:
        return {
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "access_expires_at": now + timedelta(seconds=int(tokens.get("expires_in") or 900)),
            "must_change_password": bool(tokens.get("must_change_password")),
            "must_enroll_totp": bool(tokens.get("must_enroll_totp")),
        }

    async def load(self, cookie: str | None) -> dict[str, Any] | None:
        """The live session of a cookie; an idle or too old session is deleted and reads as None."""
        if not cookie or len(cookie) > 100:
            return None
        doc = await self.sessions.find_one({"_id": _id_of(cookie)})
        if doc is None:
            return None
        now = self.clock.now()
        if doc["expires_at"] <= now or doc["ends_at"] <= now:
            await self.sessions.delete_one({"_id": doc["_id"]})
            return None
        if doc["expires_at"] - now < self.idle - timedelta(minutes=1):  # sliding idle limit, written at most once a minute
            doc["expires_at"] = min(now + self.idle, doc["ends_at"])
            await self.sessions.update_one({"_id": doc["_id"]}, {"$set": {"expires_at": doc["expires_at"]}})
        return doc

    async def reload(self, session_id: str) -> dict[str, Any] | None:
        return await self.sessions.find_one({"_id": session_id})

    async def renew_tokens(self, session_id: str, tokens: dict[str, Any]) -> dict[str, Any]:
        fields = self._token_fields(tokens, self.clock.now())
        await self.sessions.update_one({"_id": session_id}, {"$set": fields})
        return fields

    async def change(self, session_id: str, **fields: Any) -> None:
        await self.sessions.update_one({"_id": session_id}, {"$set": fields})

    async def end(self, session_id: str) -> None:
        await self.sessions.delete_one({"_id": session_id})

    async def purge_expired(self) -> int:
        result = await self.sessions.delete_many({"expires_at": {"$lte": self.clock.now()}})
        return result.deleted_count
