"""The services as real processes, two copies of each (as production may run them), started once for the e2e tier
on their own ports, databases and groups. Copy 0 of a service listens on PORTS[service], copy 1 ten ports above."""

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

from infra.local.supervise import SERVICES

ROOT = Path(__file__).resolve().parents[2]
# WASPADA_E2E_PORT_BASE moves the copies so two checkouts can run their suites side by side.
_BASE = int(os.environ.get("WASPADA_E2E_PORT_BASE", "18000"))
# The same services as `make run` (infra/local/supervise.py's table), each at base + (its port - 8000).
PORTS = {name: _BASE + port - 8000 for name, port in SERVICES.items()}
COPIES = 2  # copy n of a service listens on PORTS[service] + 10 * n (all within base+0..base+19)


def upstreams(copy: int) -> dict[str, str]:
    """Where copy n of web finds the services it calls: copy n of each."""
    return {f"WASPADA_{name.upper()}_URL": f"http://127.0.0.1:{PORTS[name] + 10 * copy}"
            for name in SERVICES if name != "web"}


class System:
    def __init__(self, infra: dict[str, str], logs: Path, tag: str | None = None) -> None:
        tag = tag or uuid.uuid4().hex[:8]
        self.env = {**os.environ, "WASPADA_ENV": "dev", "KAFKA_BOOTSTRAP_SERVERS": infra["kafka"],
                    "MONGODB_URI": infra["mongo"], "WASPADA_DB_PREFIX": f"e2e{tag}",
                    "WASPADA_GROUP_PREFIX": f"e2e-{tag}", "WASPADA_OUTBOX_SWEEP_INTERVAL_S": "0.5",
                    "WASPADA_PASSWORD_HASH_PROFILE": "cheapest_for_tests"}
        self.db_prefix = self.env["WASPADA_DB_PREFIX"]
        self.logs = logs
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}

    def url(self, service: str, copy: int = 0) -> str:
        return f"http://127.0.0.1:{PORTS[service] + 10 * copy}"

    def start(self, service: str, copies: range = range(COPIES)) -> None:
        """Start copies of `service` (all by default): the same database and consumer group, each on its own port."""
        for copy in copies:
            log = open(self.logs / f"{service}-{copy}.log", "ab")  # noqa: SIM115 - owned by the child process
            self.procs[(service, copy)] = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**self.env, **(upstreams(copy) if service == "web" else {}),
                     "WASPADA_PORT": str(PORTS[service] + 10 * copy)},
            )

    def wait_ready(self, services: list[str], copies: range = range(COPIES), timeout: float = 240) -> None:
        # Generous: ten Python processes importing their libraries at once take a while on a busy 2-core machine.
        deadline = time.monotonic() + timeout
        for service in services:
            for copy in copies:
                while True:
                    proc = self.procs[(service, copy)]
                    if proc.poll() is not None:
                        raise RuntimeError(f"{service} (copy {copy}) exited with {proc.returncode}: "
                                           + (self.logs / f"{service}-{copy}.log").read_text()[-2000:])
                    try:
                        if httpx.get(self.url(service, copy) + "/readyz", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{service} (copy {copy}) not ready after {timeout}s")
                    time.sleep(0.2)

    def running(self, service: str) -> bool:
        return any(s == service for s, _ in self.procs)

    def kill(self, service: str) -> None:
        """SIGKILL every copy: no graceful shutdown, no offset commit, nothing flushed."""
        for copy in range(COPIES):
            proc = self.procs.pop((service, copy))
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
    try:
        for copy in range(COPIES):  # first copies, then second ones: less at once, and fewer group rebalances
            for service in PORTS:
                system.start(service, range(copy, copy + 1))
            system.wait_ready(list(PORTS), range(copy, copy + 1))
        yield system
    finally:
        system.stop_all()


@pytest.fixture(scope="module")
async def chromium():
    """Debian's Chromium, one per test module (each module's pages open their own contexts in it)."""
    from playwright.async_api import async_playwright

    from tests.e2e.browser import ARGS, CHROMIUM

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()
