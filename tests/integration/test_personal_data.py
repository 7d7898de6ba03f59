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
from services.verification import linking
from services.verification.app import VerificationSettings
from services.verification.app import create_app as verification_app
from shared import topics
from shared.contracts.access import CaseErased
from shared.contracts.envelope import new_event
from shared.crypto import KeyStore, keystore_for, master_key_from
from tests.builders import PILOT_VILLAGE, case_reported, report_body
from tests.conftest import auth, eventually, serving
from tests.kafka_helpers import TopicReader, publish

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
    route, purpose = f"lewat gudang Haji-{n % 10**5}", f"permintaan keluarga {name}"
    withdrawal, basis = f"{name} sudah pulang", f"jadwal retensi arsip {n % 10**4}"
    secrets = [nik, name, phone, "+62" + phone[1:], narrative, "Saksi" + name, route, basis]
    reporter, verifier = auth("reporter", PILOT_VILLAGE), auth("verifier", "36.03")
    supervisor, admin = auth("supervisor", "36.03"), auth("admin", "36")
    body = report_body(narrative=narrative, persons=[
        {"role": "potential_victim", "name": name, "nik": nik, "phone": phone, "birth_date": "2004-02-29"},
        {"role": "witness", "name": "Saksi" + name}], departure={"port": "CGK", "route": route})
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
            exported = await audit.get(f"/v1/cases/{case_id}/trail/export", headers=supervisor,
                                       params={"purpose": purpose})
            assert exported.status_code == 200
            withdrawn = await intake.post(f"/v1/reports/{case_id}/withdraw", headers=reporter,
                                          json={"reason": withdrawal})
            assert withdrawn.status_code == 200, withdrawn.text
            stored = [(db, coll, repr(doc)) async for db, coll, doc in _all_documents(client, isolation["db_prefix"])]

            # erasure: the key goes, the data is unreadable everywhere, the trail still verifies
            erased = await audit.post(f"/v1/cases/{case_id}/erasure", headers=admin, json={"reason": basis})
            assert erased.status_code == 200
            assert (await audit.post(f"/v1/cases/{case_id}/erasure", headers=supervisor,
                                     json={"reason": "x"})).status_code == 403
            async def erasure_recorded():
                entries = (await audit.get(f"/v1/cases/{case_id}/trail", headers=supervisor)).json()["entries"]
                return entries if any(e["type"] == "case.erased" for e in entries) else None

            trail = await eventually(erasure_recorded, timeout=30)
            verdict = (await audit.get(f"/v1/cases/{case_id}/trail/verify", headers=supervisor)).json()
            seen_by_verifier = (await verification.get(f"/v1/cases/{case_id}", headers=verifier)).json()
            seen_by_reporter = (await intake.get(f"/v1/reports/{case_id}", headers=reporter)).json()
            stored += [(db, coll, repr(doc)) async for db, coll, doc in _all_documents(client, isolation["db_prefix"])]
    finally:
        await client.close()

    assert stored and raw
    for secret in (*secrets, purpose, withdrawal):
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
    assert seen_by_reporter["report"]["departure"] == {**seen_by_reporter["report"]["departure"], "port": "CGK",
                                                       "route": "[erased]"}
    [erasure] = [e for e in trail if e["type"] == "case.erased"]
    assert erasure["data"]["reason"] == basis  # the legal basis outlives the case's key (sealed with the records key)
    [export] = [e for e in trail if e["type"] == "case.exported"]
    assert export["data"]["purpose"] == "[erased]"


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


