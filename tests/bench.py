"""Benchmark: reports through the real services, as ratios against baselines measured in the same run.

    make bench            (or: python -m tests.bench --reports 200 --concurrency 8)

Baselines, on the same broker and database in the same run:
  - kafka: one message produced (acks=all) and consumed back, per message, sequentially;
  - database: one single-document insert plus one update by _id.
Measured through Waspada (the four services as real processes):
  - accept: POST /v1/reports answered 201 (client side);
  - screened: POST sent -> `case.screened` on the verification topic (intake -> outbox -> Kafka ->
    verification -> outbox -> Kafka), read by the benchmark's own consumer.
Figures are printed as JSON; the ratios are what to compare between machines and commits, not the seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient

from shared import topics
from shared.kafka import create_topics
from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth
from tests.e2e.conftest import PORTS, System

BASELINE_TOPIC = "waspada-bench.baseline"
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _summary(latencies: list[float], wall: float) -> dict[str, float]:
    return {"n": len(latencies), "per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(_pct(latencies, 50) * 1000, 2), "p95_ms": round(_pct(latencies, 95) * 1000, 2),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 2)}


async def kafka_baseline(n: int) -> dict[str, float]:
    topic = BASELINE_TOPIC  # its own topic, so no service consumes the baseline's messages
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=None, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    latencies = []
    try:
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            meta = await producer.send_and_wait(topic, b"{}", partition=0)
            consumer.seek(tp, meta.offset)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                if any(r.offset == meta.offset for r in batch.get(tp, [])):
                    break
            latencies.append(time.perf_counter() - t0)
        return _summary(latencies, time.perf_counter() - start)
    finally:
        await producer.stop()
        await consumer.stop()


async def database_baseline(n: int) -> dict[str, float]:
    client = AsyncMongoClient(MONGO)
    collection = client[f"bench{uuid.uuid4().hex[:8]}"]["docs"]
    latencies = []
    try:
        start = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            await collection.insert_one({"_id": i, "version": 1, "payload": "x" * 2000})
            await collection.update_one({"_id": i}, {"$set": {"version": 2}})
            latencies.append(time.perf_counter() - t0)
        return _summary(latencies, time.perf_counter() - start)
    finally:
        await client.drop_database(collection.database.name)
        await client.close()


def _distinct_report() -> dict:
    """A report whose people appear in no other report (shared people are linked, which is other work)."""
    n = uuid.uuid4().int
    return report_body(persons=[
        {"role": "potential_victim", "name": f"Korban {n % 10**8}", "nik": f"3603{n % 10**12:012d}",
         "phone": f"0812{n % 10**8:08d}", "age": 20},
        {"role": "recruiter", "name": f"Perekrut {n % 10**7}", "phone": f"0813{(n // 7) % 10**8:08d}"},
    ])


async def through_waspada(system: System, n: int, concurrency: int) -> dict[str, dict[str, float]]:
    """POST n reports (at most `concurrency` in flight); time each to its 201 and to its `case.screened` on the
    verification topic; afterwards check that a sample reached the audit trail."""
    reporter, supervisor = auth("reporter", PILOT_VILLAGE), auth("supervisor", "36.03")
    accept: dict[str, float] = {}
    sent_at: dict[str, float] = {}
    screened: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)
    reader = AIOKafkaConsumer(topics.VERIFICATION, bootstrap_servers=KAFKA, group_id=None,
                              auto_offset_reset="latest", enable_auto_commit=False)
    await reader.start()
    await reader.seek_to_end()
    for tp in reader.assignment():
        await reader.position(tp)

    async def watch() -> None:
        while len(screened) < n:
            for records in (await reader.getmany(timeout_ms=500)).values():
                for r in records:
                    case_id = (r.key or b"").decode()
                    if b'"case.screened"' in r.value[:200] and case_id in sent_at and case_id not in screened:
                        screened[case_id] = time.perf_counter() - sent_at[case_id]

    async def one(http: httpx.AsyncClient) -> None:
        async with gate:
            t0 = time.perf_counter()
            r = await http.post(system.url("intake") + "/v1/reports", json=_distinct_report(), headers=reporter)
            assert r.status_code == 201, r.text
            case_id = r.json()["case_id"]
            sent_at[case_id] = t0
            accept[case_id] = time.perf_counter() - t0

    try:
        async with httpx.AsyncClient(timeout=30) as http:
            start = time.perf_counter()
            watcher = asyncio.create_task(watch())
            await asyncio.gather(*(one(http) for _ in range(n)))
            await asyncio.wait_for(watcher, timeout=300)
            wall = time.perf_counter() - start
            # every report also reached its trail (checked after the clock stopped)
            for case_id in list(screened)[:20]:
                while True:
                    t = await http.get(system.url("audit") + f"/v1/cases/{case_id}/trail", headers=supervisor)
                    if t.status_code == 200 and any(e["type"] == "case.screened" for e in t.json()["entries"]):
                        break
                    await asyncio.sleep(0.2)
    finally:
        await reader.stop()
    return {"accept": _summary(list(accept.values()), wall), "screened": _summary(list(screened.values()), wall)}


async def main(reports: int, concurrency: int, baseline_n: int) -> dict:
    await create_topics(KAFKA, [(t, topics.DEFAULT_PARTITIONS) for t in topics.ALL] + [(BASELINE_TOPIC, 1)])
    kafka = await kafka_baseline(baseline_n)
    database = await database_baseline(baseline_n)
    system = System({"kafka": KAFKA, "mongo": MONGO}, Path(tempfile.mkdtemp(prefix="waspada-bench-")))
    services = [s for s in PORTS if s != "web"]  # the pipeline through the APIs; the pages have `make web-perf`
    for service in services:
        system.start(service)
    try:
        system.wait_ready(services)
        waspada = await through_waspada(system, reports, concurrency)
    finally:
        system.stop_all()
    screened = waspada["screened"]
    return {
        "baseline": {"kafka_round_trip": kafka, "database_insert_update": database},
        "waspada": waspada,
        "ratios": {
            "screened_p50_over_kafka_round_trip_p50": round(screened["p50_ms"] / kafka["p50_ms"], 1),
            "screened_p50_over_database_write_p50": round(screened["p50_ms"] / database["p50_ms"], 1),
            "reports_per_s_over_database_writes_per_s": round(screened["per_s"] / database["per_s"], 3),
            "accept_p50_over_database_write_p50": round(waspada["accept"]["p50_ms"] / database["p50_ms"], 1),
        },
        "settings": {"reports": reports, "concurrency": concurrency, "baseline_n": baseline_n},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--baseline-n", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.reports, args.concurrency, args.baseline_n)), indent=2))
