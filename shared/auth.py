"""Bearer tokens (HS256 JWT) and the principal they carry; one implementation for all four services.

`python -m shared.auth --role reporter --region 36.03.11.2009` prints a development token.
"""

from __future__ import annotations

import argparse
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt

Role = Literal["reporter", "verifier", "investigator", "supervisor", "admin"]
ROLES: tuple[str, ...] = ("reporter", "verifier", "investigator", "supervisor", "admin")
ALGORITHM = "HS256"


class AuthError(Exception):
    """Missing, expired or forged credentials: 401."""


@dataclass(frozen=True)
class Principal:
    sub: str
    name: str
    role: Role
    region: str
    unit: str | None = None

    def actor(self) -> dict[str, str | None]:
        return {"id": self.sub, "role": self.role, "unit": self.unit, "region": self.region}


def issue_token(
    secret: str,
    *,
    role: str,
    region: str,
    sub: str | None = None,
    name: str | None = None,
    unit: str | None = None,
    ttl: timedelta = timedelta(hours=12),
    now: datetime | None = None,
) -> str:
    now = now or datetime.now(UTC)
    claims = {
        "sub": sub or f"{role}-{uuid.uuid4().hex[:8]}",
        "name": name or role.title(),
        "role": role,
        "region": region,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    if unit:
        claims["unit"] = unit
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "role", "region", "exp"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    role = claims.get("role")
    if role not in ROLES:
        raise AuthError(f"invalid token: unknown role {role!r}")
    region, sub = claims.get("region"), claims.get("sub")
    if not isinstance(region, str) or not region or not isinstance(sub, str) or not sub:
        raise AuthError("invalid token: sub and region must be non-empty strings")
    unit = claims.get("unit")
    if role == "investigator" and not unit:
        raise AuthError("invalid token: an investigator's token must name a unit")
    return Principal(sub=sub, name=str(claims.get("name") or sub), role=role, region=region, unit=unit or None)


def main() -> None:
    parser = argparse.ArgumentParser(description="Print a development token (HS256, WASPADA_JWT_SECRET).")
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--region", required=True, help="Kemendagri code: a village for a reporter, else wider")
    parser.add_argument("--unit", help="agency id (investigators)")
    parser.add_argument("--sub", help="user id (default: random)")
    parser.add_argument("--name")
    parser.add_argument("--hours", type=float, default=12)
    args = parser.parse_args()
    from shared.settings import DEV_JWT_SECRET

    secret = os.environ.get("WASPADA_JWT_SECRET", DEV_JWT_SECRET)
    print(
        issue_token(
            secret, role=args.role, region=args.region, unit=args.unit, sub=args.sub, name=args.name,
            ttl=timedelta(hours=args.hours),
        )
    )


if __name__ == "__main__":
    main()
