"""Personal data sealed with a key per case (AES-256-GCM, `cryptography`), so erasing a case's key erases its
personal data everywhere it was copied — documents, Kafka history, the trail — while the trail still verifies
(its hashes cover the sealed text).

- A case's data key is random, stored wrapped (AES-GCM under the master key from `WASPADA_MASTER_KEY`) in the key
  store: the `<prefix>_keys` database, a stand-in for a KMS that every service may ask, not a service's own data.
- A sealed value is the string `enc:v1:<base64(nonce | ciphertext)>`, bound to its case id (associated data),
  so it fits any string field of a contract and cannot be moved to another case.
- `open_values` walks a document and opens every sealed string; after erasure they read `[erased]`.
- Sealing never passes text through (`Sealer`): text for an erased case is refused with `CaseErased`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

PREFIX = "enc:v1:"
ERASED = "[erased]"
UNREADABLE = "[unreadable]"


class CaseErased(Exception):
    """The case's data key was destroyed: its personal data can no longer be read or written."""


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


Nonce = Callable[[int], bytes]


def seal(key: bytes, case_id: str, plaintext: str, nonce: Nonce = os.urandom) -> str:
    iv = nonce(12)
    return PREFIX + base64.b64encode(iv + AESGCM(key).encrypt(iv, plaintext.encode(), case_id.encode())).decode()


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


# The fields that hold personal data in a report (DESIGN.md "Who may do what"; DOMAIN.md §6).
PERSON_FIELDS = ("name", "nik", "passport_number", "phone", "birth_date")


class Sealer:
    """Seals text with one key, bound to one scope (a case id; "watchlist"), and opens what it sealed.

    Sealing never passes text through: with no key — the case was erased — sealing text raises CaseErased, so
    nothing typed about an erased case is ever stored, published or chained in plaintext. Only "nothing"
    (None) seals to None. The nonce source is passed in (tests may fix it)."""

    def __init__(self, key: bytes | None, scope: str, nonce: Nonce = os.urandom) -> None:
        self._key = key
        self.scope = scope
        self._nonce = nonce

    @property
    def erased(self) -> bool:
        return self._key is None

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        if self._key is None:
            raise CaseErased(self.scope)
        return seal(self._key, self.scope, text, self._nonce)

    def open(self, value: Any) -> Any:
        return open_values(value, self._key, self.scope)

    def report(self, report: dict[str, Any]) -> dict[str, Any]:
        """A report payload (JSON-ready dict) with names, identifiers, phones, birth dates, the narrative and the
        departure route sealed."""
        out = dict(report)
        out["narrative"] = self(report.get("narrative"))
        out["persons"] = [{**p, **{f: self(str(p[f])) for f in PERSON_FIELDS if p.get(f) is not None}}
                          for p in report.get("persons", [])]
        if isinstance(report.get("departure"), dict):
            out["departure"] = {**report["departure"], "route": self(report["departure"].get("route"))}
        return out


