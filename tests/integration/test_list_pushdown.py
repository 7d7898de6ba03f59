"""The list queries' equality filters are answered by the database, not by FerretDB reading every document.

FerretDB's PostgreSQL backend (the embedded default, infra/local/infra.sh) turns equality filters on top-level
strings into SQL; its SQLite backend answers only `_id` in SQL and decodes the whole collection for anything else.
With WASPADA_FERRETDB_BACKEND=sqlite this file is skipped; on MongoDB (compose) explain has no such field."""

import os
import subprocess

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


async def test_ferretdbs_prepared_lookups_are_planned_with_their_values(db):
    """FerretDB's driver prepares `_jsonb -> $1 @> $2` (the field a parameter); PostgreSQL would switch such a
    statement to a generic plan after five runs when that looks no dearer, which cannot use the lookup indexes and
    opens every stored document instead (7 ms for a read by _id among 600 cases, against 0.02 ms). A statement run
    six times on a small table (as a new one is when a service starts) is still planned with its values."""
    name = "plans"  # (the database is the test's own)
    await db[name].insert_many([{"_id": f"d{n}", "blob": "x" * 2000} for n in range(20)])
    if "filterPushdown" not in await db.command("explain", {"find": name, "filter": {"_id": "d7"}},
                                                verbosity="queryPlanner"):
        pytest.skip("not FerretDB on PostgreSQL: no prepared statements of its own to plan")
    port, pg_bin = os.environ.get("POSTGRES_PORT", "5432"), os.environ.get("POSTGRES_BIN", "/usr/lib/postgresql/15/bin")

    def psql(sql: str) -> str:
        return subprocess.run([f"{pg_bin}/psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "ferretdb",
                               "-tA", "-v", "ON_ERROR_STOP=1"], input=sql, capture_output=True, text=True,
                              check=True).stdout

    [table] = psql(f"SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = '{db.name}' "
                   f"AND tablename LIKE '{name}%'").split()
    plan = psql(f"ANALYZE {table};\n"  # as autovacuum does once a new table has its first rows
                f"PREPARE q(text, jsonb) AS SELECT _jsonb FROM {table} WHERE _jsonb -> $1 @> $2;\n"
                + "EXECUTE q('_id', '\"d7\"');\n" * 6 + "EXPLAIN EXECUTE q('_id', '\"d7\"');\n")
    assert "'_id'::text" in plan and "$1" not in plan, plan  # a plan of the values, not a generic one
