"""Sign-in time with the production Argon2id parameters (RFC 9106's second recommended set), on this machine.

`make bench-sign-in` runs it against a fresh test Kafka and FerretDB: the hash alone, then `POST /v1/login`
one at a time and four at once (the hasher runs two at a time: `WASPADA_PASSWORD_HASH_CONCURRENCY`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid

import argon2
import httpx

from services.identity.app import IdentitySettings, create_app
from services.identity.credentials import PROFILES


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms (n={len(ordered)})"


async def main(rounds: int = 20) -> None:
    hasher = argon2.PasswordHasher.from_parameters(PROFILES["rfc9106_low_memory"])
    stored = hasher.hash("a-password-of-fourteen")
    timings, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        hasher.verify(stored, "a-password-of-fourteen")
        timings.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    # CPU time does not depend on what else the machine runs; wall time does (os.getloadavg() says how busy).
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"Argon2id verify (t=3, m=64 MiB, p=4): wall {_ms(timings)}; CPU {_ms(cpu)}")

    tag = uuid.uuid4().hex[:8]
    settings = IdentitySettings(env="dev", password_hash_profile="rfc9106_low_memory", db_prefix=f"bench{tag}",
                                group_prefix=f"bench-{tag}", log_level="WARNING",
                                kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
                                mongodb_uri=os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/"))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.directory.create_account(username="bench-reporter", name="Bench", role="reporter",
                                                 region="36.03.11.2009", unit=None, admin=None,
                                                 password="a-password-of-fourteen")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as http:
            async def sign_in() -> float:
                started = time.perf_counter()
                r = await http.post("/v1/login", json={"username": "bench-reporter",
                                                       "password": "a-password-of-fourteen"})
                assert r.status_code == 200, r.text
                return time.perf_counter() - started

            one = [await sign_in() for _ in range(rounds)]
            print(f"POST /v1/login, one at a time: {_ms(one)}")
            started = time.perf_counter()
            together = await asyncio.gather(*(sign_in() for _ in range(rounds)))
            print(f"POST /v1/login, {rounds} at once: {_ms(list(together))}, "
                  f"{rounds / (time.perf_counter() - started):.1f} sign-ins/s")


if __name__ == "__main__":
    asyncio.run(main())
