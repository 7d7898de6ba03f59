"""Personal data on the real broker and database: sealed everywhere it is stored or sent, and erasable."""

import contextlib
import uuid

import pytest
from pymongo import AsyncMongoClient

from services.audit.app import AuditSettings
from services.audit.app import create_app as audit_app
from services.intake.app import IntakeSettings
from services.intake.app import create_app as intake_app
from services.referral.app import ReferralSettings
from services.referral.app import create_app as referral_app
from services.verification.app import VerificationSettings
from services.verification.app import create_app as verification_app
from shared import topics
from tests.builders import PILOT_VILLAGE, report_body
from tests.conftest import auth, eventually, serving
from tests.kafka_helpers import TopicReader

pytestmark = pytest.mark.integration


def _kw(infra, isolation):
    # key_cache_seconds=0: erasure is seen at once (by default within 30 s in other processes)
    return dict(env="dev", kafka_bootstrap_servers=infra["kafka"], mongodb_uri=infra["mongo"], key_cache_seconds=0,
                **isolation)


async def _all_documents(client, prefix):
    """Every document of every collection of the test's databases (the services' and the key store)."""
    for name in await client.list_database_names():
        if name.startswith(prefix + "_"):
            for collection in await client[name].list_collection_names():
                async for doc in client[name][collection].find({}):
                    yield name, collection, doc


@contextlib.asynccontextmanager
async def _topic_bytes(bootstrap, names):
    """Collects, on exit, the raw values and headers of every record on `names` since entry, into a bytearray."""
    captured = bytearray()
    async with contextlib.AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(TopicReader(bootstrap, t)) for t in names]
        yield captured
        for reader in readers:
            for record in await reader.drain(lambda r: True, 1.0):
                captured += record.value + b"".join(v for _, v in record.headers or ())


async def test_no_personal_data_in_plaintext_in_any_collection_or_topic_and_erasure(infra, isolation):
    n = uuid.uuid4().int
    nik, name, phone = f"3603{n % 10**12:012d}", f"Wulandari{n % 10**6}", f"0857{n % 10**8:08d}"
    narrative = f"Sponsor-{n % 10**7} menahan paspor korban"
    secrets = [nik, name, phone, "+62" + phone[1:], narrative, "Saksi" + name]
    reporter, verifier = auth("reporter", PILOT_VILLAGE), auth("verifier", "36.03")
    supervisor, admin = auth("supervisor", "36.03"), auth("admin", "36")
    body = report_body(narrative=narrative, persons=[
        {"role": "potential_victim", "name": name, "nik": nik, "phone": phone, "birth_date": "2004-02-29"},
        {"role": "witness", "name": "Saksi" + name}])
    client = AsyncMongoClient(infra["mongo"])
    try:
        async with _topic_bytes(infra["kafka"], topics.ALL) as raw, \
                serving(intake_app(IntakeSettings(**_kw(infra, isolation)))) as intake, \
                serving(verification_app(VerificationSettings(**_kw(infra, isolation)))) as verification, \
                serving(audit_app(AuditSettings(**_kw(infra, isolation)))) as audit:
            filed = await intake.post("/v1/reports", json=body, headers=reporter)
            assert filed.status_code == 201, filed.text
            case_id = filed.json()["case_id"]

            async def screened():
                r = await verification.get(f"/v1/cases/{case_id}", headers=verifier)
                return r.json() if r.status_code == 200 else None

            case = await screened() or await eventually(screened)
            assert case["report"]["persons"][0]["nik"] == nik  # the verifier of the region reads it
            assert case["report"]["persons"][0]["birth_date"] == "2004-02-29"
            asked = await verification.post(f"/v1/cases/{case_id}/decision", headers={**verifier, "If-Match": "1"},
                                             json={"decision": "request_info", "question": f"Di mana {name}?"})
            assert asked.status_code == 200

            async def trailed():
                r = await audit.get(f"/v1/cases/{case_id}/trail/verify", headers=supervisor)
                return r.status_code == 200 and r.json()["entries"] >= 3

            await eventually(trailed, timeout=30)
            stored = [(db, coll, repr(doc)) async for db, coll, doc in _all_documents(client, isolation["db_prefix"])]

            # erasure: the key goes, the data is unreadable everywhere, the trail still verifies
            erased = await audit.post(f"/v1/cases/{case_id}/erasure", headers=admin,
                                      json={"reason": "jadwal retensi arsip"})
            assert erased.status_code == 200
            assert (await audit.post(f"/v1/cases/{case_id}/erasure", headers=supervisor,
                                     json={"reason": "x"})).status_code == 403
            trail = (await audit.get(f"/v1/cases/{case_id}/trail", headers=supervisor)).json()["entries"]
            verdict = (await audit.get(f"/v1/cases/{case_id}/trail/verify", headers=supervisor)).json()
            seen_by_verifier = (await verification.get(f"/v1/cases/{case_id}", headers=verifier)).json()
            seen_by_reporter = (await intake.get(f"/v1/reports/{case_id}", headers=reporter)).json()
    finally:
        await client.close()

    assert stored and raw
    for secret in secrets:
        assert secret.encode() not in raw, f"{secret} in plaintext on a topic"
        leaks = [(db, coll) for db, coll, text in stored if secret in text]
        assert leaks == [], f"{secret} in plaintext in {leaks}"
    reported = next(e for e in trail if e["type"] == "case.reported")
    assert reported["data"]["persons"][0]["nik"] == "[erased]" and reported["data"]["narrative"] == "[erased]"
    assert reported["data"]["persons"][0]["role"] == "potential_victim"  # what is not personal data stays
    assert verdict["valid"] is True
    assert seen_by_verifier["report"]["persons"][0]["name"] == "[erased]"
    assert seen_by_verifier["question"] == "[erased]"
    assert seen_by_reporter["report"]["persons"][0]["nik"] == "[erased]"


