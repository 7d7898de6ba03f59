"""Access events on `waspada.access.v1`: who read which case's personal data (the PDP record of processing)."""

from __future__ import annotations

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


@register("case.searched", 1)
class CaseSearched(Contract):
    service: str
    query: dict[str, str]


@register("case.erased", 1)
class CaseErased(Contract):
    """A case's data key was destroyed at the end of retention: its personal data is unreadable everywhere."""

    service: str
    reason: str
