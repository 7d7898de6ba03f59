"""Response headers every page carries, and the CSRF checks of forms and of the outbox's JSON calls."""

from __future__ import annotations

import hmac

from starlette.datastructures import MutableHeaders
from starlette.types import Scope

from shared.http import ResponseHeaders

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "worker-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
       "object-src 'none'")
SESSION_COOKIE = "waspada_session"
LOGIN_CSRF_COOKIE = "waspada_login_csrf"
LANG_COOKIE = "waspada_lang"


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


class PageHeaders(ResponseHeaders):
    """The headers every answer of the web app carries."""

    def edit(self, scope: Scope, headers: MutableHeaders) -> None:
        headers.setdefault("Content-Security-Policy", CSP)
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Frame-Options"] = "DENY"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if scope.get("path", "").startswith("/static/"):
            headers.setdefault("Cache-Control", "no-cache")  # revalidated by ETag; the service worker keeps a copy
        else:
            headers["Cache-Control"] = "no-store"  # pages and answers may hold personal data
