"""Response headers every page carries, and the CSRF checks of forms and of the outbox's JSON calls."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "worker-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
       "object-src 'none'")
SESSION_COOKIE = "waspada_session"
LOGIN_CSRF_COOKIE = "waspada_login_csrf"
LANG_COOKIE = "waspada_lang"


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response = await call_next(request)
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["X-Frame-Options"] = "DENY"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.url.path.startswith("/static/"):
        h.setdefault("Cache-Control", "no-cache")  # revalidated by ETag; the service worker keeps its own copy
    else:
        h["Cache-Control"] = "no-store"  # pages and answers may hold personal data
    return response
