"""`make web-staff-perf`: page weights of the staff pages and their server time with many cases stored.

Starts every service as a process (like the e2e tier) on a fresh test instance, stores CASES reports (published as
`case.reported` on the intake topic, received over the last twelve weeks, so verification screens and links them
and audit records them like any other), decides a share of them through verification's API (verified cases are
routed by referral, some referrals acknowledged), then signs a verifier, an investigator, a supervisor and an admin
in through the web service and measures every staff page:
  - server time: the web service's answer to a GET on loopback (it calls the other services' APIs), median of RUNS;
  - page weight: bytes over the wire (compressed) of a first load in Chromium with an empty cache.
With `--grow N` the history is then grown to N cases by copying the decided ones straight into the databases
(tests/bench_history.py `History`: new ids and numbers, personal data sealed again under the copy's own key), so
10,000 stored cases take minutes instead of the pipeline's hours on this machine.
Figures only; nothing here passes or fails. `python -m tests.web_staff_perf --cases 500` for a quick run.
`--hold` keeps the services running after measuring (until Ctrl-C) and prints the databases' prefix; `--reuse PREFIX`
measures again over those databases without storing anything (e.g. after changing a service).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer
from playwright.async_api import async_playwright

from shared import reference, topics
from shared.contracts import intake
from shared.contracts.envelope import new_event
from tests.conftest import auth
from tests.e2e.browser import ARGS, CHROMIUM, totp
from tests.e2e.conftest import PORTS, System
from tests.e2e.staff import LAPTOP, cli_admin, staff_account

RUNS = 3
REGION = "36.03"
NAMES = ["Siti", "Dewi", "Ani", "Rina", "Yati", "Nur", "Wati", "Sri", "Lina", "Tuti", "Eka", "Ayu"]
RECRUITERS = ["Pak Joko", "Bu Darsih", "Pak Udin", "Mas Anto", "Pak Haji Amir", "Bu Lela"]


def villages() -> list[str]:
    return [r.code for r in reference.regions().values()
            if r.level in ("village", "kelurahan") and r.code.startswith(REGION + ".")]


def report_event(rng: random.Random, now: datetime, village: str, n: int):
    """A report received some time in the last twelve weeks, with people whose numbers rarely repeat."""
    indicators = sorted(rng.sample(sorted(reference.indicators()), rng.randint(1, 5)))
    received = now - timedelta(seconds=rng.randint(60, 84 * 86400))
    persons = [intake.Person(person_id=str(uuid.uuid4()), role="potential_victim", name=rng.choice(NAMES),
                             nik=f"3603{rng.randint(10**11, 10**12 - 1)}", age=rng.choice([16, 19, 23, 27, 31]),
                             sex="female"),
               # one report in a hundred names a recruiter others named too (linked cases), the rest their own
               intake.Person(person_id=str(uuid.uuid4()), role="recruiter",
                             name=rng.choice(RECRUITERS) if rng.random() < 0.01 else f"Perekrut {n}",
                             phone=f"+62812{rng.randint(10**6, 10**7 - 1)}")]
    case_id = str(uuid.uuid4())
    report = intake.CaseReported(
        case_number=f"3603-2026-{n:06d}", village_code=village, regency_code=REGION,
        reporter=intake.Reporter(id=f"reporter-{village}", role="reporter", region=village), received_at=received,
        observed_at=received - timedelta(hours=rng.randint(1, 48)),
        suspected_types=[rng.choice(["np_pmi", "np_pmi", "tppo", "tppm", "unknown"])], indicators=indicators,
        narrative="Laporan uji kinerja: sponsor menawarkan kerja ke luar negeri.", persons=persons)
    return new_event(report, case_id=case_id, producer="intake", actor=None, correlation_id=case_id,
                     causation_id=None, occurred_at=received)


async def store_cases(kafka: str, count: int, seed: int = 7) -> list[str]:
    rng, now, places = random.Random(seed), datetime.now(UTC), villages()
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=20)
    await producer.start()
    ids = []
    try:
        for n in range(1, count + 1):
            event = report_event(rng, now, rng.choice(places), n)
            ids.append(event.case_id)
            await producer.send(topics.INTAKE, event.to_json().encode(), key=event.case_id.encode(),
                                headers=[(k, v.encode()) for k, v in event.headers().items()])
        await producer.flush()
    finally:
        await producer.stop()
    return ids


def wait_until(what: str, probe, timeout: float) -> None:
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        last = probe()
        if last is True:
            print(f"  {what}: {time.monotonic() - start:.0f} s", flush=True)
            return
        time.sleep(5)
    raise RuntimeError(f"{what}: not done after {timeout:.0f} s (last: {last})")


def decide_some(system: System, ids: list[str], share: float) -> list[str]:
    """Verify, reject or question a share of the cases through verification's API, like verifiers would."""
    verifier = auth("verifier", REGION)
    rng = random.Random(11)
    verified = []
    with httpx.Client(timeout=60) as http:
        for case_id in rng.sample(ids, int(len(ids) * share)):
            case = http.get(f"{system.url('verification')}/v1/cases/{case_id}", headers=verifier)
            if case.status_code != 200:
                continue
            roll = rng.random()
            body = ({"decision": "verify", "case_types": [rng.choice(["np_pmi", "tppo", "tppm"])]} if roll < 0.7 else
                    {"decision": "reject", "reason": "Tidak cukup keterangan."} if roll < 0.9 else
                    {"decision": "request_info", "question": "Kapan rencana berangkat?"})
            r = http.post(f"{system.url('verification')}/v1/cases/{case_id}/decision", json=body,
                          headers={**verifier, "If-Match": case.headers["ETag"]})
            if r.status_code == 200 and body["decision"] == "verify":
                verified.append(case_id)
    return verified


