"""Benchmark (issue #12): reports through the whole path, as ratios against ceilings measured in the same run.

    make bench                       (defaults: short, under ~10 min on the 2-core dev machine)
    python -m tests.bench --rate 20 --reports 500 --recruiter-reports 200 --time-cap 600 --copies 1 2

In one run, on the same broker and database (a fresh test instance, `make bench`):
  - ceiling A: three raw aiokafka relays in a row, each its own process (tests/bench_relay.py: getmany, produce
    each message on, commit); ceiling B: the same with one bulk insert into the database per hop;
  - a single database write (insert_one), for "accept p50 <= 3x a database write";
  - Waspada: intake, verification, referral, audit and identity as real processes (1 or 2 copies of each,
    `--copies`), driven open loop: reports POSTed to intake at `--rate`; a scripted verifier reads the queue,
    GETs each case and verifies it (If-Match) as `tppo`, which routes to one unit (the police of 36.03); a
    scripted investigator of that unit reads its inbox and acknowledges. Two scenarios: `distinct` (different
    people, villages and days) and `recruiter` (one recruiter, same name and phone, in every report, all one
    village and one day);
  - the synchronous alternative (tests/bench_sync.py): one FastAPI process doing intake, screening, decision,
    referral and trail append in its request handlers against the same database, driven by the same clients.
Measured per run:
  - throughput: reports fully through (referral acknowledged and `referral.acknowledged` recorded in the trail)
    per second, from the first POST to the last such trail entry;
  - report->screened: POST sent -> `case.screened` read on Kafka by the benchmark's own consumer (sync: the 201);
  - decision->referral: decision POST sent -> `referral.created` on Kafka (sync: the decision's 200);
  - event->trail: each trail entry's `recorded_at` minus its event's `occurred_at`, read from audit's database
    directly after the run (one machine, one clock);
  - lost/doubled: every event id of the path's five events seen on Kafka is looked up in the trail (missing =
    lost, more than once = doubled), each case's five event types are counted in the trail, and the cases are
    counted in each service's database (a case with two referrals to its unit is doubled).
A run that reaches `--time-cap` stops and reports what completed. Every Waspada figure is also printed as a ratio
to ceiling A, ceiling B and the synchronous alternative. The JSON goes to `--out` (default
.local-infra/bench/latest.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient

from shared import topics
from shared.kafka import create_topics
from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth
from tests.e2e.conftest import PORTS, System

ROOT = Path(__file__).resolve().parents[1]
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true")
REGENCY = "36.03"
UNIT = "polresta_tangerang"  # tppo -> police; 36.03's police (shared/data/routing_rules.csv, unit_directory.csv)
VILLAGES = ("36.03.11.2001", "36.03.11.2002", "36.03.11.2003", "36.03.11.2005", "36.03.11.2006",
            "36.03.11.2007", "36.03.11.2008", "36.03.11.2009", "36.03.11.2011", "36.03.11.2012")
PATH_EVENTS = ("case.reported", "case.screened", "case.verified", "referral.created", "referral.acknowledged")
SERVICES = [s for s in PORTS if s != "web"]  # the pipeline through the APIs; the pages have `make web-perf`


# --- figures ----------------------------------------------------------------------------------------------------

def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def latency(values: list[float]) -> dict[str, Any]:
    """n and p50/p95/p99 in milliseconds."""
    return {"n": len(values), **{f"p{p}_ms": None if (v := _pct(values, p)) is None else round(v * 1000, 1)
                                 for p in (50, 95, 99)}}


def _epoch(stamp: Any) -> float:
    if isinstance(stamp, datetime):
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    return datetime.fromisoformat(str(stamp)).timestamp()


# --- the reports ------------------------------------------------------------------------------------------------

URGENT_MARK = "minor_or_altered_identity"  # an indicator that forces escalation; routing stays the police only


def report(scenario: str, i: int, recruiter_phone: str, day: datetime, urgent: bool = False) -> dict[str, Any]:
    """A report of `scenario` that routes to the police only: tppo, an adult victim, no departure; `urgent`: also
    an indicator that makes it urgent on its face (critical), as a child or a departure within 72 hours would."""
    n = uuid.uuid4().int
    victim = {"role": "potential_victim", "name": f"Korban {n % 10**8}", "nik": f"3603{n % 10**12:012d}",
              "phone": f"0812{n % 10**8:08d}", "age": 20 + i % 30}
    if scenario == "recruiter":  # one recruiter, one village, one day
        recruiter = {"role": "recruiter", "name": "Pak Joko Santoso", "phone": recruiter_phone}
        village, observed = PILOT_VILLAGE, day
    else:  # different people, villages and days
        recruiter = {"role": "recruiter", "name": f"Perekrut {n % 10**7}", "phone": f"0813{(n // 7) % 10**8:08d}"}
        village, observed = VILLAGES[i % len(VILLAGES)], day - timedelta(days=i % 28)
    body = report_body(village_code=village, observed_at=observed.isoformat(), suspected_types=["tppo"],
                       indicators=["unlicensed_recruiter", "no_written_contract", *([URGENT_MARK] if urgent else [])],
                       persons=[victim, recruiter])
    body.pop("departure")
    return body


# --- the clients (the same for Waspada and the synchronous alternative) -----------------------------------------

@dataclass
class Target:
    """Where the clients go: each service's copies (its HTTP requests are spread over them, as a load balancer
    would)."""
    name: str
    intake: tuple[str, ...]
    verification: tuple[str, ...]
    referral: tuple[str, ...]
    trail_db: str  # the database holding the `trail` collection
    synchronous: bool = False
    processes: tuple[tuple[str, int], ...] = ()  # (service, pid) of each copy: their CPU per report is measured

    def at(self, service: str, key: Any) -> str:
        """The copy of `service` that serves requests about `key` (a report's number, a case, a referral)."""
        copies = getattr(self, service)
        return copies[(key if isinstance(key, int) else zlib.crc32(str(key).encode())) % len(copies)]


@dataclass
class Run:
    """Epoch times per case id."""
    sent: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)
    screened: dict[str, float] = field(default_factory=dict)
    decided: dict[str, float] = field(default_factory=dict)
    referred: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)
    urgent: set[str] = field(default_factory=set)  # cases reported urgent on their face
    completed: dict[str, float] = field(default_factory=dict)  # referral.acknowledged recorded in the trail
    errors: Counter = field(default_factory=Counter)
    kafka_events: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))


