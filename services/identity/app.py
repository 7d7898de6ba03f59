"""Composition root of the identity service."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field, SecretStr, model_validator

from services.identity import handlers
from services.identity.accounts import Directory, Policy
from services.identity.credentials import HashProfile, PasswordHasher, TotpVault
from services.identity.signin import LockoutPolicy
from services.identity.store import AccountStore
from shared.auth import key_id, load_private_key, load_public_keys
from shared.clock import Clock
from shared.crypto import master_key_from
from shared.service import Runtime, build_runtime, create_service_api
from shared.settings import DEV_JWT_PRIVATE_KEY, InsecureSettings, ServiceSettings


class IdentitySettings(ServiceSettings):
    service: str = "identity"
    port: int = 8005
    # Signs access tokens; only identity holds it. Its public key must be in WASPADA_JWT_PUBLIC_KEY.
    jwt_private_key: SecretStr = SecretStr(DEV_JWT_PRIVATE_KEY)
    password_hash_profile: HashProfile = "rfc9106_low_memory"
    password_hash_concurrency: int = Field(2, ge=1)
    login_backoff_after: int = Field(3, ge=1)
    login_backoff_max_s: float = Field(60.0, ge=0)
    login_lock_after: int = Field(10, ge=1)
    login_lock_s: float = Field(900.0, gt=0)
    refresh_ttl_s: float = Field(12 * 3600.0, gt=0)
    session_max_s: float = Field(7 * 24 * 3600.0, gt=0)
    totp_issuer: str = "Waspada"

    @model_validator(mode="after")
    def _refuse_dev_private_key_outside_dev(self) -> IdentitySettings:
        try:
            private_key = load_private_key(self.jwt_private_key.get_secret_value())
        except ValueError as exc:
            raise InsecureSettings(f"WASPADA_JWT_PRIVATE_KEY: {exc}") from None
        if self.env != "dev" and self.jwt_private_key.get_secret_value().strip() == DEV_JWT_PRIVATE_KEY.strip():
            raise InsecureSettings("WASPADA_JWT_PRIVATE_KEY is the development key; set a real one")
        if key_id(private_key.public_key()) not in load_public_keys(self.jwt_public_key):
            raise InsecureSettings("WASPADA_JWT_PUBLIC_KEY does not hold the public key of WASPADA_JWT_PRIVATE_KEY: "
                                   "the tokens identity signs would be refused")
        return self


def build_directory(runtime: Runtime, settings: IdentitySettings) -> Directory:
    store = AccountStore(runtime.db, runtime.relay, runtime.clock)
    policy = Policy(
        lockout=LockoutPolicy(backoff_after=settings.login_backoff_after, backoff_max_s=settings.login_backoff_max_s,
                              lock_after=settings.login_lock_after, lock_s=settings.login_lock_s),
        refresh_ttl_s=settings.refresh_ttl_s, session_max_s=settings.session_max_s, totp_issuer=settings.totp_issuer)
    return Directory(store, PasswordHasher(settings.password_hash_profile, settings.password_hash_concurrency),
                     TotpVault(master_key_from(settings.master_key.get_secret_value())),
                     load_private_key(settings.jwt_private_key.get_secret_value()),
                     settings.identifier_key.get_secret_value().encode(), runtime.clock, policy)


def create_app(settings: IdentitySettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    runtime = build_runtime(settings, clock)
    directory = build_directory(runtime, settings)
    runtime.startup.append(directory.store.ensure_indexes)
    app = create_service_api(runtime, title="waspada-identity",
                             description="Everyone signs in here; admins manage accounts. The only service "
                                         "that can mint access tokens.")
    handlers.install_errors(app)
    app.include_router(handlers.routes(runtime, directory, load_public_keys(settings.jwt_public_key)))
    app.state.directory = directory
    return app
