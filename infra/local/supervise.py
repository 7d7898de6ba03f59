"""Start and stop the services locally under supervisord (`make run`, `make up`, `make down`, `make status`).

run     start Kafka + FerretDB if needed, create topics, run supervisord in the foreground with every service; a
        service that dies is restarted (with backoff, reported on the console); Ctrl-C stops everything this
        command started.
up      the same with supervisord in the background (its log and the services' logs under .local-infra/logs/).
down    stop supervisord and every service it runs.
status  what supervisord says about each service, and whether it answers /readyz.

supervisord (the `supervisor` package) restarts a service that exits: at once if it had run `startsecs`, else after
a growing delay (1 s, 2 s, …), giving up after `startretries` quick failures (state FATAL, shown by `make status`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "local" / "infra.sh"

# THE table of services: name -> default port. A new service is one more line; it runs as
# `python -m services.<name>` with WASPADA_PORT set (WASPADA_<NAME>_PORT overrides the port).
SERVICES = {
    "intake": 8001,
    "verification": 8002,
    "referral": 8003,
    "audit": 8004,
    "identity": 8005,
    "web": 8000,  # a client of the others' HTTP APIs
}

START_SECONDS = 5  # a service that exits sooner than this after starting is restarted with backoff
START_RETRIES = 10  # quick failures in a row before supervisord gives up on a service


def _state() -> Path:
    return Path(os.environ.get("WASPADA_INFRA_DIR", ROOT / ".local-infra"))


def _paths() -> dict[str, Path]:
    state = _state()
    return {"conf": state / "supervisor" / "supervisord.conf", "sock": state / "supervisor" / "supervisor.sock",
            "pid": state / "supervisor" / "supervisord.pid", "logs": state / "logs"}


def port_of(name: str) -> int:
    return int(os.environ.get(f"WASPADA_{name.upper()}_PORT", SERVICES[name]))


def config(names: list[str], foreground: bool) -> str:
    """supervisord's configuration for `names`: in the foreground the services log to the console."""
    p = _paths()
    secret = secrets.token_hex(16)  # supervisorctl's login on the local socket (supervisord warns without one)
    lines = [
        "[unix_http_server]", f"file={p['sock']}", "chmod=0700", "username=waspada", f"password={secret}", "",
        "[supervisord]", f"logfile={p['logs'] / 'supervisord.log'}", f"pidfile={p['pid']}",
        f"childlogdir={p['logs']}", f"nodaemon={'true' if foreground else 'false'}", "silent=false", "loglevel=info", "",
        "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "", "[supervisorctl]", f"serverurl=unix://{p['sock']}", "username=waspada", f"password={secret}", "",
    ]
    for name in names:
        out = "/dev/stdout" if foreground else str(p["logs"] / f"{name}.log")
        lines += [
            f"[program:{name}]", f"command={sys.executable} -m services.{name}", f"directory={ROOT}",
            f'environment=WASPADA_PORT="{port_of(name)}"', "autostart=true", "autorestart=true",
            f"startsecs={START_SECONDS}", f"startretries={START_RETRIES}", "stopsignal=TERM", "stopwaitsecs=15",
            "stopasgroup=true", "killasgroup=true", "redirect_stderr=true", f"stdout_logfile={out}",
            *(["stdout_logfile_maxbytes=0"] if foreground else ["stdout_logfile_maxbytes=20MB"]), "",
        ]
    return "\n".join(lines)


def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(_paths()["conf"]), *args],
                          capture_output=True, text=True, check=False)


