"""Checkpoints and exports of the trail. Pure.

A checkpoint records the head (last seq and hash) of every case's trail at one moment, chained to the previous
checkpoint like trail entries are chained to each other: a trail deleted whole, or cut back, no longer matches
the head a checkpoint recorded, and a checkpoint changed or deleted breaks the checkpoint chain.

The heads are kept in pages of `PAGE_SIZE` cases (ordered by case id), each hashed; the checkpoint document holds
only the Merkle root over the page hashes, so it stays small however many cases there are (one document with every
head would pass MongoDB's 16 MB limit at about 100 000 cases), and changing any page changes the root.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from services.audit.domain import GENESIS_HASH, canonical_json, timestamp

PAGE_SIZE = 1000


def _hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


def page_hash(heads: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(list(heads), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def merkle_root(hashes: Sequence[str]) -> str:
    """SHA-256 Merkle root over hex leaf hashes (a lone last node is carried up); GENESIS_HASH for none."""
    level = list(hashes)
    if not level:
        return GENESIS_HASH
    while len(level) > 1:
        level = [hashlib.sha256((level[i] + level[i + 1]).encode()).hexdigest() if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


def page(number: int, heads: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One numbered page of heads (the caller hands them over ordered by case id), with its hash."""
    kept = [{"case_id": h["case_id"], "seq": int(h["seq"]), "hash": h["hash"]} for h in heads]
    return {"page": number, "heads": kept, "hash": page_hash(kept)}


def checkpoint(previous: Mapping[str, Any] | None, page_hashes: Sequence[str], cases: int, at: datetime,
               pages_id: str) -> dict[str, Any]:
    """The checkpoint document: the Merkle root over its pages' hashes, chained to `previous`."""
    seq = int(previous["seq"]) + 1 if previous else 1
    prev_hash = previous["hash"] if previous else GENESIS_HASH
    body = {"_id": f"{seq:010d}", "seq": seq, "at": timestamp(at), "cases": cases, "pages": len(page_hashes),
            "pages_id": pages_id, "root": merkle_root(page_hashes), "prev_hash": prev_hash}
    return {**body, "hash": _hash(prev_hash, body)}


def verify_checkpoints(chain: Sequence[Mapping[str, Any]], page_hashes: Mapping[str, Sequence[str]],
                       last_heads: Iterable[Mapping[str, Any]], trail_hashes: Mapping[tuple[str, int], str]
                       ) -> dict[str, Any]:
    """`chain` in seq order; `page_hashes`: pages_id -> the hashes recomputed from the stored pages, in page order;
    `last_heads`: the heads stored in the last checkpoint's pages; `trail_hashes` maps (case_id, seq) to the hash
    stored in the trail now."""
    prev = GENESIS_HASH
    for n, cp in enumerate(chain, start=1):
        body = {k: v for k, v in cp.items() if k != "hash"}
        hashes = page_hashes.get(str(cp.get("pages_id")), [])
        if cp.get("seq") != n or cp.get("prev_hash") != prev or _hash(prev, body) != cp.get("hash") \
                or len(hashes) != cp.get("pages") or merkle_root(hashes) != cp.get("root"):
            return {"valid": False, "checkpoints": len(chain), "first_broken_seq": n, "trails_not_matching": []}
        prev = cp["hash"]
    missing = []
    if chain:
        for head in last_heads:
            if trail_hashes.get((head["case_id"], int(head["seq"]))) != head["hash"]:
                missing.append(head["case_id"])
    return {"valid": not missing, "checkpoints": len(chain), "first_broken_seq": None,
            "trails_not_matching": missing}


def checkpoint_view(cp: Mapping[str, Any]) -> dict[str, Any]:
    return {k: cp.get(k) for k in ("seq", "at", "cases", "pages", "root", "prev_hash", "hash")}


# --- exports ------------------------------------------------------------------------------------------------

def export_jsonl(case: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], verdict: Mapping[str, Any],
                 exported_by: str, at: datetime) -> str:
    """One line per trail entry, then one line with the verification verdict as of the export."""
    lines = [json.dumps(e, ensure_ascii=False, sort_keys=True) for e in entries]
    lines.append(json.dumps({"export": {"case_id": case["_id"], "case_number": case.get("case_number"),
                                        "exported_by": exported_by, "exported_at": timestamp(at),
                                        "verification": dict(verdict)}}, ensure_ascii=False, sort_keys=True))
    return "\n".join(lines) + "\n"


def _who(actor: Mapping[str, Any] | None) -> str:
    if not actor:
        return "system"
    return " / ".join(str(actor[k]) for k in ("id", "role", "unit") if actor.get(k))


def _why(data: Mapping[str, Any] | None) -> str:
    data = data or {}
    parts = [f"{k}: {data[k]}" for k in ("reason", "note", "question", "answer", "outcome", "purpose")
             if data.get(k)]
    if data.get("case_types"):
        parts.append("types: " + ", ".join(data["case_types"]))
    if data.get("agency_id"):
        parts.append(f"agency: {data['agency_id']}")
    return "; ".join(parts)


def export_html(case: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], verdict: Mapping[str, Any],
                exported_by: str, at: datetime) -> str:
    """A printable document a supervisor can hand over: who did what, when and why, with the chain's hashes."""
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{x['seq']}</td><td>{e(str(x.get('occurred_at') or ''))}</td><td>{e(str(x['type']))}</td>"
        f"<td>{e(_who(x.get('actor')))}</td><td>{e(_why(x.get('data')))}</td>"
        f"<td class=h>{e(str(x['hash']))}</td></tr>" for x in entries)
    state = "VALID" if verdict.get("valid") else f"BROKEN at entry {verdict.get('first_broken_seq')}"
    return f"""<!doctype html>
<html lang="id"><head><meta charset="utf-8"><title>Rekam jejak {e(str(case.get('case_number') or case['_id']))}</title>
<style>body{{font-family:sans-serif;font-size:11pt;margin:2em}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #999;padding:4px;vertical-align:top;text-align:left}}.h{{font-family:monospace;
font-size:8pt;word-break:break-all}}@media print{{a{{color:black}}}}</style></head><body>
<h1>Rekam jejak pemrosesan / Processing trail</h1>
<p>Case <b>{e(str(case.get('case_number') or ''))}</b> ({e(str(case['_id']))}), village
{e(str(case.get('village_code') or ''))}, status {e(str(case.get('status') or ''))}.</p>
<p>Exported {e(timestamp(at))} by {e(exported_by)}. Entries: {len(entries)}. Hash chain: <b>{state}</b>
(SHA-256 over the previous hash and each entry's canonical JSON; the first entry follows 64 zeros).</p>
<table><thead><tr><th>#</th><th>When</th><th>What</th><th>Who</th><th>Why</th><th>Hash</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
