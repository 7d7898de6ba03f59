"""Start and stop the services locally (`make run`, `make up`, `make down`, `make status`).

run   start Kafka + FerretDB if needed, create topics, start the services in the foreground; Ctrl-C stops
      everything this command started.
up    the same in the background; pids are recorded under .local-infra/pids/.
down  stop the services `up` started, by recorded pid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("WASPADA_INFRA_DIR", ROOT / ".local-infra"))
PIDS, LOGS = STATE / "pids", STATE / "logs"
INFRA = ROOT / "infra" / "local" / "infra.sh"
SERVICES = {"intake": 8001, "verification": 8002, "referral": 8003, "audit": 8004, "identity": 8005,
            "web": 8000}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _pid(name: str) -> int | None:
    f = PIDS / f"{name}.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(f.read_text().strip())
        return pid if _alive(pid) else None
    return None


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_infra() -> list[str]:
    """Start what is not running yet; returns which of kafka/ferretdb this call started."""
    before = {n for n in ("kafka", "ferretdb") if _pid(n)}
    subprocess.run([str(INFRA), "start"], check=True)
    subprocess.run([sys.executable, "-m", "shared.kafka", "--bootstrap",
                    os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")], check=True, cwd=ROOT)
    return [n for n in ("kafka", "ferretdb") if _pid(n) and n not in before]


def seed_demo_accounts() -> None:
    """With WASPADA_ENV=dev, one demo account per role (README, "Signing in"), made once through identity's store."""
    if os.environ.get("WASPADA_ENV") == "dev":
        subprocess.run([sys.executable, "-m", "services.identity", "demo"], check=True, cwd=ROOT)


def start_services(foreground: bool) -> dict[str, subprocess.Popen]:
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    for name, port in SERVICES.items():
        if (pid := _pid(name)) is not None:
            print(f"[waspada] {name} already running (pid {pid})", file=sys.stderr)
            continue
        env = {**os.environ, "WASPADA_PORT": os.environ.get(f"WASPADA_{name.upper()}_PORT", str(port))}
        out = None if foreground else open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env,
                                       stdout=out, stderr=subprocess.STDOUT if out else None,
                                       start_new_session=not foreground)
        (PIDS / f"{name}.pid").write_text(str(procs[name].pid))
    return procs


def wait_ready(procs: dict[str, subprocess.Popen], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    pending = dict(SERVICES)
    while pending:
        for name, port in list(pending.items()):
            proc = procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise SystemExit(f"[waspada] {name} exited with {proc.returncode}; see its log")
            if _ready(port):
                del pending[name]
        if time.monotonic() > deadline:
            raise SystemExit(f"[waspada] not ready after {timeout_s}s: {', '.join(pending)}")
        time.sleep(0.3)


def stop_services(names: list[str] | None = None, procs: dict[str, subprocess.Popen] | None = None,
                  grace_s: float = 15) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; our own children are reaped, others are found by recorded pid."""
    procs = procs or {}
    for name in names or list(SERVICES):
        proc = procs.get(name)
        pid = proc.pid if proc is not None else _pid(name)
        if pid is None or (proc is not None and proc.poll() is not None):
            (PIDS / f"{name}.pid").unlink(missing_ok=True)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if proc is not None:
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            deadline = time.monotonic() + grace_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        (PIDS / f"{name}.pid").unlink(missing_ok=True)
        print(f"[waspada] stopped {name} (pid {pid})", file=sys.stderr)


def banner(started: float) -> None:
    print(f"[waspada] ready in {time.monotonic() - started:.1f}s: " + ", ".join(
        f"{n} http://127.0.0.1:{p}" for n, p in SERVICES.items()), file=sys.stderr, flush=True)


def run() -> None:
    started = time.monotonic()
    infra_started = start_infra()
    seed_demo_accounts()
    procs = start_services(foreground=True)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        stop_services(list(procs), procs)
        if infra_started:
            subprocess.run([str(INFRA), "stop"], check=False)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        wait_ready(procs)
        banner(started)
        print("[waspada] Ctrl-C stops everything this command started", file=sys.stderr, flush=True)
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in procs.items() if p.poll() is not None]
        print(f"[waspada] {', '.join(dead)} exited; stopping the rest", file=sys.stderr)
    finally:
        _stop()


def up() -> None:
    started = time.monotonic()
    start_infra()
    seed_demo_accounts()
    procs = start_services(foreground=False)
    wait_ready(procs)
    banner(started)
    print(f"[waspada] logs in {LOGS}; `make down` stops everything", file=sys.stderr)


def status() -> None:
    for name, port in SERVICES.items():
        pid = _pid(name)
        state = f"running (pid {pid}), {'ready' if _ready(port) else 'not ready'}" if pid else "stopped"
        print(f"{name}: {state}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "up", "down", "status"])
    command = parser.parse_args().command
    {"run": run, "up": up, "down": lambda: stop_services(), "status": status}[command]()


if __name__ == "__main__":
    main()
