"""Helpers of the staff pages' browser tests: accounts made through identity's admin API, the first sign-in of a
staff account (new password, then the second factor enrolled from the page's secret), screenshots at a laptop's
and a phone's width, and waiting on pages that show what other services do asynchronously."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx

from services.web.staff.common import HOMES
from tests.conftest import auth, eventually
from tests.e2e.browser import SCREENSHOTS, sign_in, totp

ROOT = Path(__file__).resolve().parents[2]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 800}


def staff_account(identity_url: str, role: str, *, region: str = "36.03", unit: str | None = None,
                  name: str | None = None) -> dict:
    """A fresh account of a role, made by an admin of the province through identity's API."""
    body = {"username": f"uji-{role}-{uuid.uuid4().hex[:8]}", "name": name or f"Uji {role.title()}", "role": role,
            "region": region, **({"unit": unit} if unit else {})}
    r = httpx.post(f"{identity_url}/v1/accounts", headers=auth("admin", "36"), json=body, timeout=20)
    assert r.status_code == 201, r.text
    return r.json()


def cli_admin(system, region: str = "36.03") -> dict:
    """An admin made with identity's command line (an admin cannot make another admin), second factor included."""
    account = {"username": f"admin-{uuid.uuid4().hex[:6]}", "password": "sandi-admin-2026", "role": "admin"}
    made = subprocess.run([sys.executable, "-m", "services.identity", "admin", "--username", account["username"],
                           "--region", region, "--password-stdin"], input=account["password"] + "\n", cwd=ROOT,
                          env={**system.env, "WASPADA_PORT": "0"}, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    uri = next(line for line in made.stdout.splitlines() if line.startswith("otpauth://"))
    return {**account, "totp_secret": parse_qs(urlparse(uri).query)["secret"][0]}


async def sign_in_with_code(page, site: str, account: dict) -> None:
    """Sign in with password and the authenticator's current code (an account whose second factor is set up)."""
    await page.goto(f"{site}/login")
    await page.fill("#username", account["username"])
    await page.fill("#password", account["password"])
    await page.fill("#totp", totp(account["totp_secret"]))
    await page.click("form[action='/login'] button[type=submit]")
    await page.wait_for_url(f"**{HOMES[account['role']]}")


async def sign_in_staff(page, site: str, account: dict) -> None:
    """The first sign-in of a staff account: the one-time password replaced, the second factor enrolled with a
    code computed from the secret the page shows, and the role's home page reached."""
    await sign_in(page, site, account)
    assert page.url.endswith("/totp"), page.url
    account["totp_secret"] = (await page.text_content(".secret")).strip()
    await page.fill("#code", totp(account["totp_secret"]))
    await page.click("form[action='/totp'] button")
    await page.wait_for_url(f"**{HOMES[account['role']]}")


async def shoot(page, name: str) -> None:
    """Screenshots of the page as it is, at 1280×800 and at 360×800 (docs/screenshots/staff-<name>-<width>.png)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for size in (LAPTOP, PHONE):
        await page.set_viewport_size(size)
        await page.screenshot(path=str(SCREENSHOTS / f"staff-{name}-{size['width']}.png"))
    await page.set_viewport_size(LAPTOP)


async def reload_until(page, url: str, selector: str, timeout: float = 40, pages: bool = False) -> None:
    """Open `url` again until `selector` is on it (what another service does shows up a moment later); with
    `pages`, also look on the following pages of a list."""
    async def shown():
        await page.goto(url)
        for _ in range(20 if pages else 1):
            if await page.locator(selector).count() > 0:
                return True
            if not pages or await page.locator("[data-next]").count() == 0:
                return False
            await page.click("[data-next]")
        return False

    await eventually(shown, timeout=timeout, interval=0.5)
