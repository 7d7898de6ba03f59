"""Access events on `waspada.access.v1`: who read which case's personal data (the PDP record of processing).

Free text in them is sealed (shared.crypto): an export's purpose with the case's key, an erasure's legal basis
with the records key (it must outlive the case's key).
"""

from __future__ import annotations

from pydantic import Field

from shared.contracts.envelope import Contract, register


@register("case.viewed", 1)
class CaseViewed(Contract):
    service: str
    resource: str
    purpose: str | None = None


@register("case.exported", 1)
class CaseExported(Contract):
    service: str
    format: str
    purpose: str | None = None


@register("case.searched", 1)  # one case a search showed: before `cases.listed`, kept for the trails that hold it
class CaseSearched(Contract):
    service: str
    query: dict[str, str]


MAX_LISTED = 1000


@register("cases.listed", 1)
class CasesListed(Contract):
    """One list request: who saw which cases listed, and with what query.

    The envelope's `case_id` (and so the Kafka key) is the listing's own id, since it names many cases; audit
    records it in the trail of each case in `case_ids`, as an entry whose `case_ids` is that case alone."""

    service: str
    resource: str  # "reports": a reporter's own reports; "cases": a supervisor's search
    query: dict[str, str] = Field(default_factory=dict)
    case_ids: list[str] = Field(min_length=1, max_length=MAX_LISTED)


@register("case.erased", 1)
class CaseErased(Contract):
    """A case's data key was destroyed at the end of retention: its personal data is unreadable everywhere."""

    service: str
    reason: str
