"""Response headers every page carries, and the CSRF checks of forms and of the outbox's JSON calls."""

from __future__ import annotations

import hmac

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "worker-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
       "object-src 'none'")
SESSION_COOKIE = "waspada_session"
LOGIN_CSRF_COOKIE = "waspada_login_csrf"
LANG_COOKIE = "waspada_lang"


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


class PageHeaders:
    """The headers every answer of the web app carries (plain ASGI: no task and no queue per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers") or [])}
                h = MutableHeaders(scope=message)
                h.setdefault("Content-Security-Policy", CSP)
                h["X-Content-Type-Options"] = "nosniff"
                h["Referrer-Policy"] = "no-referrer"
                h["X-Frame-Options"] = "DENY"
                h["Cross-Origin-Opener-Policy"] = "same-origin"
                if static:
                    h.setdefault("Cache-Control", "no-cache")  # revalidated by ETag; the service worker keeps its own
                else:
                    h["Cache-Control"] = "no-store"  # pages and answers may hold personal data
            await send(message)

        await self.app(scope, receive, with_headers)
