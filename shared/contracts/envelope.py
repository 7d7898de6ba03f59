"""The one envelope every Waspada event travels in, and the registry of typed payloads (`data`) per event type."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

Role = Literal["reporter", "verifier", "investigator", "supervisor", "admin", "system"]


class Contract(BaseModel):
    """Base of every event payload: immutable, tolerant of fields added by a newer producer."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Actor(Contract):
    id: str
    role: Role
    unit: str | None = None
    region: str | None = None


class Envelope(Contract):
    event_id: str
    type: str
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    case_id: str = Field(min_length=1)
    producer: str
    actor: Actor | None = None
    correlation_id: str
    causation_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json()

    def headers(self) -> dict[str, str]:
        from shared import topics

        return {
            topics.HEADER_EVENT_TYPE: self.type,
            topics.HEADER_EVENT_ID: self.event_id,
            topics.HEADER_CASE_ID: self.case_id,
            topics.HEADER_CORRELATION_ID: self.correlation_id,
        }

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Envelope:
        """Parse a message body; raises ContractError for anything that is not a valid envelope."""
        try:
            return cls.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ContractError(f"not a valid event envelope: {_short(exc)}") from exc


class ContractError(Exception):
    """A message that can never be processed as it is: it goes to the dead-letter topic without retries."""

    loggable = True  # its text names fields and rules (`_short`), never the values a message carried


T = TypeVar("T", bound="Contract")

_REGISTRY: dict[tuple[str, int], type[Contract]] = {}
_TYPE_OF: dict[type[Contract], tuple[str, int]] = {}


def register(event_type: str, schema_version: int = 1):
    """Class decorator: bind a payload model to its event type and schema version."""

    def bind(model: type[Contract]) -> type[Contract]:
        _REGISTRY[(event_type, schema_version)] = model
        _TYPE_OF[model] = (event_type, schema_version)
        return model

    return bind


def registered_types() -> dict[tuple[str, int], type[Contract]]:
    return dict(_REGISTRY)


def parse_data(envelope: Envelope, model: type[T]) -> T:
    """Validate an envelope's payload as `model`; a mismatch is a ContractError (dead letter, no retry)."""
    expected = _TYPE_OF.get(model)
    if expected and (envelope.type, envelope.schema_version) != expected:
        raise ContractError(f"{envelope.type} v{envelope.schema_version} is not {expected[0]} v{expected[1]}")
    try:
        return model.model_validate(envelope.data)
    except ValidationError as exc:
        raise ContractError(f"{envelope.type} payload invalid: {_short(exc)}") from exc


def new_event(
    payload: Contract,
    *,
    case_id: str,
    producer: str,
    actor: Actor | None,
    correlation_id: str,
    causation_id: str | None,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
) -> Envelope:
    event_type, version = _TYPE_OF[type(payload)]
    return Envelope(
        event_id=event_id or str(uuid.uuid4()),
        type=event_type,
        schema_version=version,
        occurred_at=occurred_at or datetime.now(UTC),
        case_id=case_id,
        producer=producer,
        actor=actor,
        correlation_id=correlation_id,
        causation_id=causation_id,
        data=payload.model_dump(mode="json"),
    )


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)[:300]