def _supervisord_pid() -> int | None:
    try:
        pid = int(_paths()["pid"].read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def states() -> dict[str, str]:
    """supervisord's state of each program (RUNNING, STARTING, BACKOFF, FATAL, …)."""
    out = {}
    for line in _ctl("status").stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def start_infra() -> bool:
    """Start Kafka and FerretDB if they are not running; returns whether this call started any."""
    before = subprocess.run([str(INFRA), "status"], capture_output=True, text=True, check=False).stdout
    subprocess.run([str(INFRA), "start"], check=True)
    subprocess.run([sys.executable, "-m", "shared.kafka", "--bootstrap",
                    os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")], check=True, cwd=ROOT)
    return before.count("running") < 2


def seed_demo_accounts(names: list[str]) -> None:
    """With WASPADA_ENV=dev, one demo account per role (README, "Signing in"), made once through identity's store."""
    if os.environ.get("WASPADA_ENV") == "dev" and "identity" in names:
        subprocess.run([sys.executable, "-m", "services.identity", "demo"], check=True, cwd=ROOT)


def wait_ready(names: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while pending:
        pending = [n for n in pending if not _ready(port_of(n))]
        fatal = [n for n, s in states().items() if s == "FATAL" and n in pending]
        if fatal:
            raise SystemExit(f"[waspada] {', '.join(fatal)} keeps exiting; see {_paths()['logs']}")
        if time.monotonic() > deadline:
            raise SystemExit(f"[waspada] not ready after {timeout_s:.0f}s: {', '.join(pending)} (`make status`)")
        time.sleep(0.3)


def _write_config(names: list[str], foreground: bool) -> None:
    p = _paths()
    p["conf"].parent.mkdir(parents=True, exist_ok=True)
    p["logs"].mkdir(parents=True, exist_ok=True)
    p["conf"].write_text(config(names, foreground))


def banner(names: list[str], started: float) -> None:
    print(f"[waspada] ready in {time.monotonic() - started:.1f}s: " + ", ".join(
        f"{n} http://127.0.0.1:{port_of(n)}" for n in names), file=sys.stderr, flush=True)


def run(names: list[str], infra: bool) -> None:
    started = time.monotonic()
    if _supervisord_pid():
        raise SystemExit("[waspada] already running under supervisord (`make down` stops it)")
    infra_started = start_infra() if infra else False
    seed_demo_accounts(names)
    _write_config(names, foreground=True)
    daemon = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(_paths()["conf"])])
    interrupted = False
    try:
        wait_ready(names)
        banner(names, started)
        print("[waspada] a service that dies is restarted; Ctrl-C stops everything this command started",
              file=sys.stderr, flush=True)
        daemon.wait()
    except KeyboardInterrupt:
        interrupted = True  # the terminal's Ctrl-C reached supervisord too: it is stopping the services
    finally:
        if daemon.poll() is None and not interrupted:
            daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait()
        if infra_started:
            subprocess.run([str(INFRA), "stop"], check=False)


def up(names: list[str], infra: bool) -> None:
    started = time.monotonic()
    if infra:
        start_infra()
    seed_demo_accounts(names)
    if _supervisord_pid():
        print("[waspada] supervisord already running; starting what is stopped", file=sys.stderr)
        _ctl("start", "all")
    else:
        _write_config(names, foreground=False)
        subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(_paths()["conf"])], check=True)
    wait_ready(names)
    banner(names, started)
    print(f"[waspada] logs in {_paths()['logs']}; a service that dies is restarted; `make down` stops everything",
          file=sys.stderr)


def down() -> None:
    pid = _supervisord_pid()
    if pid is None:
        return
    _ctl("shutdown")
    deadline = time.monotonic() + 30
    while _supervisord_pid() and time.monotonic() < deadline:
        time.sleep(0.2)
    print(f"[waspada] stopped supervisord (pid {pid}) and its services", file=sys.stderr)


def status() -> None:
    if _supervisord_pid() is None:
        print("services: stopped (supervisord not running)")
        return
    current = states()
    for name in SERVICES:
        state = current.get(name, "not configured")
        ready = "ready" if state == "RUNNING" and _ready(port_of(name)) else "not ready"
        print(f"{name}: {state}, {ready}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "up", "down", "status"])
    parser.add_argument("--only", action="append", choices=list(SERVICES), help="only this service (repeatable)")
    parser.add_argument("--no-infra", action="store_true", help="use the Kafka and database already running")
    args = parser.parse_args()
    names = args.only or list(SERVICES)
    if args.command == "run":
        run(names, infra=not args.no_infra)
    elif args.command == "up":
        up(names, infra=not args.no_infra)
    elif args.command == "down":
        down()
    else:
        status()


if __name__ == "__main__":
    main()
