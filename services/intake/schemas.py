"""What intake's routes answer (OpenAPI models). Request bodies are the domain's `ReportIn` and `AmendmentIn`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.intake.domain import Status


class ReportAccepted(BaseModel):
    case_id: str
    case_number: str
    status: str
    received_at: str


class WithdrawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000)


class StatusChange(BaseModel):
    status: Status
    at: str


class ReportView(BaseModel):
    """A reporter's own report, its personal data opened ([erased] after erasure)."""

    case_id: str
    case_number: str
    status: Status
    next_step: str
    needs_attention: bool = Field(description="processing stopped at a fault (a dead-lettered event); supervisors "
                                              "see it too")
    question: str | None
    decision_reason: str | None
    received_at: str
    updated_at: str
    report: dict[str, Any] = Field(description="the report as filed (and amended), as the reporter wrote it")
    history: list[StatusChange]


REPLAYED = {"Idempotent-Replayed": {"description": "true when this answers an earlier request with the same "
                                                   "Idempotency-Key", "schema": {"type": "string"}}}
