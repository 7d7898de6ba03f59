"""The identity service on the real broker and database: sign-in, setup, lockout, refresh rotation and reuse,
TOTP replay, admin scope, disabling, and the events it publishes."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from services.identity import credentials
from services.identity.app import IdentitySettings, create_app
from services.identity.cli import DEMO_ACCOUNTS, DEMO_PASSWORD, DEV_TOTP_SECRET, create_demo_accounts
from shared import topics
from shared.clock import ManualClock
from tests.conftest import serving
from tests.kafka_helpers import TopicReader
from tests.unit.test_access_control import APPS, ENDPOINTS

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "admin-password-2026"
ADMIN_SECRET = credentials.new_totp_secret()


def _settings(infra, isolation, **over):
    return IdentitySettings(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"],
                            password_hash_profile="cheapest_for_tests", **{**isolation, **over})


class Identity:
    """An identity service in this process, its clock, and the admin every test starts from."""

    def __init__(self, http: httpx.AsyncClient, app, clock: ManualClock) -> None:
        self.http, self.app, self.clock = http, app, clock
        self.directory = app.state.directory

    async def admin(self, region: str = "36.03") -> dict:
        username = f"admin-{uuid.uuid4().hex[:8]}"
        await self.directory.create_account(username=username, name="Admin", role="admin", region=region,
                                            unit=None, admin=None, via="cli", password=ADMIN_PASSWORD,
                                            totp_secret=ADMIN_SECRET)
        r = await self.login(username, ADMIN_PASSWORD, credentials.code_at(ADMIN_SECRET, self.clock.now()))
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    async def login(self, username: str, password: str, totp: str | None = None) -> httpx.Response:
        body = {"username": username, "password": password, **({"totp": totp} if totp else {})}
        return await self.http.post("/v1/login", json=body)

    async def create(self, admin: dict, role: str = "verifier", region: str = "36.03", unit: str | None = None,
                     ) -> dict:
        r = await self.http.post("/v1/accounts", headers=admin, json={
            "username": f"{role}-{uuid.uuid4().hex[:8]}", "name": "Petugas", "role": role, "region": region,
            **({"unit": unit} if unit else {})})
        assert r.status_code == 201, r.text
        return r.json()

    def next_step(self) -> None:
        self.clock.advance(timedelta(seconds=30))

    async def ready_staff(self, admin: dict, role: str = "verifier", unit: str | None = None) -> tuple[dict, str]:
        """A staff account through its whole setup: one-time password changed, second factor confirmed."""
        account = await self.create(admin, role, unit=unit)
        setup = (await self.login(account["username"], account["one_time_password"])).json()
        bearer = {"Authorization": f"Bearer {setup['access_token']}"}
        assert (await self.http.post("/v1/password", headers=bearer, json={
            "current": account["one_time_password"], "new": "a-new-password-1"})).status_code == 204
        uri = (await self.http.post("/v1/totp/enroll", headers=bearer)).json()["otpauth_uri"]
        secret = uri.split("secret=")[1].split("&")[0]
        r = await self.http.post("/v1/totp/confirm", headers=bearer,
                                 json={"code": credentials.code_at(secret, self.clock.now())})
        assert r.status_code == 200, r.text
        self.next_step()
        return account, secret


@pytest.fixture
async def identity(infra, isolation):
    clock = ManualClock(datetime.now(UTC) - timedelta(minutes=5))  # room to move on: tokens are checked in real time
    app = create_app(_settings(infra, isolation, login_backoff_after=2, login_lock_after=4, login_lock_s=600),
                     clock=clock)
    async with serving(app) as http:
        yield Identity(http, app, clock)


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def test_a_new_verifier_signs_in_sets_up_and_gets_a_full_token(identity):
    admin = await identity.admin()
    account = await identity.create(admin)
    assert len(account["one_time_password"]) >= 10 and account["status"] == "active"
    first = await identity.login(account["username"], account["one_time_password"])
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["must_change_password"], body["must_enroll_totp"], body["token_type"], body["expires_in"]) == (
        True, True, "Bearer", 900)
    claims = _claims(body["access_token"])
    assert claims["setup"] is True and claims["exp"] - claims["iat"] == 900 and claims["sub"] == account["id"]
    [key] = (await identity.http.get("/v1/jwks.json")).json()["keys"]
    assert (key["kty"], key["crv"], key["kid"]) == ("OKP", "Ed25519", jwt.get_unverified_header(body["access_token"])["kid"])
    assert jwt.decode(body["access_token"], jwt.PyJWK(key).key, algorithms=["EdDSA"])["sid"] == claims["sid"]
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await identity.http.get("/v1/me", headers=bearer)).json()["must_change_password"] is True

    weak = await identity.http.post("/v1/password", headers=bearer,
                                    json={"current": account["one_time_password"], "new": "short"})
    assert weak.status_code == 422 and weak.json()["error"]["details"][0]["field"] == "new"
    named = await identity.http.post("/v1/password", headers=bearer, json={
        "current": account["one_time_password"], "new": account["username"] + "-x"})
    assert named.status_code == 422 and named.json()["error"]["details"][0]["field"] == "new"
    assert (await identity.http.post("/v1/password", headers=bearer, json={
        "current": account["one_time_password"], "new": "a-new-password-1"})).status_code == 204
    uri = (await identity.http.post("/v1/totp/enroll", headers=bearer)).json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/") and "issuer=Waspada" in uri
    secret = uri.split("secret=")[1].split("&")[0]
    wrong = await identity.http.post("/v1/totp/confirm", headers=bearer, json={"code": "000000"})
    assert wrong.status_code == 422
    confirmed = await identity.http.post("/v1/totp/confirm", headers=bearer,
                                         json={"code": credentials.code_at(secret, identity.clock.now())})
    assert confirmed.json() == {"totp_enabled": True}

    full = await identity.http.post("/v1/token/refresh", json={"refresh_token": body["refresh_token"]})
    assert full.status_code == 200, full.text
    assert "setup" not in _claims(full.json()["access_token"])
    assert (full.json()["must_change_password"], full.json()["must_enroll_totp"]) == (False, False)

    identity.next_step()
    assert (await identity.login(account["username"], "a-new-password-1")).status_code == 401  # code needed now
    identity.next_step()
    signed_in = await identity.login(account["username"], "a-new-password-1",
                                     credentials.code_at(secret, identity.clock.now()))
    assert signed_in.status_code == 200 and "setup" not in _claims(signed_in.json()["access_token"])


async def test_any_wrong_part_gets_the_same_answer(identity):
    admin = await identity.admin()
    account, secret = await identity.ready_staff(admin)
    code = credentials.code_at(secret, identity.clock.now())
    tries = [("no-such-user", "a-new-password-1", code), (account["username"], "wrong-password", code),
             (account["username"], "a-new-password-1", None),
             (account["username"], "a-new-password-1", "123456" if code != "123456" else "654321")]
    answers = []
    for username, password, totp in tries:
        identity.clock.advance(timedelta(seconds=5))  # past the back-off of the failures before
        answers.append(await identity.login(username, password, totp))
    assert [a.status_code for a in answers] == [401] * 4
    assert len({json.dumps(a.json()) for a in answers}) == 1
    assert answers[0].json()["error"]["code"] == "invalid_credentials"


async def test_a_totp_code_is_accepted_once(identity, infra):
    admin = await identity.admin()
    account, secret = await identity.ready_staff(admin)
    code = credentials.code_at(secret, identity.clock.now())
    async with TopicReader(infra["kafka"], topics.IDENTITY) as reader:
        assert (await identity.login(account["username"], "a-new-password-1", code)).status_code == 200
        replay = await identity.login(account["username"], "a-new-password-1", code)
        assert replay.status_code == 401
        records = await reader.collect(lambda r: r.key.decode() == account["id"]
                                       and json.loads(r.value)["type"] == "login.failed")
    assert json.loads(records[0].value)["data"]["reason"] == "code_reused"
    earlier = credentials.code_at(secret, identity.clock.now() - timedelta(seconds=30))  # an older step: refused too
    assert (await identity.login(account["username"], "a-new-password-1", earlier)).status_code == 401


async def test_failures_back_off_then_lock_whether_or_not_the_username_exists(identity):
    admin = await identity.admin()
    account, secret = await identity.ready_staff(admin)
    for username in (account["username"], f"ghost-{uuid.uuid4().hex[:6]}"):
        statuses = [(await identity.login(username, "wrong-password")).status_code for _ in range(2)]
        assert statuses == [401, 401]
        slowed = await identity.login(username, "wrong-password")  # the 2nd failure asks for a wait
        assert slowed.status_code == 429 and slowed.json()["error"]["code"] == "locked"
        assert int(slowed.headers["Retry-After"]) >= 1
        identity.clock.advance(timedelta(seconds=2))
        assert (await identity.login(username, "wrong-password")).status_code == 401  # 3rd
        identity.clock.advance(timedelta(seconds=3))
        assert (await identity.login(username, "wrong-password")).status_code == 401  # 4th: locked now
        locked = await identity.login(username, "a-new-password-1", credentials.code_at(secret, identity.clock.now()))
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 500
    identity.clock.advance(timedelta(seconds=601))
    ok = await identity.login(account["username"], "a-new-password-1", credentials.code_at(secret, identity.clock.now()))
    assert ok.status_code == 200, ok.text


async def test_refresh_rotates_and_a_reused_token_ends_the_session(identity):
    admin = await identity.admin()
    account, secret = await identity.ready_staff(admin)
    first = (await identity.login(account["username"], "a-new-password-1",
                                  credentials.code_at(secret, identity.clock.now()))).json()
    second = await identity.http.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200 and second.json()["refresh_token"] != first["refresh_token"]
    third = await identity.http.post("/v1/token/refresh", json={"refresh_token": second.json()["refresh_token"]})
    assert third.status_code == 200
    assert _claims(third.json()["access_token"])["sid"] == _claims(first["access_token"])["sid"]

    stolen = await identity.http.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert stolen.status_code == 401 and stolen.json()["error"]["code"] == "invalid_credentials"
    latest = await identity.http.post("/v1/token/refresh", json={"refresh_token": third.json()["refresh_token"]})
    assert latest.status_code == 401  # the whole session ended with the reuse
    session = await identity.directory.store.session(_claims(first["access_token"])["sid"])
    assert session["revoked_reason"] == "refresh_reuse"
    assert first["refresh_token"] not in json.dumps(session, default=str)  # stored only as hashes
    garbage = await identity.http.post("/v1/token/refresh", json={"refresh_token": "nonsense"})
    assert garbage.status_code == 401


async def test_logout_ends_the_session(identity):
    admin = await identity.admin()
    account, secret = await identity.ready_staff(admin)
    tokens = (await identity.login(account["username"], "a-new-password-1",
                                   credentials.code_at(secret, identity.clock.now()))).json()
    out = await identity.http.post("/v1/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert out.status_code == 204
    assert (await identity.http.post("/v1/token/refresh",
                                     json={"refresh_token": tokens["refresh_token"]})).status_code == 401


async def test_an_admin_acts_only_within_their_region_and_grants_no_admin_role(identity):
    admin = await identity.admin("36.03")
    tries = {
        "another regency": {"role": "verifier", "region": "36.71"},
        "a wider region": {"role": "supervisor", "region": "36"},
        "an admin role": {"role": "admin", "region": "36.03"},
    }
    for what, body in tries.items():
        r = await identity.http.post("/v1/accounts", headers=admin,
                                     json={"username": f"x-{uuid.uuid4().hex[:6]}", "name": "X", **body})
        assert r.status_code == 403, (what, r.text)
    bad = await identity.http.post("/v1/accounts", headers=admin, json={
        "username": f"x-{uuid.uuid4().hex[:6]}", "name": "X", "role": "investigator", "region": "36.03"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "unit"
    reporter_region = await identity.http.post("/v1/accounts", headers=admin, json={
        "username": f"x-{uuid.uuid4().hex[:6]}", "name": "X", "role": "reporter", "region": "36.03"})
    assert reporter_region.status_code == 422  # a reporter covers a village

    province_admin = await identity.admin("36")
    outside = await identity.create(province_admin, "verifier", "36.71")
    assert (await identity.http.get(f"/v1/accounts/{outside['id']}", headers=admin)).status_code == 404
    assert (await identity.http.patch(f"/v1/accounts/{outside['id']}", headers=admin,
                                      json={"status": "disabled"})).status_code == 404
    inside = await identity.create(admin, "investigator", unit="polresta_tangerang")
    widen = await identity.http.patch(f"/v1/accounts/{inside['id']}", headers=admin, json={"region": "36"})
    assert widen.status_code == 403
    listed = (await identity.http.get("/v1/accounts", headers=admin)).json()["items"]
    assert inside["id"] in {a["id"] for a in listed} and outside["id"] not in {a["id"] for a in listed}
    assert all(a["region"].startswith("36.03") for a in listed)
    moved = await identity.http.patch(f"/v1/accounts/{inside['id']}", headers=admin, json={"role": "supervisor"})
    assert moved.status_code == 200 and (moved.json()["role"], moved.json()["unit"]) == ("supervisor", None)
    dup = await identity.http.post("/v1/accounts", headers=admin, json={
        "username": inside["username"].upper(), "name": "X", "role": "verifier", "region": "36.03"})
    assert dup.status_code == 409


async def test_disabling_ends_sessions_at_once_and_tokens_die_with_their_expiry(identity):
    admin = await identity.admin()
    account, secret = await identity.ready_staff(admin)
    tokens = (await identity.login(account["username"], "a-new-password-1",
                                   credentials.code_at(secret, identity.clock.now()))).json()
    identity.clock.advance(timedelta(minutes=-12))  # an access token identity issued 16+ minutes ago
    old_access = identity.directory._tokens(await identity.directory.store.load(account["id"]),
                                            _claims(tokens["access_token"])["sid"], "unused").access_token
    identity.clock.advance(timedelta(minutes=12))
    disabled = await identity.http.patch(f"/v1/accounts/{account['id']}", headers=admin,
                                         json={"status": "disabled"})
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    assert (await identity.http.post("/v1/token/refresh",
                                     json={"refresh_token": tokens["refresh_token"]})).status_code == 401
    assert (await identity.login(account["username"], "a-new-password-1",
                                 credentials.code_at(secret, identity.clock.now() + timedelta(minutes=1)))
            ).status_code == 401
    # The access token of the disabled account, past its 15 minutes: refused by every endpoint of every service.
    for service, method, path, _ in ENDPOINTS:
        transport = httpx.ASGITransport(app=APPS[service]())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            r = await http.request(method, path, headers={"Authorization": f"Bearer {old_access}"},
                                   json={} if method == "POST" else None)
        assert r.status_code == 401, (service, path, r.text)


async def test_a_reset_issues_a_one_time_password_and_ends_sessions(identity):
    admin = await identity.admin()
    account, secret = await identity.ready_staff(admin)
    tokens = (await identity.login(account["username"], "a-new-password-1",
                                   credentials.code_at(secret, identity.clock.now()))).json()
    reset = await identity.http.post(f"/v1/accounts/{account['id']}/reset", headers=admin, json={"reset_totp": True})
    assert reset.status_code == 200
    assert (await identity.http.post("/v1/token/refresh",
                                     json={"refresh_token": tokens["refresh_token"]})).status_code == 401
    again = (await identity.login(account["username"], reset.json()["one_time_password"])).json()
    assert (again["must_change_password"], again["must_enroll_totp"]) == (True, True)


async def test_events_carry_no_secret(identity, infra):
    async with TopicReader(infra["kafka"], topics.IDENTITY) as reader:
        admin = await identity.admin()
        account = await identity.create(admin)
        tokens = (await identity.login(account["username"], account["one_time_password"])).json()
        await identity.login(account["username"], "not-the-password")
        records = await reader.collect(lambda r: r.key.decode() == account["id"], count=3)
    raw = b"".join(r.value for r in records)
    types = [json.loads(r.value)["type"] for r in records]
    assert types == ["account.created", "login.succeeded", "login.failed"]
    for secret in (account["one_time_password"], "not-the-password", tokens["refresh_token"],
                   tokens["access_token"], "Petugas"):
        assert secret.encode() not in raw
    stored = await identity.directory.store.load(account["id"])
    assert account["one_time_password"] not in json.dumps(stored, default=str)
    assert stored["password_hash"].startswith("$argon2id$")


async def test_the_totp_secret_is_sealed_at_rest(identity):
    admin = await identity.admin()
    account, secret = await identity.ready_staff(admin)
    stored = await identity.directory.store.load(account["id"])
    assert secret not in json.dumps(stored, default=str)
    assert stored["totp"]["secret"].startswith("enc:v1:")


async def test_demo_accounts_are_made_once_and_sign_in(identity):
    assert await create_demo_accounts(identity.directory) == [u for u, *_ in DEMO_ACCOUNTS]
    assert await create_demo_accounts(identity.directory) == []
    reporter = await identity.login("demo-pelapor", DEMO_PASSWORD)
    assert reporter.status_code == 200 and reporter.json()["must_change_password"] is False
    admin = await identity.login("demo-admin", DEMO_PASSWORD, credentials.code_at(DEV_TOTP_SECRET, identity.clock.now()))
    assert admin.status_code == 200 and "setup" not in _claims(admin.json()["access_token"])
    assert _claims(admin.json()["access_token"])["region"] == "36"


async def test_a_hammered_username_grows_no_document(identity):
    username = f"ghost-{uuid.uuid4().hex[:6]}"
    for _ in range(12):
        assert (await identity.login(username, "wrong-password")).status_code in (401, 429)
    store = identity.directory.store
    key = credentials.username_key(b"waspada-dev-identifier-key-do-not-use-in-production", username)
    counters = await store.failures(key)
    assert counters is not None and not counters.get("outbox")  # each refusal's event is its own small document
    assert await store.login_events.collection.count_documents({"account_id": f"unknown-{key[:24]}"}) == 12
