"""Small pieces every API shares: list pages with an opaque cursor."""

from __future__ import annotations

import base64
from typing import Any

from shared.http import ApiError

MAX_LIMIT = 200


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(cursor.encode() + b"==").decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", "cursor is not valid", {"field": "cursor"}) from exc
    if offset < 0:
        raise ApiError(400, "bad_request", "cursor is not valid", {"field": "cursor"})
    return offset


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def page(items: list[Any], offset: int, limit: int) -> dict[str, Any]:
    """`items` holds up to limit+1 rows fetched from `offset`; the extra row only says there is a next page."""
    more = len(items) > limit
    return {"items": items[:limit], "next": encode_cursor(offset + limit) if more else None}
