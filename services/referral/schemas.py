"""What referral's routes answer (OpenAPI models). Request bodies are the domain's `Decline`, `Update`, `Close`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.referral.domain import Status


class Escalation(BaseModel):
    deadline: str | None
    due_at: str | None
    overdue_seconds: int | None
    at: str | None


class HistoryEntry(BaseModel):
    status: str | None
    action: str | None
    at: str | None
    by: str | None
    by_name: str | None = None  # the account's name when it acted (entries written before 2026-12-03 have none)


class ReroutedTo(BaseModel):
    referral_id: str
    agency_id: str


class LinkedCase(BaseModel):
    case_id: str
    case_number: str | None
    reasons: list[str]


class Referral(BaseModel):
    """A referral; in lists and action answers its notes are `[masked]`."""

    referral_id: str
    case_id: str
    case_number: str
    agency_id: str
    function: str
    trigger: str
    triggers: list[str]
    role: str | None
    fallback: bool
    village_code: str
    status: Status
    priority: str
    case_types: list[str]
    linked_cases: list[LinkedCase] = Field(description="cases sharing a person or recruiter with this one")
    deadlines: dict[str, str]
    milestones: list[dict[str, Any]]
    decline_reason: str | None
    rerouted_from: str | None
    rerouted_to: ReroutedTo | None
    needs_supervisor: bool
    next_deadline: str | None
    next_due_at: str | None = Field(description="when the next deadline falls due (the unit's countdown)")
    escalations: list[Escalation]
    outcome: str | None
    closing_note: str | None
    version: int
    created_at: str
    updated_at: str
    history: list[HistoryEntry]


class OpenedReferral(Referral):
    """One referral for its unit or the region's supervisor, with the case's persons and narrative (a recorded read)."""

    persons: list[dict[str, Any]]
    narrative: str | None


class Overdue(BaseModel):
    deadline: str
    due_at: str
    overdue_seconds: int


class ReferralNeedingAttention(Referral):
    overdue: Overdue | None = Field(description="the deadline breached now, or null (declined with no unit left)")
