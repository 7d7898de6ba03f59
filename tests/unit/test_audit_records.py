import hashlib
import json
from datetime import UTC, datetime, timedelta

from services.audit import domain, records

T = datetime(2026, 11, 29, tzinfo=UTC)


def _chain(*head_sets, page_size=2):
    """Checkpoints over `head_sets`, with their pages (by pages_id) as the store would keep them."""
    chain, stored, previous = [], {}, None
    for n, heads in enumerate(head_sets):
        ordered = sorted(heads, key=lambda h: h["case_id"])
        pages = [records.page(i, ordered[at:at + page_size]) for i, at in enumerate(range(0, len(ordered), page_size))]
        stored[f"p{n}"] = pages
        previous = records.checkpoint(previous, [p["hash"] for p in pages], len(ordered), T, f"p{n}")
        chain.append(previous)
    return chain, stored


def _verify(chain, stored, trails):
    hashes = {k: [records.page_hash(p["heads"]) for p in pages] for k, pages in stored.items()}
    last = [h for p in stored[chain[-1]["pages_id"]] for h in p["heads"]] if chain else []
    return records.verify_checkpoints(chain, hashes, last, trails)


HEADS_1 = [{"case_id": "b", "seq": 2, "hash": "hb2"}, {"case_id": "a", "seq": 5, "hash": "ha5"}]
HEADS_2 = HEADS_1 + [{"case_id": "c", "seq": 1, "hash": "hc1"}]
TRAILS = {("a", 5): "ha5", ("b", 2): "hb2", ("c", 1): "hc1", ("a", 4): "ha4"}


def test_an_intact_checkpoint_chain_over_intact_trails_is_valid():
    chain, stored = _chain(HEADS_1, HEADS_2)
    assert [c["seq"] for c in chain] == [1, 2] and chain[1]["prev_hash"] == chain[0]["hash"]
    assert stored["p1"][0]["heads"][0]["case_id"] == "a"  # ordered, so the hash does not depend on read order
    assert _verify(chain, stored, TRAILS) == {"valid": True, "checkpoints": 2, "first_broken_seq": None,
                                              "trails_not_matching": []}


def test_a_checkpoint_document_holds_a_root_over_pages_not_every_head():
    heads = [{"case_id": f"case-{i:03d}", "seq": 1, "hash": f"h{i}"} for i in range(5)]
    [cp], stored = _chain(heads)
    assert "heads" not in cp and (cp["cases"], cp["pages"]) == (5, 3)
    assert [len(p["heads"]) for p in stored["p0"]] == [2, 2, 1]
    leaves = [hashlib.sha256(json.dumps(p["heads"], sort_keys=True, separators=(",", ":")).encode()).hexdigest()
              for p in stored["p0"]]
    pair = hashlib.sha256((leaves[0] + leaves[1]).encode()).hexdigest()
    assert cp["root"] == hashlib.sha256((pair + leaves[2]).encode()).hexdigest()  # computed independently here


def test_a_trail_deleted_whole_or_cut_back_no_longer_matches_the_last_checkpoint():
    chain, stored = _chain(HEADS_1, HEADS_2)
    without_c = {k: v for k, v in TRAILS.items() if k[0] != "c"}
    cut_back_a = {k: v for k, v in TRAILS.items() if k != ("a", 5)}
    assert _verify(chain, stored, without_c)["trails_not_matching"] == ["c"]
    assert _verify(chain, stored, cut_back_a)["trails_not_matching"] == ["a"]


def test_a_changed_or_deleted_checkpoint_or_page_breaks_the_chain():
    chain, stored = _chain(HEADS_1, HEADS_2, HEADS_2)
    changed = [dict(c) for c in chain]
    changed[1]["cases"] = 2
    assert _verify(changed, stored, TRAILS)["first_broken_seq"] == 2
    assert _verify([chain[0], chain[2]], stored, TRAILS)["first_broken_seq"] == 2
    edited = {**stored, "p1": [{**stored["p1"][0], "heads": HEADS_1[:1]}, *stored["p1"][1:]]}
    assert _verify(chain, edited, TRAILS)["first_broken_seq"] == 2
    dropped = {**stored, "p2": stored["p2"][:1]}
    assert _verify(chain, dropped, TRAILS)["first_broken_seq"] == 3


