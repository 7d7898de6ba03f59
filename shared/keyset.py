"""Keyset cursors: a list page that continues after the last row shown, not at an offset, so rows added or
removed ahead of it (a new urgent report, a case another verifier decided) neither repeat nor skip a row."""

from __future__ import annotations

import base64
import json
from typing import Any

from shared.http import ApiError

MARK = "k1:"


def encode(values: list[Any]) -> str:
    """The cursor after a row whose sort key is `values` (in the sort's order, `_id` last)."""
    text = MARK + json.dumps(values, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: str | None, types: tuple[type, ...]) -> list[Any] | None:
    """The sort key a cursor holds, each value of the given type; None for the first page."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
        values = json.loads(text.removeprefix(MARK)) if text.startswith(MARK) else None
    except (ValueError, UnicodeDecodeError):
        values = None
    if (not isinstance(values, list) or len(values) != len(types)
            or not all(type(v) is t for v, t in zip(values, types, strict=True))):
        raise ApiError(422, "invalid_request", "cursor is not a cursor this API gave out",
                       [{"field": "cursor", "problem": "is not a cursor this API gave out"}])
    return values


def after(fields: list[str], values: list[Any]) -> dict[str, Any]:
    """The filter for rows sorted ascending on `fields` that come strictly after `values`."""
    branches = []
    for i, name in enumerate(fields):
        branch = {f: values[j] for j, f in enumerate(fields[:i])}
        branch[name] = {"$gt": values[i]}
        branches.append(branch)
    return {"$or": branches}
