"""Small builders for test data; ids are random per call so tests never collide."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.contracts import intake
from shared.contracts.envelope import Envelope, new_event

PILOT_VILLAGE = "36.03.11.2009"  # Tanjakan Mekar
OTHER_VILLAGE = "36.03.11.2002"  # Rajeg Mulya


def report_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "village_code": PILOT_VILLAGE,
        "observed_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
        "suspected_types": ["np_pmi"],
        "indicators": ["unlicensed_recruiter", "no_written_contract", "non_work_visa"],
        "narrative": "Seorang sponsor menawarkan kerja di Arab Saudi dengan visa ziarah.",
        "persons": [
            {"role": "potential_victim", "name": "Siti Aminah", "nik": "3603115507050001",
             "phone": "081234567890", "age": 19, "sex": "female"},
            {"role": "recruiter", "name": "Pak Joko", "phone": "+62 812-9999-0000"},
        ],
        "departure": {"planned_date": (date.today() + timedelta(days=20)).isoformat(), "port": "CGK",
                      "destination_country": "SA"},
        "location": {"lat": -6.08, "lon": 106.52},
    }
    body.update(over)
    return body


def case_reported(case_id: str | None = None, **over: Any) -> Envelope:
    case_id = case_id or str(uuid.uuid4())
    now = datetime.now(UTC)
    fields: dict[str, Any] = dict(
        case_number=f"3603-{now.year}-{uuid.uuid4().int % 10**6:06d}",
        village_code=PILOT_VILLAGE,
        regency_code="36.03",
        reporter=intake.Reporter(id="reporter-1", role="reporter", region=PILOT_VILLAGE),
        received_at=now,
        observed_at=now - timedelta(hours=1),
        suspected_types=["np_pmi"],
        indicators=["unlicensed_recruiter", "no_written_contract"],
        narrative="Ada calo menawarkan kerja.",
        persons=[intake.Person(person_id=str(uuid.uuid4()), role="potential_victim", name="Siti", age=19)],
    )
    fields.update(over)
    return new_event(intake.CaseReported(**fields), case_id=case_id, producer="intake", actor=None,
                     correlation_id=case_id, causation_id=None)


def case_verified(case_types=("np_pmi",), priority="high", village=PILOT_VILLAGE, case_id: str | None = None,
                  **situation: Any) -> Envelope:
    from shared.contracts.verification import CaseVerified, Situation

    case_id = case_id or str(uuid.uuid4())
    payload = CaseVerified(case_number="3603-2026-000001", village_code=village, case_types=list(case_types),
                           priority=priority, situation=Situation(**situation))
    return new_event(payload, case_id=case_id, producer="verification", actor=None,
                     correlation_id=f"corr-{case_id}", causation_id=None)
