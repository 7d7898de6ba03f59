"""Routing (DOMAIN.md §4.1, §5): which agencies a verified case goes to, and the deadlines they answer by.

Pure apart from reading three data files once (validated at start, like screening's thresholds):
- `routing_rules.csv` (trigger, function, role): a case type or a situation asks for a function;
- `unit_directory.csv` (region_code, function, agency_id): which agency performs a function where
  ('' = national); the longest region prefix of the case's village wins;
- `deadlines.csv` (priority, acknowledge_hours, first_update_hours, update_every_hours): after the first update,
  a unit owes a further update every `update_every_hours` (like the police's SP2HP schedule, DOMAIN.md §4.2).
Changing who gets what is a data change, not a code change.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import get_args

from shared import reference, regions
from shared.contracts import intake, verification

ROLES = ("primary", "notify")  # primary acts; notify is kept informed (DOMAIN.md §4.1 "Also notify")
PRIORITIES: tuple[str, ...] = get_args(verification.Priority)
CASE_TYPE_TRIGGERS: tuple[str, ...] = get_args(intake.CaseType)
# Every yes/no fact of a verified case's situation is a trigger, named as in the contract.
SITUATION_TRIGGERS: tuple[str, ...] = tuple(
    name for name, f in verification.Situation.model_fields.items() if f.annotation is bool
)
TRIGGERS = CASE_TYPE_TRIGGERS + SITUATION_TRIGGERS
REGENCY_DEPTH = 2  # '36.03': the level whose missing unit makes a referral a fallback
ReferenceDataError = reference.ReferenceDataError


class Unroutable(ValueError):
    """No unit performs a function for the case's region: the message is dead-lettered, never silently dropped."""


@dataclass(frozen=True)
class Rule:
    trigger: str
    function: str
    role: str


@dataclass(frozen=True)
class Unit:
    region_code: str  # '' = national
    function: str
    agency_id: str


@dataclass(frozen=True)
class RoutingTable:
    rules: tuple[Rule, ...]
    units: tuple[Unit, ...]


@dataclass(frozen=True)
class RouteDecision:
    agency_id: str
    function: str
    trigger: str  # the rule that chose this agency
    role: str
    fallback: bool  # a higher-level unit, because the case's regency has none for this function
    unit_region: str  # the directory row used ('' = national)
    triggers: tuple[str, ...]  # every trigger that asked for this agency (one referral per agency)


@dataclass(frozen=True)
class Deadlines:
    acknowledge: timedelta
    first_update: timedelta
    update_every: timedelta


def _depth(region_code: str) -> int:
    return len(region_code.split(".")) if region_code else 0


def _field(row: Mapping[str, str | None], name: str, where: str) -> str:
    value = row.get(name)
    if value is None:
        raise ReferenceDataError(f"{where}: missing column {name!r}")
    return value.strip()


def parse_rules(rows: Iterable[Mapping[str, str | None]]) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for n, row in enumerate(rows, start=2):
        where = f"routing_rules.csv line {n}"
        rule = Rule(_field(row, "trigger", where), _field(row, "function", where), _field(row, "role", where))
        if rule.trigger not in TRIGGERS:
            raise ReferenceDataError(f"{where}: unknown trigger {rule.trigger!r} (known: {', '.join(TRIGGERS)})")
        if not rule.function:
            raise ReferenceDataError(f"{where}: empty function")
        if rule.role not in ROLES:
            raise ReferenceDataError(f"{where}: role must be one of {ROLES}, not {rule.role!r}")
        if rule in out:
            raise ReferenceDataError(f"{where}: duplicate rule {rule.trigger},{rule.function},{rule.role}")
        out.append(rule)
    # Every verified case has at least one case type, so a rule per type means no case is left without a referral.
    if missing := [t for t in CASE_TYPE_TRIGGERS if t not in {r.trigger for r in out}]:
        raise ReferenceDataError(f"routing_rules.csv: no rule for case type(s) {', '.join(missing)}")
    return tuple(out)


def parse_directory(rows: Iterable[Mapping[str, str | None]], agency_ids: Iterable[str]) -> tuple[Unit, ...]:
    known = set(agency_ids)
    out: list[Unit] = []
    for n, row in enumerate(rows, start=2):
        where = f"unit_directory.csv line {n}"
        unit = Unit(_field(row, "region_code", where), _field(row, "function", where),
                    _field(row, "agency_id", where))
        if unit.region_code and not regions.REGION_CODE.match(unit.region_code):
            raise ReferenceDataError(f"{where}: bad region code {unit.region_code!r}")
        if not unit.function:
            raise ReferenceDataError(f"{where}: empty function")
        if unit.agency_id not in known:
            raise ReferenceDataError(f"{where}: agency {unit.agency_id!r} is not in agencies.csv")
        if any(u.region_code == unit.region_code and u.function == unit.function for u in out):
            raise ReferenceDataError(f"{where}: two units for {unit.function!r} in region {unit.region_code!r}")
        out.append(unit)
    return tuple(out)


def check_coverage(table: RoutingTable, region_codes: Iterable[str]) -> None:
    """Every function a rule asks for has a unit for every known region (else a case could not be routed)."""
    for function in sorted({r.function for r in table.rules}):
        for code in region_codes:
            if _resolve(table.units, function, code) is None:
                raise ReferenceDataError(f"unit_directory.csv: no unit performs {function!r} for region {code}")


