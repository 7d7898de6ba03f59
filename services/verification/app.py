"""Composition root of the verification service."""

from __future__ import annotations

from fastapi import FastAPI

from services.verification import handlers, screening
from services.verification.store import CaseStore
from shared import reference
from shared.access import AccessLog
from shared.clock import Clock
from shared.crypto import keystore_for
from shared.service import build_runtime, create_service_api
from shared.settings import ServiceSettings


class VerificationSettings(ServiceSettings):
    service: str = "verification"
    port: int = 8002


def create_app(settings: VerificationSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or VerificationSettings()
    reference.indicators(), screening.thresholds(), screening.checklist_indicators()  # validate the data files now, not on the first report
    runtime = build_runtime(settings, clock)
    store = CaseStore(runtime.db, runtime.relay, runtime.clock)
    runtime.startup.append(store.ensure_indexes)
    runtime.backfill_once("queue_entries", store.backfill_queue)
    keys = keystore_for(runtime.client, settings)
    handlers.subscribers(runtime, store, keys)
    app = create_service_api(runtime, title="waspada-verification",
                             description="Screening and the verifier's queue and decisions.")
    access_log = AccessLog(runtime.db, runtime.relay, runtime.clock, settings.service)
    app.include_router(handlers.routes(runtime, store, access_log, keys))
    return app
