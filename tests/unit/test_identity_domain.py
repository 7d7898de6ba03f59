"""Identity's account rules, lockout arithmetic, refresh verdicts and TOTP steps: pure, no database."""

from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from services.identity import credentials, domain, signin
from shared.auth import Principal

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
ADMIN = Principal(sub="admin-1", name="Admin", role="admin", region="36.03")
POLICY = signin.LockoutPolicy(backoff_after=3, backoff_max_s=60, lock_after=5, lock_s=900)


def _account(**over):
    doc, _ = domain.new_account(account_id="acc-1", username="198001012005011001", name="Budi", role="verifier",
                                region="36.03", unit=None, password_hash="$argon2id$x", must_change_password=True,
                                totp_secret=None, by=None, via="api", now=NOW)
    return {**doc, "version": 1, **over}


@pytest.mark.parametrize(("role", "region", "unit", "field"), [
    ("reporter", "36.03", None, "region"),  # a reporter covers a village
    ("verifier", "36.03.11.2009", None, "region"),  # staff cover a province or regency
    ("verifier", "99.99", None, "region"),  # not in the region data
    ("investigator", "36.03", None, "unit"),
    ("investigator", "36.03", "no_such_unit", "unit"),
    ("supervisor", "36.03", "polresta_tangerang", "unit"),  # only investigators belong to a unit
])
def test_who_may_hold_what(role, region, unit, field):
    with pytest.raises(domain.FieldProblem) as problem:
        domain.check_grant(role, region, unit)
    assert problem.value.problems[0]["field"] == field


def test_valid_grants_pass():
    domain.check_grant("reporter", "36.03.11.2009", None)
    domain.check_grant("investigator", "36.03", "polresta_tangerang")
    domain.check_grant("admin", "36", None)


@pytest.mark.parametrize(("role", "region"), [("admin", "36.03"), ("verifier", "36"), ("verifier", "36.71"),
                                              ("reporter", "36.71.01.1001")])
def test_an_admin_grants_no_admin_role_and_nothing_outside_their_region(role, region):
    with pytest.raises(domain.NotAllowed):
        domain.check_admin_may_grant(ADMIN, role, region)


def test_an_admin_manages_narrower_accounts_but_not_themselves_or_a_peer():
    assert domain.check_admin_may_manage(ADMIN, {"_id": "x", "role": "verifier", "region": "36.03"})
    assert domain.check_admin_may_manage(ADMIN, {"_id": "x", "role": "reporter", "region": "36.03.11.2009"})
    assert not domain.check_admin_may_manage(ADMIN, {"_id": "x", "role": "verifier", "region": "36.71"})
    assert not domain.check_admin_may_manage(ADMIN, {"_id": "admin-1", "role": "admin", "region": "36.03"})
    assert not domain.check_admin_may_manage(ADMIN, {"_id": "peer", "role": "admin", "region": "36.03"})
    province = Principal(sub="p", name="P", role="admin", region="36")
    assert domain.check_admin_may_manage(province, {"_id": "x", "role": "admin", "region": "36.03"})


@pytest.mark.parametrize("new", ["short", "198001012005011001", "x198001012005011001x", "a" * 257])
def test_a_new_password_is_long_enough_and_not_the_username(new):
    with pytest.raises(domain.FieldProblem) as problem:
        domain.check_new_password(new, "198001012005011001")
    assert problem.value.problems[0]["field"] == "new"


def test_leaving_the_investigator_role_leaves_the_unit_and_says_what_changed():
    account = _account(role="investigator", unit="polresta_tangerang")
    change = domain.change_account(account, {"role": "supervisor"}, ADMIN, NOW)
    assert change.set["role"] == "supervisor" and change.set["unit"] is None
    [event] = change.events
    assert event.event.type == "account.changed" and event.event.data["changed"] == ["role", "unit"]
    assert event.event.case_id == "acc-1" and event.event.actor.id == "admin-1"
    assert "Budi" not in event.event.to_json()  # a display name never travels


def test_disabling_is_its_own_event_and_an_unchanged_patch_is_nothing():
    change = domain.change_account(_account(), {"status": "disabled"}, ADMIN, NOW, sessions_revoked=2)
    assert [e.event.type for e in change.events] == ["account.disabled"]
    assert change.events[0].event.data["sessions_revoked"] == 2
    assert domain.change_account(_account(), {"role": "verifier", "region": "36.03"}, ADMIN, NOW) is None


def test_an_admin_cannot_promote_to_admin_through_a_change():
    with pytest.raises(domain.NotAllowed):
        domain.change_account(_account(), {"role": "admin"}, ADMIN, NOW)


