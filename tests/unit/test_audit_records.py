from datetime import UTC, datetime

from services.audit import records

T = datetime(2026, 11, 29, tzinfo=UTC)


def _chain(*head_sets):
    chain, previous = [], None
    for heads in head_sets:
        previous = records.checkpoint(previous, heads, T)
        chain.append(previous)
    return chain


HEADS_1 = [{"case_id": "b", "seq": 2, "hash": "hb2"}, {"case_id": "a", "seq": 5, "hash": "ha5"}]
HEADS_2 = HEADS_1 + [{"case_id": "c", "seq": 1, "hash": "hc1"}]
TRAILS = {("a", 5): "ha5", ("b", 2): "hb2", ("c", 1): "hc1", ("a", 4): "ha4"}
ALL = {"a", "b", "c"}


def test_an_intact_checkpoint_chain_over_intact_trails_is_valid():
    chain = _chain(HEADS_1, HEADS_2)
    assert [c["seq"] for c in chain] == [1, 2] and chain[1]["prev_hash"] == chain[0]["hash"]
    assert chain[1]["heads"][0]["case_id"] == "a"  # ordered, so the hash does not depend on read order
    assert records.verify_checkpoints(chain, TRAILS, ALL) == {"valid": True, "checkpoints": 2, "first_broken_seq": None,
                                                         "trails_not_matching": []}


def test_a_trail_deleted_whole_or_cut_back_no_longer_matches_the_last_checkpoint():
    chain = _chain(HEADS_1, HEADS_2)
    without_c = {k: v for k, v in TRAILS.items() if k[0] != "c"}
    cut_back_a = {k: v for k, v in TRAILS.items() if k != ("a", 5)}
    assert records.verify_checkpoints(chain, without_c, ALL)["trails_not_matching"] == ["c"]
    assert records.verify_checkpoints(chain, cut_back_a, ALL)["trails_not_matching"] == ["a"]


def test_a_checkpoint_shows_only_the_callers_region_its_counts_and_its_broken_trails():
    chain = _chain(HEADS_1, HEADS_2)
    without_a_and_c = {k: v for k, v in TRAILS.items() if k[0] not in ("a", "c")}
    mine = {"b", "c"}  # "a" belongs to another region
    assert records.checkpoint_view(chain[1], mine)["cases"] == 2
    assert "heads" not in records.checkpoint_view(chain[1], mine)
    assert records.verify_checkpoints(chain, without_a_and_c, mine)["trails_not_matching"] == ["c"]
    assert records.verify_checkpoints(chain, {k: v for k, v in TRAILS.items() if k[0] != "a"}, mine)["valid"]


def test_a_changed_or_deleted_checkpoint_breaks_the_chain():
    chain = _chain(HEADS_1, HEADS_2, HEADS_2)
    changed = [dict(c) for c in chain]
    changed[1]["heads"] = HEADS_1
    assert records.verify_checkpoints(changed, TRAILS, ALL)["first_broken_seq"] == 2
    assert records.verify_checkpoints([chain[0], chain[2]], TRAILS, ALL)["first_broken_seq"] == 2


def test_exports_carry_every_entry_and_the_verdict():
    case = {"_id": "c1", "case_number": "3603-2026-000001", "village_code": "36.03.11.2009", "status": "verified"}
    entries = [{"seq": 1, "type": "case.reported", "occurred_at": "t1", "actor": {"id": "r1", "role": "reporter"},
                "data": {}, "hash": "h1"},
               {"seq": 2, "type": "case.rejected", "occurred_at": "t2", "actor": {"id": "v1", "role": "verifier"},
                "data": {"reason": "<b>bukan</b> TPPO"}, "hash": "h2"}]
    verdict = {"valid": True, "entries": 2, "first_broken_seq": None}
    lines = records.export_jsonl(case, entries, verdict, "sup-1", T).splitlines()
    assert len(lines) == 3 and '"verification": {"entries": 2' in lines[2]
    page = records.export_html(case, entries, verdict, "sup-1", T)
    assert "3603-2026-000001" in page and "VALID" in page and "v1 / verifier" in page
    assert "&lt;b&gt;bukan&lt;/b&gt;" in page and "<b>bukan</b>" not in page  # escaped


def test_timings_are_medians_and_overdue_referrals_are_counted():
    from services.audit import domain

    cases = [
        {"reported_at": "2026-11-01T00:00:00+00:00", "decided_at": "2026-11-01T01:00:00+00:00",
         "first_ack_at": "2026-11-01T03:00:00+00:00", "escalated": {"r1": "x", "r2": "y"}},
        {"reported_at": "2026-11-02T00:00:00+00:00", "decided_at": "2026-11-02T03:00:00+00:00"},
        {"reported_at": "2026-11-03T00:00:00+00:00"},
    ]
    view = domain.timings_view(cases)
    assert view["median_seconds_report_to_decision"] == 2 * 3600  # of 1 h and 3 h
    assert view["median_seconds_decision_to_first_acknowledgement"] == 2 * 3600
    assert (view["decided_cases"], view["acknowledged_cases"]) == (2, 1)
    assert (view["cases_with_overdue_referrals"], view["overdue_referrals"]) == (1, 2)
    assert domain.timings_view([])["median_seconds_report_to_decision"] is None
