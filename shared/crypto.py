"""Personal data sealed with a key per case (AES-256-GCM, `cryptography`), so erasing a case's key erases its
personal data everywhere it was copied — documents, Kafka history, the trail — while the trail still verifies
(its hashes cover the sealed text).

- A case's data key is random, stored wrapped (AES-GCM under the master key from `WASPADA_MASTER_KEY`) in the key
  store: the `<prefix>_keys` database, a stand-in for a KMS that every service may ask, not a service's own data.
- A sealed value is the string `enc:v1:<base64(nonce | ciphertext)>`, bound to its case id (associated data),
  so it fits any string field of a contract and cannot be moved to another case.
- `open_values` walks a document and opens every sealed string; after erasure they read `[erased]`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

PREFIX = "enc:v1:"
ERASED = "[erased]"
UNREADABLE = "[unreadable]"


class CaseErased(Exception):
    """The case's data key was destroyed: its personal data can no longer be read or written."""


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def seal(key: bytes, case_id: str, plaintext: str) -> str:
    nonce = os.urandom(12)
    return PREFIX + base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), case_id.encode())).decode()


def unseal(key: bytes, case_id: str, token: str) -> str:
    raw = base64.b64decode(token[len(PREFIX):])
    return AESGCM(key).decrypt(raw[:12], raw[12:], case_id.encode()).decode()


def open_values(value: Any, key: bytes | None, case_id: str) -> Any:
    """A copy of `value` with every sealed string opened (or marked erased/unreadable)."""
    if isinstance(value, dict):
        return {k: open_values(v, key, case_id) for k, v in value.items()}
    if isinstance(value, list):
        return [open_values(v, key, case_id) for v in value]
    if is_sealed(value):
        if key is None:
            return ERASED
        try:
            return unseal(key, case_id, value)
        except (InvalidTag, ValueError):
            return UNREADABLE
    return value


MASKED = "[masked]"


def mask_values(value: Any) -> Any:
    """A copy of `value` with every sealed string replaced by `[masked]` (lists show no personal data)."""
    if isinstance(value, dict):
        return {k: mask_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_values(v) for v in value]
    return MASKED if is_sealed(value) else value


def sealer(key: bytes | None, case_id: str) -> Callable[[str | None], str | None]:
    """Seals with the case's key; a case from before keys existed (no key at all) stays as it was."""
    if key is None:
        return lambda text: text
    return lambda text: None if text is None else seal(key, case_id, text)


# The fields that hold personal data in a report (DESIGN.md "Who may do what"; DOMAIN.md §6).
PERSON_FIELDS = ("name", "nik", "passport_number", "phone", "birth_date")


def seal_report(report: dict[str, Any], key: bytes, case_id: str) -> dict[str, Any]:
    """A report payload (as JSON-ready dict) with names, identifiers, phones, birth dates and narrative sealed."""
    out = dict(report)
    s = sealer(key, case_id)
    out["narrative"] = s(report.get("narrative")) if not is_sealed(report.get("narrative")) else report["narrative"]
    out["persons"] = [{**p, **{f: s(str(p[f])) for f in PERSON_FIELDS if p.get(f) is not None and not is_sealed(p[f])}}
                      for p in report.get("persons", [])]
    return out


def derived_key(master: bytes, purpose: str) -> bytes:
    """A key for one purpose (e.g. the watch list), derived from the master key."""
    return hashlib.sha256(master + b"\x00waspada\x00" + purpose.encode()).digest()


def master_key_from(text: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError("WASPADA_MASTER_KEY must be base64") from exc
    if len(key) != 32:
        raise ValueError("WASPADA_MASTER_KEY must be 32 bytes (base64 of 32 random bytes)")
    return key


class KeyStore:
    def __init__(self, db: AsyncDatabase, master_key: bytes, cache_seconds: float = 30.0) -> None:
        self._keys = db["case_keys"]
        self._cache_seconds = cache_seconds  # how long a process may use a data key after it was erased elsewhere
        self._master = AESGCM(master_key)
        self._cache: dict[str, tuple[float, bytes]] = {}

    def _wrap(self, case_id: str, key: bytes) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._master.encrypt(nonce, key, case_id.encode())).decode()

    def _unwrap(self, case_id: str, wrapped: str) -> bytes:
        raw = base64.b64decode(wrapped)
        return self._master.decrypt(raw[:12], raw[12:], case_id.encode())

    async def key_for_new_case(self, case_id: str) -> bytes:
        """The case's data key, made on first use (idempotent: a retry gets the same key)."""
        key = os.urandom(32)
        try:
            await self._keys.insert_one({"_id": case_id, "wrapped": self._wrap(case_id, key)})
        except DuplicateKeyError:
            found = await self.key(case_id)
            if found is None:
                raise CaseErased(case_id) from None
            return found
        self._cache[case_id] = (time.monotonic(), key)
        return key

    async def key(self, case_id: str) -> bytes | None:
        """The case's data key, or None if it was erased (or never made)."""
        cached = self._cache.get(case_id)
        if cached and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        doc = await self._keys.find_one({"_id": case_id})
        if not doc or not doc.get("wrapped"):
            self._cache.pop(case_id, None)
            return None
        key = self._unwrap(case_id, doc["wrapped"])
        self._cache[case_id] = (time.monotonic(), key)
        return key

    async def discard_unused(self, case_id: str) -> None:
        """Remove the key of a case that was never created (its request failed); a tombstone stays."""
        self._cache.pop(case_id, None)
        doc = await self._keys.find_one({"_id": case_id})
        if doc is not None and not doc.get("erased_at"):
            await self._keys.delete_one({"_id": case_id})

    async def is_erased(self, case_id: str) -> bool:
        doc = await self._keys.find_one({"_id": case_id})
        return bool(doc and doc.get("erased_at"))

    async def erase(self, case_id: str, at: str) -> str | None:
        """Destroy the case's data key (a tombstone stays, so no new key is ever made for the case).
        Returns None when this call erased it, else when it was erased before (nothing changes)."""
        self._cache.pop(case_id, None)
        if erased_at := await self.erased_at(case_id):
            return erased_at
        await self._keys.replace_one({"_id": case_id}, {"_id": case_id, "erased_at": at}, upsert=True)
        return None

    async def erased_at(self, case_id: str) -> str | None:
        doc = await self._keys.find_one({"_id": case_id})
        return doc.get("erased_at") if doc else None


def keystore_for(client: Any, settings: Any) -> KeyStore:
    return KeyStore(client[settings.keystore_name], master_key_from(settings.master_key.get_secret_value()),
                    settings.key_cache_seconds)