def test_failures_back_off_then_lock_and_a_quiet_spell_forgets_them():
    counters = None
    waits = []
    for n in range(1, 6):
        counters = signin.after_failure(counters, NOW, POLICY)
        waits.append(signin.wait_seconds(counters, NOW))
    assert waits == [0, 0, 1, 2, 900]  # back off from the 3rd, lock at the 5th
    assert counters["locked_until"] == (NOW + timedelta(seconds=900)).isoformat() and counters["failures"] == 0
    after = signin.after_failure({"failures": 4, "last_failure_at": NOW.isoformat()}, NOW + timedelta(hours=1),
                                 POLICY)
    assert after["failures"] == 1 and after["not_before"] is None


def test_the_backoff_is_capped():
    counters = signin.after_failure({"failures": 30, "last_failure_at": NOW.isoformat()}, NOW,
                                    signin.LockoutPolicy(backoff_after=1, backoff_max_s=60, lock_after=100))
    assert signin.wait_seconds(counters, NOW) == 60


def test_refusal_reasons_in_order():
    active = _account(totp={"enabled": True, "secret": "s", "last_step": 100})
    assert signin.refusal(None, False, None, None) == "unknown_account"
    assert signin.refusal(active, False, "123456", 101) == "bad_password"
    assert signin.refusal({**active, "status": "disabled"}, True, "123456", 101) == "disabled"
    assert signin.refusal(active, True, None, None) == "missing_code"
    assert signin.refusal(active, True, "123456", None) == "bad_code"
    assert signin.refusal(active, True, "123456", 100) == "code_reused"
    assert signin.refusal(active, True, "123456", 101) is None
    assert signin.refusal(_account(), True, None, None) is None  # no second factor yet: a setup sign-in


def test_staff_without_a_second_factor_and_anyone_with_a_one_time_password_are_in_setup():
    assert domain.in_setup(_account(must_change_password=False))  # a verifier without TOTP
    assert domain.in_setup({**_account(role="reporter"), "must_change_password": True})
    assert not domain.in_setup({**_account(role="reporter"), "must_change_password": False})


def test_a_refresh_token_rotates_once_and_a_used_one_is_reuse():
    session, _ = signin.new_session(session_id="s1", account=_account(), refresh_hash="h1", second_factor=True,
                                    now=NOW, refresh_ttl_s=3600, max_s=86400)
    assert signin.refresh_verdict(session, "h1", NOW) == "rotate"
    rotated = {**session, **signin.rotated(session, "h1", "h2", NOW, 3600).set, "used": ["h1"]}
    assert signin.refresh_verdict(rotated, "h2", NOW) == "rotate"
    assert signin.refresh_verdict(rotated, "h1", NOW) == "reuse"
    assert signin.refresh_verdict(rotated, "other", NOW) == "refuse"
    assert signin.refresh_verdict(rotated, "h2", NOW + timedelta(hours=2)) == "refuse"  # expired
    assert signin.refresh_verdict({**rotated, "revoked_at": NOW.isoformat()}, "h2", NOW) == "refuse"


def test_a_totp_code_matches_its_step_and_the_neighbours_only():
    secret = pyotp.random_base32()
    step = pyotp.TOTP(secret).timecode(NOW)
    assert credentials.matching_step(secret, credentials.code_at(secret, NOW), NOW) == step
    assert credentials.matching_step(secret, credentials.code_at(secret, NOW - timedelta(seconds=30)), NOW) == step - 1
    assert credentials.matching_step(secret, credentials.code_at(secret, NOW - timedelta(seconds=90)), NOW) is None
    assert credentials.matching_step(secret, "12345", NOW) is None and credentials.matching_step(secret, None, NOW) is None


def test_an_rfc6238_code_is_what_pyotp_computes():
    # RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T = 59 s: 94287082 (8 digits) -> 287082.
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    assert credentials.code_at(secret, datetime.fromtimestamp(59, UTC)) == "287082"


def test_the_username_counter_key_does_not_hold_the_username():
    key = credentials.username_key(b"k" * 32, "198001012005011001")
    assert "1980010120" not in key and key == credentials.username_key(b"k" * 32, "198001012005011001")


async def test_an_unknown_username_costs_a_real_hash_verification(monkeypatch):
    hasher = credentials.PasswordHasher("cheapest_for_tests")
    checked = []
    real = hasher._verify
    monkeypatch.setattr(hasher, "_verify", lambda stored, password: checked.append(stored) or real(stored, password))
    assert await hasher.verify(None, "any-password") is False  # no account: the decoy is verified, and refused
    assert checked == [hasher._decoy] and checked[0].startswith("$argon2id$")
    stored = await hasher.hash("the-password-1")
    assert await hasher.verify(stored, "the-password-1") is True and await hasher.verify(stored, "nope") is False
