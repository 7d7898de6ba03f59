"""The prolific recruiter: N reports that all name one recruiter's phone, time until all are screened.

    TEST_PORT_OFFSET=200 make bench-recruiter RECRUITER_ARGS="--reports 100"

Every report links to the earlier ones (up to linking.MAX_LINKS), so this is the case where linking must append
rather than rewrite; `make bench` measures reports with distinct people. Prints JSON; compare runs back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer

from shared import topics
from shared.kafka import create_topics
from tests.bench import KAFKA, MONGO, _summary
from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth
from tests.e2e.conftest import PORTS, System


def _report(recruiter_phone: str) -> dict:
    n = uuid.uuid4().int
    return report_body(persons=[
        {"role": "potential_victim", "name": f"Korban {n % 10**8}", "nik": f"3603{n % 10**12:012d}",
         "phone": f"0812{n % 10**8:08d}", "age": 20},
        {"role": "recruiter", "name": "Pak Darto", "phone": recruiter_phone},
    ])


async def one_recruiter(system: System, n: int, concurrency: int, timeout: float) -> dict:
    reporter = auth("reporter", PILOT_VILLAGE)
    phone = f"0813{uuid.uuid4().int % 10**8:08d}"
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
            r = await http.post(system.url("intake") + "/v1/reports", json=_report(phone), headers=reporter)
            assert r.status_code == 201, r.text
            sent_at[r.json()["case_id"]] = t0

    try:
        async with httpx.AsyncClient(timeout=30) as http:
            start = time.perf_counter()
            watcher = asyncio.create_task(watch())
            await asyncio.gather(*(one(http) for _ in range(n)))
            try:
                await asyncio.wait_for(watcher, timeout=timeout)
            except TimeoutError:
                pass  # report how far it got
            wall = time.perf_counter() - start
    finally:
        await reader.stop()
    return {"screened": _summary(list(screened.values()), wall) if screened else {"n": 0},
            "wall_s": round(wall, 1)}


async def main(reports: int, concurrency: int, timeout: float) -> dict:
    await create_topics(KAFKA, [(t, topics.DEFAULT_PARTITIONS) for t in topics.ALL])
    system = System({"kafka": KAFKA, "mongo": MONGO}, Path(tempfile.mkdtemp(prefix="waspada-bench-")))
    services = [s for s in PORTS if s != "web"]
    for service in services:
        system.start(service)
    try:
        system.wait_ready(services)
        result = await one_recruiter(system, reports, concurrency, timeout)
    finally:
        system.stop_all()
    return {"one_recruiter": result, "settings": {"reports": reports, "concurrency": concurrency, "timeout_s": timeout}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600, help="stop waiting for the rest after this many s")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.reports, args.concurrency, args.timeout)), indent=2))
