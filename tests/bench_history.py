"""`python -m tests.bench_history --cases 1000 100000`: the list endpoints a person uses, with many cases stored.

On a fresh test instance (the Makefile's test ports): starts the services as processes (tests/e2e/conftest.py
`System`), sends TEMPLATES reports through the real path (`case.reported` on the intake topic, screened and linked by
verification, recorded by audit), decides most of them through verification's API (referral routes the verified
ones), and waits until every service holds them. Those documents are what the services' own domain code wrote; the
history is then grown to each size by copying them straight into the databases (`insert_many` in big batches):
copies are of the decided cases only (a year of history is mostly decided; the
live cases stay the templates); each copy gets a new case id and case number everywhere it appears (report, screening, referrals, read model,
trail entries) and its personal data is sealed again under a new case key (shared/crypto, bound to the new id), so
every copy reads like the case it was made from. Copied referrals are closed, as a year's referrals mostly are
(open ones would fill every unit's inbox with thousands of long-overdue referrals, and their deadline timers would fire
a storm of escalations, which is the pipeline's benchmark, not this one).

Measures single-document writes first (WRITES inserts, each followed by a replacement by _id, as a version step
writes), then p50/p99 over RUNS requests of: the verifier queue (first page, and a page after following `next`
PAGES times), the referral inbox of a unit and of a supervisor, overdue referrals, the audit search, the audit stats
(its first view after the copies, then views that each follow a change of this week's cases, with a check that every
stored case is counted), and one case's trail; after each growth PostgreSQL is told to ANALYZE, as after any bulk
load. Prints a table and writes docs/bench/history-<backend>-<date>.json (the backend is
WASPADA_FERRETDB_BACKEND, as infra/local/infra.sh started it). Figures only; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from bson import ObjectId, json_util
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import BulkWriteError

from services.audit import domain as audit_domain
from services.referral.domain import created_day, created_hour, created_week
from services.referral.store import day_scopes
from shared import crypto
from shared.settings import DEV_MASTER_KEY
from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth
from tests.e2e.conftest import System
from tests.web_staff_perf import NAMES, RECRUITERS, REGION, decide_some, wait_until

TEMPLATES = 40
RUNS = 20
BUDGET_S = 60
PAGES = 5
WRITES = 1000  # inserts, and as many replacements by _id
BATCH = 2000
SERVICES = ["identity", "intake", "verification", "referral", "audit"]
# Per service database: the collections that hold cases (copied), by the field that names the case.
CASE_COLLECTIONS = {"intake": ["reports"], "verification": ["cases"], "referral": ["referrals", "cases"],
                    "audit": ["cases", "trail"]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def case_of(collection: str, doc: dict[str, Any]) -> str:
    return doc.get("case_id") or doc["_id"]


class History:
    """Copies the template cases into the databases until each size is reached."""

    def __init__(self, mongo: str, prefix: str) -> None:
        self.client = AsyncMongoClient(mongo)
        self.prefix = prefix
        master = os.environ.get("WASPADA_MASTER_KEY") or DEV_MASTER_KEY
        self.keys = crypto.KeyStore(self.client[f"{prefix}_keys"], crypto.master_key_from(master), 0)
        self.templates: list[dict[str, Any]] = []  # per template case: its key, number and documents
        self.stored = 0
        self.rng = random.Random(5)
        self.weeks: set[str] = set()
        self.report_days: set[str] = set()
        self.report_hours: set[str] = set()
        # (unit or region, day) -> how many copied referrals: the referral days the copies moved to
        self.days: dict[tuple[str, str], int] = {}

    async def load_templates(self) -> None:
        by_case: dict[str, dict[str, Any]] = {}
        for service, collections in CASE_COLLECTIONS.items():
            db = self.client[f"{self.prefix}_{service}"]
            for name in collections:
                async for doc in db[name].find({}):
                    case_id = case_of(name, doc)
                    if not isinstance(case_id, str) or "#" in case_id:
                        continue
                    by_case.setdefault(case_id, {"docs": []})["docs"].append((service, name, doc))
        for case_id, found in by_case.items():
            kinds = {(s, n) for s, n, _ in found["docs"]}
            if ("audit", "cases") not in kinds:  # (intake holds none of the reports sent straight to Kafka)
                continue
            case = next((d for s, n, d in found["docs"] if (s, n) == ("verification", "cases")), {})
            if case.get("status") in (None, "awaiting_decision", "info_requested"):
                continue  # history is decided cases: the queue's backlog is the live cases, not a year of them
            number = next(d["case_number"] for _, _, d in found["docs"] if isinstance(d.get("case_number"), str))
            # referral ids are derived from the case id (uuid5): a copy's referrals get ids of their own
            found["renamed"] = [d["_id"] for s, n, d in found["docs"] if n == "referrals"]
            found.update(case_id=case_id, number=number, key=await self.keys.key(case_id),
                         text=json_util.dumps([d for _, _, d in found["docs"]]))
            self.templates.append(found)
        self.stored = len(by_case)

    def copy(self, template: dict[str, Any], n: int) -> tuple[str, bytes, list[tuple[str, str, dict[str, Any]]]]:
        new_id, key = str(uuid.uuid4()), os.urandom(32)
        number = f"{template['number'].split('-')[0]}-2024-{n:06d}"  # another year than any real report's: never taken
        text = template["text"].replace(template["case_id"], new_id).replace(template["number"], number)
        for old in template["renamed"]:
            text = text.replace(old, str(uuid.uuid4()))
        # A year of history: each copy happened some time earlier, up to a year, at any time of day (every time in it
        # moves together, so its deadlines and spans stay as they were).
        back = timedelta(days=self.rng.randrange(0, 365), seconds=self.rng.randrange(0, 86400))
        text = INSTANT.sub(lambda m: _earlier(m.group(0), back), text)
        docs = json_util.loads(text)
        out = []
        for (service, name, _), doc in zip(template["docs"], docs, strict=True):
            doc = reseal(doc, template["key"], template["case_id"], key, new_id)
            if isinstance(doc["_id"], ObjectId):
                doc["_id"] = ObjectId()  # trail entries: the server's kind of id, one per copy
            if (service, name) == ("audit", "cases"):  # the week its figures are kept under moved with it, and its day
                doc["reported_week"] = audit_domain.report_week(doc.get("reported_at"))
                doc["reported_day"] = audit_domain.report_day(doc.get("reported_at"))
                doc["reported_hour"] = audit_domain.report_hour(doc.get("reported_at"))
                self.report_days.add(doc["reported_day"])
                self.report_hours.add(doc["reported_hour"])
                self.weeks.add(doc["reported_week"])
            if name == "referrals":  # a year of history: the copies' referrals were worked and closed long ago
                doc.update(status="closed", outcome="police_report_filed", next_deadline=None, next_due_ts=None,
                           escalation_pending=False, created_day=created_day(doc["created_at"]),
                           created_week=created_week(doc["created_at"]), created_hour=created_hour(doc["created_at"]))
                for scope in day_scopes(doc):
                    self.days[(scope, doc["created_day"])] = self.days.get((scope, doc["created_day"]), 0) + 1
            out.append((service, name, doc))
        return new_id, key, out

    async def grow_to(self, size: int) -> float:
        started = time.monotonic()
        while self.stored < size:
            count = min(BATCH, size - self.stored)
            batches: dict[tuple[str, str], list[dict[str, Any]]] = {}
            keys = []
            for i in range(count):
                template = self.templates[(self.stored + i) % len(self.templates)]
                new_id, key, docs = self.copy(template, self.stored + i + 1)
                keys.append({"_id": new_id, "wrapped": self.keys._wrap(new_id, key)})
                for service, name, doc in docs:
                    batches.setdefault((service, name), []).append(doc)
            writes = [self.client[f"{self.prefix}_keys"]["case_keys"].insert_many(keys, ordered=False)]
            writes += [self.client[f"{self.prefix}_{service}"][name].insert_many(docs, ordered=False)
                       for (service, name), docs in batches.items()]
            try:
                await asyncio.gather(*writes)
            except BulkWriteError as exc:
                raise RuntimeError(f"copying refused: {str(exc.details.get('writeErrors', [{}])[0])[:300]}") from None
            self.stored += count
            print(f"    {self.stored} cases stored ({time.monotonic() - started:.0f} s)", flush=True)
        # Written past audit's projection: its kept weekly figures must be counted again, as after any change, and
        # the weeks the copies moved to become known to its search and figures.
        report_days = self.client[f"{self.prefix}_audit"]["report_days"]  # the days its search reads busy weeks by
        known = {d["_id"] for d in await report_days.find({}, {"_id": 1}).to_list()}
        # Only the new ones: in one run FerretDB ran out of PostgreSQL connections (and stopped answering) right after
        # this registration refused some 340 duplicates and the referral days were upserted in one bulk write.
        if fresh := sorted(self.report_days - known):
            await report_days.insert_many([{"_id": day, "week": audit_domain.week_of(day)}
                                           for day in fresh], ordered=False)
        report_hours = self.client[f"{self.prefix}_audit"]["report_hours"]  # and the hours it reads busy days by
        known = {d["_id"] for d in await report_hours.find({}, {"_id": 1}).to_list()}
        if fresh := sorted(self.report_hours - known - {audit_domain.NO_WEEK}):
            await report_hours.insert_many([{"_id": hour, "week": audit_domain.week_of(hour[:10])}
                                            for hour in fresh], ordered=False)
        # Every week and the copies' days in it counted again (`AuditStore.touch_figures`).
        weeks = self.client[f"{self.prefix}_audit"]["stats_weeks"]
        token = uuid.uuid4().hex
        for week in sorted(self.weeks):
            days = {f"days.{day}": token for day in sorted(self.report_days) if audit_domain.week_of(day) == week}
            await weeks.update_one({"_id": week}, {"$set": {"token": token, **days}}, upsert=True)
        await weeks.update_many({}, {"$set": {"token": token}})
        # Where the full referral lists walk back, with each day's count (as `ReferralStore.count_day` keeps it):
        # new entries inserted, known ones counted up one by one.
        days = self.client[f"{self.prefix}_referral"]["referral_days"]
        known = {d["_id"] for d in await days.find({}, {"_id": 1}).to_list()}
        counts = {f"{scope}|{day}": (scope, day, n) for (scope, day), n in self.days.items()}
        if fresh := sorted(set(counts) - known):
            await days.insert_many([{"_id": key, "scope": counts[key][0], "day": counts[key][1], "n": counts[key][2]}
                                    for key in fresh], ordered=False)
        for key in sorted(set(counts) & known):
            await days.update_one({"_id": key}, {"$inc": {"n": counts[key][2]}})
        self.days.clear()  # counted; the next growth adds its own
        return time.monotonic() - started


INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")


def _earlier(stamp: str, back: timedelta) -> str:
    """An ISO time `back` earlier, written in the form it was (as many fraction digits, `Z` or the same offset)."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")) - back
    fraction = re.search(r"\.(\d+)", stamp)
    digits = f".{moment.microsecond:06d}"[:1 + len(fraction.group(1))].ljust(1 + len(fraction.group(1)), "0") \
        if fraction else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + digits + ("Z" if stamp.endswith("Z") else stamp[-6:])


