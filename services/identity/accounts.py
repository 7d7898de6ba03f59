"""The directory's use cases — sign in, refresh, sign out, change a password, enrol a second factor, and the
admins' account management — shared by the HTTP routes and the command line. Each loads, asks the domain,
and saves through the store (so every change's events leave through the outbox).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from services.identity import credentials, domain, signin
from services.identity.credentials import PasswordHasher, TotpVault
from services.identity.store import AccountStore
from shared.auth import ACCESS_TTL, Principal, issue_token
from shared.clock import Clock
from shared.outbox import Change, ConcurrentUpdate

log = structlog.get_logger()


class InvalidCredentials(Exception):
    """Any wrong part of a sign-in or refresh: one generic answer (401)."""


class Locked(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__("too many failed sign-ins")
        self.retry_after_s = retry_after_s


class Conflict(Exception):
    """The account is not in a state for this (409)."""


class NotFound(Exception):
    pass


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    must_change_password: bool
    must_enroll_totp: bool

    def body(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "refresh_token": self.refresh_token,
                "expires_in": int(ACCESS_TTL.total_seconds()), "token_type": "Bearer",
                "must_change_password": self.must_change_password, "must_enroll_totp": self.must_enroll_totp}


@dataclass(frozen=True)
class Policy:
    lockout: signin.LockoutPolicy
    refresh_ttl_s: float
    session_max_s: float
    totp_issuer: str


class Directory:
    def __init__(self, store: AccountStore, hasher: PasswordHasher, vault: TotpVault, signing_key: Any,
                 identifier_key: bytes, clock: Clock, policy: Policy) -> None:
        self.store, self.hasher, self.vault, self.clock, self.policy = store, hasher, vault, clock, policy
        self._signing_key = signing_key
        self._identifier_key = identifier_key

    # --- signing in -----------------------------------------------------------------------------------------

    async def sign_in(self, username_raw: str, password: str, code: str | None) -> Tokens:
        username = domain.normalise_username(username_raw)
        key = credentials.username_key(self._identifier_key, username)
        now = self.clock.now()
        counters = await self.store.failures(key)
        account = await self.store.by_username(username) if domain.USERNAME.match(username) else None
        if (wait := signin.wait_seconds(counters, now)) > 0:
            await self._failed(key, account, "locked", count=False)
            raise Locked(wait)
        password_ok = await self.hasher.verify(account["password_hash"] if account else None,
                                               password[: domain.MAX_PASSWORD])
        step = None
        if account and password_ok and domain.totp_enabled(account):
            secret = self.vault.open(account["_id"], account["totp"]["secret"])
            step = credentials.matching_step(secret, code, now)
        reason = signin.refusal(account, password_ok and len(password) <= domain.MAX_PASSWORD, code, step)
        if reason or account is None:
            await self._failed(key, account, reason or "unknown_account", count=True)
            raise InvalidCredentials()
        if step is not None and not await self._use_code(account["_id"], step):
            await self._failed(key, account, "code_reused", count=True)
            raise InvalidCredentials()
        account = await self.store.load(account["_id"]) or account
        if self.hasher.needs_rehash(account["password_hash"]):
            await self._rehash(account, password)
        await self.store.clear_failures(key)
        return await self._open_session(account, second_factor=step is not None)

    async def _use_code(self, account_id: str, step: int) -> bool:
        """Record the code's step as used, guarded by the account's version: of two sign-ins with one code, one wins."""
        for _ in range(5):
            account = await self.store.load(account_id)
            if account is None or step <= int(account["totp"].get("last_step") or 0):
                return False
            try:
                await self.store.change_account(account, domain.code_used(step))
                return True
            except ConcurrentUpdate:
                continue
        return False

    async def _failed(self, key: str, account: Mapping[str, Any] | None, reason: str, count: bool) -> None:
        now = self.clock.now()
        counters = await self.store.failures(key)

        def recount(current: Mapping[str, Any] | None) -> dict[str, Any]:
            return signin.after_failure(current, now, self.policy.lockout) if count else {}

        fields = recount(counters)
        shown = fields or {"failures": signin.failures_of(counters, now, self.policy.lockout),
                           "locked_until": (counters or {}).get("locked_until")}
        await self.store.record_failure(key, fields, signin.login_failed(account, key, reason, shown, now), recount)
        log.info("login_failed", account_id=account["_id"] if account else None, reason=reason)

    async def _rehash(self, account: Mapping[str, Any], password: str) -> None:
        new_hash = await self.hasher.hash(password)
        try:
            await self.store.change_account(dict(account), Change(set={"password_hash": new_hash}))
        except ConcurrentUpdate:
            pass  # rehashed at the next sign-in

    async def _open_session(self, account: Mapping[str, Any], second_factor: bool) -> Tokens:
        now = self.clock.now()
        session_id = str(uuid.uuid4())
        refresh = credentials.new_refresh_token(session_id)
        doc, events = signin.new_session(session_id=session_id, account=account,
                                         refresh_hash=credentials.token_hash(refresh), second_factor=second_factor,
                                         now=now, refresh_ttl_s=self.policy.refresh_ttl_s,
                                         max_s=self.policy.session_max_s)
        await self.store.create_session(doc, events)
        log.info("login_succeeded", account_id=account["_id"], session_id=session_id)
        return self._tokens(account, session_id, refresh)

    def _tokens(self, account: Mapping[str, Any], session_id: str, refresh: str) -> Tokens:
        must_enroll = domain.needs_second_factor(account["role"]) and not domain.totp_enabled(account)
        access = issue_token(self._signing_key, role=account["role"], region=account["region"], sub=account["_id"],
                             name=account["name"], unit=account.get("unit"), sid=session_id,
                             setup=domain.in_setup(account), now=self.clock.now())
        return Tokens(access, refresh, bool(account.get("must_change_password")), must_enroll)

    async def refresh(self, refresh_token: str) -> Tokens:
        session_id = credentials.session_of(refresh_token)
        presented = credentials.token_hash(refresh_token)
        for _ in range(3):
            session = await self.store.session(session_id) if session_id else None
            verdict = signin.refresh_verdict(session, presented, self.clock.now())
            if verdict == "reuse":
                await self._revoke(session, "refresh_reuse", None)
                log.warning("refresh_token_reused", session_id=session_id)
            if verdict != "rotate":
                raise InvalidCredentials()
            account = await self.store.load(session["account_id"])
            if account is None or account["status"] != "active":
                await self._revoke(session, "account_disabled", None)
                raise InvalidCredentials()
            new_refresh = credentials.new_refresh_token(session_id)
            try:
                await self.store.change_session(session, signin.rotated(
                    session, presented, credentials.token_hash(new_refresh), self.clock.now(),
                    self.policy.refresh_ttl_s))
            except ConcurrentUpdate:
                continue  # used at the same moment elsewhere: reloaded, it reads as reuse
            return self._tokens(account, session_id, new_refresh)
        raise InvalidCredentials()

    async def sign_out(self, principal: Principal) -> None:
        session = await self.store.session(principal.sid) if principal.sid else None
        if session is not None and session["account_id"] == principal.sub:
            await self._revoke(session, "logout", domain.actor_of(principal))

    async def _revoke(self, session: Mapping[str, Any] | None, reason: str, by: Any) -> None:
        for _ in range(5):
            if session is None or (change := signin.revoked(session, reason, by, self.clock.now())) is None:
                return
            try:
                await self.store.change_session(dict(session), change)
                return
            except ConcurrentUpdate:
                session = await self.store.session(session["_id"])

    async def _revoke_all(self, account_id: str, reason: str, by: Any, keep: str | None = None) -> int:
        sessions = [s for s in await self.store.open_sessions(account_id) if s["_id"] != keep]
        for session in sessions:
            await self._revoke(session, reason, by)
        return len(sessions)

    # --- the account's own setup ----------------------------------------------------------------------------

    async def account_of(self, principal: Principal) -> dict[str, Any]:
        account = await self.store.load(principal.sub)
        if account is None or account["status"] != "active":
            raise InvalidCredentials()
        return account

    async def change_password(self, principal: Principal, current: str, new: str) -> None:
        account = await self.account_of(principal)
        key = credentials.username_key(self._identifier_key, account["username"])
        if (wait := signin.wait_seconds(await self.store.failures(key), self.clock.now())) > 0:
            raise Locked(wait)
        if not await self.hasher.verify(account["password_hash"], current[: domain.MAX_PASSWORD]):
            now = self.clock.now()

            def recount(current: Mapping[str, Any] | None) -> dict[str, Any]:
                return signin.after_failure(current, now, self.policy.lockout)

            await self.store.record_failure(key, recount(await self.store.failures(key)), None, recount)
            raise InvalidCredentials()
        domain.check_new_password(new, account["username"])
        if new == current:
            raise domain.problem("new", "must differ from the current password")
        new_hash = await self.hasher.hash(new)
        await self._change(account["_id"], lambda a: domain.password_changed(a, new_hash, self.clock.now()))
        await self._revoke_all(account["_id"], "password_changed", domain.account_actor(account), keep=principal.sid)

    async def enroll_totp(self, principal: Principal) -> str:
        account = await self.account_of(principal)
        if domain.totp_enabled(account):
            raise Conflict("a second factor is already enrolled; an admin can reset it")
        secret = credentials.new_totp_secret()
        sealed = self.vault.seal(account["_id"], secret)
        await self._change(account["_id"], lambda _: domain.totp_pending(sealed, self.clock.now()))
        return credentials.enrolment_uri(secret, account["username"], self.policy.totp_issuer)

    async def confirm_totp(self, principal: Principal, code: str) -> None:
        account = await self.account_of(principal)
        if domain.totp_enabled(account):
            raise Conflict("the second factor is already enrolled")
        pending = (account.get("totp") or {}).get("pending")
        if not pending:
            raise Conflict("enrol first: POST /v1/totp/enroll")
        step = credentials.matching_step(self.vault.open(account["_id"], pending), code, self.clock.now())
        if step is None or step <= int(account["totp"].get("last_step") or 0):
            raise domain.problem("code", "does not match the enrolled secret (or was used already)")
        await self.store.change_account(account, domain.totp_confirmed(account, step, self.clock.now()))

    # --- admins ---------------------------------------------------------------------------------------------

    async def create_account(self, *, username: str, name: str, role: str, region: str, unit: str | None,
                             admin: Principal | None, via: str = "api", password: str | None = None,
                             totp_secret: str | None = None, account_id: str | None = None
                             ) -> tuple[dict[str, Any], str | None]:
        """A new account; returns it and its one-time password (None when `password` was given)."""
        username = domain.normalise_username(username)
        domain.check_username(username)
        if admin is not None:
            domain.check_admin_may_grant(admin, role, region)
        domain.check_grant(role, region, unit)
        one_time = None if password is not None else credentials.one_time_password()
        account_id = account_id or str(uuid.uuid4())
        doc, events = domain.new_account(
            account_id=account_id, username=username, name=name, role=role, region=region, unit=unit,
            password_hash=await self.hasher.hash(password or one_time or ""), must_change_password=password is None,
            totp_secret=self.vault.seal(account_id, totp_secret) if totp_secret else None,
            by=domain.actor_of(admin), via=via, now=self.clock.now())
        return await self.store.create_account(doc, events), one_time

    async def managed(self, admin: Principal, account_id: str) -> dict[str, Any]:
        account = await self.store.load(account_id)
        if account is None or not domain.check_admin_may_manage(admin, account):
            raise NotFound(account_id)
        return account

    async def change_account(self, admin: Principal, account_id: str, wanted: Mapping[str, Any]) -> dict[str, Any]:
        account = await self.managed(admin, account_id)
        disabling = wanted.get("status") == "disabled" and account["status"] != "disabled"
        open_now = len(await self.store.open_sessions(account_id)) if disabling else 0
        await self._change(account_id, lambda a: domain.change_account(a, wanted, admin, self.clock.now(), open_now))
        if disabling:  # a disabled account's sessions end at once; its access tokens die within 15 minutes
            await self._revoke_all(account_id, "account_disabled", domain.actor_of(admin))
        return await self.managed_or_gone(account_id)

    async def reset(self, admin: Principal | None, account_id: str, reset_totp: bool) -> str:
        account = await self.managed(admin, account_id) if admin else await self.store.load(account_id)
        if account is None:
            raise NotFound(account_id)
        one_time = credentials.one_time_password()
        new_hash = await self.hasher.hash(one_time)
        open_now = len(await self.store.open_sessions(account_id))
        await self._change(account_id, lambda a: domain.reset_password(a, new_hash, reset_totp, admin,
                                                                       self.clock.now(), open_now))
        await self._revoke_all(account_id, "password_reset", domain.actor_of(admin))
        await self.store.clear_failures(credentials.username_key(self._identifier_key, account["username"]))
        return one_time

    async def managed_or_gone(self, account_id: str) -> dict[str, Any]:
        account = await self.store.load(account_id)
        if account is None:
            raise NotFound(account_id)
        return account

    async def _change(self, account_id: str, decide) -> None:
        for _ in range(5):
            account = await self.store.load(account_id)
            if account is None:
                raise NotFound(account_id)
            change = decide(account)
            if change is None:
                return
            try:
                await self.store.change_account(account, change)
                return
            except ConcurrentUpdate:
                continue
        raise Conflict("the account changed meanwhile; try again")
