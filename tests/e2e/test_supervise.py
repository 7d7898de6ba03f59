"""`make up` runs the services under supervisord: a service that dies is restarted and the restart is reported."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("WASPADA_E2E_PORT_BASE", "18000")) + 6  # free in the e2e range (conftest: PORTS, copies)


def _supervise(env, *args):
    return subprocess.run([sys.executable, "-m", "infra.local.supervise", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def _pid(env, tmp_path):
    out = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c",
                          str(tmp_path / "supervisor" / "supervisord.conf"), "pid", "intake"],
                         capture_output=True, text=True, env=env).stdout.strip()
    return int(out) if out.isdigit() and out != "0" else None


def _ready():
    try:
        return httpx.get(f"http://127.0.0.1:{PORT}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_service_that_dies_is_restarted_and_the_restart_reported(infra, tmp_path):
    tag = uuid.uuid4().hex[:8]
    env = {**os.environ, "WASPADA_ENV": "dev", "WASPADA_INFRA_DIR": str(tmp_path), "WASPADA_INTAKE_PORT": str(PORT),
           "WASPADA_DB_PREFIX": f"sup{tag}", "WASPADA_GROUP_PREFIX": f"sup-{tag}",
           "KAFKA_BOOTSTRAP_SERVERS": infra["kafka"], "MONGODB_URI": infra["mongo"]}
    started = _supervise(env, "up", "--only", "intake", "--no-infra")
    try:
        assert started.returncode == 0, started.stderr
        first = _pid(env, tmp_path)
        assert first is not None and _ready()
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while not (_pid(env, tmp_path) not in (None, first) and _ready()):
            assert time.monotonic() < deadline, "intake was not restarted"
            time.sleep(0.3)
        log = (tmp_path / "logs" / "supervisord.log").read_text()
        assert "exited: intake (terminated by SIGKILL; not expected)" in log
        assert "intake: RUNNING, ready" in _supervise(env, "status").stdout
    finally:
        _supervise(env, "down")
    assert _pid(env, tmp_path) is None and not _ready()
