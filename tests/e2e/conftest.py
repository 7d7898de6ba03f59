"""The five services as real processes, started once for the e2e tier on their own ports, databases and groups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# WASPADA_E2E_PORT_BASE moves the copies so two checkouts can run their suites side by side.
_BASE = int(os.environ.get("WASPADA_E2E_PORT_BASE", "18000"))
PORTS = {"intake": _BASE + 1, "verification": _BASE + 2, "referral": _BASE + 3, "audit": _BASE + 4,
         "identity": _BASE + 5}
PORTS["web"] = _BASE  # a client of the others' HTTP APIs, started last
WEB_UPSTREAMS = {f"WASPADA_{name.upper()}_URL": f"http://127.0.0.1:{_BASE + n}"
                 for n, name in enumerate(("intake", "verification", "referral", "audit", "identity"), start=1)}


class System:
    def __init__(self, infra: dict[str, str], logs: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.env = {**os.environ, "WASPADA_ENV": "dev", "KAFKA_BOOTSTRAP_SERVERS": infra["kafka"],
                    "MONGODB_URI": infra["mongo"], "WASPADA_DB_PREFIX": f"e2e{tag}",
                    "WASPADA_GROUP_PREFIX": f"e2e-{tag}", "WASPADA_OUTBOX_SWEEP_INTERVAL_S": "0.5",
                    "WASPADA_PASSWORD_HASH_PROFILE": "cheapest_for_tests"}
        self.db_prefix = self.env["WASPADA_DB_PREFIX"]
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{PORTS[service]}"

    def start(self, service: str) -> None:
        log = open(self.logs / f"{service}.log", "ab")  # noqa: SIM115 - owned by the child process
        self.procs[service] = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**self.env, **(WEB_UPSTREAMS if service == "web" else {}), "WASPADA_PORT": str(PORTS[service])},
        )

    def wait_ready(self, services: list[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for service in services:
            while True:
                proc = self.procs[service]
                if proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with {proc.returncode}: "
                                       + (self.logs / f"{service}.log").read_text()[-2000:])
                try:
                    if httpx.get(self.url(service) + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{service} not ready after {timeout}s")
                time.sleep(0.2)

    def kill(self, service: str) -> None:
        """SIGKILL: no graceful shutdown, no offset commit, nothing flushed."""
        proc = self.procs.pop(service)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="package")  # stopped before other tiers run, so its consumers never see their test events
def system(infra, tmp_path_factory) -> System:
    logs = tmp_path_factory.mktemp("service-logs")
    system = System(infra, logs)
    for service in PORTS:
        system.start(service)
    try:
        system.wait_ready(list(PORTS))
        yield system
    finally:
        system.stop_all()
