"""Kemendagri region codes (DOMAIN.md §7): the dotted hierarchy used for validation and region-scoped access."""

from __future__ import annotations

import re

VILLAGE_CODE = re.compile(r"^\d{2}\.\d{2}\.\d{2}\.\d{4}$")
REGION_CODE = re.compile(r"^\d{2}(\.\d{2}(\.\d{2}(\.\d{4})?)?)?$")


def path(code: str) -> list[str]:
    """'36.03.11.2009' -> ['36', '36.03', '36.03.11', '36.03.11.2009']: stored so region scoping is an equality match."""
    parts = code.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def regency_of(code: str) -> str:
    return ".".join(code.split(".")[:2])


def province_of(code: str) -> str:
    return code.split(".")[0]


def covers(region: str | None, code: str) -> bool:
    """Whether a user covering `region` may see something in `code` (same region or inside it)."""
    if not region:
        return False
    return code == region or code.startswith(region + ".")
