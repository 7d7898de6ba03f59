"""The benchmark's synchronous alternative (issue #12): one FastAPI process that does in its request handlers what
Waspada's services do over Kafka, against the same database, with the same paths the benchmark's clients call.

- POST /v1/reports: check the token, validate (intake's ReportIn), file (intake's `file_report`; personal data not
  sealed), screen (verification's screening.py), store the case and append `case.reported` and `case.screened`;
- GET /v1/queue, GET /v1/cases/{id}; POST /v1/cases/{id}/decision with If-Match: route (referral's routing.py),
  store the referrals, append `case.verified` and each `referral.created`;
- GET /v1/referrals; POST /v1/referrals/{id}/acknowledge: append `referral.acknowledged`.
The trail entries are audit's (`chain_entry`: hash-chained, one collection, `recorded_at`). No outbox, no Kafka,
no second copy: what the design pays for is what the benchmark compares against. Like the services, it writes
again when FerretDB's SQLite backend answers `database is locked`.

    python -m tests.bench_sync --port 18150 --database benchsync
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request
from pydantic import ValidationError
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import OperationFailure

from services.audit.domain import chain_entry
from services.intake.domain import ReportIn, file_report
from services.referral import routing
from services.verification import screening
from shared.auth import decode_token, load_public_keys
from shared.contracts import intake
from shared.contracts.envelope import Envelope
from shared.settings import DEV_JWT_PUBLIC_KEY
from tests.bench import MONGO

KEYS = load_public_keys(DEV_JWT_PUBLIC_KEY)


class NoSeal:
    erased = False

    def report(self, report: dict[str, Any]) -> dict[str, Any]:
        return report

    def __call__(self, value: Any) -> Any:
        return value


def _event(kind: str, case_id: str, producer: str, data: dict[str, Any], now: datetime) -> Envelope:
    return Envelope(event_id=str(uuid.uuid4()), type=kind, schema_version=1, occurred_at=now, case_id=case_id,
                    producer=producer, correlation_id=case_id, data=data)


async def busy(write: Callable[[], Awaitable[Any]]) -> Any:
    """A write again when FerretDB's SQLite backend answers `database is locked` (it did not write)."""
    for attempt in range(30):
        try:
            return await write()
        except OperationFailure as exc:
            if "SQLITE_BUSY" not in str(exc) or attempt == 29:
                raise
            await asyncio.sleep(0.01 * (attempt + 1))