def test_a_checkpoint_shows_a_caller_only_their_regions_count_and_broken_trails():
    chain, stored = _chain(HEADS_1, HEADS_2)
    regions = records.region_counts([["36", "36.03", "36.03.11", "36.03.11.2009"], ["36", "36.71", "36.71.01"],
                                     ["36", "36.03", "36.03.16"]])
    cp = records.checkpoint(chain[-1], [], 3, T, "p9", regions)
    assert records.checkpoint_view(cp, "36.03")["cases"] == 2 and records.checkpoint_view(cp, "36.71")["cases"] == 1
    assert records.checkpoint_view(cp, "36")["cases"] == 3 and records.checkpoint_view(cp, "32.01")["cases"] == 0
    assert "36.03.11.2009" not in {r["region"] for r in cp["regions"]}  # counted down to districts only
    assert records.checkpoint_view(chain[0], "36.03")["cases"] is None  # taken before regions were counted
    hashes = {k: [records.page_hash(p["heads"]) for p in pages] for k, pages in stored.items()}
    last = [h for p in stored["p1"] for h in p["heads"]]
    gone = {k: v for k, v in TRAILS.items() if k[0] not in ("a", "c")}
    assert records.verify_checkpoints(chain, hashes, last, gone, visible={"b", "c"})["trails_not_matching"] == ["c"]
    assert records.verify_checkpoints(chain, hashes, last, {k: v for k, v in TRAILS.items() if k[0] != "a"},
                                      visible={"b", "c"})["valid"]


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
    view = domain.stats_of("36.03", domain.stats_part(cases))
    assert view["median_seconds_report_to_decision"] == 2 * 3600  # of 1 h and 3 h
    assert view["median_seconds_decision_to_first_acknowledgement"] == 2 * 3600
    assert (view["decided_cases"], view["acknowledged_cases"]) == (2, 1)
    assert (view["cases_with_overdue_referrals"], view["overdue_referrals"]) == (1, 2)
    assert domain.stats_of("36.03", domain.stats_part([]))["median_seconds_report_to_decision"] is None


def test_spans_are_kept_to_the_minute_under_a_day_and_to_the_hour_beyond():
    spans = (0, 59.9, 60, 125.5, 86399, 86400, 86400 + 3599, 3 * 86400 + 4 * 3600 + 3540)
    assert [domain.span_step(s) for s in spans] == [0, 0, 60, 120, 86340, 86400, 86400, 3 * 86400 + 4 * 3600]
    assert domain.span_step(-30) == -60  # a decision stamped before its report (a skewed clock) stays below zero