def parse_deadlines(rows: Iterable[Mapping[str, str | None]]) -> dict[str, Deadlines]:
    out: dict[str, Deadlines] = {}
    for n, row in enumerate(rows, start=2):
        where = f"deadlines.csv line {n}"
        priority = _field(row, "priority", where)
        if priority not in PRIORITIES or priority in out:
            raise ReferenceDataError(f"{where}: unknown or repeated priority {priority!r}")
        hours = [_field(row, name, where) for name in ("acknowledge_hours", "first_update_hours", "update_every_hours")]
        try:
            ack, first, every = (int(h) for h in hours)
        except ValueError as exc:
            raise ReferenceDataError(f"{where}: hours must be whole numbers") from exc
        if not 0 < ack <= first:
            raise ReferenceDataError(f"{where}: need 0 < acknowledge_hours <= first_update_hours")
        if every <= 0:
            raise ReferenceDataError(f"{where}: need update_every_hours > 0")
        out[priority] = Deadlines(timedelta(hours=ack), timedelta(hours=first), timedelta(hours=every))
    if missing := [p for p in PRIORITIES if p not in out]:
        raise ReferenceDataError(f"deadlines.csv: no row for priority {', '.join(missing)}")
    return out


def _rows(name: str) -> list[dict[str, str | None]]:
    text = resources.files("shared.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def table() -> RoutingTable:
    """The shipped routing table, validated against agencies.csv and the known regions."""
    built = RoutingTable(parse_rules(_rows("routing_rules.csv")),
                         parse_directory(_rows("unit_directory.csv"), reference.agencies()))
    check_coverage(built, reference.regions())
    return built


@cache
def deadlines() -> dict[str, Deadlines]:
    return parse_deadlines(_rows("deadlines.csv"))


def deadlines_for(priority: str, now: datetime) -> dict[str, datetime]:
    d = deadlines()[priority]
    return {"acknowledge_by": now + d.acknowledge, "first_update_by": now + d.first_update}


def _resolve(units: Sequence[Unit], function: str, code: str) -> Unit | None:
    candidates = [u for u in units
                  if u.function == function and (not u.region_code or regions.covers(u.region_code, code))]
    return max(candidates, key=lambda u: _depth(u.region_code), default=None)


def _is_fallback(units: Sequence[Unit], unit: Unit) -> bool:
    # A function organised per regency somewhere (police, immigration) but resolved above the regency here is a
    # fallback; a function that only exists nationally or provincially (LPSK, BP3MI) is not.
    home = min(max(_depth(u.region_code) for u in units if u.function == unit.function), REGENCY_DEPTH)
    return _depth(unit.region_code) < home


def active_triggers(case_types: Iterable[str], situation: verification.Situation) -> list[str]:
    return list(dict.fromkeys([*case_types, *(s for s in SITUATION_TRIGGERS if getattr(situation, s))]))


def route(case_types: Iterable[str], situation: verification.Situation, village_code: str,
          routing: RoutingTable | None = None) -> list[RouteDecision]:
    """The agencies a verified case goes to: one decision per agency, primary rules before notify rules."""
    routing = routing or table()
    triggers = active_triggers(case_types, situation)
    chosen: dict[str, RouteDecision] = {}
    for role in ROLES:
        for rule in routing.rules:
            if rule.role != role or rule.trigger not in triggers:
                continue
            unit = _resolve(routing.units, rule.function, village_code)
            if unit is None:
                raise Unroutable(f"no unit performs {rule.function!r} for {village_code} (trigger {rule.trigger})")
            if (first := chosen.get(unit.agency_id)) is not None:
                if rule.trigger not in first.triggers:
                    chosen[unit.agency_id] = replace(first, triggers=(*first.triggers, rule.trigger))
                continue
            chosen[unit.agency_id] = RouteDecision(
                agency_id=unit.agency_id, function=rule.function, trigger=rule.trigger, role=rule.role,
                fallback=_is_fallback(routing.units, unit), unit_region=unit.region_code, triggers=(rule.trigger,),
            )
    return list(chosen.values())


def next_unit(function: str, village_code: str, declined_by: Iterable[str],
              routing: RoutingTable | None = None) -> RouteDecision | None:
    """Where a declined referral goes next: the next wider unit for the same function that has not declined it
    (Polresta -> Polda -> Bareskrim), or None when there is none and a supervisor must decide."""
    routing = routing or table()
    declined = set(declined_by)
    covering = sorted((u for u in routing.units if u.function == function
                       and (not u.region_code or regions.covers(u.region_code, village_code))),
                      key=lambda u: _depth(u.region_code), reverse=True)
    # Only wider than the widest row of any unit that declined: a unit listed at two levels declines for both.
    ceiling = min((_depth(u.region_code) for u in covering if u.agency_id in declined), default=None)
    for unit in covering:
        if unit.agency_id in declined or (ceiling is not None and _depth(unit.region_code) >= ceiling):
            continue
        return RouteDecision(agency_id=unit.agency_id, function=function, trigger="declined", role="primary",
                             fallback=_is_fallback(routing.units, unit), unit_region=unit.region_code,
                             triggers=("declined",))
    return None
