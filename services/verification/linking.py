"""Linking (DESIGN.md "Screening"): which earlier cases share a person or a recruiter with a new report, which
reports corroborate each other, and which watch-list entries a report hits. Pure.

Identifiers are compared as keyed hashes (HMAC-SHA256 over the normalised value), never as plaintext, so the
link index holds no NIK, passport, phone or name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from shared import crypto
from shared.contracts import intake
from shared.identity import normalise_name, normalise_nik, normalise_passport, normalise_phone

RECRUITING_ROLES = ("recruiter", "facilitator")
CORROBORATION_WINDOW = timedelta(hours=24)
# A recruiter in hundreds of reports would otherwise link every new report to all of them (and back):
# each report links to the most recent cases up to this many; the verifier sees how many more there were.
MAX_LINKS = 25

Kind = Literal["nik", "passport", "phone", "name_birth_date", "recruiter_phone", "recruiter_name"]
REASONS: dict[str, str] = {
    "nik": "same NIK",
    "passport": "same passport number",
    "phone": "same phone number",
    "name_birth_date": "same name and birth date",
    "recruiter_phone": "same recruiter phone",
    "recruiter_name": "same recruiter name",
}


@dataclass(frozen=True)
class Identity:
    kind: Kind
    digest: str
    person_id: str


def keyed(key: bytes, kind: str, value: str) -> str:
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def _normalised(normalise: Callable[[str], str], value: str | None) -> str | None:
    """Intake normalises identifiers as they arrive; an event from elsewhere is normalised here the same way."""
    if not value:
        return None
    try:
        return normalise(value)
    except ValueError:
        return value


def identities(report: intake.CaseReported, key: bytes) -> list[Identity]:
    out: dict[tuple[str, str], Identity] = {}

    def add(kind: Kind, value: str | None, person: intake.Person) -> None:
        if value:
            digest = keyed(key, kind, value)
            out.setdefault((kind, digest), Identity(kind, digest, person.person_id))

    for p in report.persons:
        # erased (or unreadable) data links nothing: "[erased]" must not match every other erased case
        p = p.model_copy(update={f: None for f in ("name", "nik", "passport_number", "phone", "birth_date")
                                 if getattr(p, f) in (crypto.ERASED, crypto.UNREADABLE)})
        recruiting = p.role in RECRUITING_ROLES
        phone = _normalised(normalise_phone, p.phone)
        add("nik", _normalised(normalise_nik, p.nik), p)
        add("passport", _normalised(normalise_passport, p.passport_number), p)
        if recruiting:
            add("recruiter_phone", phone, p)
            add("recruiter_name", normalise_name(p.name) if p.name else None, p)
        else:
            add("phone", phone, p)
            if p.name and isinstance(p.birth_date, date):
                add("name_birth_date", f"{normalise_name(p.name)}|{p.birth_date.isoformat()}", p)
    return list(out.values())


def refs_of(entry: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The case references a link-index entry keeps: one JSON text (`refs`), or the array of entries written before
    it was (`cases`). FerretDB reads and writes an array element by element (some 60 µs of its CPU each: a village's
    busy day of 200 references cost 13 ms to read and 20 ms to write) and a string of the same size at once."""
    if not entry:
        return []
    if (text := entry.get("refs")) is not None:
        return json.loads(text)
    return list(entry.get("cases", []))


def with_refs(entry: Mapping[str, Any], refs: list[dict[str, Any]]) -> dict[str, Any]:
    """`entry` keeping `refs` (as one JSON text)."""
    return {**{k: v for k, v in entry.items() if k != "cases"}, "refs": json.dumps(refs, separators=(",", ":"))}


def case_ref(report: intake.CaseReported, case_id: str) -> dict[str, Any]:
    """What the link index keeps of a case: enough to show a link and to judge corroboration."""
    return {"case_id": case_id, "case_number": report.case_number, "village_code": report.village_code,
            "received_at": report.received_at.isoformat(), "observed_at": report.observed_at.isoformat(),
            "reporter_id": report.reporter.id, "indicators": list(report.indicators)}


def link_of(ref: dict[str, Any], reasons: list[str], kind: str) -> dict[str, Any]:
    return {"case_id": ref["case_id"], "case_number": ref.get("case_number"), "village_code": ref.get("village_code"),
            "received_at": ref.get("received_at"), "kind": kind, "reasons": sorted(set(reasons))}