def reseal(value: Any, old_key: bytes | None, old_id: str, key: bytes, case_id: str) -> Any:
    """The same value with every sealed string opened with the template's key and sealed with the copy's."""
    if isinstance(value, dict):
        return {k: reseal(v, old_key, old_id, key, case_id) for k, v in value.items()}
    if isinstance(value, list):
        return [reseal(v, old_key, old_id, key, case_id) for v in value]
    if crypto.is_sealed(value) and old_key is not None:
        try:
            return crypto.seal(key, case_id, crypto.unseal(old_key, old_id, value))
        except Exception:  # sealed under another key (the records key, the watch list): kept as it is
            return value
    return value


def file_reports(system: System, count: int) -> list[str]:
    """Reports through intake's API, as reporters file them: people whose numbers rarely repeat."""
    rng, ids = random.Random(), []
    reporter = auth("reporter", PILOT_VILLAGE)
    with httpx.Client(timeout=120) as http:
        for n in range(count):
            body = report_body(persons=[
                {"role": "potential_victim", "name": rng.choice(NAMES), "nik": f"3603{rng.randint(10**11, 10**12 - 1)}",
                 "phone": f"0812{rng.randint(10**7, 10**8 - 1)}", "age": rng.choice([16, 19, 23]), "sex": "female"},
                {"role": "recruiter", "name": rng.choice(RECRUITERS) if n % 10 == 0 else f"Perekrut {n}",
                 "phone": f"+62813{rng.randint(10**7, 10**8 - 1)}"}])
            response = http.post(f"{system.url('intake')}/v1/reports", json=body, headers=reporter)
            response.raise_for_status()
            ids.append(response.json()["case_id"])
    return ids


