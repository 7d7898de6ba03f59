"""Identity events on `waspada.identity.v1`: every account change and every sign-in, failed or not.

The envelope's `case_id` carries the account id (the message key), so one account's events keep their order;
audit records them in the directory's own hash-chained trail. No event ever holds a password, a one-time
password, a TOTP secret or code, a refresh token, or an account's display name.
"""

from __future__ import annotations

from typing import Literal

from shared.contracts.envelope import Contract, register

AccountRole = Literal["reporter", "verifier", "investigator", "supervisor", "admin"]
AccountStatus = Literal["active", "disabled"]


@register("account.created", 1)
class AccountCreated(Contract):
    username: str
    role: AccountRole
    region: str
    unit: str | None = None
    status: AccountStatus = "active"
    must_change_password: bool
    totp_enabled: bool = False
    via: Literal["api", "cli", "demo"] = "api"


@register("account.changed", 1)
class AccountChanged(Contract):
    """`changed` names what changed (`name`, `role`, `region`, `unit`, `status`, `password`, `totp`); the
    account's role, region, unit and status after the change follow (a display name is never carried)."""

    username: str
    changed: list[str]
    role: AccountRole
    region: str
    unit: str | None = None
    status: AccountStatus
    totp_enabled: bool


@register("account.disabled", 1)
class AccountDisabled(Contract):
    username: str
    region: str
    sessions_revoked: int = 0


@register("account.password_reset", 1)
class AccountPasswordReset(Contract):
    """An admin issued a one-time password (and perhaps cleared the second factor); sessions were ended."""

    username: str
    region: str
    totp_reset: bool = False
    sessions_revoked: int = 0


@register("login.succeeded", 1)
class LoginSucceeded(Contract):
    username: str
    region: str
    session_id: str
    second_factor: bool
    setup: bool = False  # the token serves only password change and second-factor enrolment


@register("login.failed", 1)
class LoginFailed(Contract):
    """A refused sign-in. The username is carried only when the account exists (a mistyped password in the
    username field must never land in the trail); `reason` is for auditors, the client is never told it."""

    username: str | None = None
    region: str | None = None
    reason: Literal["unknown_account", "bad_password", "missing_code", "bad_code", "code_reused", "disabled",
                    "locked"]
    failures: int
    locked_until: str | None = None


@register("session.revoked", 1)
class SessionRevoked(Contract):
    session_id: str
    region: str
    reason: Literal["logout", "refresh_reuse", "account_disabled", "password_reset", "password_changed"]


EVENT_TYPES = frozenset({"account.created", "account.changed", "account.disabled", "account.password_reset",
                         "login.succeeded", "login.failed", "session.revoked"})
