"""Audit's domain: the hash-chained trail, how it is verified, and the small case read model the events build.

Pure: no I/O. The store reads and writes what these functions build and judge.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared import crypto, regions, topics
from shared.contracts import access
from shared.contracts import identity as identity_events
from shared.contracts.envelope import Envelope

GENESIS_HASH = "0" * 64
# Every other stored field of an entry is covered by its hash. A directory entry's `block` is its seq's (checked
# by the verification), so it could be added to the entries recorded before it existed.
NOT_HASHED = ("_id", "hash", "block")

# --- arbitrary event JSON in a MongoDB-wire database --------------------------------------------------------
# FerretDB refuses keys with "." or a leading "$" and nested arrays, and turns -0.0 into 0. An event's `data` is
# any JSON, so it is stored in a reversible escaped form and the hash covers exactly what is stored.

_LIST = "%list"  # a dict holding only this key stands for a list inside a list ("%" in real keys is escaped)
_ESCAPED = re.compile(r"%(25|2E|00|24)")
_UNESCAPE = {"25": "%", "2E": ".", "00": "\x00", "24": "$"}


def _escape_key(key: str) -> str:
    escaped = key.replace("%", "%25").replace(".", "%2E").replace("\x00", "%00")
    return "%24" + escaped[1:] if escaped.startswith("$") else escaped


def _unescape_key(key: str) -> str:
    return _ESCAPED.sub(lambda m: _UNESCAPE[m.group(1)], key)


def to_storable(value: Any, *, in_list: bool = False) -> Any:
    if isinstance(value, Mapping):
        return {_escape_key(str(k)): to_storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [to_storable(v, in_list=True) for v in value]
        return {_LIST: items} if in_list else items
    if isinstance(value, float) and value == 0.0:
        return 0.0  # -0.0 would come back as 0.0 and break the hash
    return value


def from_storable(value: Any) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {_LIST}:
            return [from_storable(v) for v in value[_LIST]]
        return {_unescape_key(k): from_storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_storable(v) for v in value]
    return value


# --- the chain ----------------------------------------------------------------------------------------------


def timestamp(moment: datetime) -> str:
    """One fixed ISO form (UTC, microseconds), so stored timestamps compare correctly as strings."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_json(entry: Mapping[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k not in NOT_HASHED}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(entry)).encode("utf-8")).hexdigest()