def timed(http: httpx.Client, url: str, headers: dict[str, str], runs: int = RUNS,
          before: Callable[[], None] | None = None) -> dict[str, Any]:
    """`runs` calls, fewer (at least 3) once they have taken BUDGET_S: an endpoint that takes tens of seconds is
    reported from its few calls (`runs` says how many) rather than holding the benchmark for an hour. `before`
    runs ahead of each call, untimed."""
    times, status = [], None
    began = time.perf_counter()
    for n in range(runs):
        if n >= 3 and time.perf_counter() - began > BUDGET_S:
            break
        if before is not None:
            before()
        started = time.perf_counter()
        response = http.get(url, headers=headers)
        times.append(time.perf_counter() - started)
        status = response.status_code
    return {"p50_ms": round(statistics.median(times) * 1000, 1), "p99_ms": round(percentile(times, 0.99) * 1000, 1),
            "status": status, "runs": len(times)}


def touch_this_week(mongo: str, prefix: str) -> Callable[[], None]:
    """What audit does after a case reported this hour changes (a new report, a decision): the week's, today's and
    this hour's tokens change, so the figures count that hour's cases again (`AuditStore.touch_figures`)."""
    def touch() -> None:
        now = datetime.now(UTC)
        today, hour = now.date().isoformat(), now.strftime("%Y-%m-%dT%H")
        week = audit_domain.week_of(today)
        token = uuid.uuid4().hex
        with MongoClient(mongo) as client:
            audit = client[f"{prefix}_audit"]
            audit["report_hours"].update_one({"_id": hour}, {"$set": {"token": token}})  # its hour's first
            audit["stats_weeks"].update_one({"_id": week}, {"$set": {"token": token, f"days.{today}": token}},
                                            upsert=True)
    return touch


