"""Versioned event contracts: one module per producing service, plus the envelope every event travels in."""

from shared.contracts.envelope import Actor, Envelope, parse_data, register
from shared.contracts import access, identity, intake, referral, verification  # noqa: F401  (registers the event types)

__all__ = ["Actor", "Envelope", "parse_data", "register"]