def chain_entry(event: Envelope, previous: Mapping[str, Any] | None, recorded_at: datetime,
                trail: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The trail entry that records `event` right after `previous` (None: the trail's first entry). `trail`
    holds the fields that name the trail the entry belongs to (default: the event's case)."""
    prev_hash = previous["hash"] if previous else GENESIS_HASH
    entry: dict[str, Any] = {
        **(trail or {"case_id": event.case_id}),
        "seq": int(previous["seq"]) + 1 if previous else 1,
        "event_id": event.event_id,
        "type": event.type,
        "event": to_storable(event.model_dump(mode="json")),
        "recorded_at": timestamp(recorded_at),
        "prev_hash": prev_hash,
    }
    entry["hash"] = chain_hash(prev_hash, entry)
    return entry


@dataclass(frozen=True)
class TrailHead:
    """The last seq and hash the service appended, kept apart from the trail so a cut-off tail shows."""

    seq: int
    hash: str | None


def head_of(case: Mapping[str, Any]) -> TrailHead:
    return TrailHead(int(case.get("trail_seq") or 0), case.get("trail_hash"))


def verify_chain(entries: Sequence[Mapping[str, Any]], head: TrailHead | None = None,
                 after: tuple[int, str] | None = None) -> dict[str, Any]:
    """Recompute a trail read in seq order: changed, deleted or reordered entries break it at the first bad seq.
    `after`: the seq and hash of an entry verified before, the trail then being the entries after it."""
    start, prev = after or (0, GENESIS_HASH)
    total = start + len(entries)
    for seq, entry in enumerate(entries, start=start + 1):
        if not _intact(entry, seq, prev):
            return _verdict(total, seq)
        prev = entry["hash"]
    if head is not None and head.seq > total:
        return _verdict(total, total + 1)  # entries at the end were deleted
    if head is not None and head.seq >= 1:
        if head.seq > start:
            shown = entries[head.seq - start - 1]["hash"]
        else:  # the head is not after the entry verified before: it must be that entry
            shown = after[1] if after and head.seq == start else None
        if shown != head.hash:
            return _verdict(total, head.seq)  # rewritten consistently, but not what was appended
    return {"valid": True, "entries": total, "first_broken_seq": None}


def _intact(entry: Mapping[str, Any], seq: int, prev_hash: str) -> bool:
    if type(entry.get("seq")) is not int or entry["seq"] != seq or entry.get("prev_hash") != prev_hash:
        return False
    if "block" in entry and entry["block"] != directory_block(seq):
        return False
    try:
        return chain_hash(prev_hash, entry) == entry.get("hash")
    except (TypeError, ValueError):  # a tampered value that is not even JSON
        return False


def _verdict(total: int, broken_at: int) -> dict[str, Any]:
    return {"valid": False, "entries": total, "first_broken_seq": broken_at}


def trail_view(entry: Mapping[str, Any], key: bytes | None, records_key: bytes | None = None) -> dict[str, Any]:
    """An entry as shown: sealed personal data opened with the case's key, `[erased]` once it is destroyed.
    The hashes cover the sealed text, so erasure never breaks the chain. The record of an erasure is sealed with
    the records key instead (its legal basis outlives the case's key)."""
    event = from_storable(entry.get("event") or {})
    opener = records_key if entry.get("type") == "case.erased" else key
    event = {**event, "data": crypto.open_values(event.get("data"), opener, str(entry.get("case_id")))}
    return {
        "seq": entry.get("seq"),
        "event_id": entry.get("event_id"),
        "type": entry.get("type"),
        "occurred_at": event.get("occurred_at"),
        "recorded_at": entry.get("recorded_at"),
        "actor": event.get("actor"),
        "producer": event.get("producer"),
        "correlation_id": event.get("correlation_id"),
        "causation_id": event.get("causation_id"),
        "prev_hash": entry.get("prev_hash"),
        "hash": entry.get("hash"),
        "data": event.get("data"),
    }


# --- one listing, recorded in the trail of every case it showed ---------------------------------------------

LISTING_NAMESPACE = uuid.UUID("9d3c5e8a-7b14-4f0e-8c2a-61f5b0d4e7a3")


def listing_entries(event: Envelope, listing: access.CasesListed) -> list[Envelope]:
    """For each case a listing showed, the event its trail records: the listing as that case's entry (its own
    derived event id, so a redelivery appends nothing; `case_ids` that case alone; caused by the listing)."""
    return [event.model_copy(update={
        "case_id": case_id,
        "event_id": str(uuid.uuid5(LISTING_NAMESPACE, f"{event.event_id}:{case_id}")),
        "causation_id": event.event_id,
        "data": {**event.data, "case_ids": [case_id]},
    }) for case_id in dict.fromkeys(listing.case_ids)]


# --- the directory trail: every account change and sign-in (waspada.identity.v1), one chain for all ---------

DIRECTORY = "directory"
UNSCOPED = "*"  # an entry no region owns (a sign-in attempt at a username that does not exist)
# The directory grows with every sign-in: its entries are read a block of seq at a time, by equality (which
# FerretDB pushes into its SQL and an index answers), never by a range of seq, which it filters after decoding all.
DIRECTORY_BLOCK = 100


def directory_block(seq: int) -> int:
    """The block of a directory entry: seq 1–100 are block 0, 101–200 block 1, and so on."""
    return (int(seq) - 1) // DIRECTORY_BLOCK


def is_directory_event(event: Envelope) -> bool:
    return event.type in identity_events.EVENT_TYPES


def directory_entry(event: Envelope, previous: Mapping[str, Any] | None, recorded_at: datetime) -> dict[str, Any]:
    """The directory trail's entry for an identity event: the case trail's chain rule, keyed by account id
    (the envelope's case_id), with the account's region path so each admin or supervisor reads their region."""
    region = event.data.get("region")
    region_path = regions.path(region) if isinstance(region, str) and regions.REGION_CODE.match(region) else [UNSCOPED]
    entry = chain_entry(event, previous, recorded_at,
                        trail={"trail": DIRECTORY, "account_id": event.case_id, "region_path": region_path})
    return {**entry, "block": directory_block(entry["seq"])}


def directory_view(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {**trail_view(entry, None), "account_id": entry.get("account_id")}


# --- the case read model ------------------------------------------------------------------------------------

Status = Literal["reported", "screened", "info_requested", "verified", "rejected", "withdrawn", "referred",
                 "closed"]

STATUS_OF: dict[str, str] = {
    "case.reported": "reported",
    "case.amended": "reported",  # the amended report enters screening again
    "case.screened": "screened",
    "case.info_requested": "info_requested",
    "case.verified": "verified",
    "case.rejected": "rejected",
    "case.withdrawn": "withdrawn",
    "referral.created": "referred",
    "case.closed": "closed",
}

# Facets of a case document that change independently; each keeps the occurred_at of the event that last set it.
FACETS = ("place", "reported", "status", "types")


@dataclass(frozen=True)
class CaseUpdate:
    """Fields of one facet, set only if `at` is not older than what set the facet before (redelivery, reordering)."""

    facet: str
    fields: dict[str, Any]
    at: str
    earliest: bool = False  # a first time (decided, first acknowledged): kept unless an earlier one arrives


def case_updates(event: Envelope) -> list[CaseUpdate]:
    """What an event tells the read model; tolerant: odd data yields fewer updates, never an error."""
    at = timestamp(event.occurred_at)
    data = event.data
    updates: list[CaseUpdate] = []
    source = data.get("report") if event.type == "case.amended" else data
    if isinstance(source, Mapping) and (place := _place(source)):
        updates.append(CaseUpdate("place", place, at))
    if event.type == "case.reported":
        suspected = data.get("suspected_types")
        updates.append(CaseUpdate("reported", {
            "reported_at": _timestamp_or(data.get("received_at"), at),
            "suspected_types": sorted({t for t in suspected if isinstance(t, str)}) if isinstance(suspected, list)
            else []}, at))
    if status := STATUS_OF.get(event.type):
        updates.append(CaseUpdate("status", {"status": status}, at))
    if event.type == "case.verified" and isinstance(types := data.get("case_types"), list):
        updates.append(CaseUpdate("types", {"types": sorted({t for t in types if isinstance(t, str)})}, at))
    if event.type in ("case.verified", "case.rejected"):
        updates.append(CaseUpdate("decided", {"decided_at": at}, at, earliest=True))
    if event.type == "referral.acknowledged":
        updates.append(CaseUpdate("acknowledged", {"first_ack_at": at}, at, earliest=True))
    if event.type == "referral.escalated" and isinstance(rid := data.get("referral_id"), str) and "." not in rid \
            and not rid.startswith("$"):
        updates.append(CaseUpdate("escalated", {f"escalated.{rid}": at}, at, earliest=True))
    return updates


def taken_in(case: Mapping[str, Any], updates: Sequence[CaseUpdate], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The fields (dotted paths) a case document changes to take in `updates` and the trail up to `entry`: each
    facet only from an event not older than what set it, a first time only if earlier; the head forward only (a
    document at trail_seq n has taken in every entry up to n); the report's week, day and hour. Idempotent:
    updates already taken in change nothing."""
    fields: dict[str, Any] = {}
    for update in updates:
        if update.earliest:
            for path, value in update.fields.items():
                current = fields.get(path) or field_at(case, path)
                if not current or value < current:
                    fields[path] = value
            continue
        facet_at = f"{update.facet}_at"
        if (fields.get(facet_at) or case.get(facet_at) or "") <= update.at:
            fields.update({**update.fields, facet_at: update.at})
            if update.facet == "status" and case.get("needs_attention") \
                    and update.at > (case.get("attention_at") or ""):
                fields["needs_attention"] = False  # the case moved on after its dead letter
    if int(case.get("trail_seq") or 0) < entry["seq"]:
        fields.update({"trail_seq": entry["seq"], "trail_hash": entry["hash"]})
    reported_at = fields.get("reported_at") or case.get("reported_at")
    for name, value in (("reported_week", report_week(reported_at)), ("reported_day", report_day(reported_at)),
                        ("reported_hour", report_hour(reported_at))):
        if case.get(name) != value:
            fields[name] = value
    return fields


def field_at(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def week_of(stamp: str) -> str:
    """The Monday (UTC) of the week an instant falls in."""
    day = datetime.fromisoformat(stamp).astimezone(UTC).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def weekly_view(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Reports per week by village and by kind (the verified types, else the reporter's suspicion), and the
    escalations per week, for charts over time."""
    weeks: dict[str, dict[str, Any]] = {}

    def week(stamp: str) -> dict[str, Any]:
        start = week_of(stamp)
        return weeks.setdefault(start, {"week": start, "reports": 0, "by_village": {}, "by_type": {},
                                        "escalations": 0})

    for case in cases:
        if report_week(case.get("reported_at")) != NO_WEEK:
            row = week(case["reported_at"])
            row["reports"] += 1
            if village := case.get("village_code"):
                row["by_village"][village] = row["by_village"].get(village, 0) + 1
            for kind in case.get("types") or case.get("suspected_types") or ["unknown"]:
                row["by_type"][kind] = row["by_type"].get(kind, 0) + 1
        escalated = case.get("escalated")
        for at in escalated.values() if isinstance(escalated, Mapping) else ():
            if report_week(at) != NO_WEEK:  # (odd stamps, e.g. from a misbehaving producer, are left out)
                week(at)["escalations"] += 1
    return {"weeks": [weeks[start] for start in sorted(weeks)]}


# --- the region's figures, week by week -------------------------------------------------------------------
# FerretDB reads every matching case document in Go (some 2,000 a second here), so the dashboard cannot count
# 10,000 cases on each view. The figures of one region's cases reported in one week (a "part") are kept and
# reused until a case of that week changes; parts add up to the figures of any run of weeks.

NO_WEEK = "none"  # the report week of a case whose report audit has not seen yet
STATS_FIELDS = ("status", "needs_attention", "reported_at", "decided_at", "first_ack_at", "escalated",
                "village_code", "types", "suspected_types")


def report_week(reported_at: Any) -> str:
    """The week (its Monday, UTC) a case was reported in: the key its figures are kept under."""
    try:
        return week_of(reported_at)
    except (TypeError, ValueError):
        return NO_WEEK


def report_day(reported_at: Any) -> str:
    """The day (UTC) a case was reported on: what the search reads at a time where a week holds many cases."""
    try:
        return datetime.fromisoformat(reported_at).astimezone(UTC).date().isoformat()
    except (TypeError, ValueError):
        return NO_WEEK


def report_hour(reported_at: Any) -> str:
    """The hour (UTC, `YYYY-MM-DDTHH`) a case was reported in: what the search reads at a time where a day holds
    many cases."""
    try:
        return datetime.fromisoformat(reported_at).astimezone(UTC).strftime("%Y-%m-%dT%H")
    except (TypeError, ValueError):
        return NO_WEEK


def days_of(week: str, start: datetime | None, end: datetime | None) -> list[str]:
    """The days of a report week that reach into [start, end), newest first."""
    first = datetime.fromisoformat(week).replace(tzinfo=UTC)
    days = [first + timedelta(days=n) for n in range(6, -1, -1)]
    return [d.date().isoformat() for d in days
            if (start is None or d + timedelta(days=1) > start) and (end is None or d < end)]


def weeks_between(start: datetime | None, end: datetime | None, known: Sequence[str]) -> tuple[list[str], list[str]]:
    """Of the known report weeks, those wholly inside [start, end) and those only partly inside (whose cases
    must be filtered one by one). Without bounds every week is whole, NO_WEEK included; with bounds NO_WEEK is out
    (a case with no report time is in no period)."""
    whole, partial = [], []
    for week in known:
        if week == NO_WEEK:
            if start is None and end is None:
                whole.append(week)
            continue
        first = datetime.fromisoformat(week).replace(tzinfo=UTC)
        after = first + timedelta(days=7)
        if (end is not None and first >= end) or (start is not None and after <= start):
            continue
        inside = (start is None or start <= first) and (end is None or after <= end)
        (whole if inside else partial).append(week)
    return whole, partial


# The form of the figures' kept parts (`stats_part`); parts kept in another form are counted again. 2: spans counted
# by step (`span_step`), not listed one by one.
PARTS_FORM = 2


def span_step(seconds: float) -> int:
    """A span as the figures keep it: to the whole minute under a day, to the whole hour beyond, as the dashboard
    shows it ('2 h 5 min', '3 d 4 h'). Kept so, a week's spans are at most a day's minutes and the hours beyond,
    counted, however many cases it holds; the medians of a year of weeks add up from those, not from every decided
    case's span."""
    unit = 60 if abs(seconds) < 86400 else 3600
    return int(seconds // unit) * unit


def _spans(pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
    """The spans between each pair of timestamps, counted by step: [[step, n], ...] in step order."""
    return _added_spans([[[span_step((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()), 1]
                          for a, b in pairs]])


def _added_spans(parts: Sequence[Sequence[Sequence[int]]]) -> list[list[int]]:
    """Counted steps of several parts added up, in step order."""
    counts: dict[int, int] = {}
    for part in parts:
        for step, n in part:
            counts[step] = counts.get(step, 0) + n
    return [[step, counts[step]] for step in sorted(counts)]


def _median(spans: Sequence[Sequence[int]]) -> float | None:
    """The median of counted steps (the mean of the middle two when their number is even)."""
    total = sum(n for _, n in spans)
    if not total:
        return None
    wanted, middle, seen = sorted({(total - 1) // 2, total // 2}), [], 0
    for step, n in spans:
        while wanted and wanted[0] < seen + n:
            middle.append(step)
            wanted.pop(0)
        seen += n
    return sum(middle) / len(middle) if len(middle) > 1 else float(middle[0])


def stats_part(cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What some cases add to the figures, in a form that adds up (`merge_parts`) and stores as JSON."""
    def rows(field: str) -> list[list[Any]]:
        return [[row["_id"], row["n"]] for row in grouped(cases, field)]

    escalated = [c for c in cases if c.get("escalated")]
    return {
        "by_status": rows("status"), "by_types": rows("types"), "by_village": rows("village_code"),
        "needing_attention": sum(1 for c in cases if c.get("needs_attention") is True),
        "to_decision": _spans([(c["reported_at"], c["decided_at"]) for c in cases
                               if c.get("reported_at") and c.get("decided_at")]),
        "to_ack": _spans([(c["decided_at"], c["first_ack_at"]) for c in cases
                          if c.get("decided_at") and c.get("first_ack_at")]),
        "cases_with_overdue_referrals": len(escalated),
        "overdue_referrals": sum(len(c["escalated"]) for c in escalated),
        "weeks": weekly_view(cases)["weeks"],
    }


def merge_parts(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def added(field: str) -> list[list[Any]]:
        counts: dict[str, list[Any]] = {}
        for part in parts:
            for key, n in part[field]:
                slot = counts.setdefault(json.dumps(key), [key, 0])
                slot[1] += n
        return list(counts.values())

    weeks: dict[str, dict[str, Any]] = {}
    for part in parts:
        for row in part["weeks"]:
            into = weeks.setdefault(row["week"], {"week": row["week"], "reports": 0, "by_village": {}, "by_type": {},
                                                  "escalations": 0})
            into["reports"] += row["reports"]
            into["escalations"] += row["escalations"]
            for field in ("by_village", "by_type"):
                for key, n in row[field].items():
                    into[field][key] = into[field].get(key, 0) + n
    return {
        "by_status": added("by_status"), "by_types": added("by_types"), "by_village": added("by_village"),
        "needing_attention": sum(p["needing_attention"] for p in parts),
        "to_decision": _added_spans([p["to_decision"] for p in parts]),
        "to_ack": _added_spans([p["to_ack"] for p in parts]),
        "cases_with_overdue_referrals": sum(p["cases_with_overdue_referrals"] for p in parts),
        "overdue_referrals": sum(p["overdue_referrals"] for p in parts),
        "weeks": [weeks[w] for w in sorted(weeks)],
    }


def stats_of(region: str, part: Mapping[str, Any]) -> dict[str, Any]:
    """The region's figures (audit's Stats) from the sum of its parts."""
    def rows(field: str) -> list[dict[str, Any]]:
        return [{"_id": key, "n": n} for key, n in part[field]]

    return {**stats_view(region, rows("by_status"), rows("by_types"), rows("by_village")),
            "needing_attention": part["needing_attention"], **_timings(part), "weeks": part["weeks"]}


def _timings(part: Mapping[str, Any]) -> dict[str, Any]:
    """Medians computed here: FerretDB's $group has only $sum and $count."""
    return {
        "median_seconds_report_to_decision": _median(part["to_decision"]),
        "median_seconds_decision_to_first_acknowledgement": _median(part["to_ack"]),
        "decided_cases": sum(n for _, n in part["to_decision"]),
        "acknowledged_cases": sum(n for _, n in part["to_ack"]),
        "cases_with_overdue_referrals": part["cases_with_overdue_referrals"],
        "overdue_referrals": part["overdue_referrals"],
    }


def _place(source: Mapping[str, Any]) -> dict[str, Any]:
    village = source.get("village_code")
    if not isinstance(village, str) or not regions.VILLAGE_CODE.match(village):
        return {}
    place: dict[str, Any] = {"village_code": village, "region_path": regions.path(village)}
    if isinstance(source.get("case_number"), str):
        place["case_number"] = source["case_number"]
    return place


def _timestamp_or(value: Any, default: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return default
    return timestamp(moment) if moment.tzinfo else default


def new_case(now: datetime) -> dict[str, Any]:
    """A case document (without its _id) before any facet is known: every facet older than any event."""
    return {"case_number": None, "village_code": None, "region_path": [], "status": None, "types": [],
            "reported_at": None, "reported_week": NO_WEEK, "reported_day": NO_WEEK, "trail_seq": 0, "trail_hash": None,
            "first_seen_at": timestamp(now),
            **{f"{facet}_at": "" for facet in FACETS}}


def in_region(case: Mapping[str, Any] | None, region: str) -> bool:
    return case is not None and region in (case.get("region_path") or ())


def case_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "case_id": doc["_id"],
        "case_number": doc.get("case_number"),
        "village_code": doc.get("village_code"),
        "status": doc.get("status"),
        "types": doc.get("types") or [],
        "reported_at": doc.get("reported_at"),
        "updated_at": doc.get("updated_at"),
        "trail_entries": doc.get("trail_seq", 0),
        "needs_attention": bool(doc.get("needs_attention")),
    }


def grouped(cases: Sequence[Mapping[str, Any]], field: str) -> list[dict[str, Any]]:
    """What `{"$group": {"_id": "$<field>", "n": {"$sum": 1}}}` answers, counted here from rows already read (an
    array groups as a whole array)."""
    counts: dict[Any, int] = {}
    for case in cases:
        value = case.get(field)
        key = tuple(value) if isinstance(value, list) else value
        counts[key] = counts.get(key, 0) + 1
    return [{"_id": list(k) if isinstance(k, tuple) else k, "n": n} for k, n in counts.items()]


def stats_view(region: str, by_status: Sequence[Mapping[str, Any]], by_types: Sequence[Mapping[str, Any]],
               by_village: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts from `$group` rows ({"_id": key, "n": count}); a case with several types counts once per type."""
    types: dict[str, int] = {}
    for row in by_types:
        for case_type in row["_id"] or ():
            types[case_type] = types.get(case_type, 0) + int(row["n"])
    villages = {row["_id"]: int(row["n"]) for row in by_village if row["_id"]}
    districts: dict[str, int] = {}
    for village, n in villages.items():
        district = ".".join(village.split(".")[:3])
        districts[district] = districts.get(district, 0) + n
    return {
        "region": region,
        "total": sum(int(row["n"]) for row in by_status),
        "by_status": dict(sorted((row["_id"] or "unknown", int(row["n"])) for row in by_status)),
        "by_type": dict(sorted(types.items())),
        "by_district": dict(sorted(districts.items())),
        "by_village": dict(sorted(villages.items())),
    }


# --- dead letters -------------------------------------------------------------------------------------------


NO_REGION = "-"  # region of a dead letter that names no case audit knows: shown to admins only


def dead_letter(*, topic: str, partition: int, offset: int, key: bytes | None, headers: Mapping[str, str],
                body: bytes, now: datetime) -> dict[str, Any]:
    """A dead-lettered message as stored: unchanged apart from decoding, keyed by its place on the topic."""
    key_text = key.decode("utf-8", "replace") if key else None
    return {
        "_id": f"{partition}:{offset}",
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key_text,
        "headers": to_storable(dict(headers)),
        "body": body.decode("utf-8", "replace"),
        "source_topic": headers.get(topics.DLQ_SOURCE_TOPIC),
        "consumer": headers.get(topics.DLQ_CONSUMER),
        "error": headers.get(topics.DLQ_ERROR),
        "case_id": headers.get(topics.HEADER_CASE_ID) or key_text,
        "region_path": [NO_REGION],
        "recorded_at": timestamp(now),
    }


def raw_dead_letter(doc: Mapping[str, Any], error: str) -> dict[str, Any]:
    """What is kept of a dead letter the database refused as it was: its place, and the message in base64."""
    raw = json.dumps({"key": doc.get("key"), "headers": from_storable(doc.get("headers") or {}),
                      "body": doc.get("body")}, ensure_ascii=True)
    return {**{k: doc.get(k) for k in ("_id", "topic", "partition", "offset", "recorded_at")},
            "source_topic": None, "consumer": None, "case_id": None, "error": None, "region_path": [NO_REGION],
            "raw": base64.b64encode(raw.encode()).decode(), "record_error": error[:1000]}


# What a dead letter's body shows of its envelope: ids, type and times, never its data.
ENVELOPE_SHOWN = ("event_id", "type", "schema_version", "occurred_at", "case_id", "producer", "correlation_id",
                  "causation_id")


def _masked(value: Any) -> Any:
    """The shape of `value` with every text or number masked; sealed text stays sealed (it is unreadable)."""
    if isinstance(value, Mapping):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if value is None or isinstance(value, bool) or crypto.is_sealed(value):
        return value
    return crypto.MASKED


def masked_body(body: str) -> str:
    """A dead letter's body as supervisors see it: the envelope's ids and type, its `data` masked. A message that
    is not an envelope at all may be anything, so nothing of it is shown but its size."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return f"[masked: {len(body)} characters, not JSON]"
    if not isinstance(parsed, Mapping):
        return f"[masked: {len(body)} characters, not a JSON object]"
    shown = {k: (v if isinstance(v, str | int) and not isinstance(v, bool) and len(str(v)) <= 100 else crypto.MASKED)
             for k, v in parsed.items() if k in ENVELOPE_SHOWN}
    actor = parsed.get("actor")
    if isinstance(actor, Mapping):
        shown["actor"] = {k: actor.get(k) for k in ("id", "role", "unit", "region") if isinstance(actor.get(k), str)}
    rest = {k: v for k, v in parsed.items() if k not in ENVELOPE_SHOWN and k != "actor"}
    return json.dumps({**shown, **_masked(rest)}, ensure_ascii=False, sort_keys=True)


def dead_letter_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A dead letter as listed: where it came from and why it failed; its body masked (it may hold personal data
    a producer failed to seal), its headers as sent (the error they name never quotes a value: shared.logging)."""
    return {"id": doc["_id"], **{k: doc.get(k) for k in (
        "topic", "partition", "offset", "key", "source_topic", "consumer", "error", "case_id", "recorded_at",
        "record_error")},
        # A message kept raw (the database refused it as it was) may hold anything: only that it exists is shown.
        "raw": crypto.MASKED if doc.get("raw") else None,
        "body": masked_body(doc.get("body") or ""), "headers": from_storable(doc.get("headers") or {})}
