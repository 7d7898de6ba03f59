"""Composition root of the referral service."""

from __future__ import annotations

from fastapi import FastAPI

from services.referral import handlers, routing
from services.referral.store import ReferralStore
from shared.clock import Clock
from shared.service import build_runtime, create_service_api
from shared.settings import ServiceSettings


class ReferralSettings(ServiceSettings):
    service: str = "referral"
    port: int = 8003


def create_app(settings: ReferralSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or ReferralSettings()
    routing.table(), routing.deadlines()  # validate the data files now, not on the first verified case
    runtime = build_runtime(settings, clock)
    store = ReferralStore(runtime.db, runtime.relay, runtime.clock)
    runtime.startup.append(store.ensure_indexes)
    handlers.subscribers(runtime, store)
    app = create_service_api(runtime, title="waspada-referral",
                             description="Verified cases routed to the units that act on them, with deadlines.")
    app.include_router(handlers.routes(runtime, store))
    return app
