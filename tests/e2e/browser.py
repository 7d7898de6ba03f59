"""Driving Debian's Chromium (/usr/bin/chromium, installed by `make install`) with Playwright; never a downloaded
browser. Helpers shared by the web tests and `make web-perf`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
import uuid
from pathlib import Path

import httpx

from tests.builders import PILOT_VILLAGE
from tests.conftest import auth

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
PHONE = {"width": 360, "height": 800}
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "services" / "web" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
NEW_PASSWORD = "kata-sandi-uji-2026"


def create_account(identity_url: str, role: str = "reporter", region: str = PILOT_VILLAGE) -> dict:
    """A fresh account made through identity's admin API (a TOTP code is accepted once, so tests never share one)."""
    username = f"uji-{role}-{uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{identity_url}/v1/accounts", headers=auth("admin", "36"), timeout=20,
                   json={"username": username, "name": f"Uji {role.title()}", "role": role, "region": region})
    assert r.status_code == 201, r.text
    return r.json()


def cases_of(intake_url: str, account: dict) -> list[dict]:
    """The account's reports as intake holds them (counted through the API, not through the page)."""
    r = httpx.get(f"{intake_url}/v1/reports", timeout=20,
                  headers=auth("reporter", account["region"], sub=account["id"]), params={"limit": 200})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def totp(secret: str, at: float | None = None, step: int = 30) -> str:
    """RFC 6238 code (SHA-1, 6 digits), written out so the test does not trust the code under test."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((at or time.time()) // step)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


async def sign_in(page, base: str, account: dict, password: str | None = None, *, shots: bool = False) -> None:
    """Sign in; on the first sign-in replace the one-time password. `shots`: screenshots of both forms."""
    await page.goto(f"{base}/login")
    await page.fill("#username", account["username"])
    await page.fill("#password", password or account.get("password") or account["one_time_password"])
    if shots:
        await screenshot(page, "login")
    await page.click("form[action='/login'] button[type=submit]")
    await page.wait_for_load_state()
    if page.url.endswith("/password"):
        assert await page.locator("nav.tabs").count() == 0  # no way onward until the account is set up
        await page.fill("#current", account["one_time_password"])
        await page.fill("#new", NEW_PASSWORD)
        await page.fill("#repeat", NEW_PASSWORD)
        if shots:
            await screenshot(page, "password-change")
        await page.click("form[action='/password'] button[type=submit]")
        await page.wait_for_load_state()
        account["password"] = NEW_PASSWORD


async def until(page, expression: str, timeout: float = 30) -> None:
    """Poll a JavaScript expression from outside the page (the pages' CSP forbids the eval that
    `wait_for_function` relies on)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while not await page.evaluate(expression):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {expression}")
        await asyncio.sleep(0.1)


async def worker_ready(page) -> None:
    """The service worker controls the page and holds the form and the outbox for offline use."""
    await until(page, "!!(navigator.serviceWorker && navigator.serviceWorker.controller)")
    await until(page, "(async () => !!(await caches.match('/report')) && !!(await caches.match('/outbox')))()")


async def fill_report(page, *, name: str | None = None, nik: str | None = None,
                      narrative: str = "Sponsor menawarkan kerja di Arab Saudi dengan visa ziarah.") -> None:
    n = uuid.uuid4().int  # people of their own, so reports of different tests are not linked to each other
    name = name or f"Siti Uji {n % 10**6}"
    nik = nik or f"3603{n % 10**12:012d}"
    await page.check("#t-np_pmi")
    await page.check("#i-unlicensed_recruiter")
    await page.check("#i-non_work_visa")
    await page.fill("#p0-name", name)
    await page.fill("#p0-nik", nik)
    await page.fill("#p0-phone", f"0812 {n % 10**4:04d} {n // 10**4 % 10**4:04d}")
    await page.fill("#p0-age", "19")
    await page.fill("#narrative", narrative)


async def submit(page) -> None:
    """Submit the form and wait for this submission's outcome: the button, disabled while the form is saved and
    sent, is enabled again and the status or the error says how it went (so the notice of the previous submission
    is never taken for this one's)."""
    await page.click("#report button[type=submit]")
    await until(page, "(() => {"
                "const button = document.querySelector('#report button[type=submit]');"
                "const notice = document.querySelector('[data-form-status] .notice');"
                "const error = document.querySelector('[data-form-error]');"
                "return !button.disabled && ((!!notice && !notice.textContent.includes('…')) || (!!error && !error.hidden));"
                "})()")


async def serious_violations(page) -> list[dict]:
    """axe-core's serious and critical findings on the page as it is now (the context bypasses CSP to inject it)."""
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
            for v in result if v["impact"] in ("serious", "critical")]


async def screenshot(page, name: str, *, top: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if top:
        await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