def measure(system: System, trail_case: str, unit: str) -> dict[str, dict[str, Any]]:
    from tests.conftest import MONGO

    verifier, supervisor = auth("verifier", REGION), auth("supervisor", REGION)
    investigator = auth("investigator", REGION, unit=unit)
    verification, referral, audit = (system.url(s) for s in ("verification", "referral", "audit"))
    figures = {}
    with httpx.Client(timeout=600) as http:
        queue = f"{verification}/v1/queue?limit=50"
        figures["queue, first page"] = timed(http, queue, verifier)
        cursor = None
        for _ in range(PAGES):
            page = http.get(queue + (f"&cursor={cursor}" if cursor else ""), headers=verifier).json()
            cursor = page.get("next") or cursor
        figures[f"queue, page {PAGES + 1}"] = timed(http, queue + (f"&cursor={cursor}" if cursor else ""), verifier)
        figures["referral inbox (unit)"] = timed(http, f"{referral}/v1/referrals?limit=50", investigator)
        figures["referrals (supervisor)"] = timed(http, f"{referral}/v1/referrals?limit=50", supervisor)
        figures["referrals overdue"] = timed(http, f"{referral}/v1/referrals/overdue?limit=50", supervisor)
        figures["audit search"] = timed(http, f"{audit}/v1/cases?limit=50", supervisor)
        # The first view after the copies were written past audit counts every week (and day) once; after that a
        # view follows a change of this week's cases, as it does while reports come in.
        figures["audit stats, first view after the copy"] = timed(http, f"{audit}/v1/stats", supervisor, runs=1)
        figures["audit stats"] = timed(http, f"{audit}/v1/stats", supervisor, runs=max(5, RUNS // 4),
                                       before=touch_this_week(MONGO, system.db_prefix))
        # The figures must still be right: every stored case is in the region, counted once.
        with MongoClient(MONGO) as client:
            stored = client[f"{system.db_prefix}_audit"]["cases"].estimated_document_count()
        figures["audit stats"]["total"] = http.get(f"{audit}/v1/stats", headers=supervisor).json()["total"]
        figures["audit stats"]["cases_stored"] = stored
        figures["one case's trail"] = timed(http, f"{audit}/v1/cases/{trail_case}/trail", supervisor)
    return figures


async def writes(mongo: str, prefix: str, count: int = WRITES) -> dict[str, Any]:
    """Single-document writes as the services make them: insert one, then replace it by _id (a version step)."""
    client = AsyncMongoClient(mongo)
    things = client[f"{prefix}_writes"]["things"]
    times: dict[str, list[float]] = {"insert": [], "replace": []}
    started = time.perf_counter()
    try:
        for n in range(count):
            doc = {"_id": f"w{n}", "version": 1, "status": "awaiting_decision", "text": "x" * 2000}
            t = time.perf_counter()
            await things.insert_one(doc)
            times["insert"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await things.replace_one({"_id": doc["_id"]}, {**doc, "version": 2})
            times["replace"].append(time.perf_counter() - t)
    finally:
        await client.close()
    total = time.perf_counter() - started
    return {"writes": 2 * count, "per_s": round(2 * count / total, 1),
            **{f"{k}_p50_ms": round(statistics.median(v) * 1000, 2) for k, v in times.items()},
            **{f"{k}_p99_ms": round(percentile(v, 0.99) * 1000, 2) for k, v in times.items()}}


async def first_referral(mongo: str, prefix: str) -> dict[str, Any] | None:
    client = AsyncMongoClient(mongo)
    try:
        return await client[f"{prefix}_referral"]["referrals"].find_one({})
    finally:
        await client.close()


def analyze(backend: str) -> float | None:
    """After a bulk load, what PostgreSQL's manual advises ("Populating a Database": run ANALYZE afterwards): the
    planner learns the new tables' sizes now rather than at autovacuum's next round, which a load of thousands of
    documents a second outruns (until then an equality FerretDB hands down may be planned as a whole-table scan).
    The services' own writes arrive at their pace; autovacuum keeps up with those. Returns the seconds it took."""
    if backend != "postgresql":
        return None
    started = time.monotonic()
    psql = Path(os.environ.get("POSTGRES_BIN") or "/usr/lib/postgresql/15/bin") / "psql"
    subprocess.run([str(psql), "-q", "-h", "127.0.0.1", "-p", os.environ.get("POSTGRES_PORT", "5432"), "-U", "postgres",
                    "-d", "ferretdb", "-c", "ANALYZE"], check=True, timeout=600)
    return round(time.monotonic() - started, 1)


def main() -> None:
    from tests.conftest import KAFKA, MONGO

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the services it started on a kill too
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()
    os.environ.setdefault("WASPADA_ENV", "dev")
    backend = os.environ.get("WASPADA_FERRETDB_BACKEND") or "postgresql"
    system = System({"kafka": KAFKA, "mongo": MONGO}, Path(tempfile.mkdtemp(prefix="bench-history-")))
    supervisor = auth("supervisor", REGION)
    result: dict[str, Any] = {"backend": backend, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "load_average_start": os.getloadavg(), "sizes": {}}
    try:
        for service in SERVICES:
            system.start(service, range(1))
        system.wait_ready(SERVICES, range(1), timeout=180)
        print(f"{backend}: {TEMPLATES} template cases through the services (logs in {system.logs})", flush=True)
        started = time.monotonic()
        ids = file_reports(system, TEMPLATES)

        def screened() -> bool | int:
            stats = httpx.get(f"{system.url('audit')}/v1/stats", headers=supervisor, timeout=600).json()
            return stats.get("by_status", {}).get("screened", 0) >= TEMPLATES or stats.get("by_status")

        wait_until("screened and recorded", screened, timeout=1800)
        verified = decide_some(system, ids, 0.8)

        def routed() -> bool | int:
            found = httpx.get(f"{system.url('referral')}/v1/referrals?limit=200", headers=supervisor,
                              timeout=600).json()["items"]
            return len({r["case_id"] for r in found}) >= len(verified) or len(found)

        wait_until("verified cases routed", routed, timeout=1800)
        result["templates_s"] = round(time.monotonic() - started, 1)
        result["writes"] = asyncio.run(writes(MONGO, system.db_prefix))
        print(f"  writes: {result['writes']}", flush=True)
        referral = asyncio.run(first_referral(MONGO, system.db_prefix))
        unit, trail_case = referral["agency_id"], referral["case_id"]

        async def grow_and_measure() -> None:
            history = History(MONGO, system.db_prefix)
            await history.load_templates()
            for size in sorted(args.cases):
                print(f"  growing the history to {size} cases", flush=True)
                seconds = await history.grow_to(size)
                analyze_s = await asyncio.to_thread(analyze, backend)
                figures = await asyncio.to_thread(measure, system, trail_case, unit)
                result["sizes"][str(size)] = {"store_s": round(seconds, 1), "analyze_s": analyze_s,
                                              "load_average": os.getloadavg(), "endpoints": figures}
                print_table(backend, size, figures)
            await history.client.close()

        asyncio.run(grow_and_measure())
    finally:
        system.stop_all()
    sizes = sorted(result["sizes"], key=int)
    if len(sizes) > 1:
        small, large = result["sizes"][sizes[0]]["endpoints"], result["sizes"][sizes[-1]]["endpoints"]
        result["p99_ratio_largest_to_smallest"] = {k: round(large[k]["p99_ms"] / max(small[k]["p99_ms"], 0.1), 2)
                                                   for k in small}
        print(f"\np99 at {sizes[-1]} / p99 at {sizes[0]}:")
        for name, ratio in result["p99_ratio_largest_to_smallest"].items():
            print(f"  {name:40} {ratio:6.2f} ×")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"history-{backend}-{datetime.now(UTC):%Y%m%d-%H%M}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def print_table(backend: str, size: int, figures: dict[str, dict[str, Any]]) -> None:
    print(f"\n{backend}, {size} cases stored (load average {os.getloadavg()[0]:.1f})")
    print(f"  {'endpoint':40} {'p50 ms':>9} {'p99 ms':>9}  status  calls")
    for name, f in figures.items():
        print(f"  {name:40} {f['p50_ms']:9.1f} {f['p99_ms']:9.1f}  {f['status']}     {f['runs']}")
        if "total" in f:
            print(f"  {'':40} counted {f['total']} of {f['cases_stored']} stored cases"
                  + ("" if f["total"] == f["cases_stored"] else "  MISMATCH"))


if __name__ == "__main__":
    main()