async def test_after_erasure_text_about_the_case_is_refused_and_never_stored_in_plaintext(infra, isolation):
    n = uuid.uuid4().int
    note, reason, purpose = f"Korban-{n % 10**7} dipulangkan", f"Alasan-{n % 10**7}", f"Tujuan-{n % 10**7}"
    reporter, verifier = auth("reporter", PILOT_VILLAGE), auth("verifier", "36.03")
    investigator = auth("investigator", "36", unit="bp3mi_banten")
    supervisor, admin = auth("supervisor", "36.03"), auth("admin", "36")
    client = AsyncMongoClient(infra["mongo"])
    try:
        async with _topic_bytes(infra["kafka"], topics.ALL) as raw, \
                serving(intake_app(IntakeSettings(**_kw(infra, isolation)))) as intake, \
                serving(verification_app(VerificationSettings(**_kw(infra, isolation)))) as verification, \
                serving(referral_app(ReferralSettings(**_kw(infra, isolation)))) as referral, \
                serving(audit_app(AuditSettings(**_kw(infra, isolation)))) as audit:
            case_id = (await intake.post("/v1/reports", headers=reporter, json=report_body())).json()["case_id"]
            await eventually(lambda: _status(verification, f"/v1/cases/{case_id}", verifier, 200))
            verified = await verification.post(f"/v1/cases/{case_id}/decision", headers={**verifier, "If-Match": "1"},
                                               json={"decision": "verify", "case_types": ["np_pmi"]})
            assert verified.status_code == 200
            [item] = await eventually(lambda: _items(referral, case_id, investigator))
            url = f"/v1/referrals/{item['referral_id']}"
            for step in ("acknowledge", "accept"):
                assert (await referral.post(f"{url}/{step}", headers=investigator, json={})).status_code == 200
            await eventually(lambda: _status(audit, f"/v1/cases/{case_id}/trail", supervisor, 200))
            assert (await audit.post(f"/v1/cases/{case_id}/erasure", headers=admin,
                                     json={"reason": "retensi"})).status_code == 200

            refused = [await referral.post(f"{url}/updates", headers=investigator, json={"note": note}),
                       await referral.post(f"{url}/close", headers=investigator,
                                           json={"outcome": "other", "note": reason}),
                       await audit.get(f"/v1/cases/{case_id}/trail/export", headers=supervisor,
                                       params={"purpose": purpose}),
                       await intake.post(f"/v1/reports/{case_id}/withdraw", headers=reporter,
                                         json={"reason": reason})]
            # nothing personal: still allowed
            milestone = await referral.post(f"{url}/updates", headers=investigator,
                                            json={"milestone": {"kind": "lp_filed", "lp_number": "LP/B/1/XI/2026"}})
            closed = await referral.post(f"{url}/close", headers=investigator, json={"outcome": "transferred"})
            exported = await audit.get(f"/v1/cases/{case_id}/trail/export", headers=supervisor)
            stored = [(db, coll, repr(doc)) async for db, coll, doc in _all_documents(client, isolation["db_prefix"])]
    finally:
        await client.close()
    assert [(r.status_code, r.json()["error"]["code"]) for r in refused[:2]] == [(409, "case_erased")] * 2
    assert refused[2].status_code == 409 and refused[2].json()["error"]["code"] == "case_erased"
    assert refused[3].status_code == 409  # the report is verified: no withdrawal either way
    assert (milestone.status_code, closed.status_code, exported.status_code) == (200, 200, 200)
    for secret in (note, reason, purpose):
        assert secret.encode() not in raw, f"{secret} in plaintext on a topic"
        assert [(db, coll) for db, coll, text in stored if secret in text] == []


async def _status(http, url, headers, expected):
    return (await http.get(url, headers=headers)).status_code == expected


async def _items(referral, case_id, headers):
    r = await referral.get("/v1/referrals", headers=headers, params={"case_id": case_id})
    return r.json()["items"] if r.status_code == 200 and r.json()["items"] else None


