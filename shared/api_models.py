"""Small pieces every API shares: list pages with an opaque cursor, and instants a client may send."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from shared.http import invalid

MAX_LIMIT = 200
MAX_OFFSET = 10**7  # far beyond any list here; keeps skip() inside the database's integer range

Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """A list answer: `next` is the cursor of the following page, or null on the last one."""

    items: list[Item]
    next: str | None = Field(description="pass as `cursor` to get the next page; null on the last page")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not re.fullmatch(r"\d{1,8}", text) or int(text) > MAX_OFFSET:
        raise invalid("cursor", "is not a cursor this API gave out")
    return int(text)


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def page(items: list[Any], offset: int, limit: int) -> dict[str, Any]:
    """`items` holds up to limit+1 rows fetched from `offset`; the extra row only says there is a next page."""
    more = len(items) > limit and offset + limit <= MAX_OFFSET
    return {"items": items[:limit], "next": encode_cursor(offset + limit) if more else None}


def _in_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+07:00 is in year 0 in UTC
        raise ValueError("is outside the calendar (years 1 to 9999 in UTC)") from None


# An RFC 3339 instant with an offset, normalised to UTC; one whose UTC time leaves the calendar is a 422.
Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]
