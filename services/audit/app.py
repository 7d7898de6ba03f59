"""Composition root of the audit service."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from services.audit import handlers
from services.audit.store import AuditStore
from shared.access import AccessLog
from shared.clock import Clock
from shared.crypto import RECORDS, derived_key, keystore_for, master_key_from
from shared.service import build_runtime, create_service_api, every
from shared.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    service: str = "audit"
    port: int = 8004
    checkpoint_check_interval_s: float = Field(600.0, gt=0)  # a checkpoint is taken once per UTC day
    directory_check_interval_s: float = Field(900.0, gt=0)  # the directory's whole chain recomputed
    # Case documents of trails appended to by links and reads alone are given their heads this often (each once)
    trail_head_interval_s: float = Field(2.0, gt=0)


def create_app(settings: AuditSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or AuditSettings()
    runtime = build_runtime(settings, clock)
    store = AuditStore(runtime.db, runtime.clock)
    runtime.relay.watch(store.case_versions)  # the sweeper repairs and prunes the read model's version claims
    runtime.relay.watch(store.directory_heads)
    runtime.startup.append(store.ensure_indexes)
    runtime.backfill_once("report_weeks", store.backfill_report_weeks)
    runtime.startup.append(store.recover_heads)  # heads a stopped process journaled, before consuming
    runtime.background.append(every(settings.trail_head_interval_s, store.write_heads, "trail_heads_write",
                                    at_stop=True))
    runtime.background.append(
        lambda: handlers.directory_checks(store, runtime.clock, settings.directory_check_interval_s))
    runtime.background.append(
        lambda: handlers.checkpoint_daily(store, runtime.clock, settings.checkpoint_check_interval_s))
    keys = keystore_for(runtime.client, settings)
    handlers.subscribers(runtime, store, keys)
    app = create_service_api(runtime, title="waspada-audit",
                             description="Every case event in a tamper-evident trail, for supervisors and auditors.")
    access_log = AccessLog(runtime.db, runtime.relay, runtime.clock, settings.service)
    records_key = derived_key(master_key_from(settings.master_key.get_secret_value()), RECORDS)
    app.include_router(handlers.routes(runtime, store, access_log, keys, records_key))
    return app
