"""The staff pages (issue #10): the verifier's queue and case page, the investigator's referral inbox, the
supervisor's search, trail, dashboard and accounts trail, the admin's accounts. Built on the reporter app's
foundation (sessions, upstream client, i18n, security headers, base template)."""

from __future__ import annotations

from fastapi import APIRouter

from services.web.pages import Pages
from services.web.staff import admin, investigator, supervisor, verifier
from services.web.staff.common import HOMES, StaffPages

__all__ = ["HOMES", "routes"]


def routes(pages: Pages) -> APIRouter:
    staff = StaffPages(pages)
    router = APIRouter(include_in_schema=False)
    for part in (verifier, investigator, supervisor, admin):
        router.include_router(part.routes(staff))
    return router
