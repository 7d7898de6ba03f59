"""Composition root of the intake service."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from services.intake import handlers
from services.intake.store import ReportStore
from shared.access import AccessLog
from shared.clock import Clock
from shared.crypto import keystore_for
from shared.service import build_runtime, create_service_api, every
from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    service: str = "intake"
    port: int = 8001
    # Idempotency-Key claims written before case ids were made from the key (`domain.case_id_for`) are kept this
    # long, then deleted; a key used since names its case for good (a retry gets the first answer, however late).
    idempotency_key_ttl_s: float = Field(24 * 3600.0, gt=0)
    idempotency_key_check_interval_s: float = Field(3600.0, gt=0)


def create_app(settings: IntakeSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    runtime = build_runtime(settings, clock)
    store = ReportStore(runtime.db, runtime.relay, runtime.clock)
    runtime.startup.append(store.ensure_indexes)
    expire_once = handlers.idempotency_key_expiry(runtime, store)
    runtime.background.append(every(settings.idempotency_key_check_interval_s, expire_once, "idempotency_key_expiry",
                                    at_start=True))
    handlers.subscribers(runtime, store)
    app = create_service_api(runtime, title="waspada-intake",
                             description="Reporters file what they saw in their village.")
    access_log = AccessLog(runtime.db, runtime.relay, runtime.clock, settings.service)
    keys = keystore_for(runtime.client, settings)
    app.include_router(handlers.routes(runtime, store, access_log, keys))
    app.state.expire_idempotency_keys_once = expire_once  # tests move a ManualClock and call it directly
    return app