async def reporters(http: httpx.AsyncClient, target: Target, run: Run, bodies: list[dict], rate: float) -> None:
    """Open loop: report i is POSTed at start + i / rate, whatever the answers to earlier ones."""
    reporter = auth("reporter", PILOT_VILLAGE)
    start = time.time()

    async def post(i: int, body: dict) -> None:
        t0 = time.time()
        try:
            # with a key of its own, as the reporter's page sends every report (a retry answers the first case)
            r = await http.post(target.at("intake", i) + "/v1/reports", json=body,
                                headers={**reporter, "Idempotency-Key": str(uuid.uuid4())})
        except httpx.HTTPError as exc:
            run.errors[f"report {type(exc).__name__}"] += 1
            return
        if r.status_code != 201:
            run.errors[f"report {r.status_code}"] += 1
            return
        case_id = r.json()["case_id"]
        run.sent[case_id], run.accepted[case_id] = t0, time.time()
        if URGENT_MARK in body["indicators"]:
            run.urgent.add(case_id)
        if target.synchronous:
            run.screened[case_id] = run.accepted[case_id]  # screened in the request

    tasks = []
    try:
        for i, body in enumerate(bodies):
            if (delay := start + i / rate - time.time()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i, body)))
        await asyncio.gather(*tasks)
    finally:  # the run is over (or capped): nothing more is sent
        for task in tasks:
            task.cancel()


async def _pages(http: httpx.AsyncClient, url: str, headers, params: dict) -> list[dict]:
    items, cursor = [], None
    while True:
        r = await http.get(url, headers=headers, params={**params, **({"cursor": cursor} if cursor else {})})
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
        page = r.json()
        items += page["items"]
        if not (cursor := page.get("next")):
            return items


async def verifier(http: httpx.AsyncClient, target: Target, run: Run, stop: asyncio.Event, parallel: int = 4) -> None:
    """Queue -> GET case -> POST decision (If-Match); a refused decision (the case moved on) is tried again."""
    headers = auth("verifier", REGENCY)
    busy: set[str] = set()
    gate = asyncio.Semaphore(parallel)

    async def decide(case_id: str) -> None:
        async with gate:
            try:
                case = await http.get(target.at("verification", case_id) + f"/v1/cases/{case_id}", headers=headers)
                if case.status_code != 200:
                    run.errors[f"case {case.status_code}"] += 1
                    return
                t0 = time.time()
                r = await http.post(target.at("verification", case_id) + f"/v1/cases/{case_id}/decision",
                                    json={"decision": "verify", "case_types": ["tppo"]},
                                    headers={**headers, "If-Match": f'"{case.json()["version"]}"'})
                if r.status_code == 200:
                    run.decided[case_id] = t0
                    if target.synchronous:
                        run.referred[case_id] = time.time()  # referred in the request
                else:
                    run.errors[f"decision {r.status_code}"] += 1
            except httpx.HTTPError as exc:
                run.errors[f"decision {type(exc).__name__}"] += 1
            finally:
                busy.discard(case_id)

    await _work_through(stop, run, "queue", busy,
                        lambda: _pages(http, target.verification[0] + "/v1/queue", headers, {"limit": 200}),
                        lambda i: i["case_id"] if i["case_id"] in run.sent and i["case_id"] not in run.decided else None,
                        lambda i: decide(i["case_id"]))


