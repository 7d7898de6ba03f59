"""Routing: case types x situation x region -> agencies, from the shipped data files; and their validation."""

from datetime import UTC, datetime, timedelta

import pytest

from services.referral import routing
from shared import reference
from shared.contracts.verification import Situation

PILOT = "36.03.11.2009"  # Tanjakan Mekar, Rajeg, Kab. Tangerang
PANDEGLANG = "36.01.01.2001"  # a regency with no units of its own in the pilot directory
ALL = Situation(child_involved=True, departure_planned=True, person_threatened=True, victim_abroad=True)

# (case types, situation, village) -> {agency_id: fallback}
TABLE = [
    (["tppo"], Situation(), PILOT, {"polresta_tangerang": False}),
    (["tppm"], Situation(), PILOT, {"kanim_tangerang": False, "polresta_tangerang": False}),
    (["np_pmi"], Situation(), PILOT, {"bp3mi_banten": False}),
    (["unknown"], Situation(), PILOT, {"polresta_tangerang": False}),
    (["np_pmi"], Situation(departure_planned=True), PILOT, {"bp3mi_banten": False, "tpi_soekarno_hatta": False}),
    (["tppo"], Situation(child_involved=True), PILOT,
     {"polresta_tangerang": False, "uptd_ppa_kab_tangerang": False}),
    (["tppo"], Situation(person_threatened=True), PILOT, {"polresta_tangerang": False, "lpsk": False}),
    (["np_pmi"], Situation(victim_abroad=True), PILOT, {"bp3mi_banten": False, "kemlu_pwni": False}),
    (["tppo", "tppm"], Situation(), PILOT, {"polresta_tangerang": False, "kanim_tangerang": False}),
    (["tppo", "tppm", "np_pmi"], ALL, PILOT,
     {"polresta_tangerang": False, "kanim_tangerang": False, "bp3mi_banten": False, "tpi_soekarno_hatta": False,
      "uptd_ppa_kab_tangerang": False, "lpsk": False, "kemlu_pwni": False}),
    # outside the pilot regency: regency-level functions fall back to the province, flagged
    (["tppo"], Situation(), PANDEGLANG, {"polda_banten": True}),
    (["tppm"], Situation(), PANDEGLANG, {"kanim_tangerang": True, "polda_banten": True}),
    (["tppo"], Situation(child_involved=True), PANDEGLANG, {"polda_banten": True, "uptd_ppa_kab_tangerang": True}),
    # provincial and national agencies are where they belong, not a fallback
    (["np_pmi"], Situation(departure_planned=True), PANDEGLANG, {"bp3mi_banten": False, "tpi_soekarno_hatta": False}),
    (["tppo"], Situation(person_threatened=True, victim_abroad=True), PANDEGLANG,
     {"polda_banten": True, "lpsk": False, "kemlu_pwni": False}),
]


@pytest.mark.parametrize(("case_types", "situation", "village", "expected"), TABLE)
def test_routing_table(case_types, situation, village, expected):
    decisions = routing.route(case_types, situation, village)
    assert {d.agency_id: d.fallback for d in decisions} == expected
    assert len(decisions) == len(expected)  # one referral per agency


def test_two_rules_choosing_one_agency_make_one_decision_that_names_both_triggers():
    decisions = routing.route(["tppo", "tppm"], Situation(child_involved=True), PILOT)
    [police] = [d for d in decisions if d.agency_id == "polresta_tangerang"]
    assert police.trigger == "tppo" and police.role == "primary" and police.function == "police"
    assert set(police.triggers) == {"tppo", "tppm", "child_involved"}


def test_a_primary_rule_wins_over_a_notify_rule_for_the_same_agency():
    [police] = [d for d in routing.route(["tppm", "tppo"], Situation(), PILOT) if d.function == "police"]
    assert police.role == "primary" and police.trigger == "tppo"
    [notified] = [d for d in routing.route(["tppm"], Situation(), PILOT) if d.function == "police"]
    assert notified.role == "notify"


def test_the_longest_region_prefix_wins():
    units = routing.parse_directory(
        [{"region_code": "", "function": "police", "agency_id": "bareskrim_ppa_ppo"},
         {"region_code": "36", "function": "police", "agency_id": "polda_banten"},
         {"region_code": "36.03", "function": "police", "agency_id": "polresta_tangerang"},
         {"region_code": "36.03.11", "function": "police", "agency_id": "polsek_rajeg"}],
        reference.agencies())
    table = routing.RoutingTable(routing.table().rules, units)
    assert [d.agency_id for d in routing.route(["tppo"], Situation(), PILOT, table)] == ["polsek_rajeg"]
    [elsewhere] = routing.route(["tppo"], Situation(), "36.03.08.2001", table)
    assert (elsewhere.agency_id, elsewhere.fallback) == ("polresta_tangerang", False)
    [outside] = routing.route(["tppo"], Situation(), "32.01.01.2001", table)
    assert (outside.agency_id, outside.fallback) == ("bareskrim_ppa_ppo", True)


