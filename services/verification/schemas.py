"""What verification's routes answer (OpenAPI models). Request bodies are the domain's `Decision` and
`WatchEntryIn`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.contracts.verification import Priority


class Link(BaseModel):
    case_id: str
    case_number: str | None = None
    village_code: str | None = None
    received_at: str | None = None
    kind: str
    reasons: list[str]


class QueueItem(BaseModel):
    """A case waiting for a decision: no personal data."""

    case_id: str
    case_number: str
    version: int
    village_code: str
    received_at: str
    priority: Priority
    score: int
    escalation: dict[str, Any]
    suggested_types: list[str]


class CaseView(BaseModel):
    """A case with its report opened for the verifier of its region ([erased] after erasure)."""

    case_id: str
    case_number: str
    version: int = Field(description="also the ETag; send it back as If-Match with a decision")
    status: Literal["awaiting_decision", "info_requested", "verified", "rejected", "withdrawn"]
    village_code: str
    received_at: str
    screening: dict[str, Any] = Field(description="score, priority, indicators, escalation, suggested_types, "
                                                  "type_reasons")
    links: list[Link]
    more_links: int
    watchlist_hits: list[dict[str, Any]]
    question: str | None
    exchanges: list[dict[str, Any]] = Field(description="every question asked, each with the reporter's answer once "
                                                        "given")
    decision: dict[str, Any] | None
    report: dict[str, Any]


class WatchEntry(BaseModel):
    id: str
    kind: str
    region: str
    added_by: str
    added_at: str
    label: str | None
    note: str | None


ETAG = {"ETag": {"description": "the case version, quoted", "schema": {"type": "string"}}}