def web_client(site: str) -> httpx.Client:
    client = httpx.Client(base_url=site, timeout=600, follow_redirects=True)

    def keep_cookies(response: httpx.Response) -> None:
        # The web's cookies are Secure; Chromium sends those to http://127.0.0.1, httpx would not.
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";")[0]
            if "max-age=0" in header.lower() or not value.strip('"'):
                client.cookies.delete(name)
            else:
                client.cookies.set(name, value.strip('"'))

    client.event_hooks["response"] = [keep_cookies]
    return client


def sign_in(site: str, account: dict) -> httpx.Client:
    """A signed-in web session for an account made by the admin API: new password, then the second factor."""
    client = web_client(site)
    page = client.get("/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    page = client.post("/login", data={"csrf": csrf, "username": account["username"],
                                       "password": account["one_time_password"]})
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    new = "kata-sandi-kinerja-2026"
    page = client.post("/password", data={"csrf": csrf, "current": account["one_time_password"], "new": new,
                                          "repeat": new})
    secret = page.text.split('class="secret">')[1].split("<")[0].strip()
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    client.post("/totp", data={"csrf": csrf, "code": totp(secret)})
    account.update(password=new, totp_secret=secret)
    return client


def sign_in_with_code(site: str, account: dict) -> httpx.Client:
    """A signed-in web session for an account whose second factor is set up (the CLI's admin)."""
    client = web_client(site)
    page = client.get("/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    client.post("/login", data={"csrf": csrf, "username": account["username"], "password": account["password"],
                                "totp": totp(account["totp_secret"])})
    return client


def server_time(client: httpx.Client, path: str) -> tuple[float, int]:
    times, status = [], 0
    for _ in range(RUNS):
        start = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - start)
        status = r.status_code
    return statistics.median(times), status


async def weights(site: str, clients: dict[str, httpx.Client], pages: list[tuple[str, str]],
                  shots: Path | None) -> dict[str, int]:
    """Bytes over the wire per page; with `shots`, screenshots of each page in both languages at both widths."""
    out = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for n, (role, path) in enumerate(pages):
            context = await browser.new_context(viewport=LAPTOP)
            await context.add_cookies([{"name": c.name, "value": c.value, "url": site}
                                       for c in clients[role].cookies.jar])
            page = await context.new_page()
            cdp = await context.new_cdp_session(page)
            await cdp.send("Network.enable")
            await cdp.send("Network.clearBrowserCache")
            sizes: dict[str, int] = {}
            cdp.on("Network.loadingFinished", lambda e, s=sizes: s.__setitem__(e["requestId"], e["encodedDataLength"]))
            await page.goto(site + path, wait_until="networkidle", timeout=600000)
            out[path] = sum(sizes.values())
            for lang in ("id", "en") if shots else ():
                await context.add_cookies([{"name": "waspada_lang", "value": lang, "url": site}])
                await page.goto(site + path, timeout=600000)
                for width in (1280, 360):
                    await page.set_viewport_size({"width": width, "height": 800})
                    await page.screenshot(path=str(shots / f"{n:02d}-{role}-{lang}-{width}.png"), full_page=True)
            await context.close()
        await browser.close()
    return out


