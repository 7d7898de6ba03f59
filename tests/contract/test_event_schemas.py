"""Committed JSON-schema snapshots per event: an incompatible contract change fails here until its version is bumped.

Regenerate after a deliberate, compatible change with WASPADA_UPDATE_SNAPSHOTS=1.
"""

import json
import os
from pathlib import Path

import pytest

import shared.contracts  # noqa: F401  (registers every event type)
from shared.contracts.envelope import Envelope, registered_types

SNAPSHOTS = Path(__file__).parent / "schemas"
UPDATE = os.environ.get("WASPADA_UPDATE_SNAPSHOTS") == "1"


def _schema(model) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


CASES = sorted(registered_types().items()) + [(("envelope", 1), Envelope)]


@pytest.mark.parametrize(("key", "model"), CASES, ids=[f"{t}.v{v}" for (t, v), _ in CASES])
def test_event_schema_matches_its_snapshot(key, model):
    event_type, version = key
    path = SNAPSHOTS / f"{event_type}.v{version}.json"
    if UPDATE:
        path.write_text(_schema(model))
    assert path.exists(), f"no snapshot for {event_type} v{version}: run with WASPADA_UPDATE_SNAPSHOTS=1"
    assert _schema(model) == path.read_text(), (
        f"{event_type} v{version} changed shape: if consumers of v{version} still understand it, update the "
        f"snapshot; otherwise register the new shape as v{version + 1} beside the old one"
    )


def test_no_snapshot_is_left_without_a_contract():
    names = {f"{t}.v{v}.json" for (t, v), _ in CASES}
    assert {p.name for p in SNAPSHOTS.glob("*.json")} <= names
