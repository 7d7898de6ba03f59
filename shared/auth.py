"""Bearer tokens (EdDSA / Ed25519 JWTs) and the principal they carry; one implementation for every service.

Only the identity service holds a private key and mints tokens; every service verifies them with the public
keys of `WASPADA_JWT_PUBLIC_KEY` (several PEMs during a key rotation), chosen by the token's `kid` header.
`python -m shared.auth --role reporter --region 36.03.11.2009` prints a development token (WASPADA_ENV=dev only).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared import regions

Role = Literal["reporter", "verifier", "investigator", "supervisor", "admin"]
ROLES: tuple[str, ...] = ("reporter", "verifier", "investigator", "supervisor", "admin")
ALGORITHM = "EdDSA"
# Access tokens live 15 minutes (DESIGN.md); a token claiming a longer life was not made by identity.
ACCESS_TTL = timedelta(minutes=15)
CLOCK_SKEW_S = 30
_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)

PublicKeys = Mapping[str, Ed25519PublicKey]


class AuthError(Exception):
    """Missing, expired or forged credentials: 401."""


@dataclass(frozen=True)
class Principal:
    sub: str
    name: str
    role: Role
    region: str
    unit: str | None = None
    sid: str | None = None
    # The account must still change its password or enrol its second factor: only identity's setup endpoints serve it.
    setup: bool = False

    def actor(self) -> dict[str, str | None]:
        return {"id": self.sub, "role": self.role, "unit": self.unit, "region": self.region}


# --- keys ---------------------------------------------------------------------------------------------------


def _pem(text: str) -> str:
    return text.replace("\\n", "\n").strip()  # a PEM passed through one-line environment files keeps working


def load_private_key(pem: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_pem(pem).encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("the JWT private key is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the JWT private key must be an Ed25519 key")
    return key


def load_public_keys(pems: str) -> dict[str, Ed25519PublicKey]:
    """Every public key in `pems` (one PEM, or several concatenated during a rotation), by key id."""
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PEM_BLOCK.findall(_pem(pems)):
        try:
            key = serialization.load_pem_public_key(block.encode())
        except ValueError as exc:
            raise ValueError("a JWT public key is not a valid PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("JWT public keys must be Ed25519 keys")
        keys[key_id(key)] = key
    if not keys:
        raise ValueError("no PEM public key found in the JWT public key setting")
    return keys


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint: the same key always has the same id, wherever it is computed."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw(public_key))},
                           separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The public key as a JWK (RFC 8037), for `GET /v1/jwks.json`."""
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(_raw(public_key)), "kid": key_id(public_key),
            "alg": ALGORITHM, "use": "sig"}


# --- tokens -------------------------------------------------------------------------------------------------


def issue_token(
    private_key: str | Ed25519PrivateKey,
    *,
    role: str,
    region: str,
    sub: str | None = None,
    name: str | None = None,
    unit: str | None = None,
    sid: str | None = None,
    setup: bool = False,
    ttl: timedelta = ACCESS_TTL,
    now: datetime | None = None,
) -> str:
    key = load_private_key(private_key) if isinstance(private_key, str) else private_key
    now = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": sub or f"{role}-{uuid.uuid4().hex[:8]}",
        "name": name or role.title(),
        "role": role,
        "region": region,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "sid": sid or str(uuid.uuid4()),
    }
    if unit:
        claims["unit"] = unit
    if setup:
        claims["setup"] = True
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())})


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"invalid token: {name} must be a number")
    return value