def measure(system: System, ids: list[str], verified: list[str], shots: Path | None, stored: int) -> None:
    site, identity = system.url("web"), system.url("identity")
    accounts = {"verifier": staff_account(identity, "verifier"),
                "investigator": staff_account(identity, "investigator", unit="polresta_tangerang"),
                "supervisor": staff_account(identity, "supervisor")}
    clients = {role: sign_in(site, account) for role, account in accounts.items()}
    clients["admin"] = sign_in_with_code(site, cli_admin(system, REGION))
    police = httpx.get(f"{system.url('referral')}/v1/referrals", params={"limit": 1}, timeout=600,
                       headers=auth("investigator", REGION, unit="polresta_tangerang")).json()["items"]
    open_case = next(c for c in ids if c not in verified)
    pages = [("verifier", "/queue"), ("verifier", "/queue?priority=high&village=36.03.11.2009"),
             ("verifier", "/queue?waiting=1"), ("verifier", f"/queue/{open_case}"),
             ("investigator", "/inbox"), *([("investigator", f"/inbox/{police[0]['referral_id']}")] if police else []),
             ("supervisor", "/dashboard"), ("supervisor", "/cases"), ("supervisor", "/cases?status=verified"),
             ("supervisor", f"/cases/{verified[0]}"), ("supervisor", "/directory"), ("admin", "/accounts")]
    print(f"server time (median of {RUNS}, loopback) with {stored} cases stored:", flush=True)
    for role, path in pages:
        seconds, status = server_time(clients[role], path)
        print(f"  {status} {role:12} {path:50} {seconds * 1000:8.0f} ms", flush=True)
    print("page weight, first load, compressed (bytes over the wire, HTML + CSS; staff pages run no script):")
    for path, size in asyncio.run(weights(site, clients, pages, shots)).items():
        print(f"  {path:50} {size / 1024:6.1f} KB")


def main() -> None:
    from tests.conftest import KAFKA, MONGO

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the services it started on a kill too

    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--decide", type=float, default=0.15, help="share of the cases decided through the API")
    parser.add_argument("--grow", type=int, default=0, help="then copy decided cases until this many are stored")
    parser.add_argument("--shots", type=Path, help="also write full-page screenshots (both languages) here")
    parser.add_argument("--reuse", metavar="PREFIX", help="measure the databases of an earlier --hold run again")
    parser.add_argument("--hold", action="store_true", help="keep the services running after measuring")
    args = parser.parse_args()
    system = System({"kafka": KAFKA, "mongo": MONGO}, Path(tempfile.mkdtemp(prefix="web-staff-perf-")),
                    tag=args.reuse.removeprefix("e2e") if args.reuse else None)
    names = [s for s in ("identity", "intake", "verification", "referral", "audit", "web") if s in PORTS]
    try:
        for service in names:
            system.start(service)
        system.wait_ready(names, timeout=120)
        if args.reuse:
            ids, verified, stored = stored_cases(system)
        else:
            ids, verified = store_and_decide(system, args)
            stored = max(args.grow, len(ids))
        measure(system, ids, verified, args.shots, stored)
        if args.hold:
            print(f"holding: databases {system.db_prefix}_*, logs in {system.logs}; Ctrl-C stops", flush=True)
            signal.pause()
    finally:
        system.stop_all()


def store_and_decide(system: System, args) -> tuple[list[str], list[str]]:
    from tests.conftest import KAFKA, MONGO

    print(f"storing {args.cases} cases (logs in {system.logs}):", flush=True)
    started = time.monotonic()
    ids = asyncio.run(store_cases(KAFKA, args.cases))
    supervisor = auth("supervisor", REGION)

    def screened() -> bool | int:
        stats = httpx.get(f"{system.url('audit')}/v1/stats", headers=supervisor, timeout=600).json()
        return stats.get("by_status", {}).get("screened", 0) >= args.cases or stats.get("by_status")

    wait_until("screened and recorded", screened, timeout=4 * 3600)
    verified = decide_some(system, ids, args.decide)
    print(f"  decided {int(len(ids) * args.decide)} ({len(verified)} verified): "
          f"{time.monotonic() - started:.0f} s since the first report", flush=True)
    if args.grow > len(ids):
        from tests.bench_history import History

        async def grow() -> None:
            history = History(MONGO, system.db_prefix)
            await history.load_templates()
            await history.grow_to(args.grow)
            await history.client.close()

        print(f"growing the history to {args.grow} cases:", flush=True)
        asyncio.run(grow())
    return ids, verified


def stored_cases(system: System) -> tuple[list[str], list[str], int]:
    """What an earlier run stored: a case still open in the queue, a verified one (referred by now), and how many
    cases in all."""
    supervisor = auth("supervisor", REGION)
    audit = system.url("audit")
    with httpx.Client(timeout=600) as http:
        queue = http.get(f"{system.url('verification')}/v1/queue", params={"limit": 1},
                         headers=auth("verifier", REGION)).json()["items"]
        verified = http.get(f"{audit}/v1/cases", params={"status": "referred", "limit": 1}, headers=supervisor).json()
        total = sum(http.get(f"{audit}/v1/stats", headers=supervisor).json()["by_status"].values())
    return [q["case_id"] for q in queue], [c["case_id"] for c in verified["items"]], total


if __name__ == "__main__":
    main()
