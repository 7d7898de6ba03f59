"""Reference data shipped in `shared/data/`: regions, indicators, agencies. Loaded once at start and validated."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

from shared import regions as region_codes

Level = Literal["province", "regency", "city", "district", "kelurahan", "village"]
WEIGHTS = {"high": 3, "medium": 2, "low": 1}


class ReferenceDataError(ValueError):
    """A reference data file is malformed: the service refuses to start rather than route or score wrongly."""


@dataclass(frozen=True)
class Region:
    code: str
    name: str
    level: Level
    parent: str | None


@dataclass(frozen=True)
class Indicator:
    id: str
    label_en: str
    label_id: str
    stage: str
    weight: int
    points_to: tuple[str, ...]
    forces_escalation: bool


@dataclass(frozen=True)
class Agency:
    id: str
    name: str
    kind: str
    region_code: str  # '' = national
    handles: tuple[str, ...]


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("shared.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def data_version(name: str) -> str:
    """Short content hash of a data file, stored beside what was computed from it (e.g. a screening score)."""
    raw = resources.files("shared.data").joinpath(name).read_bytes()
    return f"{name}@{hashlib.sha256(raw).hexdigest()[:12]}"


@cache
def regions() -> dict[str, Region]:
    out: dict[str, Region] = {}
    for row in _rows("regions-banten-rajeg.csv"):
        code = row["code"].strip()
        if not region_codes.REGION_CODE.match(code):
            raise ReferenceDataError(f"regions: bad code {code!r}")
        level = row["level"].strip()
        if level not in ("province", "regency", "city", "district", "kelurahan", "village"):
            raise ReferenceDataError(f"regions: bad level {level!r} for {code}")
        parent = row["parent"].strip() or None
        if parent and not code.startswith(parent + "."):
            raise ReferenceDataError(f"regions: {code} is not inside its parent {parent}")
        out[code] = Region(code=code, name=row["name"].strip(), level=level, parent=parent)  # type: ignore[arg-type]
    return out


def is_village(code: str) -> bool:
    region = regions().get(code)
    return region is not None and region.level in ("village", "kelurahan")


@cache
def indicators() -> dict[str, Indicator]:
    out: dict[str, Indicator] = {}
    for row in _rows("indicators.csv"):
        weight = row["weight"].strip().lower()
        if weight not in WEIGHTS:
            raise ReferenceDataError(f"indicators: bad weight {weight!r} for {row['id']}")
        flag = row["forces_escalation"].strip().lower()
        if flag not in ("true", "false"):
            raise ReferenceDataError(f"indicators: bad forces_escalation {flag!r} for {row['id']}")
        out[row["id"].strip()] = Indicator(
            id=row["id"].strip(),
            label_en=row["label_en"],
            label_id=row["label_id"],
            stage=row["stage"].strip(),
            weight=WEIGHTS[weight],
            points_to=tuple(t for t in row["points_to"].split(";") if t),
            forces_escalation=flag == "true",
        )
    return out


@cache
def agencies() -> dict[str, Agency]:
    out: dict[str, Agency] = {}
    for row in _rows("agencies.csv"):
        out[row["id"].strip()] = Agency(
            id=row["id"].strip(),
            name=row["name"],
            kind=row["kind"].strip(),
            region_code=row["region_code"].strip(),
            handles=tuple(h for h in row["handles"].split(";") if h),
        )
    return out
