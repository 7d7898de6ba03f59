"""Secrets of sign-in, each from a maintained library: Argon2id password hashes (argon2-cffi), TOTP (pyotp,
RFC 6238), refresh tokens (random, stored only as SHA-256), TOTP secrets sealed at rest (AES-GCM, shared.crypto).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Literal

import argon2
import pyotp
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shared import crypto

HashProfile = Literal["rfc9106_low_memory", "cheapest_for_tests"]
# RFC 9106 §4, second recommended option: Argon2id, t=3, m=64 MiB, p=4 (argon2-cffi's default profile).
PROFILES: dict[str, argon2.Parameters] = {
    "rfc9106_low_memory": argon2.profiles.RFC_9106_LOW_MEMORY,
    # Still Argon2id, but 1 MiB and one pass: the test suite signs in hundreds of times.
    "cheapest_for_tests": argon2.Parameters(type=argon2.Type.ID, version=19, salt_len=16, hash_len=32,
                                            time_cost=1, memory_cost=1024, parallelism=1),
}
TOTP_DIGITS = 6
TOTP_PERIOD_S = 30


class PasswordHasher:
    """Argon2id off the event loop, at most `concurrency` at once (each takes 64 MiB and a core for ~0.1 s)."""

    def __init__(self, profile: HashProfile, concurrency: int = 2) -> None:
        self._hasher = argon2.PasswordHasher.from_parameters(PROFILES[profile])
        self._slots = asyncio.Semaphore(concurrency)
        # Verified against when the username does not exist, so an unknown user costs the same time as a known one.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self._verify, password_hash or self._decoy, password) and bool(password_hash)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def hash_now(self, password: str) -> str:
        """Synchronously, for the command line."""
        return self._hasher.hash(password)


def one_time_password() -> str:
    return secrets.token_urlsafe(12)  # 16 characters, ~96 bits


# --- TOTP -----------------------------------------------------------------------------------------------------


def new_totp_secret() -> str:
    return pyotp.random_base32()


def enrolment_uri(secret: str, username: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S).provisioning_uri(
        name=username, issuer_name=issuer)


def matching_step(secret: str, code: str | None, now: datetime) -> int | None:
    """The time step (now, one before or one after) whose code this is, or None. The caller refuses a step at
    or before the last one accepted, so each code works once."""
    if not code or not code.isdigit() or len(code) != TOTP_DIGITS:
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S)
    current = totp.timecode(now)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def code_at(secret: str, moment: datetime) -> str:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S).at(moment)


class TotpVault:
    """TOTP secrets sealed at rest with a key derived from the master key, bound to the account id."""

    def __init__(self, master_key: bytes) -> None:
        self._key = crypto.derived_key(master_key, "identity-totp-secrets")

    def seal(self, account_id: str, secret: str) -> str:
        return crypto.seal(self._key, account_id, secret)

    def open(self, account_id: str, sealed: str) -> str:
        return crypto.unseal(self._key, account_id, sealed)


# --- refresh tokens and usernames -----------------------------------------------------------------------------


def new_refresh_token(session_id: str) -> str:
    return f"{session_id}.{secrets.token_urlsafe(32)}"


def session_of(refresh_token: str) -> str | None:
    session_id, dot, rest = refresh_token.partition(".")
    return session_id if dot and session_id and rest and len(session_id) <= 64 else None


def token_hash(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


def username_key(identifier_key: bytes, username: str) -> str:
    """Failed sign-ins are counted under a keyed digest of the username, so no typed text is stored."""
    return hmac.new(identifier_key, b"login:" + username.encode(), hashlib.sha256).hexdigest()
