"""The web service as a client of the other services' public HTTP APIs, with the signed-in person's own token.

The access token is refreshed through identity shortly before it expires; one refresh at a time per session, since
identity revokes a whole session when a used refresh token is presented twice.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from typing import Any

import httpx
import structlog

from services.web.sessions import SessionStore
from shared.clock import Clock

log = structlog.get_logger()
REFRESH_MARGIN = timedelta(seconds=30)


class Unavailable(Exception):
    """A service could not be reached or failed (5xx): the person may try again; nothing was decided."""


class SessionEnded(Exception):
    """Identity no longer honours this session (expired, revoked, or signed out elsewhere)."""


class Upstream:
    def __init__(self, urls: dict[str, str], timeout_s: float) -> None:
        self.clients = {name: httpx.AsyncClient(base_url=url, timeout=timeout_s) for name, url in urls.items()}

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def call(self, service: str, method: str, path: str, *, token: str | None = None,
                   json: Any = None, headers: dict[str, str] | None = None,
                   params: dict[str, Any] | None = None) -> httpx.Response:
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        try:
            response = await self.clients[service].request(method, path, json=json, headers=hdrs, params=params)
        except httpx.HTTPError as exc:
            log.warning("upstream_unreachable", service=service, path=path, error_type=type(exc).__name__)
            raise Unavailable(service) from exc
        if response.status_code >= 500:
            log.warning("upstream_failed", service=service, path=path, status=response.status_code)
            raise Unavailable(service)
        return response


def error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


class Person:
    """Calls made on behalf of the person of one session."""

    _locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def __init__(self, upstream: Upstream, sessions: SessionStore, clock: Clock, session: dict[str, Any]) -> None:
        self.upstream, self.sessions, self.clock, self.session = upstream, sessions, clock, session

    async def refresh(self, *, force: bool = False) -> None:
        sid = self.session["_id"]
        async with self._locks[sid]:
            current = await self.sessions.reload(sid)
            if current is None:
                raise SessionEnded
            if not force and current["access_expires_at"] - self.clock.now() > REFRESH_MARGIN:
                self.session.update(current)  # another request refreshed it meanwhile
                return
            if force and current["access_token"] != self.session["access_token"]:
                self.session.update(current)
                return
            response = await self.upstream.call("identity", "POST", "/v1/token/refresh",
                                                json={"refresh_token": current["refresh_token"]})
            if response.status_code != 200:
                await self.sessions.end(sid)
                log.info("session_ended", reason=error_code(response) or response.status_code)
                raise SessionEnded
            self.session.update(await self.sessions.renew_tokens(sid, response.json()))

    async def token(self) -> str:
        if self.session["access_expires_at"] - self.clock.now() <= REFRESH_MARGIN:
            await self.refresh()
        return self.session["access_token"]

    async def call(self, service: str, method: str, path: str, **kw: Any) -> httpx.Response:
        response = await self.upstream.call(service, method, path, token=await self.token(), **kw)
        if response.status_code == 401 and error_code(response) != "invalid_credentials":
            await self.refresh(force=True)  # the token stopped working early (key rotation, clock skew)
            response = await self.upstream.call(service, method, path, token=await self.token(), **kw)
            if response.status_code == 401 and error_code(response) != "invalid_credentials":
                await self.sessions.end(self.session["_id"])
                raise SessionEnded
        return response
