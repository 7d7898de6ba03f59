"""The benchmark's reports (tests/bench.py) are what its scripted verifier and investigator expect: accepted by
intake's model, routed to one unit only (the police of 36.03), one recruiter in every report of that scenario."""

from shared.contracts import verification
from services.intake.domain import ReportIn
from services.referral import routing
from tests import bench


def test_every_benchmark_report_is_valid_and_goes_to_the_police_of_its_regency_only():
    for scenario in ("distinct", "recruiter"):
        for body in bench.scenario_bodies(scenario, 12):
            report = ReportIn.model_validate(body)
            assert report.departure is None and all(p.age >= 18 for p in report.persons if p.role == "potential_victim")
            routes = routing.route(["tppo"], verification.Situation(), report.village_code)
            assert [r.agency_id for r in routes] == [bench.UNIT]


def test_the_recruiter_scenario_names_one_recruiter_in_one_village_on_one_day_and_the_other_scenario_nobody_twice():
    def recruiters(bodies):
        return [next(p for p in b["persons"] if p["role"] == "recruiter") for b in bodies]

    shared = bench.scenario_bodies("recruiter", 20)
    assert len({(r["name"], r["phone"]) for r in recruiters(shared)}) == 1
    assert len({b["village_code"] for b in shared}) == 1 and len({b["observed_at"] for b in shared}) == 1
    distinct = bench.scenario_bodies("distinct", 20)
    assert len({r["phone"] for r in recruiters(distinct)}) == 20
    assert len({b["village_code"] for b in distinct}) > 1 and len({b["observed_at"][:10] for b in distinct}) > 1


def test_latency_percentiles_are_in_milliseconds_and_empty_when_nothing_was_measured():
    figures = bench.latency([i / 1000 for i in range(1, 101)])
    assert figures == {"n": 100, "p50_ms": 51.0, "p95_ms": 95.0, "p99_ms": 99.0}
    assert bench.latency([]) == {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None}


def test_every_waspada_figure_is_given_as_a_ratio_to_both_ceilings_and_the_synchronous_app():
    def figures(per_s, ms):
        return {"throughput_per_s": per_s, **{m: {"p50_ms": ms, "p99_ms": 2 * ms} for m in (
            "accept", "report_to_screened", "decision_to_referral", "event_to_trail")}}

    ceiling = {"throughput_per_s": 100.0, "latency": {"p50_ms": 10.0, "p99_ms": 20.0}}
    out = bench.ratios(figures(50.0, 40.0), ceiling, {**ceiling, "throughput_per_s": 200.0}, figures(25.0, 20.0),
                       {"p50_ms": 4.0})
    assert out["throughput_over_ceiling_a"] == 0.5 and out["throughput_over_ceiling_b"] == 0.25
    assert out["throughput_over_sync"] == 2.0 and out["report_to_screened_p99_over_sync"] == 2.0
    assert out["event_to_trail_p50_over_ceiling_b"] == 4.0 and out["accept_p50_over_database_write_p50"] == 10.0
    assert "accept_p50_over_ceiling_a" not in out


def test_the_cpu_a_run_measures_is_each_service_processes_own(tmp_path, monkeypatch):
    """CPU seconds by service from /proc: copies of one service add up, a process gone meanwhile counts nothing."""
    import os
    import subprocess
    import sys

    monkeypatch.setenv("WASPADA_INFRA_DIR", str(tmp_path))  # no Kafka pid file: Kafka is left out
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    before = bench.processes_cpu_s([("me", os.getpid()), ("gone", gone.pid)])
    sum(i * i for i in range(3_000_000))  # some CPU of this process's own
    twice = bench.processes_cpu_s([("me", os.getpid()), ("me", os.getpid())])
    once = bench.processes_cpu_s([("me", os.getpid())])
    assert set(before) == {"me"} and set(twice) == {"me"}  # the process gone meanwhile counts nothing
    assert once["me"] > before["me"]
    assert abs(twice["me"] - 2 * once["me"]) < 0.05  # copies of one service add up (here one process twice)
