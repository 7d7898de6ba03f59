"""The reporter's phone app in Debian's Chromium at 360×800, against the real services as processes: sign-in,
a report online, the offline outbox (exactly once, never lost), field errors from intake's 422, English,
My reports with the officer's question, security headers, accessibility and page weight."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest
from pymongo import MongoClient

from tests.conftest import auth, eventually
from tests.e2e.browser import (
    NEW_PASSWORD, PHONE, cases_of, create_account, fill_report, screenshot, serious_violations, sign_in, submit,
    totp, until, worker_ready,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
async def phone(chromium):
    """A fresh phone: its own cookies, service worker and IndexedDB."""
    context = await chromium.new_context(viewport=PHONE, locale="id-ID")
    yield context
    await context.close()


@pytest.fixture
def site(system):
    return system.url("web")


@pytest.fixture
def reporter(system):
    return create_account(system.url("identity"))


async def _signed_in(phone, site, account):
    page = await phone.new_page()
    await sign_in(page, site, account)
    assert page.url.endswith("/report"), page.url
    await worker_ready(page)
    return page


async def _statuses(page) -> list[str]:
    return await page.eval_on_selector_all("[data-outbox-list] li[data-status]", "els => els.map(e => e.dataset.status)")


async def _summaries(page) -> list[str]:
    return await page.eval_on_selector_all("[data-outbox-list] .summary", "els => els.map(e => e.textContent)")


async def test_reporter_signs_in_changes_first_password_and_files_a_report_online(phone, site, system, reporter):
    page = await phone.new_page()
    await sign_in(page, site, reporter, shots=True)
    assert page.url.endswith("/report")
    cookie = next(c for c in await phone.cookies() if c["name"] == "waspada_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert await page.input_value("#village") == "Tanjakan Mekar"  # preselected from the account
    nik = f"3603{uuid.uuid4().int % 10**12:012d}"
    await fill_report(page, nik=nik)
    await screenshot(page, "report-form", top=True)
    await submit(page)
    number = await page.text_content("[data-form-status] [data-case-number]")
    cases = cases_of(system.url("intake"), reporter)
    assert [c["case_number"] for c in cases] == [number]
    assert cases[0]["report"]["persons"][0]["nik"] == nik


async def test_reports_written_offline_wait_survive_a_reload_and_are_sent_exactly_once(phone, site, system, reporter):
    page = await _signed_in(phone, site, reporter)
    await phone.set_offline(True)
    for n in (1, 2):
        await fill_report(page, name=f"Korban {n}", narrative=f"Laporan ke-{n} saat tidak ada sinyal.")
        await submit(page)
        assert "Tersimpan di HP ini" in await page.text_content("[data-form-status]")
    await page.reload()  # served by the service worker
    assert await page.is_visible("#report")
    await page.goto(f"{site}/outbox")
    await page.wait_for_selector("[data-outbox-list] li[data-status]")
    assert await _statuses(page) == ["waiting", "waiting"]
    assert all("PMI non-prosedural" in s and "Irregular" not in s for s in await _summaries(page))
    await screenshot(page, "outbox-waiting")
    assert cases_of(system.url("intake"), reporter) == []

    await phone.set_offline(False)

    async def both_sent():
        return await _statuses(page) == ["sent", "sent"]

    await eventually(both_sent, timeout=30)
    await screenshot(page, "outbox-sent")
    cases = cases_of(system.url("intake"), reporter)
    shown = await page.eval_on_selector_all("[data-outbox-list] [data-case-number]", "els => els.map(e => e.textContent)")
    assert sorted(c["case_number"] for c in cases) == sorted(shown) and len(cases) == 2
    # A sent report leaves no personal data on the phone: the outbox keeps its case number only.
    stored = await page.evaluate("WaspadaOutbox.all()")
    assert all("body" not in item for item in stored) and "Korban" not in str(stored)
    # Written in Indonesian, read in English: the list words what it kept in the page's language.
    await page.click("a.lang")
    await page.wait_for_selector("[data-outbox-list] li[data-status=sent]")
    assert [s.count("Irregular migrant worker (PMI non-prosedural)") for s in await _summaries(page)] == [1, 1]


async def test_a_send_whose_answer_is_lost_is_resent_with_the_same_key_and_makes_one_case(phone, site, system, reporter):
    page = await _signed_in(phone, site, reporter)
    keys: list[str] = []

    async def lose_first_answer(route):
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            response = await route.fetch()  # intake creates the case ...
            assert response.status == 201
            await route.abort("connectionreset")  # ... and the phone never hears of it
        else:
            await route.continue_()

    await phone.route("**/api/reports", lose_first_answer)  # the page's sends and the service worker's
    await fill_report(page)
    await submit(page)
    await page.goto(f"{site}/outbox")
    await page.wait_for_selector("[data-outbox-list] li[data-status]")
    if await _statuses(page) == ["waiting"]:
        await page.click("[data-send-now]")

    async def sent():
        return await _statuses(page) == ["sent"]

    await eventually(sent, timeout=30)
    stored = await page.evaluate("WaspadaOutbox.all()")
    assert len(keys) >= 2 and set(keys) == {stored[0]["key"]}  # resent (by the page or the worker) with its key
    cases = cases_of(system.url("intake"), reporter)
    assert len(cases) == 1
    assert await page.text_content("[data-outbox-list] [data-case-number]") == cases[0]["case_number"]


async def test_a_session_that_ends_while_offline_keeps_the_report_until_the_next_sign_in(phone, site, system, reporter):
    page = await _signed_in(phone, site, reporter)
    await phone.set_offline(True)
    await fill_report(page)
    await submit(page)
    cookie = next(c for c in await phone.cookies() if c["name"] == "waspada_session")
    with MongoClient(system.env["MONGODB_URI"]) as client:  # the session ends on the server meanwhile
        gone = client[f"{system.db_prefix}_web"]["sessions"].delete_one(
            {"_id": hashlib.sha256(cookie["value"].encode()).hexdigest()})
    assert gone.deleted_count == 1
    await phone.set_offline(False)
    assert await page.evaluate("WaspadaOutbox.flush()") == {"signin": True}
    stored = await page.evaluate("WaspadaOutbox.all()")
    assert [(i["status"], i["note"]) for i in stored] == [("waiting", "signin")]
    assert cases_of(system.url("intake"), reporter) == []
    await page.goto(f"{site}/reports")
    assert "/login?ended=1" in page.url
    assert "sesi Anda berakhir" in await page.text_content("[data-signed-out]")
    await sign_in(page, site, reporter)
    await page.goto(f"{site}/outbox")

    async def sent():
        return await _statuses(page) == ["sent"]

    await eventually(sent, timeout=30)
    assert len(cases_of(system.url("intake"), reporter)) == 1


async def test_a_refused_field_is_marked_next_to_it_in_indonesian_and_can_be_fixed(phone, site, system, reporter):
    page = await _signed_in(phone, site, reporter)
    await fill_report(page, nik="12345")
    await submit(page)
    error = page.locator("[data-error-for='persons.0.nik']")
    assert await error.is_visible()
    assert await error.text_content() == "NIK harus tepat 16 angka."
    assert await page.get_attribute("#p0-nik", "aria-invalid") == "true"
    await screenshot(page, "report-field-error")
    assert cases_of(system.url("intake"), reporter) == []
    await page.fill("#p0-nik", f"3603{uuid.uuid4().int % 10**12:012d}")
    await submit(page)
    assert await page.is_visible("[data-form-status] [data-case-number]")
    assert len(cases_of(system.url("intake"), reporter)) == 1


async def test_english_is_one_tap_away_and_remembered(phone, site, reporter):
    page = await _signed_in(phone, site, reporter)
    assert await page.text_content("h1") == "Laporan baru"
    await page.click("a.lang")
    assert await page.text_content("h1") == "New report"
    await screenshot(page, "report-form-en", top=True)
    assert page.url.endswith("/report")
    await page.goto(f"{site}/reports")
    assert await page.text_content("h1") == "My reports"
    other = await phone.new_page()
    await other.goto(f"{site}/outbox")
    assert await other.text_content("h1") == "Outbox"
    await other.click("a.lang")
    assert await other.text_content("h1") == "Kotak keluar"


async def test_my_reports_shows_the_officers_question_escaped_and_takes_the_answer(phone, site, system, reporter):
    page = await _signed_in(phone, site, reporter)
    await fill_report(page)
    await submit(page)
    case_id = cases_of(system.url("intake"), reporter)[0]["case_id"]
    verifier = auth("verifier", "36.03")
    async with httpx.AsyncClient(timeout=20) as http:
        async def screened():
            r = await http.get(system.url("verification") + f"/v1/cases/{case_id}", headers=verifier)
            return r.json() if r.status_code == 200 and r.json()["status"] == "awaiting_decision" else None

        case = await eventually(screened, timeout=90)
        question = "Siapa <b>nama</b> sponsornya? <script>alert(1)</script>"
        r = await http.post(system.url("verification") + f"/v1/cases/{case_id}/decision", headers={
            **verifier, "If-Match": f'"{case["version"]}"'}, json={"decision": "request_info", "question": question})
        assert r.status_code == 200, r.text

    async def asked():
        await page.goto(f"{site}/reports")
        return await page.is_visible("[data-question]")

    await eventually(asked, timeout=60)
    assert await page.text_content("[data-question]") == question  # shown as text, never as markup
    assert await page.locator("[data-question] b").count() == 0
    await screenshot(page, "my-reports-question")
    await page.fill(f"#a-{case_id}", "Namanya Pak Joko, dari Tangerang.")
    await page.click(f"form[action='/reports/{case_id}/answer'] button")
    await page.wait_for_selector(f"#r-{case_id} .notice")  # swapped in place by htmx
    assert await page.text_content(f"#r-{case_id} .badge") == "Diterima"
    assert cases_of(system.url("intake"), reporter)[0]["status"] in ("reported", "screened")  # screened again
    await page.click(f"#r-{case_id} .withdraw summary")
    await page.fill(f"#w-{case_id}", "Salah paham, sudah dijelaskan keluarga.")
    await page.click(f"form[action='/reports/{case_id}/withdraw'] button")
    await page.wait_for_selector(f"#r-{case_id}.status-withdrawn")
    await screenshot(page, "my-reports", top=True)


async def test_pages_send_security_headers_and_refuse_calls_without_the_csrf_token(phone, site, reporter):
    page = await _signed_in(phone, site, reporter)
    response = await page.goto(f"{site}/reports")
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    status = await page.evaluate("""async () => (await fetch('/api/reports', {method: 'POST',
        headers: {'Content-Type': 'application/json', 'Idempotency-Key': 'abcdefgh-1234'}, body: '{}'})).status""")
    assert status == 403
    status = await page.evaluate("""async () => (await fetch('/reports/00000000-0000-0000-0000-000000000000/withdraw',
        {method: 'POST', body: new URLSearchParams({reason: 'x'})})).status""")
    assert status in (303, 200, 422)  # a form without its token changes nothing
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{site}/report", follow_redirects=False)).headers["location"] == "/login"


async def test_staff_account_enrols_its_second_factor_with_a_qr_code(phone, site, system):
    account = create_account(system.url("identity"), role="verifier", region="36.03")
    page = await phone.new_page()
    await sign_in(page, site, account)
    assert page.url.endswith("/totp")
    assert await page.locator(".qr svg").count() == 1
    secret = (await page.text_content(".secret")).strip()
    await page.fill("#code", totp(secret))
    await page.click("form[action='/totp'] button")
    await page.wait_for_url("**/queue")  # a verifier's home: the queue of the region (staff pages)
    assert "Laporan yang perlu diputuskan" in await page.text_content("h1")


async def test_no_serious_accessibility_violation_on_any_page(chromium, site, system):
    context = await chromium.new_context(viewport=PHONE, bypass_csp=True)
    try:
        page = await context.new_page()
        found = {}
        await page.goto(f"{site}/login")
        found["login"] = await serious_violations(page)
        account = create_account(system.url("identity"))
        await page.fill("#username", account["username"])
        await page.fill("#password", account["one_time_password"])
        await page.click("form[action='/login'] button[type=submit]")
        await page.wait_for_url("**/password")
        found["password"] = await serious_violations(page)
        for field, value in (("#current", account["one_time_password"]), ("#new", "x"), ("#repeat", "y")):
            await page.fill(field, value)
        await page.click("form[action='/password'] button[type=submit]")
        found["password with errors"] = await serious_violations(page)
        for field, value in (("#current", account["one_time_password"]), ("#new", NEW_PASSWORD),
                             ("#repeat", NEW_PASSWORD)):
            await page.fill(field, value)
        await page.click("form[action='/password'] button[type=submit]")
        await page.wait_for_url("**/report")
        await fill_report(page, nik="1")
        await submit(page)
        found["report with errors"] = await serious_violations(page)
        for path in ("/report", "/outbox", "/reports", "/offline", "/logout"):
            await page.goto(site + path)
            await page.wait_for_load_state()
            found[path] = await serious_violations(page)
        staff = create_account(system.url("identity"), role="supervisor", region="36.03")
        staff_page = await (await chromium.new_context(viewport=PHONE, bypass_csp=True)).new_page()
        await sign_in(staff_page, site, staff)
        found["totp"] = await serious_violations(staff_page)
        assert {k: v for k, v in found.items() if v} == {}
    finally:
        await context.close()


async def test_the_reporters_form_weighs_under_150_kb_on_first_load(chromium, site, system):
    context = await chromium.new_context(viewport=PHONE, service_workers="block")
    try:
        page = await context.new_page()
        await sign_in(page, site, create_account(system.url("identity")))
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send("Network.clearBrowserCache")
        sizes: dict[str, int] = {}
        cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__(e["requestId"], e["encodedDataLength"]))
        await page.goto(f"{site}/report", wait_until="load")
        await until(page, "document.documentElement.dataset.ready === 'true'")
        total = sum(sizes.values())
        assert 0 < total < 150 * 1024, total
    finally:
        await context.close()