def build(database: str, mongo: str = MONGO) -> FastAPI:
    db = AsyncMongoClient(mongo)[database]
    cases, referrals, trail = db["cases"], db["referrals"], db["trail"]

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await trail.create_index([("case_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        yield

    app = FastAPI(lifespan=lifespan)

    def principal(authorization: str | None):
        try:
            return decode_token(KEYS, (authorization or "").removeprefix("Bearer "))
        except Exception as exc:
            raise HTTPException(401, "unauthorized") from exc

    async def append(case: dict[str, Any], events: list[Envelope]) -> None:
        """Chain the events onto the case's trail (head kept on the case document), one insert."""
        head = {"seq": case["trail_seq"], "hash": case["trail_hash"]} if case.get("trail_seq") else None
        entries = []
        for event in events:
            head = chain_entry(event, head, datetime.now(UTC))
            entries.append(head)
        await busy(lambda: trail.insert_many(entries))
        await busy(lambda: cases.update_one({"_id": case["_id"]},
                                            {"$set": {"trail_seq": head["seq"], "trail_hash": head["hash"]}}))

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/reports", status_code=201)
    async def report(request: Request, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        reporter = principal(authorization)
        try:
            body = ReportIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise HTTPException(422, "invalid report") from exc
        now, case_id = datetime.now(UTC), str(uuid.uuid4())
        doc, outgoing = file_report(body, reporter, case_id=case_id, number=f"3603-{now.year}-{case_id[:6]}",
                                    idempotency_id=case_id, fingerprint=case_id, now=now, seal=NoSeal())
        reported = outgoing[0].event
        report_payload = intake.CaseReported.model_validate(doc["report"])
        screened = screening.screen(report_payload, screening.today_of(now))
        screened_event = _event("case.screened", case_id, "verification", screened.model_dump(mode="json"), now)
        case = {**doc, "status": "awaiting_decision", "version": 1, "screening": screened.model_dump(mode="json"),
                "priority_rank": screening.PRIORITY_RANK[screened.priority]}
        await busy(lambda: cases.insert_one(case))
        await append(case, [reported, screened_event])
        return {"case_id": case_id, "case_number": doc["case_number"]}

    @app.get("/v1/queue")
    async def queue(authorization: Annotated[str | None, Header()] = None, limit: int = 50) -> dict[str, Any]:
        principal(authorization)
        docs = await cases.find({"status": "awaiting_decision"}, {"_id": 1}).limit(limit).to_list()
        return {"items": [{"case_id": d["_id"]} for d in docs], "next": None}

    @app.get("/v1/cases/{case_id}")
    async def case(case_id: str, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        principal(authorization)
        doc = await cases.find_one({"_id": case_id}, {"report": 0})
        if doc is None:
            raise HTTPException(404, "no such case")
        return {"case_id": case_id, "status": doc["status"], "version": doc["version"]}

    @app.post("/v1/cases/{case_id}/decision")
    async def decision(case_id: str, body: dict[str, Any], if_match: Annotated[str, Header()],
                       authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        verifier = principal(authorization)
        doc = await cases.find_one({"_id": case_id})
        if doc is None:
            raise HTTPException(404, "no such case")
        if if_match.strip('"') != str(doc["version"]) or doc["status"] != "awaiting_decision":
            raise HTTPException(412, "the case changed")
        now = datetime.now(UTC)
        report_payload = intake.CaseReported.model_validate(doc["report"])
        screened = screening.screen(report_payload, screening.today_of(now))
        situation = screening.situation(report_payload, screened, screening.today_of(now),
                                        person_threatened=False, victim_abroad=False)
        routes = routing.route(body["case_types"], situation, doc["report"]["village_code"])
        changed = await busy(lambda: cases.update_one({"_id": case_id, "version": doc["version"]},
                                                      {"$set": {"status": "verified", "version": doc["version"] + 1}}))
        if changed.modified_count != 1:
            raise HTTPException(412, "the case changed")
        events = [_event("case.verified", case_id, "verification",
                         {"case_types": body["case_types"], "by": verifier.sub}, now)]
        made = [{"_id": str(uuid.uuid4()), "case_id": case_id, "agency_id": r.agency_id, "status": "created",
                 "priority": screened.priority, "created_at": now.isoformat()} for r in routes]
        events += [_event("referral.created", case_id, "referral",
                          {"referral_id": r["_id"], "agency_id": r["agency_id"]}, now) for r in made]
        await append(doc, events)  # before the referrals exist: their acknowledgement chains after these
        await busy(lambda: referrals.insert_many(made))
        return {"case_id": case_id, "status": "verified", "version": doc["version"] + 1}

    @app.get("/v1/referrals")
    async def inbox(authorization: Annotated[str | None, Header()] = None, status: str = "created",
                    limit: int = 50) -> dict[str, Any]:
        unit = principal(authorization).unit
        docs = await referrals.find({"agency_id": unit, "status": status}).limit(limit).to_list()
        return {"items": [{"referral_id": d["_id"], "case_id": d["case_id"]} for d in docs], "next": None}

    @app.post("/v1/referrals/{referral_id}/acknowledge")
    async def acknowledge(referral_id: str, authorization: Annotated[str | None, Header()] = None
                          ) -> dict[str, Any]:
        investigator = principal(authorization)
        doc = await referrals.find_one({"_id": referral_id})
        if doc is None or doc["agency_id"] != investigator.unit:
            raise HTTPException(404, "no such referral")
        if doc["status"] != "created":
            raise HTTPException(409, "already acknowledged")
        now = datetime.now(UTC)
        await busy(lambda: referrals.update_one({"_id": referral_id}, {"$set": {"status": "acknowledged"}}))
        case_doc = await cases.find_one({"_id": doc["case_id"]}, {"trail_seq": 1, "trail_hash": 1})
        await append(case_doc, [_event("referral.acknowledged", doc["case_id"], "referral",
                                       {"referral_id": referral_id, "by": investigator.sub}, now)])
        return {"referral_id": referral_id, "status": "acknowledged"}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args()
    uvicorn.run(build(args.database), host="127.0.0.1", port=args.port, log_level="warning")