def test_a_region_no_unit_covers_is_unroutable_not_dropped():
    with pytest.raises(routing.Unroutable):
        routing.route(["tppm"], Situation(), "32.01.01.2001")  # no immigration office outside Banten


def test_every_routed_agency_exists_and_deadlines_follow_priority():
    agencies = reference.agencies()
    for case_types, situation, village, _ in TABLE:
        assert all(d.agency_id in agencies for d in routing.route(case_types, situation, village))
    now = datetime(2026, 11, 29, 8, tzinfo=UTC)
    assert routing.deadlines_for("critical", now) == {"acknowledge_by": now + timedelta(hours=4),
                                                      "first_update_by": now + timedelta(hours=24)}
    assert routing.deadlines_for("low", now)["first_update_by"] == now + timedelta(hours=336)


# --- data-file validation ------------------------------------------------------------------------------------

GOOD_RULES = [{"trigger": t, "function": "police", "role": "primary"} for t in routing.CASE_TYPE_TRIGGERS]


@pytest.mark.parametrize(("bad", "problem"), [
    ({"trigger": "tppx", "function": "police", "role": "primary"}, "unknown trigger"),
    ({"trigger": "tppo", "function": "", "role": "primary"}, "empty function"),
    ({"trigger": "child_involved", "function": "police", "role": "boss"}, "role must be"),
    ({"trigger": "tppo", "function": "police", "role": "primary"}, "duplicate rule"),
    ({"trigger": "tppo", "function": "police"}, "missing column"),
])
def test_bad_rule_rows_are_refused(bad, problem):
    with pytest.raises(reference.ReferenceDataError, match=problem):
        routing.parse_rules([*GOOD_RULES, bad])


def test_rules_must_cover_every_case_type():
    with pytest.raises(reference.ReferenceDataError, match="no rule for case type"):
        routing.parse_rules([r for r in GOOD_RULES if r["trigger"] != "tppm"])


@pytest.mark.parametrize(("bad", "problem"), [
    ({"region_code": "36.03", "function": "police", "agency_id": "polres_nowhere"}, "not in agencies.csv"),
    ({"region_code": "36-03", "function": "police", "agency_id": "polda_banten"}, "bad region code"),
    ({"region_code": "36", "function": "", "agency_id": "polda_banten"}, "empty function"),
    ({"region_code": "36", "function": "police", "agency_id": "bareskrim_ppa_ppo"}, "two units"),
])
def test_bad_directory_rows_are_refused(bad, problem):
    good = {"region_code": "36", "function": "police", "agency_id": "polda_banten"}
    with pytest.raises(reference.ReferenceDataError, match=problem):
        routing.parse_directory([good, bad], reference.agencies())


def test_a_function_without_a_unit_for_some_known_region_is_refused():
    rules = routing.parse_rules([*GOOD_RULES, {"trigger": "victim_abroad", "function": "consular_protection",
                                               "role": "primary"}])
    units = routing.parse_directory([{"region_code": "36", "function": "police", "agency_id": "polda_banten"}],
                                    reference.agencies())
    with pytest.raises(reference.ReferenceDataError, match="consular_protection"):
        routing.check_coverage(routing.RoutingTable(rules, units), ["36", "36.03"])


GOOD_DEADLINES = [{"priority": p, "acknowledge_hours": "4", "first_update_hours": "24",
                    "update_every_hours": "72"} for p in routing.PRIORITIES]


@pytest.mark.parametrize(("rows", "problem"), [
    (GOOD_DEADLINES[:-1], "no row for priority"),
    ([*GOOD_DEADLINES, GOOD_DEADLINES[0]], "repeated priority"),
    ([{**GOOD_DEADLINES[0], "priority": "urgent"}, *GOOD_DEADLINES[1:]], "unknown or repeated"),
    ([{**GOOD_DEADLINES[0], "acknowledge_hours": "four"}, *GOOD_DEADLINES[1:]], "whole numbers"),
    ([{**GOOD_DEADLINES[0], "acknowledge_hours": "48"}, *GOOD_DEADLINES[1:]], "acknowledge_hours <="),
    ([{**GOOD_DEADLINES[0], "acknowledge_hours": "0"}, *GOOD_DEADLINES[1:]], "0 < acknowledge_hours"),
    ([{**GOOD_DEADLINES[0], "update_every_hours": "0"}, *GOOD_DEADLINES[1:]], "update_every_hours > 0"),
    ([{k: v for k, v in GOOD_DEADLINES[0].items() if k != "update_every_hours"}, *GOOD_DEADLINES[1:]],
     "missing column 'update_every_hours'"),
])
def test_bad_deadline_rows_are_refused(rows, problem):
    with pytest.raises(reference.ReferenceDataError, match=problem):
        routing.parse_deadlines(rows)


def test_the_shipped_files_load_and_name_only_known_agencies():
    table = routing.table()
    assert {u.agency_id for u in table.units} <= set(reference.agencies())
    assert {r.trigger for r in table.rules} <= set(routing.TRIGGERS)
    assert set(routing.deadlines()) == {"critical", "high", "medium", "low"}
