from datetime import UTC, date, datetime, timedelta

import pytest

from services.verification import screening
from shared.contracts import intake
from tests.builders import case_reported
from shared.contracts.envelope import parse_data

TODAY = date(2026, 11, 29)


def _report(indicators=(), persons=None, departure=None, suspected=("unknown",)):
    event = case_reported(indicators=list(indicators), suspected_types=list(suspected),
                          persons=persons if persons is not None else [],
                          departure=departure, observed_at=datetime(2026, 11, 28, 9, tzinfo=UTC))
    return parse_data(event, intake.CaseReported)


def _person(**kw):
    return intake.Person(person_id="p", role="potential_victim", name="x", **kw)


@pytest.mark.parametrize(("indicators", "persons", "departure_in_days", "score", "priority"), [
    ([], [], None, 0, "low"),
    (["family_pressed_to_sign"], [], None, 1, "low"),
    (["social_media_recruitment", "no_family_permission"], [], None, 4, "low"),
    (["unlicensed_recruiter", "social_media_recruitment"], [], None, 5, "medium"),
    (["unlicensed_recruiter", "no_written_contract", "non_work_visa"], [], None, 9, "high"),
    (["unlicensed_recruiter", "unlicensed_recruiter"], [], None, 3, "low"),  # counted once
    (["distress_signal_abroad"], [], None, 3, "critical"),  # forces escalation
    (["minor_or_altered_identity"], [], None, 3, "critical"),
    (["family_pressed_to_sign"], [_person(age=16)], None, 1, "critical"),  # a child
    (["family_pressed_to_sign"], [_person(birth_date=date(2010, 1, 1))], None, 1, "critical"),
    (["family_pressed_to_sign"], [_person(age=18)], None, 1, "low"),
    (["family_pressed_to_sign"], [], 2, 1, "critical"),  # departure within 72 h
    (["family_pressed_to_sign"], [], 3, 1, "critical"),
    (["family_pressed_to_sign"], [], 5, 1, "low"),
    (["family_pressed_to_sign"], [], -2, 1, "low"),  # a departure already past is not imminent
])
def test_score_and_priority(indicators, persons, departure_in_days, score, priority):
    departure = (intake.Departure(planned_date=TODAY + timedelta(days=departure_in_days))
                 if departure_in_days is not None else None)
    result = screening.screen(_report(indicators, persons, departure), TODAY)
    assert (result.score, result.priority) == (score, priority)


def test_escalation_says_why():
    result = screening.screen(_report(["distress_signal_abroad"], [_person(age=15)],
                                      intake.Departure(planned_date=TODAY)), TODAY)
    assert result.escalation.child_involved
    assert result.escalation.forcing_indicators == ["distress_signal_abroad"]
    assert result.escalation.departure_within_72h


def test_suggested_types_are_explained_by_their_indicators():
    result = screening.screen(_report(["undocumented_foreigners_lodged", "paid_to_move_foreigners",
                                       "irregular_route"]), TODAY)
    assert result.suggested_types[0] == "tppm"
    assert result.type_reasons["tppm"] == ["undocumented_foreigners_lodged", "paid_to_move_foreigners",
                                           "irregular_route"]
    assert result.type_reasons["np_pmi"] == ["irregular_route"]


def test_the_reporters_suspicion_is_kept_among_the_suggestions():
    result = screening.screen(_report(["cash_advance_to_family"], suspected=("np_pmi",)), TODAY)
    assert result.suggested_types == ["tppo", "np_pmi"]


def test_thresholds_come_from_data():
    assert screening.thresholds() == [("high", 9), ("medium", 5), ("low", 0)]
    assert screening.screen(_report([]), TODAY).indicator_set_version.startswith("indicators.csv@")


def test_a_watch_list_hit_raises_priority_to_at_least_high():
    assert screening.screen(_report(["family_pressed_to_sign"]), TODAY, ["w1"]).priority == "high"
    assert screening.screen(_report(["family_pressed_to_sign"]), TODAY, ["w1"]).watchlist_hits == ["w1"]
    assert screening.screen(_report(["distress_signal_abroad"]), TODAY, ["w1"]).priority == "critical"


def test_missing_np_pmi_documents_count_as_their_indicators_once():
    report = _report(["no_family_permission"]).model_copy(update={"documents": {
        "work_visa": "missing", "work_contract": "missing", "placement_agreement": "missing",
        "family_permission": "missing", "passport": "missing", "health_psych_certificate": "present"}})
    result = screening.screen(report, TODAY)
    sources = {i.id: i.source for i in result.indicators}
    assert sources == {"no_family_permission": "reported", "non_work_visa": "checklist:work_visa",
                       "no_written_contract": "checklist:work_contract"}
    assert result.score == 2 + 3 + 3


def test_documents_present_or_unknown_trigger_nothing():
    report = _report([]).model_copy(update={"documents": {"work_visa": "present", "work_contract": "unknown"}})
    assert screening.screen(report, TODAY).indicators == []