async def test_the_unit_a_case_is_referred_to_reads_its_persons_and_its_notes_stay_sealed(infra, isolation):
    n = uuid.uuid4().int
    nik, name = f"3603{n % 10**12:012d}", f"Rahmawati{n % 10**6}"
    reporter, verifier = auth("reporter", PILOT_VILLAGE), auth("verifier", "36.03")
    investigator = auth("investigator", "36", unit="bp3mi_banten")
    client = AsyncMongoClient(infra["mongo"])
    try:
        async with _topic_bytes(infra["kafka"], (topics.VERIFICATION, topics.REFERRAL)) as raw, \
                serving(intake_app(IntakeSettings(**_kw(infra, isolation)))) as intake, \
                serving(verification_app(VerificationSettings(**_kw(infra, isolation)))) as verification, \
                serving(referral_app(ReferralSettings(**_kw(infra, isolation)))) as referral:
            filed = await intake.post("/v1/reports", headers=reporter, json=report_body(persons=[
                {"role": "potential_victim", "name": name, "nik": nik, "age": 23}]))
            case_id = filed.json()["case_id"]

            async def screened():
                return (await verification.get(f"/v1/cases/{case_id}", headers=verifier)).status_code == 200

            await eventually(screened)
            verified = await verification.post(f"/v1/cases/{case_id}/decision", headers={**verifier, "If-Match": "1"},
                                               json={"decision": "verify", "case_types": ["np_pmi"],
                                                     "note": f"{name} akan berangkat"})
            assert verified.status_code == 200

            async def listed():
                r = await referral.get("/v1/referrals", headers=investigator, params={"case_id": case_id})
                return r.json()["items"] if r.status_code == 200 and r.json()["items"] else None

            [item] = await eventually(listed)
            assert "persons" not in item  # lists carry no personal data
            one = (await referral.get(f"/v1/referrals/{item['referral_id']}", headers=investigator)).json()
            assert [p["nik"] for p in one["persons"]] == [nik] and one["persons"][0]["name"] == name
            await referral.post(f"/v1/referrals/{item['referral_id']}/acknowledge", headers=investigator, json={})
            await referral.post(f"/v1/referrals/{item['referral_id']}/accept", headers=investigator, json={})
            updated = await referral.post(f"/v1/referrals/{item['referral_id']}/updates", headers=investigator,
                                          json={"note": f"{name} ditunda di bandara"})
            assert updated.status_code == 200
            assert updated.json()["milestones"][0]["note"] == "[masked]"
            reread = (await referral.get(f"/v1/referrals/{item['referral_id']}", headers=investigator)).json()
            assert reread["milestones"][0]["note"] == f"{name} ditunda di bandara"
            stored = [(db, coll, repr(doc)) async for db, coll, doc in _all_documents(client, isolation["db_prefix"])]
    finally:
        await client.close()
    for secret in (nik, name):
        assert secret.encode() not in raw, f"{secret} in plaintext on a topic"
        assert [(db, coll) for db, coll, text in stored if secret in text] == []