async def investigator(http: httpx.AsyncClient, target: Target, run: Run, stop: asyncio.Event,
                       parallel: int = 4) -> None:
    """Inbox (referrals to the unit not yet acknowledged) -> POST acknowledge."""
    headers = auth("investigator", REGENCY, unit=UNIT)
    busy: set[str] = set()
    gate = asyncio.Semaphore(parallel)

    async def acknowledge(referral: dict) -> None:
        async with gate:
            try:
                r = await http.post(target.at("referral", referral["referral_id"])
                                    + f"/v1/referrals/{referral['referral_id']}/acknowledge",
                                    json={}, headers=headers)
                if r.status_code == 200:
                    run.acked[referral["case_id"]] = time.time()
                else:
                    run.errors[f"acknowledge {r.status_code}"] += 1
            except httpx.HTTPError as exc:
                run.errors[f"acknowledge {type(exc).__name__}"] += 1
            finally:
                busy.discard(referral["referral_id"])

    await _work_through(stop, run, "inbox", busy,
                        lambda: _pages(http, target.referral[0] + "/v1/referrals", headers,
                                       {"status": "created", "limit": 200}),
                        lambda r: r["referral_id"] if r["case_id"] in run.sent and r["case_id"] not in run.acked
                        else None,
                        acknowledge)


async def _work_through(stop: asyncio.Event, run: Run, what: str, busy: set[str],
                        fetch: Callable[[], Awaitable[list[dict]]], key_of: Callable[[dict], str | None],
                        act: Callable[[dict], Awaitable[None]]) -> None:
    """Until `stop`: read the list, start `act` on each item still to do (`key_of` gives its key, None when done)
    that is not in hand already (`act` takes its key out of `busy` when it ends), then poll again."""
    spawned: set[asyncio.Task] = set()
    try:
        while not stop.is_set():
            try:
                items = await fetch()
            except (RuntimeError, httpx.HTTPError) as exc:
                run.errors[f"{what} {exc}"[:60]] += 1
                items = []
            todo = [(key, item) for item in items if (key := key_of(item)) is not None and key not in busy]
            for key, item in todo:
                busy.add(key)
                spawned.add(task := asyncio.create_task(act(item)))
                task.add_done_callback(spawned.discard)
            await asyncio.sleep(0.2 if todo else 0.5)
    finally:
        for task in spawned:
            task.cancel()


async def kafka_watcher(run: Run, ready: asyncio.Event, stop: asyncio.Event) -> None:
    """The benchmark's own consumer of the case topics, from their ends: when each event of a case went by."""
    consumer = AIOKafkaConsumer(*topics.CASE_TOPICS, bootstrap_servers=KAFKA, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="latest")
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
        await consumer.seek_to_end()
        for tp in consumer.assignment():
            await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=300)).values():
                seen = time.time()
                for r in records:
                    event = json.loads(r.value)
                    case_id, kind = event.get("case_id"), event.get("type")
                    run.kafka_events[case_id].append((kind, event.get("event_id")))
                    if kind == "case.screened":
                        run.screened.setdefault(case_id, seen)
                    elif kind == "referral.created":
                        run.referred.setdefault(case_id, seen)
    finally:
        await consumer.stop()


async def trail_watcher(db, run: Run, stop: asyncio.Event, synchronous: bool) -> None:
    """Reads audit's database directly: when `referral.acknowledged` of an acknowledged case is recorded. Waspada:
    its case document shows `first_ack_at` (written right after the trail entry; a read by _id); the entry's own
    `recorded_at`, the time counted, is read with every other entry once the run ends (`_figures`). The synchronous
    app records it in the acknowledging request itself (its trails are short): its entry is read here."""
    async def look(case_id: str) -> None:
        if not synchronous:
            # A read of the trail by case and type cost 8.7 ms of PostgreSQL per report with one recruiter (it opens
            # every entry of the case: some fifty links), the benchmark's own load counted against the system.
            if await db["cases"].find_one({"_id": case_id, "first_ack_at": {"$exists": True}}, {"_id": 1}):
                run.completed.setdefault(case_id, time.time())  # replaced by the entry's `recorded_at`
            return
        # One case's entry by equalities the database answers from an index: a `$in` over the waiting cases is not
        # pushed down by FerretDB, which would decode every acknowledgement ever recorded at each poll.
        if e := await db["trail"].find_one({"case_id": case_id, "type": "referral.acknowledged"}, {"recorded_at": 1}):
            run.completed[case_id] = _epoch(e["recorded_at"])

    # Each case is looked for 0.5 s after its acknowledgement, then after 1, 2 and every 4 s: the time taken is the
    # entry's own `recorded_at`, so looking less often changes no figure, only the benchmark's load on the database
    # it measures (looking every second cost about 7 statements per report with one recruiter, whose trails are long).
    due: dict[str, tuple[float, float]] = {}  # case id -> (when to look next, the wait after that)
    while not stop.is_set():
        now = time.time()
        waiting = []
        for c, acked_at in list(run.acked.items()):
            if c in run.completed:
                continue
            at, wait = due.setdefault(c, (acked_at + 0.5, 1.0))
            if at <= now:
                waiting.append(c)
                due[c] = (now + wait, min(wait * 2, 4.0))
        for at in range(0, len(waiting), 16):
            await asyncio.gather(*(look(c) for c in waiting[at:at + 16]))
        await asyncio.sleep(0.25)


