"""Identity's HTTP request and response models (DESIGN.md, "Identity")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.regions import REGION_CODE

Role = Literal["reporter", "verifier", "investigator", "supervisor", "admin"]
Status = Literal["active", "disabled"]


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(In):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)
    totp: str | None = Field(None, max_length=16, description="the second factor's code; reporters may leave it out")


class RefreshIn(In):
    refresh_token: str = Field(min_length=1, max_length=200)


class PasswordIn(In):
    current: str = Field(min_length=1, max_length=1024)
    new: str = Field(min_length=1, max_length=1024)


class TotpConfirmIn(In):
    code: str = Field(min_length=1, max_length=16)


class AccountIn(In):
    username: str = Field(min_length=1, max_length=64, description="registration number (NRP/NIP) or a given name")
    name: str = Field(min_length=1, max_length=200)
    role: Role
    region: str = Field(pattern=REGION_CODE.pattern, description="Kemendagri code: a village for a reporter")
    unit: str | None = Field(None, max_length=100, description="agency id (investigators)")


class AccountPatch(In):
    name: str | None = Field(None, min_length=1, max_length=200)
    role: Role | None = None
    region: str | None = Field(None, pattern=REGION_CODE.pattern)
    unit: str | None = Field(None, max_length=100)
    status: Status | None = None


class ResetIn(In):
    reset_totp: bool = Field(False, description="also clear the second factor (a lost phone)")


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: Literal["Bearer"]
    must_change_password: bool
    must_enroll_totp: bool


class MeOut(BaseModel):
    id: str
    username: str
    name: str
    role: Role
    region: str
    unit: str | None
    status: Status
    totp_enabled: bool
    must_change_password: bool


class AccountOut(MeOut):
    created_by: str | None
    created_at: str | None
    updated_at: str | None


class AccountCreatedOut(AccountOut):
    one_time_password: str


class AccountPage(BaseModel):
    items: list[AccountOut]
    next: str | None


class OneTimePasswordOut(BaseModel):
    one_time_password: str


class OtpauthOut(BaseModel):
    otpauth_uri: str


class TotpConfirmedOut(BaseModel):
    totp_enabled: Literal[True]


class Jwk(BaseModel):
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    alg: str
    use: str


class JwksOut(BaseModel):
    keys: list[Jwk]
