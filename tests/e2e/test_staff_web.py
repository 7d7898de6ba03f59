"""The staff pages in Debian's Chromium, against the real services as processes, each person in their own
browser context and signed in through identity: the whole journey of a report from the reporter's phone through
the verifier's question, the reporter's answer, the decision, the routed unit's work to the supervisor's closed
case with a valid trail and both exports; the decision race; another unit's investigator; a tampered trail entry;
the admin's accounts; accessibility, screenshots and security headers on every staff page."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from pymongo import MongoClient

from services.referral.domain import referral_id_for
from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth, eventually
from tests.e2e.browser import cases_of, create_account, fill_report, serious_violations, sign_in, submit
from tests.e2e.staff import LAPTOP, cli_admin, reload_until, shoot, sign_in_staff, sign_in_with_code, staff_account

pytestmark = pytest.mark.e2e
POLICE = "polresta_tangerang"


@pytest.fixture
async def contexts(chromium):
    """Separate browsers for separate people (cookies apart); CSP bypassed only so axe-core can be injected."""
    made = []

    async def new(**options):
        context = await chromium.new_context(**{"viewport": LAPTOP, "bypass_csp": True, "accept_downloads": True,
                                                **options})
        made.append(context)
        return await context.new_page()

    yield new
    for context in made:
        await context.close()


@pytest.fixture
def site(system):
    return system.url("web")


def file_report(system, **over) -> str:
    """A report filed straight through intake's API (for tests about what happens after it)."""
    reporter = f"reporter-{uuid.uuid4().hex[:6]}"
    r = httpx.post(system.url("intake") + "/v1/reports", json=report_body(**over), timeout=20,
                   headers={**auth("reporter", PILOT_VILLAGE, sub=reporter), "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    return r.json()["case_id"]


class Axe:
    """axe-core's serious findings per page, collected along a journey and asserted at its end."""

    def __init__(self) -> None:
        self.found: dict[str, list] = {}

    async def check(self, page, name: str) -> None:
        self.found[name] = await serious_violations(page)

    def assert_clean(self) -> None:
        assert {k: v for k, v in self.found.items() if v} == {}


async def test_a_report_goes_from_the_reporter_to_a_closed_case_with_a_valid_trail(contexts, site, system):
    axe = Axe()
    identity = system.url("identity")

    # The reporter files a report from the phone.
    reporter = create_account(identity)
    phone = await contexts(viewport={"width": 360, "height": 800})
    await sign_in(phone, site, reporter)
    await fill_report(phone, name="Siti Aminah", narrative="Sponsor menawarkan kerja ke Arab Saudi, visa ziarah.")
    await submit(phone)
    [case] = cases_of(system.url("intake"), reporter)
    case_id, number = case["case_id"], case["case_number"]

    # The verifier finds it in the queue and asks the reporter a question.
    verifier = staff_account(identity, "verifier", name="Rina Verifikator")
    desk = await contexts()
    await sign_in_staff(desk, site, verifier)
    await reload_until(desk, f"{site}/queue?village={PILOT_VILLAGE}", f"tr[data-case-id='{case_id}']", pages=True)
    await axe.check(desk, "queue")
    await shoot(desk, "queue")
    await desk.click(f"tr[data-case-id='{case_id}'] a")
    assert await desk.text_content("[data-case-number]") == number
    assert "Siti Aminah" in await desk.text_content("#main")  # the verifier reads the report's people
    await axe.check(desk, "case")
    await shoot(desk, "case")
    await desk.click("[data-decide='request_info'] >> xpath=.. >> summary")
    await desk.fill("#q-text", "Kapan rencana keberangkatan dan lewat bandara mana?")
    await desk.click("[data-decide='request_info'] button[type=submit]")
    await desk.wait_for_selector("[data-done]")
    assert "Kapan rencana keberangkatan" in await desk.text_content("[data-question]")
    await reload_until(desk, f"{site}/queue?waiting=1", f"tr[data-case-id='{case_id}']", pages=True)

    # The reporter answers on the phone.
    await reload_until(phone, f"{site}/reports", f"#r-{case_id} [data-question]")
    await phone.fill(f"#a-{case_id}", "Tanggal 20 bulan depan lewat Soekarno-Hatta.")
    await phone.click(f"form[action='/reports/{case_id}/answer'] button")
    await phone.wait_for_selector(f"#r-{case_id} .notice")

    # The verifier sees the answer and verifies the case as trafficking.
    await reload_until(desk, f"{site}/queue/{case_id}", "[data-answer]")
    assert "Soekarno-Hatta" in await desk.text_content("[data-answer]")
    for box in await desk.locator("[data-decide='verify'] input[name=case_types]").all():
        await box.set_checked(await box.get_attribute("value") == "tppo")
    await desk.click("[data-decide='verify'] button[type=submit]")
    await desk.wait_for_selector("[data-done]")
    assert "Rina Verifikator" in await desk.text_content("[data-decision]")

    # The routed police unit acknowledges, accepts, records its police report and closes.
    investigator = staff_account(identity, "investigator", unit=POLICE, name="Bripka Adi")
    unit = await contexts()
    await sign_in_staff(unit, site, investigator)
    # this case's referral to the unit (its id is made from both): a case number alone may be another instance's
    # too, when the services of an e2e run read topics that integration tests on a reused instance wrote before
    row = f"tr[data-referral-id='{referral_id_for(case_id, POLICE)}'] a:text('{number}')"
    await reload_until(unit, f"{site}/inbox", row)
    await axe.check(unit, "inbox")
    await shoot(unit, "inbox")
    await unit.click(row)
    referral_url = unit.url
    assert "Siti Aminah" in await unit.text_content("#main")
    await axe.check(unit, "referral")
    await unit.click("[data-action=acknowledge]")
    await unit.wait_for_selector("[data-status=acknowledged]")
    await unit.click("[data-action=accept]")
    await unit.wait_for_selector("[data-status=accepted]")
    await unit.click("[data-milestone-form=lp_filed] summary")
    await unit.fill("#u-lp_filed-lp_number", "LP/B/123/XII/2026/SPKT")
    await unit.fill("#u-lp_filed-note", "Laporan diterima SPKT Polresta.")
    await unit.click("[data-milestone-form=lp_filed] button[type=submit]")
    await unit.wait_for_selector("[data-history] [data-milestone=lp_filed]")
    assert "LP/B/123/XII/2026/SPKT" in await unit.text_content("[data-history]")
    # who acted, by name (their account's), not by an id
    assert "Bripka Adi" in await unit.locator("[data-history] [data-by]").first.text_content()
    await axe.check(unit, "referral with milestones")
    await unit.click("details:has([action$='/close']) summary")
    await unit.select_option("#c-outcome", "police_report_filed")
    await unit.click("[data-action=close]")
    await unit.wait_for_selector("[data-outcome]")

    # The supervisor finds the case closed, with a valid trail, and downloads both exports.
    supervisor = staff_account(identity, "supervisor", name="Ibu Sari")
    office = await contexts()
    await sign_in_staff(office, site, supervisor)
    await axe.check(office, "dashboard")
    await office.goto(f"{site}/cases?village={PILOT_VILLAGE}&status=closed")
    await axe.check(office, "search")
    await reload_until(office, f"{site}/cases/{case_id}", "[data-timeline] li:has-text('Kasus ditutup')")
    assert await office.get_attribute("[data-verdict]", "data-verdict") == "valid"
    assert await office.text_content("[data-case-status]") == "Ditutup"
    timeline = await office.text_content("[data-timeline]")
    for seen in ("Kapan rencana keberangkatan", "Soekarno-Hatta", "LP/B/123/XII/2026/SPKT", "Polresta Tangerang"):
        assert seen in timeline, seen
    await axe.check(office, "trail")
    await shoot(office, "trail")
    await office.fill("#x-purpose", "Pemeriksaan internal")
    async with office.expect_download() as jsonl:
        await office.click("[data-export=jsonl]")
    download = await jsonl.value
    assert download.suggested_filename == f"trail-{number}.jsonl"
    *entries, summary = [json.loads(line) for line in (await download.path()).read_text().splitlines()]
    assert summary["export"]["verification"]["valid"] is True and summary["export"]["case_number"] == number
    assert "case.closed" in [e["type"] for e in entries]
    async with office.expect_download() as html:
        await office.click("[data-export=html]")
    download = await html.value
    document = (await download.path()).read_text()
    assert download.suggested_filename == f"trail-{number}.html"
    assert number in document and "Hash chain: <b>VALID</b>" in document and "police_report_filed" in document
    await office.goto(f"{site}/dashboard")
    await shoot(office, "dashboard")
    assert int(await office.text_content("[data-figure=total] .big")) >= 1

    # The unit still sees its closed referral, and its history.
    await unit.goto(referral_url)
    assert await unit.locator("[data-history] li").count() == 5  # referred, acknowledged, accepted, update, closed
    axe.assert_clean()


async def test_of_two_verifiers_deciding_one_case_the_second_sees_who_decided_first_and_what(contexts, site,
                                                                                              system):
    case_id = file_report(system)
    first, second = (staff_account(system.url("identity"), "verifier", name=name)
                     for name in ("Verifikator Pertama", "Verifikator Kedua"))
    pages = []
    for account in (first, second):
        page = await contexts()
        await sign_in_staff(page, site, account)
        await reload_until(page, f"{site}/queue/{case_id}", "[data-decide='verify']")
        pages.append(page)
    one, two = pages
    for box in await one.locator("[data-decide='verify'] input[name=case_types]").all():
        await box.set_checked(await box.get_attribute("value") == "np_pmi")
    await one.click("[data-decide='verify'] button[type=submit]")
    await one.wait_for_selector("[data-done]")
    # the second verifier, still on the page as it was, rejects it
    await two.click("[data-decide='reject'] >> xpath=.. >> summary")
    await two.fill("#r-text", "Tidak cukup keterangan.")
    await two.click("[data-decide='reject'] button[type=submit]")
    await two.wait_for_selector("[data-conflict]")
    assert await serious_violations(two) == []
    winner = await two.text_content("[data-winner]")
    assert "Verifikator Pertama" in winner and "PMI non-prosedural" in winner
    assert await two.get_attribute("[data-status]", "data-status") == "verified"
    assert await two.locator("[data-decide]").count() == 0  # nothing left to decide, nothing overwritten
    case = httpx.get(f"{system.url('verification')}/v1/cases/{case_id}", headers=auth("verifier", "36.03"),
                     timeout=20).json()
    assert case["decision"]["decision"] == "verify" and case["decision"]["name"] == "Verifikator Pertama"


async def test_another_units_investigator_gets_not_found_and_a_decline_says_where_the_case_went(contexts, site,
                                                                                                   system):
    case_id = file_report(system, indicators=["unlicensed_recruiter"], suspected_types=["tppo"])
    verifier = auth("verifier", "36.03")

    async def screened():
        r = httpx.get(f"{system.url('verification')}/v1/cases/{case_id}", headers=verifier, timeout=20)
        return r if r.status_code == 200 else None

    case = await eventually(screened, timeout=40)
    decided = httpx.post(f"{system.url('verification')}/v1/cases/{case_id}/decision", timeout=20,
                         headers={**verifier, "If-Match": case.headers["ETag"]},
                         json={"decision": "verify", "case_types": ["tppo"]})
    assert decided.status_code == 200, decided.text

    async def routed():
        r = httpx.get(f"{system.url('referral')}/v1/referrals", params={"case_id": case_id}, timeout=20,
                      headers=auth("investigator", "36.03", unit=POLICE))
        return r.json()["items"] if r.status_code == 200 and r.json()["items"] else None

    [referral] = await eventually(routed, timeout=40)
    other = staff_account(system.url("identity"), "investigator", region="36", unit="bp3mi_banten")
    page = await contexts()
    await sign_in_staff(page, site, other)
    response = await page.goto(f"{site}/inbox/{referral['referral_id']}")
    assert response.status == 404
    assert await page.locator("[data-not-found]").count() == 1
    assert await serious_violations(page) == []
    assert "Siti Aminah" not in await page.content()
    assert await page.locator(f"tr[data-referral-id='{referral['referral_id']}']").count() == 0
    await page.goto(f"{site}/inbox")
    assert await page.locator(f"tr[data-referral-id='{referral['referral_id']}']").count() == 0
    # an action on it is refused the same way
    csrf = await page.get_attribute("footer input[name=csrf]", "value")
    status = await page.evaluate("""async ([url, csrf]) => (await fetch(url, {method: 'POST',
        body: new URLSearchParams({csrf})})).status""", [f"/inbox/{referral['referral_id']}/acknowledge", csrf])
    assert status == 404

    # the police unit it was routed to declines it and sees where it went next
    police = staff_account(system.url("identity"), "investigator", unit=POLICE)
    unit = await contexts()
    await sign_in_staff(unit, site, police)
    await unit.goto(f"{site}/inbox/{referral['referral_id']}")
    await unit.click("[data-action=acknowledge]")
    await unit.wait_for_selector("[data-status=acknowledged]")
    await unit.click("details:has([action$='/decline']) summary")
    await unit.click("[data-action=decline]")  # without a reason: refused next to the field
    assert await unit.get_attribute("#d-reason", "aria-invalid") == "true"
    await unit.fill("#d-reason", "Bukan wilayah hukum kami.")
    await unit.click("[data-action=decline]")
    await unit.wait_for_selector("[data-rerouted]")
    assert "Polda Banten" in await unit.text_content("[data-rerouted]")
    assert await serious_violations(unit) == []


async def test_a_trail_entry_changed_in_the_database_turns_the_badge_red_at_that_entry(contexts, site, system,
                                                                                          infra):
    case_id = file_report(system)
    supervisor = staff_account(system.url("identity"), "supervisor")
    page = await contexts()
    await sign_in_staff(page, site, supervisor)
    await reload_until(page, f"{site}/cases/{case_id}", "[data-timeline] li[data-seq='2']")
    assert await page.get_attribute("[data-verdict]", "data-verdict") == "valid"
    trail = MongoClient(infra["mongo"])[f"{system.db_prefix}_audit"]["trail"]
    screened = trail.find_one({"case_id": case_id, "type": "case.screened"})
    changed = trail.update_one({"_id": screened["_id"]}, {"$set": {"event.data.score": 1}})  # the score lowered
    assert changed.modified_count == 1
    await page.goto(f"{site}/cases/{case_id}")
    seq = str(screened["seq"])
    assert await page.get_attribute("[data-verdict]", "data-verdict") == "broken"
    assert f"#{seq}" in await page.text_content("[data-verdict]")
    assert await page.get_attribute("[data-broken]", "data-seq") == seq
    assert await page.locator("[data-timeline] li.broken").count() == 1
    assert await serious_violations(page) == []
    assert await page.locator("li[data-seq='1'].broken, li[data-seq='1'].after-break").count() == 0


async def test_the_admin_creates_changes_resets_and_disables_an_account(contexts, site, system):
    admin = cli_admin(system)
    page = await contexts()
    await sign_in_with_code(page, site, admin)
    await shoot(page, "accounts")
    axe = Axe()
    await axe.check(page, "accounts")
    username = f"nrp-{uuid.uuid4().hex[:8]}"
    await page.fill("#a-username", username)
    await page.fill("#a-name", "Aiptu Budi")
    await page.select_option("#a-role", "investigator")
    await page.select_option("#a-region", "36.03")
    await page.select_option("#a-unit", POLICE)
    await page.click("[data-form=create] button[type=submit]")
    one_time = (await page.text_content("[data-one-time-password]")).strip()
    assert len(one_time) >= 10
    await page.goto(f"{site}/accounts?role=investigator")
    await page.click(f"tr[data-account='{username}'] a")
    account_url = page.url
    assert one_time not in await page.content()  # shown once, never again
    await page.select_option("#a-role", "verifier")
    await page.click("[data-form=change] button[type=submit]")
    await page.wait_for_selector("[data-done]")
    assert "Verifikator" in await page.text_content("#main")
    await page.click("[data-form=reset] button[type=submit]")
    again = (await page.text_content("[data-one-time-password]")).strip()
    assert again != one_time
    await axe.check(page, "account with its new one-time password")
    await page.goto(account_url)
    await page.click("[data-form=status] button[type=submit]")
    await page.wait_for_selector("[data-account-status=disabled]")
    # the account cannot sign in any more
    signed = httpx.post(f"{system.url('identity')}/v1/login", json={"username": username, "password": again},
                        timeout=20)
    assert signed.status_code == 401
    # an account outside the admin's region is not offered, and a form without its token makes nothing
    await page.goto(f"{site}/accounts")
    assert await page.locator("#a-region option[value='36.01']").count() == 0
    status = await page.evaluate("""async () => (await fetch('/accounts', {method: 'POST', body: new URLSearchParams(
        {username: 'tanpa-token', name: 'X', role: 'reporter', region: '36.03.11.2009'})})).status""")
    assert status == 422
    listed = httpx.get(f"{system.url('identity')}/v1/accounts", headers=auth("admin", "36"), timeout=20,
                       params={"role": "reporter", "limit": 200}).json()["items"]
    assert "tanpa-token" not in [a["username"] for a in listed]
    # the supervisor's and admin's accounts trail verifies
    await page.goto(f"{site}/directory")
    assert await page.get_attribute("[data-verdict]", "data-verdict") == "valid"
    assert username in await page.text_content("[data-timeline]")
    await axe.check(page, "directory")
    axe.assert_clean()


async def test_staff_pages_send_security_headers_run_no_script_and_keep_to_their_role(contexts, site, system):
    supervisor = staff_account(system.url("identity"), "supervisor")
    page = await contexts()
    await sign_in_staff(page, site, supervisor)
    for path in ("/dashboard", "/cases", "/directory"):
        response = await page.goto(site + path)
        headers = response.headers
        assert response.status == 200
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store" and headers["x-frame-options"] == "DENY"
        assert await page.locator("script").count() == 0  # staff pages run no script at all
    # a verifier's page is not a supervisor's: another role goes to its own home
    await page.goto(f"{site}/queue")
    assert page.url.endswith("/dashboard")
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{site}/queue", follow_redirects=False)).headers["location"] == "/login"
