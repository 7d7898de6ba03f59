"""`make web-perf`: what a reporter's phone downloads and how soon the report form answers a thumb.

Starts the services as processes (like the e2e tier), signs a fresh reporter in through identity, then loads each
reporter page in Debian's Chromium at 360×800 with Chromium's own network and CPU emulation:
  - page weight: bytes over the wire (compressed) of a first load with an empty cache and no service worker;
  - time to interactive of the form: from navigation start until app.js has wired the form
    (`performance.mark('waspada-ready')`), cold (first visit over the emulated network) and offline (the page and
    its assets from the service worker's cache, with the same CPU slowdown).
Figures only; nothing here passes or fails.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

from tests.e2e.browser import ARGS, CHROMIUM, PHONE, create_account, sign_in, until, worker_ready
from tests.e2e.conftest import PORTS, System

PROFILES = {
    # name: (round trip ms, download kbit/s, upload kbit/s, CPU slowdown)
    "no throttling": (0, 0, 0, 1),
    "3G (300 ms, 750 kbit/s), CPU ×4": (300, 750, 250, 4),
    "slow 3G (2 s, 400 kbit/s), CPU ×6": (2000, 400, 400, 6),
}
PAGES = ["/login", "/report", "/outbox", "/reports"]
RUNS = 3


async def throttle(cdp, profile: tuple[int, int, int, int]) -> None:
    rtt, down, up, cpu = profile
    await cdp.send("Network.enable")
    if rtt:
        await cdp.send("Network.emulateNetworkConditions", {
            "offline": False, "latency": rtt, "downloadThroughput": down * 1000 / 8, "uploadThroughput": up * 1000 / 8})
    await cdp.send("Emulation.setCPUThrottlingRate", {"rate": cpu})


async def weights(browser, site: str, account: dict) -> dict[str, int]:
    context = await browser.new_context(viewport=PHONE, service_workers="block")
    page = await context.new_page()
    out = {}
    for path in PAGES:
        if path == "/report":  # /login is weighed before signing in
            await sign_in(page, site, account)
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.clearBrowserCache")
        sizes: dict[str, int] = {}
        cdp.on("Network.loadingFinished", lambda e, s=sizes: s.__setitem__(e["requestId"], e["encodedDataLength"]))
        await page.goto(site + path, wait_until="networkidle")
        out[path] = sum(sizes.values())
        await cdp.detach()
    await context.close()
    return out


async def ready_ms(page) -> float:
    await until(page, "document.documentElement.dataset.ready === 'true'", timeout=120)
    return await page.evaluate("performance.getEntriesByName('waspada-ready')[0].startTime")


async def time_to_interactive(browser, site: str, account: dict, profile) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for _ in range(RUNS):
        context = await browser.new_context(viewport=PHONE)
        page = await context.new_page()
        await sign_in(page, site, account)
        await worker_ready(page)
        await page.goto("about:blank")
        cdp = await context.new_cdp_session(page)
        await throttle(cdp, (0, 0, 0, profile[3]))
        await context.set_offline(True)  # everything from the service worker's cache (the emulated network
        await page.goto(site + "/report", wait_until="commit", timeout=120000)  # does not reach the worker)
        warm.append(await ready_ms(page))
        await context.close()

        context = await browser.new_context(viewport=PHONE, service_workers="block")
        page = await context.new_page()
        await sign_in(page, site, account)
        await page.goto("about:blank")
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.clearBrowserCache")
        await throttle(cdp, profile)
        await page.goto(site + "/report", wait_until="commit", timeout=120000)
        cold.append(await ready_ms(page))
        await context.close()
    return cold, warm


async def measure(site: str, identity: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        account = create_account(identity)
        print("page weight, first load, compressed (bytes over the wire):")
        for path, size in (await weights(browser, site, account)).items():
            print(f"  {path:10} {size / 1024:6.1f} KB")
        print(f"time to interactive of the report form (median of {RUNS}; cold = empty cache, no service worker):")
        for name, profile in PROFILES.items():
            cold, warm = await time_to_interactive(browser, site, account, profile)
            print(f"  {name:38} cold {statistics.median(cold) / 1000:5.2f} s   "
                  f"offline {statistics.median(warm) / 1000:5.2f} s")
        await browser.close()


def main() -> None:
    from tests.conftest import KAFKA, MONGO

    system = System({"kafka": KAFKA, "mongo": MONGO}, Path(tempfile.mkdtemp(prefix="web-perf-")))
    try:
        for service in ("identity", "intake", "web"):
            if service in PORTS:
                system.start(service)
        system.wait_ready([s for s in ("identity", "intake", "web") if s in PORTS])
        asyncio.run(measure(system.url("web"), system.url("identity")))
    finally:
        system.stop_all()


if __name__ == "__main__":
    main()