def test_medians_of_counted_steps_are_the_medians_of_the_steps_one_by_one():
    import random
    import statistics

    rng = random.Random(5)
    for size in (1, 2, 3, 4, 7, 10, 101, 1000):
        spans = [rng.choice([30, 600, 4000, 90000, 400000]) + rng.random() * 5000 for _ in range(size)]
        start = datetime(2026, 11, 2, tzinfo=UTC)
        cases = [{"reported_at": start.isoformat(), "decided_at": (start + timedelta(seconds=s)).isoformat()}
                 for s in spans]
        halves = [domain.stats_part(cases[:size // 2]), domain.stats_part(cases[size // 2:])]
        merged = domain.merge_parts([json.loads(json.dumps(part)) for part in halves])  # as stored
        figures = domain.stats_of("36.03", merged)
        assert figures["median_seconds_report_to_decision"] == statistics.median(domain.span_step(s) for s in spans)
        assert figures["decided_cases"] == size


def test_a_weeks_spans_are_bounded_by_steps_not_by_cases():
    """A busy week's part keeps at most a day's minutes and the hours beyond, however many cases were decided."""
    import random

    rng = random.Random(7)
    start = datetime(2026, 11, 2, tzinfo=UTC)
    cases = [{"reported_at": start.isoformat(),
              "decided_at": (start + timedelta(seconds=rng.randint(0, 20 * 86400))).isoformat()} for _ in range(20000)]
    part = domain.stats_part(cases)
    assert sum(n for _, n in part["to_decision"]) == 20000
    assert len(part["to_decision"]) <= 1440 + 19 * 24


def test_stats_groups_counted_from_one_read_match_what_group_answers():
    cases = [{"status": "verified", "types": ["tppo", "np_pmi"], "needs_attention": True},
             {"status": "verified", "types": ["tppo", "np_pmi"]},
             {"status": "screened", "types": ["tppm"]},
             {"status": "screened"}]
    assert sorted(map(str, domain.grouped(cases, "status"))) == sorted(map(str, [
        {"_id": "verified", "n": 2}, {"_id": "screened", "n": 2}]))
    assert {"_id": ["tppo", "np_pmi"], "n": 2} in domain.grouped(cases, "types")
    assert {"_id": None, "n": 1} in domain.grouped(cases, "types")
    attention = domain.grouped(cases, "needs_attention")
    assert sum(row["n"] for row in attention if row["_id"] is True) == 1
    view = domain.stats_view("36.03", domain.grouped(cases, "status"), domain.grouped(cases, "types"), [])
    assert view["total"] == 4 and view["by_type"] == {"np_pmi": 2, "tppm": 1, "tppo": 2}


def _counted_at_once(region, cases):
    """The figures as audit counted them before it kept parts: every case read, grouped and timed in one go."""
    by_status, by_types, by_village, attention = (
        domain.grouped(cases, field) for field in ("status", "types", "village_code", "needs_attention"))
    import statistics

    def spans(start, end):  # to the whole minute under a day, to the whole hour beyond (as the dashboard shows them)
        seconds = [(datetime.fromisoformat(c[end]) - datetime.fromisoformat(c[start])).total_seconds()
                   for c in cases if c.get(start) and c.get(end)]
        return [s // 60 * 60 if s < 86400 else s // 3600 * 3600 for s in seconds]

    to_decision, to_ack = spans("reported_at", "decided_at"), spans("decided_at", "first_ack_at")
    return {**domain.stats_view(region, by_status, by_types, by_village),
            "needing_attention": sum(row["n"] for row in attention if row["_id"] is True),
            "median_seconds_report_to_decision": statistics.median(to_decision) if to_decision else None,
            "median_seconds_decision_to_first_acknowledgement": statistics.median(to_ack) if to_ack else None,
            "decided_cases": len(to_decision), "acknowledged_cases": len(to_ack),
            "cases_with_overdue_referrals": sum(1 for c in cases if c.get("escalated")),
            "overdue_referrals": sum(len(c.get("escalated") or {}) for c in cases),
            **domain.weekly_view(cases)}


def test_weekly_parts_add_up_to_the_figures_of_all_the_cases_counted_at_once():
    import random

    rng = random.Random(3)
    cases = []
    for n in range(300):
        reported = datetime(2026, 9, 1, tzinfo=UTC).timestamp() + rng.randint(0, 80 * 86400)
        case = {"status": rng.choice(["screened", "referred", "rejected", None]),
                "types": rng.choice([[], ["tppo"], ["tppo", "np_pmi"]]), "suspected_types": ["tppm"],
                "village_code": rng.choice(["36.03.11.2002", "36.03.11.2009", None]),
                "needs_attention": rng.random() < 0.1,
                "reported_at": datetime.fromtimestamp(reported, UTC).isoformat()}
        if rng.random() < 0.6:
            case["decided_at"] = datetime.fromtimestamp(reported + rng.randint(60, 9 * 86400), UTC).isoformat()
            if rng.random() < 0.5:
                case["first_ack_at"] = datetime.fromtimestamp(reported + 10 * 86400 + n, UTC).isoformat()
            if rng.random() < 0.2:
                case["escalated"] = {"r1": datetime.fromtimestamp(reported + 12 * 86400, UTC).isoformat()}
        cases.append(case)
    weeks: dict[str, list] = {}
    for case in cases:
        weeks.setdefault(domain.report_week(case["reported_at"]), []).append(case)
    assert len(weeks) > 10
    parts = [json.loads(json.dumps(domain.stats_part(group))) for group in weeks.values()]  # as stored
    assert domain.stats_of("36.03", domain.merge_parts(parts)) == _counted_at_once("36.03", cases)
    assert domain.stats_of("36.03", domain.merge_parts([])) == _counted_at_once("36.03", [])


def test_the_weeks_a_period_covers_whole_and_in_part():
    known = ["2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23", domain.NO_WEEK]
    assert domain.weeks_between(None, None, known) == (known, [])
    whole, partial = domain.weeks_between(datetime(2026, 11, 8, 17, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC),
                                          known)
    assert (whole, partial) == (["2026-11-09", "2026-11-16"], ["2026-11-02"])  # Monday 00:00 WIB is Sunday 17:00 UTC
    assert domain.weeks_between(datetime(2026, 11, 9, tzinfo=UTC), None, known) == (
        ["2026-11-09", "2026-11-16", "2026-11-23"], [])
    assert domain.report_week(None) == domain.NO_WEEK
    assert domain.report_week("2026-11-29T23:00:00+00:00") == "2026-11-23"
