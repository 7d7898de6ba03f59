"""Events produced by the referral service on `waspada.referral.v1`."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, Field

from shared.contracts.envelope import Contract, register
from shared.contracts.verification import Priority


class Deadlines(Contract):
    acknowledge_by: AwareDatetime
    first_update_by: AwareDatetime


@register("referral.created", 1)
class ReferralCreated(Contract):
    referral_id: str
    case_number: str
    agency_id: str
    function: str
    trigger: str
    priority: Priority
    deadlines: Deadlines
    fallback: bool = False  # routed to a higher-level unit because the region has none of its own
    rerouted_from: str | None = None  # the declined referral this one replaces


@register("referral.acknowledged", 1)
class ReferralAcknowledged(Contract):
    referral_id: str
    agency_id: str


@register("referral.accepted", 1)
class ReferralAccepted(Contract):
    referral_id: str
    agency_id: str


@register("referral.declined", 1)
class ReferralDeclined(Contract):
    referral_id: str
    agency_id: str
    reason: str
    # Where the case goes instead: the next wider unit for the same function, or a supervisor when none is left.
    rerouted_to_referral_id: str | None = None
    rerouted_to_agency_id: str | None = None
    needs_supervisor: bool = False


@register("referral.updated", 1)
class ReferralUpdated(Contract):
    referral_id: str
    agency_id: str
    note: str | None = None
    milestone: dict[str, Any] | None = None


@register("referral.escalated", 1)
class ReferralEscalated(Contract):
    referral_id: str
    agency_id: str
    deadline: str
    due_at: AwareDatetime
    overdue_seconds: int


@register("referral.closed", 1)
class ReferralClosed(Contract):
    referral_id: str
    agency_id: str
    outcome: str


@register("case.closed", 1)
class CaseClosed(Contract):
    outcomes: dict[str, str] = Field(default_factory=dict)  # agency_id -> outcome
