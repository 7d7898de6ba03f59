"""What audit's routes answer (OpenAPI models)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.audit.domain import Status


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000, description="the legal basis, e.g. the retention schedule")


class CaseSummary(BaseModel):
    """A case as a search lists it: no personal data."""

    case_id: str
    case_number: str | None
    village_code: str | None
    status: Status | None
    types: list[str]
    reported_at: str | None
    updated_at: str | None
    trail_entries: int
    needs_attention: bool = Field(description="one of its events was dead-lettered and nothing moved it on since")


class TrailEntry(BaseModel):
    seq: int | None
    event_id: str | None
    type: str | None
    occurred_at: str | None
    recorded_at: str | None
    actor: dict[str, Any] | None
    producer: str | None
    correlation_id: str | None
    causation_id: str | None
    prev_hash: str | None
    hash: str | None
    data: Any


class Trail(BaseModel):
    case_id: str
    entries: list[TrailEntry]


class DirectoryEntry(TrailEntry):
    account_id: str | None


class DirectoryTrail(BaseModel):
    trail: str
    entries: list[DirectoryEntry]
    next: int | None = Field(description="pass as `after` (or, newest first, as `before`) for the following entries; null at the end")


class ChainVerdict(BaseModel):
    valid: bool
    entries: int
    first_broken_seq: int | None


class DirectoryVerdict(ChainVerdict):
    whole_checked_at: str | None = Field(None, description="with since_checked: when the chain was last recomputed "
                                         "from its first entry")
    checked_from_seq: int | None = Field(None, description="with since_checked: the first entry recomputed now "
                                         "(1: the whole chain)")


class Week(BaseModel):
    week: str
    reports: int
    by_village: dict[str, int]
    by_type: dict[str, int]
    escalations: int


class Stats(BaseModel):
    region: str
    total: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    by_district: dict[str, int]
    by_village: dict[str, int]
    needing_attention: int
    median_seconds_report_to_decision: float | None
    median_seconds_decision_to_first_acknowledgement: float | None
    decided_cases: int
    acknowledged_cases: int
    cases_with_overdue_referrals: int
    overdue_referrals: int
    weeks: list[Week] = Field(description="reports by village and kind, and escalations, per week (Monday, UTC)")


class DeadLetter(BaseModel):
    id: str
    topic: str | None
    partition: int | None
    offset: int | None
    key: str | None
    source_topic: str | None
    consumer: str | None
    error: str | None
    case_id: str | None
    recorded_at: str | None
    body: str | None
    headers: dict[str, Any]
    raw: str | None = Field(None, description="the whole message in base64, when the database refused it as it was")
    record_error: str | None = Field(None, description="why it could not be stored as it was")


class Erasure(BaseModel):
    case_id: str
    erased: bool


class Checkpoint(BaseModel):
    seq: int
    at: str
    cases: int | None = Field(description="trails of your region the checkpoint holds the head of (null for one "
                                          "taken before regions were counted, or a region finer than a district)")
    root: str | None = Field(description="Merkle root over the pages of heads the checkpoint holds")
    prev_hash: str
    hash: str


class CheckpointVerdict(BaseModel):
    valid: bool
    checkpoints: int
    first_broken_seq: int | None
    trails_not_matching: list[str] = Field(description="cases of your region whose trail no longer ends where the "
                                                       "last checkpoint saw it")


EXPORT_MEDIA = {"application/x-ndjson": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}}}
# The printable export is a document to hand over, never a page that runs anything.
EXPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'")
