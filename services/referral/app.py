"""Composition root of the referral service."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from services.referral import handlers, routing
from services.referral.store import CaseStore, ReferralStore
from shared.access import AccessLog
from shared.clock import Clock
from shared.crypto import keystore_for
from shared.service import build_runtime, create_service_api, every
from shared.settings import ServiceSettings


class ReferralSettings(ServiceSettings):
    service: str = "referral"
    port: int = 8003
    deadline_check_interval_s: float = Field(30.0, gt=0)  # how often breached deadlines are looked for
    day_count_interval_s: float = Field(2.0, gt=0)  # how often the referrals opened meanwhile are added to day counts


def create_app(settings: ReferralSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or ReferralSettings()
    routing.table(), routing.deadlines()  # validate the data files now, not on the first verified case
    runtime = build_runtime(settings, clock)
    store = ReferralStore(runtime.db, runtime.relay, runtime.clock)
    cases = CaseStore(runtime.db, runtime.relay, runtime.clock)
    runtime.startup.append(store.ensure_indexes)
    handlers.subscribers(runtime, store, cases)
    check_deadlines_once = handlers.deadline_checker(runtime, store)
    runtime.background.append(every(settings.deadline_check_interval_s, check_deadlines_once, "deadline_check",
                                    at_start=True))
    runtime.backfill_once("referral_days", store.backfill_created_days)
    runtime.background.append(every(settings.day_count_interval_s, store.write_counts, "day_counts_write",
                                    at_stop=True))
    app = create_service_api(runtime, title="waspada-referral",
                             description="Verified cases routed to the units that act on them, with deadlines "
                                         "that escalate, re-routing of declined referrals and case closure.")
    access_log = AccessLog(runtime.db, runtime.relay, runtime.clock, settings.service)
    app.include_router(handlers.routes(runtime, store, access_log, keystore_for(runtime.client, settings)))
    app.state.check_deadlines_once = check_deadlines_once  # tests move a ManualClock and call it directly
    return app