def derived_key(master: bytes, purpose: str) -> bytes:
    """A key for one purpose (the watch list, processing records), derived from the master key (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"waspada:" + purpose.encode()).derive(master)


# Records of processing that must outlive a case's key — the legal basis of its erasure — are sealed with a key
# derived from the master key for this purpose, bound to the case id, instead of the case's own key.
RECORDS = "records"


def master_key_from(text: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError("WASPADA_MASTER_KEY must be base64") from exc
    if len(key) != 32:
        raise ValueError("WASPADA_MASTER_KEY must be 32 bytes (base64 of 32 random bytes)")
    return key


class KeyStore:
    """Case data keys, wrapped by the master key, with a bounded per-process cache (`cachetools.TTLCache`).

    A key read is reused for `cache_seconds` at most — an erasure in another process is seen within that — and
    the process that erases drops the key at once (`erase`, and `forget` when a `case.erased` arrives)."""

    def __init__(self, db: AsyncDatabase, master_key: bytes, cache_seconds: float = 30.0,
                 cache_size: int = 10_000) -> None:
        self._keys = db["case_keys"]
        self._master = AESGCM(master_key)
        self._cache: TTLCache[str, bytes] | None = (
            TTLCache(maxsize=cache_size, ttl=cache_seconds) if cache_seconds > 0 else None)
        # Cases erased here lately: a read that was in flight while the key was destroyed must not cache it.
        self._erased_here: TTLCache[str, bool] = TTLCache(maxsize=cache_size, ttl=max(cache_seconds, 60.0))

    def _wrap(self, case_id: str, key: bytes) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._master.encrypt(nonce, key, case_id.encode())).decode()

    def _unwrap(self, case_id: str, wrapped: str) -> bytes:
        raw = base64.b64decode(wrapped)
        return self._master.decrypt(raw[:12], raw[12:], case_id.encode())

    def _remember(self, case_id: str, key: bytes) -> None:
        if self._cache is not None and case_id not in self._erased_here:
            self._cache[case_id] = key

    def forget(self, case_id: str) -> None:
        """Drop a case's key from this process at once (its erasure was seen)."""
        self._erased_here[case_id] = True
        if self._cache is not None:
            self._cache.pop(case_id, None)

    def cached(self, case_id: str) -> bool:
        return self._cache is not None and case_id in self._cache

    async def key_for_new_case(self, case_id: str) -> bytes:
        """The case's data key, made on first use (idempotent: a retry gets the same key); CaseErased after erasure."""
        return (await self.made_key(case_id))[0]

    async def made_key(self, case_id: str) -> tuple[bytes, bool]:
        """`key_for_new_case`, and whether this call made the key: if it did, no case of this id was ever written
        (a case's key is made before its first write and kept, or a tombstone of it, for good; a request that fails
        removes its key only while no case of it exists)."""
        key = os.urandom(32)
        try:
            await self._keys.insert_one({"_id": case_id, "wrapped": self._wrap(case_id, key)})
        except DuplicateKeyError:
            found = await self.key(case_id)
            if found is None:
                raise CaseErased(case_id) from None
            return found, False
        self._remember(case_id, key)
        return key, True

    async def key(self, case_id: str) -> bytes | None:
        """The case's data key, or None if it was erased (or never made)."""
        if case_id in self._erased_here:
            return None
        if self._cache is not None and (cached := self._cache.get(case_id)) is not None:
            return cached
        doc = await self._keys.find_one({"_id": case_id})
        if not doc or not doc.get("wrapped") or case_id in self._erased_here:
            return None
        key = self._unwrap(case_id, doc["wrapped"])
        self._remember(case_id, key)
        return key

    async def discard_unused(self, case_id: str) -> None:
        """Remove the key of a case that was never created (its request failed); a tombstone stays."""
        self.forget(case_id)
        doc = await self._keys.find_one({"_id": case_id})
        if doc is not None and not doc.get("erased_at"):
            await self._keys.delete_one({"_id": case_id})

    async def key_for_writing(self, case_id: str) -> bytes | None:
        """The key to seal new text of a case with: its key, a new one if it never had one, None once erased."""
        if (key := await self.key(case_id)) is not None:
            return key
        try:
            return await self.key_for_new_case(case_id)
        except CaseErased:
            return None

    async def sealer(self, case_id: str) -> Sealer:
        """A sealer for new text about the case; it refuses to seal once the case is erased."""
        return Sealer(await self.key_for_writing(case_id), case_id)

    async def is_erased(self, case_id: str) -> bool:
        doc = await self._keys.find_one({"_id": case_id})
        return bool(doc and doc.get("erased_at"))

    async def erase(self, case_id: str, at: str) -> bool:
        """Destroy the case's data key (a tombstone stays, so no new key is ever made for the case); idempotent.
        Returns whether this call destroyed it."""
        self.forget(case_id)
        doc = await self._keys.find_one({"_id": case_id})
        if doc is not None and doc.get("erased_at"):
            return False
        tombstone = {"_id": case_id, "erased_at": at}
        try:
            await self._keys.replace_one({"_id": case_id}, tombstone, upsert=True)
        except DuplicateKeyError:
            # Another erasure (the API's and the consumer's of `case.erased`) inserted it first: FerretDB's upsert
            # is a read, then an insert. The document is there now; replace it.
            await self._keys.replace_one({"_id": case_id}, tombstone)
        return True


def keystore_for(client: Any, settings: Any) -> KeyStore:
    return KeyStore(client[settings.keystore_name], master_key_from(settings.master_key.get_secret_value()),
                    settings.key_cache_seconds, settings.key_cache_size)
