"""docker-compose.yml runs what `make run` runs: every service of infra/local/supervise.py's table, on its port, and
the web app pointed at the others by their compose names. (No Docker engine here: the file is read, not run.)"""

from pathlib import Path

import yaml

from infra.local.supervise import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_every_service_make_run_starts_is_in_compose_with_its_command_and_port():
    services = _compose()
    for name, port in SERVICES.items():
        service = services[name]
        assert service["command"] == ["python", "-m", f"services.{name}"]
        assert service["environment"]["WASPADA_PORT"] == str(port)
        assert service["ports"] == [f"127.0.0.1:${{WASPADA_{name.upper()}_PORT:-{port}}}:{port}"]


def test_the_web_app_finds_each_other_service_by_its_compose_name():
    environment = _compose()["web"]["environment"]
    others = {name: port for name, port in SERVICES.items() if name != "web"}
    assert {key: value for key, value in environment.items() if key.endswith("_URL")} == {
        f"WASPADA_{name.upper()}_URL": f"http://{name}:{port}" for name, port in others.items()}


def test_the_image_serves_the_htmx_the_pages_load():
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    page = ROOT / "services" / "web" / "templates" / "reports.html"
    assert "services/web/static/vendor/htmx.min.js" in dockerfile
    assert "asset('vendor/htmx.min.js')" in page.read_text()
