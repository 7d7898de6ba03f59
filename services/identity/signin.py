"""Signing in, as rules: how failed attempts slow down and lock a username, why an attempt is refused, and how
a session's refresh token rotates and betrays a copy. Pure: no I/O; the clock's time and hashes are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.identity.domain import account_actor, event, in_setup, stamp, totp_enabled
from shared.contracts import identity as events
from shared.contracts.envelope import Actor
from shared.outbox import Change, Outgoing

# --- sign-in failures -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockoutPolicy:
    backoff_after: int = 3  # failures before each further attempt must wait
    backoff_max_s: float = 60.0
    lock_after: int = 10  # failures in a row that lock the username
    lock_s: float = 900.0  # how long a lock lasts; failures older than this are forgotten


def wait_seconds(attempts: Mapping[str, Any] | None, now: datetime) -> float:
    """How long this username must wait before its next attempt is even checked (0: go ahead)."""
    if not attempts or not attempts.get("not_before"):
        return 0.0
    return max(0.0, (datetime.fromisoformat(attempts["not_before"]) - now).total_seconds())


def failures_of(attempts: Mapping[str, Any] | None, now: datetime, policy: LockoutPolicy) -> int:
    if not attempts or not attempts.get("last_failure_at"):
        return 0
    if (now - datetime.fromisoformat(attempts["last_failure_at"])).total_seconds() > policy.lock_s:
        return 0  # a quiet spell forgets old mistakes
    return int(attempts.get("failures") or 0)


def after_failure(attempts: Mapping[str, Any] | None, now: datetime, policy: LockoutPolicy) -> dict[str, Any]:
    """The username's counters after one more failure: a growing wait from `backoff_after`, a lock at `lock_after`."""
    failures = failures_of(attempts, now, policy) + 1
    locked_until = None
    if failures >= policy.lock_after:
        locked_until = now + timedelta(seconds=policy.lock_s)
        not_before, failures = locked_until, 0  # after the lock, the count starts again
    elif failures >= policy.backoff_after:
        not_before = now + timedelta(seconds=min(2.0 ** (failures - policy.backoff_after), policy.backoff_max_s))
    else:
        not_before = None
    return {"failures": failures, "last_failure_at": stamp(now),
            "not_before": stamp(not_before) if not_before else None,
            "locked_until": stamp(locked_until) if locked_until else None}


def login_failed(account: Mapping[str, Any] | None, unknown_key: str, reason: str, counters: Mapping[str, Any],
                 now: datetime) -> Outgoing:
    """`login.failed`, keyed by the account id, or for an unknown username by a digest of it (never the text)."""
    payload = events.LoginFailed(username=account["username"] if account else None,
                                 region=account["region"] if account else None, reason=reason,  # type: ignore[arg-type]
                                 failures=int(counters.get("failures") or 0),
                                 locked_until=counters.get("locked_until"))
    account_id = account["_id"] if account else f"unknown-{unknown_key[:24]}"
    return event(payload, account_id, account_actor(account) if account else None, now)


def refusal(account: Mapping[str, Any] | None, password_ok: bool, code: str | None, step: int | None) -> str | None:
    """Why a sign-in is refused (for the trail only; the client hears one generic answer), or None."""
    if account is None:
        return "unknown_account"
    if not password_ok:
        return "bad_password"
    if account["status"] != "active":
        return "disabled"
    if totp_enabled(account):
        if not code:
            return "missing_code"
        if step is None:
            return "bad_code"
        if step <= int(account["totp"].get("last_step") or 0):
            return "code_reused"
    return None


# --- sessions -------------------------------------------------------------------------------------------------


def new_session(*, session_id: str, account: Mapping[str, Any], refresh_hash: str, second_factor: bool,
                now: datetime, refresh_ttl_s: float, max_s: float) -> tuple[dict[str, Any], list[Outgoing]]:
    doc = {
        "_id": session_id,
        "account_id": account["_id"],
        "region": account["region"],
        "created_at": stamp(now),
        "expires_at": stamp(now + timedelta(seconds=max_s)),
        "refresh_hash": refresh_hash,
        "refresh_expires_at": stamp(now + timedelta(seconds=refresh_ttl_s)),
        "used": [],
        "revoked_at": None,
        "revoked_reason": None,
    }
    payload = events.LoginSucceeded(username=account["username"], region=account["region"], session_id=session_id,
                                    second_factor=totp_enabled(account), setup=in_setup(account))
    return doc, [event(payload, account["_id"], account_actor(account), now)]


def refresh_verdict(session: Mapping[str, Any] | None, presented_hash: str, now: datetime) -> str:
    """'rotate' (the current token, in time), 'reuse' (a token already used: theft) or 'refuse'."""
    if session is None or session.get("revoked_at"):
        return "refuse"
    if presented_hash in session.get("used", ()):
        return "reuse"
    if presented_hash != session.get("refresh_hash"):
        return "refuse"
    if now >= min(datetime.fromisoformat(session["refresh_expires_at"]), datetime.fromisoformat(session["expires_at"])):
        return "refuse"
    return "rotate"


def rotated(session: Mapping[str, Any], old_hash: str, new_hash: str, now: datetime, refresh_ttl_s: float) -> Change:
    return Change(set={"refresh_hash": new_hash, "refresh_expires_at": stamp(now + timedelta(seconds=refresh_ttl_s)),
                       "refreshed_at": stamp(now)},
                  push={"used": old_hash})


def revoked(session: Mapping[str, Any], reason: str, by: Actor | None, now: datetime) -> Change | None:
    if session.get("revoked_at"):
        return None
    payload = events.SessionRevoked(session_id=session["_id"], region=session["region"], reason=reason)  # type: ignore[arg-type]
    return Change(set={"revoked_at": stamp(now), "revoked_reason": reason},
                  events=[event(payload, session["account_id"], by, now)])
