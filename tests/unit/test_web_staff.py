"""The staff pages' pure parts: the charts' SVG, countdowns, what forms send to the APIs, the explanation of a
priority, the dashboard's figures, and the staff catalog (every string in Indonesian, the same words as the
reporter's catalog where both have them)."""

from datetime import UTC, date, datetime, timedelta

from babel.messages.pofile import read_po
from starlette.datastructures import FormData, QueryParams

from services.web.i18n import LOCALES, Locale, load_catalogs, zone_of
from services.web.staff import charts
from services.web.staff.admin import account_form
from services.web.staff.common import countdown, duration, regions_in, villages_in
from services.web.staff.investigator import milestone_from
from services.web.staff.supervisor import dashboard_figures, timeline, why
from services.web.staff.verifier import explain, queue_filters

CATALOGS = load_catalogs()
ID = Locale("id", CATALOGS["id"], zone_of("36.03"))
EN = Locale("en", CATALOGS["en"], zone_of("36.03"))


def test_chart_labels_are_escaped_and_the_numbers_are_drawn():
    svg = str(charts.bars("x", "Reports <by> village", "desc", [("<script>alert(1)</script>", 3), ("Rajeg", 1)]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'role="img"' in svg and "<title id=\"x-t\">Reports &lt;by&gt; village</title>" in svg
    assert ">3</text>" in svg and ">1</text>" in svg
    columns = str(charts.columns("c", "t", "d", ["a", "b"], [charts.Series("tppo", [2, 0]),
                                                             charts.Series("np_pmi", [1, 4])]))
    assert columns.count("<rect") == 3  # zero values draw nothing


def test_axis_maximum_is_a_round_number_at_or_above_the_largest_value():
    assert [charts.nice_max(v) for v in (0, 1, 3, 7, 12, 55, 101)] == [1, 1, 5, 10, 20, 100, 200]


def test_a_deadline_reads_as_time_left_or_late_in_the_officers_language():
    now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    left = countdown((now + timedelta(hours=3, minutes=20)).isoformat(), now, ID)
    late = countdown((now - timedelta(days=2, hours=4)).isoformat(), now, EN)
    assert left == {"overdue": False, "text": "sisa 3 jam 20 mnt", "at": "1 Des 2026 18.20 WIB"}
    assert late["overdue"] is True and late["text"] == "2 d 4 h overdue"
    assert countdown(None, now, EN) is None
    assert duration(20, EN) == "1 min"


def test_queue_filters_keep_only_what_the_api_accepts():
    chosen = queue_filters(QueryParams("priority=critical&type=tppo&village=36.03.11.2009&waiting=1"))
    assert chosen == {"priority": "critical", "type": "tppo", "village_code": "36.03.11.2009",
                      "status": "info_requested"}
    assert queue_filters(QueryParams("priority=urgent&type=x&village=36.03")) == {}


def test_a_priority_is_explained_by_its_flags_indicators_and_watch_list_hit():
    case = {"screening": {"score": 4, "priority": "critical", "suggested_types": ["np_pmi"],
                          "escalation": {"child_involved": True, "forcing_indicators": ["minor_or_altered_identity"],
                                         "departure_within_72h": False},
                          "indicators": [{"id": "no_written_contract", "weight": 2, "forces_escalation": False},
                                         {"id": "minor_or_altered_identity", "weight": 3, "forces_escalation": True,
                                          "source": "reported"}],
                          "type_reasons": {"np_pmi": ["no_written_contract"]}},
            "watchlist_hits": [{"watch_id": "w", "kind": "phone", "matched": "p"}]}
    why_ = explain(case)
    assert why_["flags"] == ["child_involved"] and why_["watch_raised"] is True
    assert [i["id"] for i in why_["indicators"]] == ["minor_or_altered_identity", "no_written_contract"]
    assert why_["type_reasons"] == {"np_pmi": ["No written work contract"]}


def test_an_update_form_becomes_the_milestone_the_api_takes():
    lp, problems = milestone_from(FormData([("kind", "lp_filed"), ("lp_number", " LP/B/1/XII/2026 "),
                                            ("lp_model", "B"), ("lp_date", "2026-12-01"), ("office", "ignored")]))
    assert problems == {} and lp == {"kind": "lp_filed", "lp_number": "LP/B/1/XII/2026", "lp_model": "B",
                                     "lp_date": "2026-12-01"}
    _, problems = milestone_from(FormData([("kind", "lp_filed"), ("lp_date", "1 Desember")]))
    assert set(problems) == {"lp_number", "lp_date"}
    deferred, _ = milestone_from(FormData([("kind", "departure_deferred"), ("missing_documents", "visa kerja, PK")]))
    assert deferred["missing_documents"] == ["visa kerja", "PK"]
    assert milestone_from(FormData([("kind", "arrest")]))[0] is None


def test_an_account_form_sends_a_unit_only_for_investigators():
    body, errors = account_form(FormData([("username", "nrp-1"), ("name", "Budi"), ("role", "verifier"),
                                          ("region", "36.03"), ("unit", "polresta_tangerang")]), creating=True)
    assert errors == {} and "unit" not in body
    _, errors = account_form(FormData([("name", "Budi"), ("role", "investigator"), ("region", "36.03")]),
                             creating=False)
    assert set(errors) == {"unit"}


def test_staff_choose_only_places_inside_their_region():
    assert all(code.startswith("36.03.") for code, _ in villages_in("36.03"))
    assert {code for code, _, _ in regions_in("36.03.11")} >= {"36.03.11", "36.03.11.2009"}
    assert not any(code.startswith("36.01") for code, _, _ in regions_in("36.03"))


def test_the_timeline_marks_the_first_broken_entry_and_hides_reads_unless_asked():
    entries = [{"seq": 1, "type": "case.reported", "data": {"village_code": "36.03.11.2009",
                                                            "suspected_types": ["np_pmi"]}},
               {"seq": 2, "type": "case.viewed", "data": {"service": "verification", "resource": "case"}},
               {"seq": 3, "type": "case.rejected", "data": {"reason": "duplikat"}},
               {"seq": 4, "type": "case.viewed", "data": {}}]
    shown = timeline(entries, {"valid": False, "first_broken_seq": 3}, ID, reads=False)
    assert [(e["seq"], e["state"]) for e in shown] == [(1, ""), (3, "broken"), (4, "after-break")]
    # a listing that showed the case is a read too: hidden unless asked, and said in the page's language
    listed = [{"seq": 1, "type": "cases.listed", "data": {"service": "intake", "resource": "reports"}},
              {"seq": 2, "type": "cases.listed", "data": {"service": "audit", "resource": "cases"}}]
    assert timeline(listed, {"valid": True}, ID, reads=False) == []
    assert [e["why"] for e in timeline(listed, {"valid": True}, ID, reads=True)] == [
        ["dalam daftar laporan milik pelapor"], []]
    assert shown[1]["why"] == ["Alasan: duplikat"]
    assert why(entries[0], EN) == ["Tanjakan Mekar · suspected: Irregular migrant worker (PMI non-prosedural)",
                                   "indicators: 0 · people: 0"]
    one = {"type": "case.reported", "data": {"indicators": ["a"], "persons": [{}]}}
    assert why(one, EN)[1] == "indicators: 1 · people: 1" and why(one, ID)[1] == "indikator: 1 · orang: 1"
    assert len(timeline(entries, {"valid": True}, ID, reads=True)) == 4


def test_a_link_entry_says_its_reasons_and_how_many_cases_one_screening_linked():
    one = {"type": "case.linked", "data": {"linked_case_id": "c1", "reasons": ["same recruiter phone"]}}  # v1
    many = {"type": "case.linked", "data": {"links": [
        {"linked_case_id": "c1", "reasons": ["same recruiter phone"]},
        {"linked_case_id": "c2", "reasons": ["same recruiter phone", "two reporters of the village within a day"]}]}}
    assert why(one, EN) == ["same recruiter phone"]
    assert why(many, EN) == ["with 2 cases", "same recruiter phone, two reporters of the village within a day"]
    assert why(many, ID)[0] == "dengan 2 kasus"
    assert why({"type": "case.linked", "data": {"links": [one["data"]]}}, EN) == ["same recruiter phone"]


def test_the_dashboard_fills_empty_weeks_and_counts_overdue_referrals_by_unit():
    first = date(2026, 11, 16)
    stats = {"total": 3, "weeks": [{"week": "2026-11-23", "reports": 3, "by_village": {"36.03.11.2009": 3},
                                    "by_type": {"tppo": 1, "np_pmi": 2}, "escalations": 1}]}
    overdue = [{"agency_id": "polresta_tangerang", "overdue": {"deadline": "acknowledge"}},
               {"agency_id": "polresta_tangerang", "overdue": {"deadline": "first_update"}},
               {"agency_id": "lpsk", "overdue": None, "needs_supervisor": True}]
    figures = dashboard_figures(stats, overdue, first, 3, EN)
    assert [(row[0], row[1], row[3]) for row in figures["week_rows"]] == [
        ("16 Nov", 0, 0), ("23 Nov", 3, 1), ("30 Nov", 0, 0)]
    assert figures["kind_labels"] == ["TPPO", "Irregular worker"]
    assert figures["unit_rows"] == [("Polresta Tangerang (Satreskrim, unit PPA)", 2)]
    assert figures["waiting_supervisor"] == 1 and figures["village_rows"] == [("Tanjakan Mekar", 3)]


def test_every_staff_string_has_its_indonesian_words_and_agrees_with_the_reporters_catalog():
    def read(name: str) -> dict[str, str]:
        with (LOCALES / "id" / "LC_MESSAGES" / name).open("rb") as f:
            return {m.id: m.string for m in read_po(f, locale="id") if m.id}

    staff, reporter = read("staff.po"), read("messages.po")
    assert [k for k, v in staff.items() if not v] == []
    assert {k: (reporter[k], v) for k, v in staff.items() if k in reporter and reporter[k] != v} == {}
    assert ID.gettext("Reports to decide") == "Laporan yang perlu diputuskan"
    assert ID.gettext("Report") == "Lapor"  # the reporter's words are still there, merged with the staff's
