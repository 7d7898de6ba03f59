"""Settings shared by every service, read from the environment (`WASPADA_*`, `KAFKA_BOOTSTRAP_SERVERS`, `MONGODB_URI`)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.mongo import POOL_SIZE

# The documented development key pair: accepted only with WASPADA_ENV=dev (DESIGN.md, "Who may do what").
DEV_JWT_PRIVATE_KEY = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIB0IHJtBf3GGJyM5u1+JG0vIj7jDVHLhT9eeSzezTCaH
-----END PRIVATE KEY-----"""
DEV_JWT_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAUz3KGEjDlahxP5oaH+wmYQ0rqJljoOEJ4tZMN+y18gs=
-----END PUBLIC KEY-----"""
DEV_PII_KEY = "waspada-dev-identifier-key-do-not-use-in-production"
DEV_MASTER_KEY = "d2FzcGFkYS1kZXYtbWFzdGVyLWtleS0zMi1ieXRlcyE="  # base64 of 32 bytes; dev only


class InsecureSettings(ValueError):
    """The service refuses to start with these settings."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WASPADA_", extra="ignore", populate_by_name=True,
                                      env_ignore_empty=True)

    service: str = "waspada"
    env: Literal["dev", "test", "prod"] = "prod"
    # Verifies access tokens: one Ed25519 PEM public key, or several concatenated while a signing key is rolled.
    jwt_public_key: str = DEV_JWT_PUBLIC_KEY
    # Keys the HMAC of identifiers (NIK, passport, phone, names) used for linking, so no plaintext is indexed.
    identifier_key: SecretStr = SecretStr(DEV_PII_KEY)
    # Wraps every case's data key (shared.crypto); base64 of 32 random bytes.
    master_key: SecretStr = SecretStr(DEV_MASTER_KEY)
    # A data key read from the key store is reused this long: erasure reaches every process within it.
    key_cache_seconds: float = Field(30.0, ge=0)
    key_cache_size: int = Field(10_000, ge=1)  # at most this many case keys held per process
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "WASPADA_KAFKA_BOOTSTRAP_SERVERS")
    )
    mongodb_uri: str = Field(
        "mongodb://127.0.0.1:27017/?directConnection=true",
        validation_alias=AliasChoices("MONGODB_URI", "WASPADA_MONGODB_URI"),
    )
    # Database commands one process keeps in flight at most (shared/mongo.py says why FerretDB needs a bound).
    mongo_pool_size: int = Field(POOL_SIZE, ge=1, le=100)
    # Prefixes keep a test run's databases and consumer groups apart from a running `make up`.
    db_prefix: str = "waspada"
    group_prefix: str = "waspada"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True
    outbox_sweep_interval_s: float = Field(2.0, gt=0)
    outbox_sweep_grace_s: float = Field(1.0, ge=0)
    # An entry the broker refuses for good (e.g. too large) this many times is marked failed (README, "Delivery").
    outbox_max_attempts: int = Field(5, ge=1)
    # A change's events are published in a task of their own right after its write, so a request or a consumer
    # does not wait on Kafka (one aggregate's changes still go out in order); the sweeper covers a crash.
    outbox_publish_in_background: bool = True
    # How long version claims (and the outbox entries in them) are kept once published and written through.
    version_retention_s: float = Field(600.0, gt=0)
    # "earliest" so a new consumer group, or a partition never committed, loses nothing; tests of one-shot
    # in-process instances use "latest" to skip the shared broker's history.
    consumer_offset_reset: Literal["earliest", "latest"] = "earliest"
    consumer_attempts: int = Field(3, ge=1)
    consumer_backoff_s: float = Field(0.2, ge=0)
    # A consumer takes up to this many records at once and applies up to `consumer_concurrency` cases of them side
    # by side (one case's events always in order); the batch's offsets are committed when all are applied.
    consumer_batch: int = Field(100, ge=1, le=10_000)
    consumer_concurrency: int = Field(16, ge=1, le=256)
    max_body_bytes: int = Field(256 * 1024, gt=0)

    @model_validator(mode="after")
    def _refuse_dev_secret_outside_dev(self) -> ServiceSettings:
        from shared.auth import load_public_keys

        try:
            public_keys = load_public_keys(self.jwt_public_key)
        except ValueError as exc:
            raise InsecureSettings(f"WASPADA_JWT_PUBLIC_KEY: {exc}") from None
        if self.env != "dev" and set(public_keys) & set(load_public_keys(DEV_JWT_PUBLIC_KEY)):
            raise InsecureSettings(
                "WASPADA_JWT_PUBLIC_KEY holds the development key; set the real one or WASPADA_ENV=dev"
            )
        if self.env != "dev" and self.identifier_key.get_secret_value() == DEV_PII_KEY:
            raise InsecureSettings("WASPADA_IDENTIFIER_KEY is the development default; set a real key")
        if self.env != "dev" and self.master_key.get_secret_value() == DEV_MASTER_KEY:
            raise InsecureSettings("WASPADA_MASTER_KEY is the development default; set a real key")
        from shared.crypto import master_key_from

        master_key_from(self.master_key.get_secret_value())  # refuses a key that is not base64 of 32 bytes
        return self

    @property
    def database_name(self) -> str:
        return f"{self.db_prefix}_{self.service}"

    @property
    def keystore_name(self) -> str:
        return f"{self.db_prefix}_keys"

    @property
    def group_id(self) -> str:
        return f"{self.group_prefix}.{self.service}"
