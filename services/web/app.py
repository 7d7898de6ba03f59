"""Composition root of the web service: pages for people, over the other services' public HTTP APIs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import structlog
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import Field
from starlette.middleware.gzip import GZipMiddleware

from services.web import handlers, reporter, staff
from services.web.i18n import load_catalogs
from services.web.pages import STATIC, Pages
from services.web.security import PageHeaders
from services.web.sessions import SessionStore
from services.web.upstream import Upstream
from shared import mongo
from shared.clock import Clock, SystemClock
from shared.http import create_api
from shared.logging import configure_logging
from shared.settings import ServiceSettings

log = structlog.get_logger()
HERE = Path(__file__).parent


class WebSettings(ServiceSettings):
    service: str = "web"
    port: int = 8000
    identity_url: str = "http://127.0.0.1:8005"
    intake_url: str = "http://127.0.0.1:8001"
    verification_url: str = "http://127.0.0.1:8002"
    referral_url: str = "http://127.0.0.1:8003"
    audit_url: str = "http://127.0.0.1:8004"
    upstream_timeout_s: float = Field(15.0, gt=0)
    # A session ends after this long without use, and in any case after `session_longest_hours`.
    session_idle_hours: float = Field(12.0, gt=0)
    session_longest_hours: float = Field(24.0 * 14, gt=0)
    # The Secure flag; browsers accept Secure cookies on http://127.0.0.1 and http://localhost.
    cookie_secure: bool = True


def asset_version(static: Path = STATIC) -> str:
    """Hash of every served file: part of asset URLs and of the service worker, so a change reaches phones."""
    digest = hashlib.sha256()
    for path in sorted(p for p in static.rglob("*") if p.is_file()):
        digest.update(path.relative_to(static).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def create_app(settings: WebSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or WebSettings()
    configure_logging(settings.service, settings.log_level, settings.log_json)
    clock = clock or SystemClock()
    client = mongo.connect(settings.mongodb_uri, settings.mongo_pool_size)
    sessions = SessionStore(client[settings.database_name], clock, idle=timedelta(hours=settings.session_idle_hours),
                            longest=timedelta(hours=settings.session_longest_hours))
    upstream = Upstream({"identity": settings.identity_url, "intake": settings.intake_url,
                         "verification": settings.verification_url, "referral": settings.referral_url,
                         "audit": settings.audit_url}, settings.upstream_timeout_s)
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                            trim_blocks=True, lstrip_blocks=True)
    pages = Pages(templates=templates, catalogs=load_catalogs(), sessions=sessions, upstream=upstream, clock=clock,
                  version=asset_version(), cookie_secure=settings.cookie_secure)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sessions.ensure_indexes()

        async def purge() -> None:
            while True:
                await asyncio.sleep(600)
                with contextlib.suppress(mongo.PyMongoError):
                    await sessions.purge_expired()

        task = asyncio.create_task(purge())
        log.info("service_started", port=settings.port, database=settings.database_name)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await upstream.close()
            await client.close()
            log.info("service_stopped")

    async def database_ready() -> None:
        await mongo.ping(client)

    app = create_api(title="waspada-web", description="Pages for reporters and staff, over the five services' APIs.",
                     lifespan=lifespan, readiness=[("database", database_ready)],
                     max_body_bytes=settings.max_body_bytes)
    app.state.pages = pages
    handlers.install_redirects(app)
    app.add_middleware(PageHeaders)
    app.add_middleware(GZipMiddleware, minimum_size=512)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(handlers.routes(pages))
    app.include_router(reporter.routes(pages))
    app.include_router(staff.routes(pages))
    return app