def shared_identity_links(matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`matches` are case references (with the identifier `kind` they share) of OTHER cases."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    for m in matches:
        by_case.setdefault(m["case_id"], []).append(m)
    links = []
    for rows in by_case.values():
        kinds = [r["kind"] for r in rows]
        kind = "shared_recruiter" if all(k.startswith("recruiter_") for k in kinds) else "shared_person"
        links.append(link_of(rows[0], [REASONS[k] for k in kinds], kind))
    return links


def corroborates(new: intake.CaseReported, other: dict[str, Any], shared_identity: bool) -> bool:
    """Two reporters of one village describing the same thing within a day corroborate each other."""
    if other.get("village_code") != new.village_code or other.get("reporter_id") == new.reporter.id:
        return False
    observed = datetime.fromisoformat(other["observed_at"]) if other.get("observed_at") else None
    if observed is None or abs(observed - new.observed_at) > CORROBORATION_WINDOW:
        return False
    return shared_identity or bool(set(other.get("indicators", [])) & set(new.indicators))


def bucket_ids(report: intake.CaseReported) -> list[str]:
    """Corroboration buckets (village, observation day) that can hold a report within the window."""
    day = report.observed_at.astimezone(UTC).date()
    return [f"{report.village_code}:{(day + timedelta(days=d)).isoformat()}" for d in (-1, 0, 1)]


def own_bucket(report: intake.CaseReported) -> str:
    return f"{report.village_code}:{report.observed_at.astimezone(UTC).date().isoformat()}"


def most_recent(links: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The MAX_LINKS links to the most recently received cases, and how many were left out."""
    ordered = sorted(links, key=lambda link: (link.get("received_at") or "", link["case_id"]), reverse=True)
    return ordered[:MAX_LINKS], max(0, len(ordered) - MAX_LINKS)


def merge_links(existing: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One link per other case, its reasons the union of all found."""
    merged: dict[str, dict[str, Any]] = {link["case_id"]: dict(link) for link in existing}
    for link in new:
        if link["case_id"] in merged:
            current = merged[link["case_id"]]
            current["reasons"] = sorted(set(current["reasons"]) | set(link["reasons"]))
            if current["kind"] != link["kind"]:
                current["kind"] = "shared_person" if "shared_person" in (current["kind"], link["kind"]) else link["kind"]
        else:
            merged[link["case_id"]] = dict(link)
    return list(merged.values())


# --- watch list ---------------------------------------------------------------------------------------------

WatchKind = Literal["recruiter", "phone", "agency"]


def watch_value(kind: str, value: str) -> str:
    """The form a watch-list value is matched in."""
    if kind == "phone":
        return normalise_phone(value)
    return normalise_name(value)


MAX_NGRAM = 6  # an agency name in a narrative is matched by its words, up to this many


def watch_digest(key: bytes, kind: str, match: str) -> str:
    """The keyed hash a watch-list value is stored and matched as: the list holds no names or phones."""
    return keyed(key, f"watch:{kind}", match)


def _narrative_digests(key: bytes, kind: str, narrative: str) -> set[str]:
    words = normalise_name(narrative).split()
    return {watch_digest(key, kind, " ".join(words[i:i + n]))
            for n in range(1, MAX_NGRAM + 1) for i in range(len(words) - n + 1)}


def watchlist_hits(report: intake.CaseReported, entries: list[dict[str, Any]], key: bytes) -> list[dict[str, Any]]:
    hits = []
    narrative: dict[str, set[str]] = {}
    for entry in entries:
        kind, wanted = entry["kind"], entry["digest"]
        matched: str | None = None
        for p in report.persons:
            if kind == "phone" and p.phone and watch_digest(key, kind, p.phone) == wanted:
                matched = p.person_id
            elif kind in ("recruiter", "agency") and p.role in RECRUITING_ROLES and p.name \
                    and watch_digest(key, kind, normalise_name(p.name)) == wanted:
                matched = p.person_id
        if matched is None and kind in ("recruiter", "agency"):
            if kind not in narrative:
                narrative[kind] = _narrative_digests(key, kind, report.narrative)
            if wanted in narrative[kind]:
                matched = "narrative"
        if matched is not None:
            hits.append({"watch_id": entry["_id"], "kind": kind, "matched": matched})
    return hits
