"""The list queries' equality filters are answered by the database, not by FerretDB reading every document.

FerretDB's PostgreSQL backend (the embedded default, infra/local/infra.sh) turns equality filters on top-level
strings into SQL; its SQLite backend answers only `_id` in SQL and decodes the whole collection for anything else.
With WASPADA_FERRETDB_BACKEND=sqlite this file is skipped; on MongoDB (compose) explain has no such field."""

import os

import pytest
from pymongo import AsyncMongoClient

from services.referral.store import _URGENT_FIRST
from services.verification.store import QUEUE_ORDER

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.environ.get("WASPADA_FERRETDB_BACKEND") == "sqlite",
                                 reason="FerretDB's SQLite backend pushes down only _id")]


@pytest.fixture
async def db(infra, isolation):
    client = AsyncMongoClient(infra["mongo"], tz_aware=True)
    yield client[f"{isolation['db_prefix']}_pushdown"]
    await client.close()


async def _pushed_down(db, collection: str, query: dict, sort: list) -> bool:
    await db[collection].insert_one({"_id": "x", "status": "awaiting_decision", "region_path": ["36", "36.03"],
                                     "agency_id": "polresta_tangerang", "case_id": "c1", "seq": 1})
    plan = await db.command("explain", {"find": collection, "filter": query, "sort": dict(sort), "limit": 51},
                            verbosity="queryPlanner")
    if "filterPushdown" not in plan:
        pytest.skip("not FerretDB: the server plans with its own indexes")
    return plan["filterPushdown"]


async def test_the_verifier_queue_filters_in_the_database(db):
    query = {"status": "awaiting_decision", "region_path": "36.03"}
    assert await _pushed_down(db, "queue", query, [(f, 1) for f in QUEUE_ORDER])  # its entries, not the cases


async def test_a_units_referral_inbox_filters_in_the_database(db):
    assert await _pushed_down(db, "referrals", {"agency_id": "polresta_tangerang"}, _URGENT_FIRST)


async def test_one_cases_trail_filters_in_the_database(db):
    assert await _pushed_down(db, "trail", {"case_id": "c1"}, [("seq", 1)])


def _index_names(plan: dict) -> set[str]:
    names = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        names |= _index_names(child)
    return names


@pytest.mark.parametrize(("collection", "field"), [("cases", "_id"), ("referrals", "agency_id"), ("trail", "case_id")])
async def test_an_equality_filter_is_answered_from_an_index_not_a_scan(db, collection, field):
    """FerretDB filters with `_jsonb -> 'field' @> value`, which its own btree indexes cannot answer: without the
    GIN indexes infra/local/postgres/lookups.sql adds beside them, a read by _id scans the whole table."""
    if field != "_id":
        await db[collection].create_index([(field, 1)])
    await db[collection].insert_many([{"_id": f"d{n}", "agency_id": f"unit-{n % 50}", "case_id": f"c{n % 300}"}
                                      for n in range(2000)])
    value = {"_id": "d1234", "agency_id": "unit-7", "case_id": "c42"}[field]
    plan = await db.command("explain", {"find": collection, "filter": {field: value}}, verbosity="queryPlanner")
    if "filterPushdown" not in plan:
        pytest.skip("not FerretDB: the server plans with its own indexes")
    assert plan["filterPushdown"]
    assert any(name.endswith("_lookup") for name in _index_names(plan["queryPlanner"]["Plan"])), plan["queryPlanner"]
