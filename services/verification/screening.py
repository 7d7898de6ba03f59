"""Screening (DOMAIN.md §3): score from weighted indicators, escalation flags, priority, case-type suggestion.

Pure. Weights come from shared/data/indicators.csv and priority thresholds from
shared/data/screening_thresholds.csv, so changing them is a data change, not a code change.
"""

from __future__ import annotations

import csv
from collections import Counter
from datetime import date, datetime
from functools import cache
from importlib import resources

from shared import reference, urgency
from shared.contracts import intake, verification

PRIORITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}


@cache
def thresholds() -> list[tuple[str, int]]:
    """(priority, minimum score), highest first; validated once at start."""
    text = resources.files("shared.data").joinpath("screening_thresholds.csv").read_text(encoding="utf-8")
    rows = [(r["priority"].strip(), int(r["min_score"])) for r in csv.DictReader(text.splitlines())]
    if {p for p, _ in rows} != {"high", "medium", "low"} or min(s for _, s in rows) != 0:
        raise reference.ReferenceDataError("screening_thresholds.csv needs high, medium and low, with low at 0")
    return sorted(rows, key=lambda r: -r[1])


@cache
def checklist_indicators() -> dict[str, str]:
    """NP-PMI checklist item -> the indicator a missing item counts as (shared/data/np_pmi_checklist.csv)."""
    text = resources.files("shared.data").joinpath("np_pmi_checklist.csv").read_text(encoding="utf-8")
    mapping = {r["item"].strip(): r["indicator_if_missing"].strip() for r in csv.DictReader(text.splitlines())}
    unknown = {i for i in mapping.values() if i and i not in reference.indicators()}
    if unknown:
        raise reference.ReferenceDataError(f"np_pmi_checklist.csv names unknown indicators: {sorted(unknown)}")
    return {item: indicator for item, indicator in mapping.items() if indicator}


def screen(report: intake.CaseReported, today: date, watchlist_hits: list[str] = ()) -> verification.CaseScreened:  # type: ignore[assignment]
    known = reference.indicators()
    sources = {i: "reported" for i in report.indicators if i in known}
    for item, status in report.documents.items():
        derived = checklist_indicators().get(item)
        if status == "missing" and derived and derived not in sources:
            sources[derived] = f"checklist:{item}"
    triggered = [known[i] for i in sources]
    score = sum(i.weight for i in triggered)
    observed = report.observed_at.date()
    child = urgency.child_involved(report, observed)
    forcing = [i.id for i in triggered if i.forces_escalation]
    imminent = urgency.departure_imminent(report, today)
    escalation = verification.Escalation(child_involved=child, forcing_indicators=forcing,
                                         departure_within_72h=imminent)
    if child or forcing or imminent:
        priority = "critical"
    else:
        priority = next(p for p, minimum in thresholds() if score >= minimum)
        if watchlist_hits and PRIORITY_RANK[priority] > PRIORITY_RANK["high"]:
            priority = "high"  # a known recruiter, phone or unlicensed agency: at least high
    reasons: dict[str, list[str]] = {}
    for indicator in triggered:
        for case_type in indicator.points_to:
            reasons.setdefault(case_type, []).append(indicator.id)
    counts = Counter({t: len(ids) for t, ids in reasons.items()})
    for t in report.suspected_types:
        if t != "unknown":
            counts[t] += 0  # the reporter's suspicion is listed, ranked by the indicators behind it
            reasons.setdefault(t, [])
    suggested = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return verification.CaseScreened(
        case_number=report.case_number,
        village_code=report.village_code,
        score=score,
        priority=priority,
        indicators=[verification.TriggeredIndicator(id=i.id, weight=i.weight, stage=i.stage,
                                                    points_to=list(i.points_to),
                                                    forces_escalation=i.forces_escalation, source=sources[i.id])
                    for i in triggered],
        escalation=escalation,
        suggested_types=suggested or ["unknown"],
        type_reasons=reasons,
        indicator_set_version=reference.data_version("indicators.csv"),
        watchlist_hits=list(watchlist_hits),
        submission=report.submission,
    )


def situation(report: intake.CaseReported, screening: verification.CaseScreened, today: date, *,
              person_threatened: bool, victim_abroad: bool) -> verification.Situation:
    departure = report.departure.planned_date if report.departure else None
    return verification.Situation(
        child_involved=screening.escalation.child_involved,
        departure_planned=departure is not None and departure >= today,
        departure_date=departure,
        person_threatened=person_threatened,
        victim_abroad=victim_abroad or "distress_signal_abroad" in {i.id for i in screening.indicators},
    )


def today_of(now: datetime) -> date:
    return now.date()