def database_transactions() -> int | None:
    """PostgreSQL's count of committed transactions in FerretDB's database (every statement FerretDB runs for a
    command is one): work done for everyone, the benchmark's own polling included. None on another backend."""
    if (os.environ.get("WASPADA_FERRETDB_BACKEND") or "postgresql") != "postgresql":
        return None
    psql = Path(os.environ.get("POSTGRES_BIN", "/usr/lib/postgresql/15/bin")) / "psql"
    try:
        out = subprocess.run([str(psql), "-h", "127.0.0.1", "-p", os.environ.get("POSTGRES_PORT", "15432"),
                              "-U", "postgres", "-d", "ferretdb", "-tAc",
                              "SELECT xact_commit FROM pg_stat_database WHERE datname = 'ferretdb'"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return int(out.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _cpu_s(pid: int, children_too: bool = False) -> float:
    """CPU seconds a process has used (`/proc/<pid>/stat`), with its reaped children's when asked."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = [int(f) for f in fields[11:15]]  # utime, stime, cutime, cstime
    return sum(ticks if children_too else ticks[:2]) / os.sysconf("SC_CLK_TCK")


def infra_pids() -> Path:
    """Where the instance's start script keeps Kafka's, FerretDB's and PostgreSQL's pids."""
    return Path(os.environ.get("WASPADA_INFRA_DIR") or ROOT / ".local-infra") / "pids"


def database_cpu_s() -> float | None:
    """CPU seconds FerretDB and PostgreSQL (the postmaster, its live backends and the ones it reaped) have used:
    the work the database does for everyone, the benchmark's own polling included. Unlike throughput it hardly
    moves with what else the machine is doing. None if their processes are not ours to read."""
    pids = infra_pids()
    try:
        ferret = int((pids / "ferretdb.pid").read_text())
        postmaster = int((pids / "postgres.pid").read_text())
        total = _cpu_s(ferret) + _cpu_s(postmaster, children_too=True)
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                        total += _cpu_s(int(proc.name))
                except (OSError, ValueError, IndexError):
                    continue  # gone meanwhile
        return total
    except (OSError, ValueError, IndexError):
        return None


def processes_cpu_s(processes: Iterable[tuple[str, int]]) -> dict[str, float]:
    """CPU seconds each service's copies (and Kafka, as "kafka", when its pid is known) have used: with the
    database's, where a report's work goes. Steadier than throughput, which on this shared machine moves by ±15 %
    between runs of the same code (not steady: it too grows when a run falls behind and polls more per report)."""
    pids = infra_pids()
    with contextlib.suppress(OSError, ValueError):
        processes = [*processes, ("kafka", int((pids / "kafka.pid").read_text()))]
    used: Counter[str] = Counter()
    for name, pid in processes:
        with contextlib.suppress(OSError, ValueError, IndexError):
            used[name] += _cpu_s(pid)
    return dict(used)


async def drive(target: Target, bodies: list[dict], rate: float, time_cap: float, settle: float = 90
                ) -> dict[str, Any]:
    """Send `bodies` at `rate` with the verifier and the investigator working; stop when every accepted report is
    fully through or `time_cap` seconds after the first POST; then let the system settle, count and measure."""
    run = Run()
    stop = asyncio.Event()
    transactions_before = await asyncio.to_thread(database_transactions)
    cpu_before = database_cpu_s()
    processes_before = processes_cpu_s(target.processes)
    mongo = AsyncMongoClient(MONGO)
    db = mongo[target.trail_db]
    background = []
    try:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200, keepalive_expiry=2)) as http:
            if not target.synchronous:
                ready = asyncio.Event()
                background.append(asyncio.create_task(kafka_watcher(run, ready, stop)))
                await asyncio.wait_for(ready.wait(), 60)
            background += [asyncio.create_task(verifier(http, target, run, stop)),
                           asyncio.create_task(investigator(http, target, run, stop)),
                           asyncio.create_task(trail_watcher(db, run, stop, target.synchronous))]
            start = time.time()
            sending = asyncio.create_task(reporters(http, target, run, bodies, rate))
            capped = False
            while not (sending.done() and len(run.completed) >= len(run.accepted)):
                if time.time() - start > time_cap:
                    capped = True
                    break
                await asyncio.sleep(0.5)
            wall = time.time() - start
            stop.set()
            sending.cancel()
            for task in background:
                task.cancel()
            await asyncio.gather(sending, *background, return_exceptions=True)
        # The database's work is counted up to here, with a moment for the last in flight: the reads below (every
        # trail entry of the run, each case in each service's database: 20 ms of database CPU per report with one
        # recruiter) are the benchmark's, not the system's.
        await asyncio.sleep(2)  # PostgreSQL publishes a backend's counts within a second of its last transaction
        transactions_after = await asyncio.to_thread(database_transactions)
        cpu_after = database_cpu_s()
        processes_after = processes_cpu_s(target.processes)
        # Settle: what was still in flight reaches the databases and the trail. Until then a missing case or
        # event is late, not lost: wait while it keeps moving (at most `settle` seconds).
        progress, moved_at, settled = None, time.time(), False
        while True:
            figures = await _figures(db, mongo, target, run, start, wall, capped, rate, len(bodies))
            missing = sum(figures["lost"].values())
            if not missing:
                settled = True
                break
            if missing != progress:
                progress, moved_at = missing, time.time()
            if time.time() - moved_at > 30 or time.time() - start - wall > settle:
                break
            await asyncio.sleep(2)
        figures["settled"] = settled
        figures["settle_s"] = round(time.time() - start - wall, 1)
        if transactions_before is not None and transactions_after is not None and figures["accepted"]:
            figures["database_transactions_per_report"] = round(
                (transactions_after - transactions_before) / figures["accepted"], 1)
        if cpu_before is not None and cpu_after is not None and figures["accepted"]:
            figures["database_cpu_ms_per_report"] = round((cpu_after - cpu_before) * 1000 / figures["accepted"], 1)
        if figures["accepted"] and (per := {name: round((used - processes_before.get(name, 0.0)) * 1000
                                                        / figures["accepted"], 1)
                                            for name, used in processes_after.items()}):
            figures["cpu_ms_per_report"] = per
            figures["services_cpu_ms_per_report"] = round(sum(v for k, v in per.items() if k != "kafka"), 1)
        return figures
    finally:
        await mongo.close()


async def _figures(db, mongo, target: Target, run: Run, start: float, wall: float, capped: bool, rate: float,
                   offered: int) -> dict[str, Any]:
    cases = list(run.accepted)
    entries = await db["trail"].find({"case_id": {"$in": cases}},
                                     {"case_id": 1, "event_id": 1, "type": 1, "recorded_at": 1,
                                      "event": 1}).to_list()
    to_trail, by_event, types = [], Counter(), Counter()
    for e in entries:
        if e["type"] in PATH_EVENTS:
            to_trail.append(_epoch(e["recorded_at"]) - _epoch(e["event"]["occurred_at"]))
            by_event[e["event_id"]] += 1
            types[(e["case_id"], e["type"])] += 1
            if e["type"] == "referral.acknowledged" and e["case_id"] in run.completed:
                run.completed[e["case_id"]] = _epoch(e["recorded_at"])  # the time counted: when it was recorded
    # lost: an event of the path seen on Kafka that the trail does not hold; doubled: held twice, or a case with
    # one of its path's event types twice (two referrals, two screenings)
    on_kafka = {eid for c in cases for kind, eid in run.kafka_events.get(c, []) if kind in PATH_EVENTS}
    lost_events = len(on_kafka - set(by_event))
    doubled = sum(n - 1 for n in by_event.values() if n > 1) + sum(n - 1 for n in types.values() if n > 1)
    in_trail = {c for c, _ in types}
    counts = await _database_counts(mongo, target, cases)
    through = sorted(run.completed.values())
    span = (through[-1] - start) if through else wall
    return {
        "target": target.name,
        "offered": {"reports": offered, "rate_per_s": rate},
        "accepted": len(cases),
        "screened": sum(c in run.screened for c in cases),
        "decided": len(run.decided),
        "referred": sum(c in run.referred for c in run.decided),
        "acknowledged": len(run.acked),
        "through": len(through),
        "through_after_settling": sum(1 for c in cases if types[(c, "referral.acknowledged")]),
        "capped": capped,
        "wall_s": round(wall, 1),
        "throughput_per_s": round(len(through) / span, 2) if through else 0.0,
        "accept": latency([run.accepted[c] - run.sent[c] for c in cases]),
        "report_to_screened": latency([run.screened[c] - run.sent[c] for c in cases if c in run.screened]),
        "urgent_report_to_screened": latency([run.screened[c] - run.sent[c] for c in cases
                                              if c in run.screened and c in run.urgent]),
        "decision_to_referral": latency([run.referred[c] - run.decided[c] for c in run.decided if c in run.referred]),
        "event_to_trail": latency(to_trail),
        # after settling (`settled`); a run that did not settle reports what was still missing at its end
        "lost": {"events": lost_events, "cases_missing_from_trail": len(set(cases) - in_trail),
                 **{k: v for k, v in counts.items() if k.endswith("_missing")}},
        "doubled": {"trail": doubled, **{k: v for k, v in counts.items() if k.endswith("_doubled")}},
        "errors": dict(run.errors),
    }


async def _database_counts(mongo, target: Target, cases: list[str]) -> dict[str, int]:
    """Each accepted case in each service's database (by `_id`: one document at most), and its referrals."""
    if target.synchronous:
        names = {"cases": (target.trail_db, "cases")}
        referrals = (target.trail_db, "referrals")
    else:
        prefix = target.trail_db.removesuffix("_audit")
        names = {"intake": (f"{prefix}_intake", "reports"), "verification": (f"{prefix}_verification", "cases"),
                 "audit": (f"{prefix}_audit", "cases")}
        referrals = (f"{prefix}_referral", "referrals")
    counts: dict[str, int] = {}
    for label, (database, collection) in names.items():
        held = {d["_id"] async for d in mongo[database][collection].find({"_id": {"$in": cases}}, {"_id": 1})}
        counts[f"{label}_missing"] = len(set(cases) - held)
    per_case = Counter([d["case_id"] async for d in mongo[referrals[0]][referrals[1]].find(
        {"case_id": {"$in": cases}}, {"case_id": 1})])
    counts["referrals_doubled"] = sum(n - 1 for n in per_case.values() if n > 1)
    return counts


# --- ceilings -------------------------------------------------------------------------------------------------

async def ceiling(n: int, with_database: bool, logs: Path) -> dict[str, Any]:
    """n messages (about the size of an event) through three relay processes; throughput from the first send to
    the last arrival, latency per message."""
    tag = uuid.uuid4().hex[:8]
    hops = [f"waspada-bench.{tag}.hop{i}" for i in range(4)]
    await create_topics(KAFKA, [(t, topics.DEFAULT_PARTITIONS) for t in hops])
    database = f"benchceiling{tag}" if with_database else None
    procs = []
    for i in range(3):
        log = open(logs / f"relay-{tag}-{i}.log", "ab")  # noqa: SIM115 - owned by the child process
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.bench_relay", "--source", hops[i], "--target", hops[i + 1],
             "--group", f"bench-{tag}-{i}", *(["--database", database] if database else [])],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ))
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all", enable_idempotence=True)
    consumer = AIOKafkaConsumer(hops[3], bootstrap_servers=KAFKA, group_id=None, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    arrived: dict[int, float] = {}
    sent: dict[int, float] = {}
    padding = "x" * 1500
    try:
        async def until(count: int, timeout: float) -> None:
            deadline = time.time() + timeout
            while len(arrived) < count and time.time() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    now = time.time()
                    for r in records:
                        arrived.setdefault(json.loads(r.value)["i"], now)

        # warm-up: the relays hold their partitions once one message per partition made it through
        for p in range(topics.DEFAULT_PARTITIONS):
            await producer.send_and_wait(hops[0], json.dumps({"i": -1 - p, "pad": padding}).encode(), partition=p)
        await until(topics.DEFAULT_PARTITIONS, 120)
        arrived.clear()
        start = time.time()
        futures = []
        for i in range(n):
            sent[i] = time.time()
            futures.append(await producer.send(hops[0], json.dumps({"i": i, "pad": padding}).encode(),
                                               key=str(i).encode()))
        await asyncio.gather(*futures)
        await until(n, 300)
        done = [arrived[i] - sent[i] for i in sent if i in arrived]
        last = max(arrived.values()) if arrived else time.time()
        return {"messages": n, "arrived": len(done), "throughput_per_s": round(len(done) / (last - start), 1),
                "latency": latency(done)}
    finally:
        await producer.stop()
        await consumer.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
        if database:
            client = AsyncMongoClient(MONGO)
            await client.drop_database(database)
            await client.close()


async def database_write(n: int) -> dict[str, Any]:
    client = AsyncMongoClient(MONGO)
    collection = client[f"benchwrite{uuid.uuid4().hex[:8]}"]["docs"]
    times = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            await collection.insert_one({"_id": i, "version": 1, "payload": "x" * 2000})
            times.append(time.perf_counter() - t0)
        return latency(times)
    finally:
        await client.drop_database(collection.database.name)
        await client.close()


# --- the systems ------------------------------------------------------------------------------------------------

def start_waspada(copies: int, logs: Path) -> System:
    system = System({"kafka": KAFKA, "mongo": MONGO}, logs)
    # Its own databases and consumer groups: its groups start at the topics' ends, not at the earlier runs' events
    # (which `earliest` would make it apply again into its new databases while it is measured).
    system.env["WASPADA_CONSUMER_OFFSET_RESET"] = "latest"
    for copy in range(copies):  # first copies, then second ones: fewer group rebalances
        for service in SERVICES:
            system.start(service, range(copy, copy + 1))
        system.wait_ready(SERVICES, range(copy, copy + 1))
    return system


def start_sync(logs: Path) -> tuple[subprocess.Popen, Target]:
    port = PORTS["web"] + 50  # within the offset's block, clear of the services' copies
    database = f"benchsync{uuid.uuid4().hex[:8]}"
    log = open(logs / "sync.log", "ab")  # noqa: SIM115 - owned by the child process
    proc = subprocess.Popen([sys.executable, "-m", "tests.bench_sync", "--port", str(port), "--database", database],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "WASPADA_ENV": "dev"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError("bench_sync exited: " + (logs / "sync.log").read_text()[-2000:])
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            raise RuntimeError("bench_sync not ready")
        time.sleep(0.2)
    return proc, Target("synchronous", (url,), (url,), (url,), database, synchronous=True)


def scenario_bodies(scenario: str, count: int, urgent_every: int = 0) -> list[dict]:
    phone = f"0857{uuid.uuid4().int % 10**8:08d}"  # a recruiter no earlier run named
    day = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)  # one moment: one day
    return [report(scenario, i, phone, day, urgent=bool(urgent_every) and i % urgent_every == urgent_every - 1)
            for i in range(count)]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ratios(run: dict[str, Any], ceiling_a: dict, ceiling_b: dict, sync: dict | None, write: dict) -> dict[str, Any]:
    """Throughput as a share of each reference (higher is better); each latency's p50 and p99 as a multiple of the
    reference's (lower is better; a ceiling's latency is three hops at its own saturation)."""
    out: dict[str, Any] = {"accept_p50_over_database_write_p50": _ratio(run["accept"]["p50_ms"], write["p50_ms"])}
    references = {"ceiling_a": ceiling_a, "ceiling_b": ceiling_b, **({"sync": sync} if sync else {})}
    for name, ref in references.items():
        out[f"throughput_over_{name}"] = _ratio(run["throughput_per_s"], ref["throughput_per_s"])
        for metric in ("accept", "report_to_screened", "decision_to_referral", "event_to_trail"):
            if metric == "accept" and name != "sync":
                continue
            for p in ("p50_ms", "p99_ms"):
                theirs = ref[metric][p] if name == "sync" else ref["latency"][p]
                out[f"{metric}_{p.removesuffix('_ms')}_over_{name}"] = _ratio(run[metric][p], theirs)
    return out


def table(result: dict[str, Any]) -> str:
    a, b, w = result["ceiling_a"], result["ceiling_b"], result["database_write"]
    lines = [f"ceiling A (3 raw relays): {a['throughput_per_s']}/s, p50 {a['latency']['p50_ms']} ms; "
             f"ceiling B (+1 bulk insert/hop): {b['throughput_per_s']}/s, p50 {b['latency']['p50_ms']} ms; "
             f"one database write p50 {w['p50_ms']} ms",
             f"{'run':<26}{'through':>9}{'/s':>7}{'xA':>7}{'xB':>7}{'xSync':>7}{'screened p50/p95/p99':>24}"
             f"{'urgent p50/p99':>16}{'decision→ref p50/p99':>22}{'→trail p50/p99':>18}{'accept p50':>11}"
             f"{'db tx/rep':>10}{'db ms/rep':>10}{'svc ms/rep':>11}{'lost':>5}{'dbl':>4}"]
    for run in result["runs"]:
        r = run.get("ratios", {})

        def ms(metric: str, *ps: int) -> str:
            return "/".join("-" if (v := run.get(metric, {}).get(f"p{p}_ms")) is None else f"{v:.0f}" for p in ps)

        lost = sum(run["lost"].values())
        lost = lost if run.get("settled", True) else f"({lost})"  # not settled: still missing, maybe only late
        doubled = sum(run["doubled"].values())
        lines.append(f"{run['label']:<26}{run['through']:>4}/{run['accepted']:<4}{run['throughput_per_s']:>7}"
                     f"{r.get('throughput_over_ceiling_a') or '-':>7}{r.get('throughput_over_ceiling_b') or '-':>7}"
                     f"{r.get('throughput_over_sync') or '-':>7}{ms('report_to_screened', 50, 95, 99):>24}"
                     f"{ms('urgent_report_to_screened', 50, 99):>16}{ms('decision_to_referral', 50, 99):>22}{ms('event_to_trail', 50, 99):>18}"
                     f"{ms('accept', 50):>11}{run.get('database_transactions_per_report') or '-':>10}"
                     f"{run.get('database_cpu_ms_per_report') or '-':>10}"
                     f"{run.get('services_cpu_ms_per_report') or '-':>11}"
                     f"{lost:>5}{doubled:>4}" + ("  (time cap)" if run["capped"] else "")
                     + ("" if run.get("settled", True) else "  (not settled)"))
    lines.append("lost in (): still missing when the run stopped waiting for its late work; x*: ratios; times in ms; "
                 "urgent: report→screened of the reports urgent on their face (--urgent-every); "
                 "db tx/rep: PostgreSQL transactions per accepted report (all clients, until the run ends: not the "
                 "benchmark's count of the trail after it); db ms/rep: CPU time FerretDB and PostgreSQL spent per "
                 "accepted report (the same span); svc ms/rep: CPU time the services' processes spent per "
                 "accepted report (the same span; each service's and Kafka's in the JSON, `cpu_ms_per_report`)")
    lines.append(f"load average at the start {result.get('load_average_at_start')}, "
                 f"at the end {result['load_average']}")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="waspada-bench-"))
    await create_topics(KAFKA, [(t, topics.DEFAULT_PARTITIONS) for t in topics.ALL])
    result: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "out"},
                              "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "runs": []}
    print(f"ceilings ({args.ceiling_n} messages each)...", flush=True)
    result["ceiling_a"] = await ceiling(args.ceiling_n, False, logs)
    result["ceiling_b"] = await ceiling(args.ceiling_n, True, logs)
    result["database_write"] = await database_write(200)
    sync = None
    if not args.no_sync:
        print("synchronous alternative...", flush=True)
        proc, target = start_sync(logs)
        try:
            sync = await drive(target, scenario_bodies("distinct", args.reports, args.urgent_every), args.rate, args.time_cap,
                               args.settle)
        finally:
            proc.terminate()
            proc.wait(20)
        sync["label"] = "sync, distinct"
        result["runs"].append(sync)
    for copies in args.copies:
        print(f"Waspada, {copies} cop{'y' if copies == 1 else 'ies'} of each service...", flush=True)
        system = await asyncio.to_thread(start_waspada, copies, logs)
        try:
            target = Target(f"waspada x{copies}", *(tuple(system.url(s, c) for c in range(copies))
                                                    for s in ("intake", "verification", "referral")),
                            f"{system.db_prefix}_audit",
                            processes=tuple((service, proc.pid) for (service, _), proc in system.procs.items()))
            for scenario in args.scenarios:
                count = args.reports if scenario == "distinct" else args.recruiter_reports
                cap = args.time_cap if scenario == "distinct" else args.recruiter_time_cap
                run = await drive(target, scenario_bodies(scenario, count, args.urgent_every), args.rate, cap, args.settle)
                run.update(label=f"waspada x{copies}, {scenario}", copies=copies, scenario=scenario,
                           ratios=ratios(run, result["ceiling_a"], result["ceiling_b"], sync,
                                         result["database_write"]))
                result["runs"].append(run)
                print(f"  {scenario}: {run['through']}/{run['accepted']} through, {run['throughput_per_s']}/s",
                      flush=True)
        finally:
            await asyncio.to_thread(system.stop_all)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["logs"] = str(logs)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=10, help="reports POSTed per second (open loop)")
    parser.add_argument("--reports", type=int, default=150, help="reports per distinct-people run")
    parser.add_argument("--recruiter-reports", type=int, default=60, help="reports per one-recruiter run")
    parser.add_argument("--time-cap", type=float, default=100, help="seconds a distinct-people run may take")
    parser.add_argument("--recruiter-time-cap", type=float, default=60, help="seconds a one-recruiter run may take")
    parser.add_argument("--settle", type=float, default=90,
                        help="seconds a run's late work may take to reach the databases before it counts as lost")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--urgent-every", type=int, default=10,
                        help="every Nth report is urgent on its face (an indicator that forces escalation); 0: none")
    parser.add_argument("--scenarios", nargs="+", default=["distinct", "recruiter"], choices=["distinct", "recruiter"])
    parser.add_argument("--ceiling-n", type=int, default=3000, help="messages through each ceiling")
    parser.add_argument("--no-sync", action="store_true", help="skip the synchronous alternative")
    parser.add_argument("--out", default=str(ROOT / ".local-infra/bench/latest.json"))
    parser.add_argument("--show", metavar="JSON", help="print the table of a stored result (no run)")
    args = parser.parse_args()
    if args.show:
        result = json.loads(Path(args.show).read_text())
        sync = next((r for r in result["runs"] if r["target"] == "synchronous"), None)
        for run in result["runs"]:
            if run["target"] != "synchronous":
                run["ratios"] = ratios(run, result["ceiling_a"], result["ceiling_b"], sync, result["database_write"])
        print(table(result))
        sys.exit(0)
    result = asyncio.run(main(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"written to {out}")