async def test_an_erased_case_can_no_longer_be_found_by_its_identifiers(infra, isolation):
    n = uuid.uuid4().int
    nik, recruiter_phone = f"3603{n % 10**12:012d}", f"0813{(n // 7) % 10**8:08d}"
    people = [{"role": "potential_victim", "name": f"Lestari{n % 10**6}", "nik": nik},
              {"role": "recruiter", "name": f"Calo{n % 10**6}", "phone": recruiter_phone}]
    reporter, verifier = auth("reporter", PILOT_VILLAGE), auth("verifier", "36.03")
    supervisor, admin = auth("supervisor", "36.03"), auth("admin", "36")
    client = AsyncMongoClient(infra["mongo"])
    db = client[f"{isolation['db_prefix']}_verification"]
    try:
        async with serving(intake_app(IntakeSettings(**_kw(infra, isolation)))) as intake, \
                serving(verification_app(VerificationSettings(**_kw(infra, isolation)))) as verification, \
                serving(audit_app(AuditSettings(**_kw(infra, isolation)))) as audit:
            watched = await verification.post("/v1/watchlist", headers=supervisor,
                                              json={"kind": "phone", "value": recruiter_phone})
            assert watched.status_code == 201

            async def filed():
                case_id = (await intake.post("/v1/reports", headers=reporter,
                                             json=report_body(persons=people))).json()["case_id"]
                return await eventually(lambda: _case(verification, case_id, verifier))

            first = await filed()
            second_case = await filed()
            second = await eventually(lambda: _linked(verification, second_case["case_id"], verifier,
                                                      first["case_id"]))
            assert first["watchlist_hits"] and await _refs(db, first["case_id"])

            async def known_to_audit():  # its read model takes in a case's events every few seconds
                return (await audit.get(f"/v1/cases/{first['case_id']}/trail", headers=supervisor)).status_code == 200

            await eventually(known_to_audit, timeout=30)
            erased = await audit.post(f"/v1/cases/{first['case_id']}/erasure", headers=admin,
                                      json={"reason": "retensi"})
            assert erased.status_code == 200

            async def forgotten():
                gone = not await _refs(db, first["case_id"])
                other = await _case(verification, second["case_id"], verifier)
                return gone and other and not any(link["case_id"] == first["case_id"] for link in other["links"])

            await eventually(forgotten, timeout=30)
            after = await _case(verification, first["case_id"], verifier)
            third = await filed()
            third = await eventually(lambda: _linked(verification, third["case_id"], verifier, second["case_id"]))
    finally:
        await client.close()
    assert after["links"] == [] and after["watchlist_hits"] == [] and after["screening"]["watchlist_hits"] == []
    assert [link["case_id"] for link in third["links"]] == [second["case_id"]]  # not the erased case


async def _case(verification, case_id, headers):
    r = await verification.get(f"/v1/cases/{case_id}", headers=headers)
    return r.json() if r.status_code == 200 else None


async def _linked(verification, case_id, headers, other):
    case = await _case(verification, case_id, headers)
    return case if case and any(link["case_id"] == other for link in case["links"]) else None


async def _refs(db, case_id):
    """Link-index documents (identifier digests, village-days) that still name the case."""
    found = []
    for collection in ("identities", "village_days"):
        async for doc in db[collection].find({}):
            found += [doc["_id"] for ref in linking.refs_of(doc) if ref["case_id"] == case_id]
    return found


async def test_an_erasure_recorded_but_not_carried_out_is_finished_when_audit_reads_the_record(infra, isolation):
    """A crash between writing the erasure's record and destroying the key: the record, published later by the
    outbox sweeper, destroys the key when audit consumes it."""
    reported = case_reported()
    settings = AuditSettings(**_kw(infra, isolation))
    client = AsyncMongoClient(infra["mongo"])
    keys = keystore_for(client, settings)
    try:
        await keys.key_for_new_case(reported.case_id)
        record = new_event(CaseErased(service="audit", reason="x"), case_id=reported.case_id, producer="audit",
                           actor=None, correlation_id=reported.case_id, causation_id=None)
        async with serving(audit_app(settings)):
            await publish(infra["kafka"], topics.INTAKE, reported)
            await publish(infra["kafka"], topics.ACCESS, record)
            await eventually(lambda: keys.is_erased(reported.case_id), timeout=30)
        assert await keys.key(reported.case_id) is None
    finally:
        await client.close()


async def test_the_key_cache_is_bounded_and_forgets_an_erased_key_at_once(infra, isolation):
    settings = AuditSettings(**_kw(infra, isolation))
    client = AsyncMongoClient(infra["mongo"])
    master = master_key_from(settings.master_key.get_secret_value())
    here = KeyStore(client[settings.keystore_name], master, cache_seconds=3600, cache_size=2)
    elsewhere = KeyStore(client[settings.keystore_name], master, cache_seconds=3600, cache_size=2)
    try:
        ids = [str(uuid.uuid4()) for _ in range(3)]
        for case_id in ids:
            await here.key_for_new_case(case_id)
        assert [here.cached(case_id) for case_id in ids] == [False, True, True]  # at most two held
        assert await elsewhere.key(ids[2]) is not None and elsewhere.cached(ids[2])
        assert await here.erase(ids[2], "2026-11-30T00:00:00+00:00") is True
        assert await here.key(ids[2]) is None and not here.cached(ids[2])  # at once where it was erased
        assert await here.erase(ids[2], "2026-11-30T00:00:01+00:00") is False  # idempotent
        elsewhere.forget(ids[2])  # another process, when its consumer reads `case.erased`
        assert await elsewhere.key(ids[2]) is None
        assert await here.key(ids[0]) is not None  # dropped from the cache, still in the store
    finally:
        await client.close()