def _check_claims(claims: Mapping[str, Any], now: float) -> Principal:
    exp, iat = _numeric_date(claims, "exp"), _numeric_date(claims, "iat")
    if exp - iat > ACCESS_TTL.total_seconds():
        raise AuthError("invalid token: it lives longer than an access token may")
    if iat > now + CLOCK_SKEW_S:
        raise AuthError("invalid token: issued in the future")
    sub, sid, role, region = claims.get("sub"), claims.get("sid"), claims.get("role"), claims.get("region")
    if not isinstance(sub, str) or not sub or len(sub) > 200:
        raise AuthError("invalid token: sub must be a non-empty string")
    if not isinstance(sid, str) or not sid or len(sid) > 200:
        raise AuthError("invalid token: sid must be a non-empty string")
    if role not in ROLES:
        raise AuthError(f"invalid token: unknown role {role!r}")
    if not isinstance(region, str) or not regions.REGION_CODE.match(region):
        raise AuthError("invalid token: region must be a Kemendagri code (dd, dd.dd, dd.dd.dd or dd.dd.dd.dddd)")
    unit = claims.get("unit")
    if unit is not None:
        from shared.reference import agencies

        if not isinstance(unit, str) or unit not in agencies():
            raise AuthError("invalid token: unit must be an agency id")
    if role == "investigator" and not unit:
        raise AuthError("invalid token: an investigator's token must name a unit")
    name = claims.get("name", sub)
    setup = claims.get("setup", False)
    if not isinstance(name, str) or not isinstance(setup, bool):
        raise AuthError("invalid token: name must be a string and setup a boolean")
    return Principal(sub=sub, name=name or sub, role=role, region=region, unit=unit, sid=sid, setup=setup)


# Tokens whose signature and claims were checked here, by their text: a phone or a page sends one token with each
# request for its 15 minutes, and checking it again (two base64 parses in Python, an Ed25519 verification) is a
# tenth of accepting a report. Believed only while the key that signed it is still trusted (the same object) and
# until it expires; what a later check could refuse is in the token's text, which is the cache key.
VERIFIED_KEPT = 4096
_verified: OrderedDict[str, tuple[str, Any, float, Principal]] = OrderedDict()


def decode_token(public_keys: PublicKeys | str, token: str) -> Principal:
    keys = load_public_keys(public_keys) if isinstance(public_keys, str) else public_keys
    if (known := _verified.get(token)) is not None:
        kid, key, exp, principal = known
        if keys.get(kid) is key and time.time() < exp + CLOCK_SKEW_S:
            return principal
        _verified.pop(token, None)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    key = keys.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
    if header.get("alg") != ALGORITHM or key is None:
        raise AuthError("invalid token: not signed by a key this service trusts")
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], leeway=CLOCK_SKEW_S,
                            options={"require": ["sub", "role", "region", "iat", "exp", "sid"]})
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    principal = _check_claims(claims, time.time())
    _verified[token] = (header["kid"], key, float(claims["exp"]), principal)
    while len(_verified) > VERIFIED_KEPT:
        _verified.popitem(last=False)
    return principal


def main() -> None:
    parser = argparse.ArgumentParser(description="Print a development token (EdDSA, the dev key; WASPADA_ENV=dev).")
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--region", required=True, help="Kemendagri code: a village for a reporter, else wider")
    parser.add_argument("--unit", help="agency id (investigators)")
    parser.add_argument("--sub", help="user id (default: random)")
    parser.add_argument("--name")
    parser.add_argument("--minutes", type=float, default=15, help="lifetime, at most 15")
    args = parser.parse_args()
    from shared.settings import DEV_JWT_PRIVATE_KEY

    if os.environ.get("WASPADA_ENV") != "dev":
        raise SystemExit("waspada: development tokens are made only with WASPADA_ENV=dev; sign in at identity")
    if not 0 < args.minutes <= ACCESS_TTL.total_seconds() / 60:
        raise SystemExit("waspada: --minutes must be between 0 and 15")
    private_key = os.environ.get("WASPADA_JWT_PRIVATE_KEY") or DEV_JWT_PRIVATE_KEY
    print(issue_token(private_key, role=args.role, region=args.region, unit=args.unit, sub=args.sub,
                      name=args.name, ttl=timedelta(minutes=args.minutes)))


if __name__ == "__main__":
    main()
