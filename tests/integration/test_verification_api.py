"""The verifier's API on the real database and broker: queue order and scope, decisions with If-Match."""

import asyncio

import pytest

from services.verification.app import VerificationSettings, create_app
from shared import topics
from shared.contracts import intake
from shared.contracts.envelope import Envelope, new_event
from tests.builders import OTHER_VILLAGE, case_reported
from tests.conftest import auth, eventually, serving
from tests.kafka_helpers import TopicReader, header, publish

pytestmark = pytest.mark.integration
VERIFIER = auth("verifier", "36.03")


def _app(infra, isolation):
    return create_app(VerificationSettings(env="dev", kafka_bootstrap_servers=infra["kafka"],
                                           mongodb_uri=infra["mongo"], **isolation))


async def _screened(http, case_id):
    async def probe():
        r = await http.get(f"/v1/cases/{case_id}", headers=VERIFIER)
        return r if r.status_code == 200 else None

    return await eventually(probe)


async def test_two_verifiers_deciding_at_once_exactly_one_wins(infra, isolation):
    event = case_reported()
    async with serving(_app(infra, isolation)) as http:
        await publish(infra["kafka"], topics.INTAKE, event)
        case = await _screened(http, event.case_id)
        version = case.headers["ETag"]
        other = auth("verifier", "36.03")
        results = await asyncio.gather(
            http.post(f"/v1/cases/{event.case_id}/decision", headers={**VERIFIER, "If-Match": version},
                      json={"decision": "verify", "case_types": ["np_pmi"]}),
            http.post(f"/v1/cases/{event.case_id}/decision", headers={**other, "If-Match": version},
                      json={"decision": "reject", "reason": "tidak cukup bukti"}),
        )
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 409], [r.text for r in results]
        loser = next(r for r in results if r.status_code == 409).json()
        assert loser["error"]["details"]["current"]["status"] in ("verified", "rejected")
        missing = await http.post(f"/v1/cases/{event.case_id}/decision", headers=VERIFIER,
                                  json={"decision": "reject", "reason": "x"})
        assert missing.status_code == 428


async def test_the_queue_is_most_urgent_first_then_oldest_and_only_the_verifiers_region(infra, isolation):
    child = [intake.Person(person_id="p", role="potential_victim", name="Anak", age=15)]
    low = case_reported(indicators=["family_pressed_to_sign"])
    critical = case_reported(indicators=["family_pressed_to_sign"], persons=child)
    high = case_reported(indicators=["unlicensed_recruiter", "no_written_contract", "non_work_visa"],
                         village_code=OTHER_VILLAGE)
    async with serving(_app(infra, isolation)) as http:
        for event in (low, critical, high):
            await publish(infra["kafka"], topics.INTAKE, event)
        for event in (low, critical, high):
            await _screened(http, event.case_id)
        queue = (await http.get("/v1/queue", headers=VERIFIER)).json()["items"]
        assert [i["case_id"] for i in queue] == [critical.case_id, high.case_id, low.case_id]
        only_critical = (await http.get("/v1/queue", headers=VERIFIER, params={"priority": "critical"})).json()
        assert [i["case_id"] for i in only_critical["items"]] == [critical.case_id]
        village = (await http.get("/v1/queue", headers=VERIFIER, params={"village_code": OTHER_VILLAGE})).json()
        assert [i["case_id"] for i in village["items"]] == [high.case_id]
        elsewhere = auth("verifier", "36.01")
        assert (await http.get("/v1/queue", headers=elsewhere)).json()["items"] == []
        assert (await http.get(f"/v1/cases/{low.case_id}", headers=elsewhere)).status_code == 404
        assert (await http.get("/v1/queue", headers=auth("reporter", "36.03.11.2009"))).status_code == 403
        assert (await http.get("/v1/queue")).status_code == 401
        first = (await http.get("/v1/queue", headers=VERIFIER, params={"limit": 2})).json()
        second = (await http.get("/v1/queue", headers=VERIFIER, params={"limit": 2, "cursor": first["next"]})).json()
        assert [i["case_id"] for i in first["items"] + second["items"]] == [critical.case_id, high.case_id,
                                                                             low.case_id]
        assert second["next"] is None


async def test_reports_from_two_villages_sharing_a_recruiter_are_linked_both_ways(infra, isolation):
    recruiter = {"role": "recruiter", "name": "Pak Darto", "phone": "+6281377778888"}
    first = case_reported(persons=[intake.Person(person_id="a", **recruiter)])
    second = case_reported(village_code=OTHER_VILLAGE,
                           persons=[intake.Person(person_id="b", **{**recruiter, "name": "Darto"})])
    async with serving(_app(infra, isolation)) as http, TopicReader(infra["kafka"], topics.VERIFICATION) as out:
        await publish(infra["kafka"], topics.INTAKE, first)
        screened_first = (await _screened(http, first.case_id)).json()
        await publish(infra["kafka"], topics.INTAKE, second)
        linked = await out.collect(lambda r: header(r, topics.HEADER_EVENT_TYPE) == "case.linked"
                                   and header(r, topics.HEADER_CASE_ID) in (first.case_id, second.case_id), count=2)
        newer = (await _screened(http, second.case_id)).json()

        async def older_linked():
            body = (await http.get(f"/v1/cases/{first.case_id}", headers=VERIFIER)).json()
            return body if body["links"] else None

        older = await eventually(older_linked)
    assert {header(r, topics.HEADER_CASE_ID) for r in linked} == {first.case_id, second.case_id}
    [link] = newer["links"]
    assert link["case_id"] == first.case_id and link["kind"] == "shared_recruiter"
    assert link["reasons"] == ["same recruiter name", "same recruiter phone"]
    assert older["links"][0]["case_id"] == second.case_id
    assert older["links"][0]["kind"] == "shared_recruiter"
    # the later report did not rewrite the earlier case: its page finds the link in the index
    assert older["version"] == screened_first["version"]


async def test_a_decision_lists_the_links_its_verifier_was_shown(infra, isolation):
    """A decision taken from a case page lists the linked cases that page showed (their index entries are not read
    again); a report linked in between is linked in both trails all the same, and on the page from then on."""
    recruiter = {"role": "recruiter", "name": "Pak Darto", "phone": "+6281377778888"}
    first = case_reported(persons=[intake.Person(person_id="a", **recruiter)])
    second = case_reported(village_code=OTHER_VILLAGE, persons=[intake.Person(person_id="b", **recruiter)])
    async with serving(_app(infra, isolation)) as http, TopicReader(infra["kafka"], topics.VERIFICATION) as out:
        await publish(infra["kafka"], topics.INTAKE, first)
        page = await _screened(http, first.case_id)
        assert page.json()["links"] == []
        await publish(infra["kafka"], topics.INTAKE, second)
        await out.collect(lambda r: header(r, topics.HEADER_EVENT_TYPE) == "case.linked"
                          and header(r, topics.HEADER_CASE_ID) == first.case_id)
        decided = await http.post(f"/v1/cases/{first.case_id}/decision",
                                  headers={**VERIFIER, "If-Match": page.headers["ETag"]},
                                  json={"decision": "verify", "case_types": ["tppo"]})
        assert decided.status_code == 200, decided.text
        [verified] = await out.collect(lambda r: header(r, topics.HEADER_EVENT_TYPE) == "case.verified"
                                       and header(r, topics.HEADER_CASE_ID) == first.case_id)
        again = (await http.get(f"/v1/cases/{first.case_id}", headers=VERIFIER)).json()
    assert Envelope.from_bytes(verified.value).data["linked_cases"] == []  # as the page showed it
    assert [link["case_id"] for link in again["links"]] == [second.case_id]


async def test_a_supervisors_watch_list_entry_is_hit_and_raises_priority(infra, isolation):
    supervisor = auth("supervisor", "36.03")
    async with serving(_app(infra, isolation)) as http:
        added = await http.post("/v1/watchlist", headers=supervisor,
                                json={"kind": "phone", "value": "0813-5555-6666", "note": "calo dikenal"})
        assert added.status_code == 201, added.text
        bad = await http.post("/v1/watchlist", headers=supervisor, json={"kind": "phone", "value": "12"})
        assert bad.status_code == 422
        assert (await http.post("/v1/watchlist", headers=VERIFIER, json={"kind": "agency", "value": "PT X"})
                ).status_code == 403
        listed = (await http.get("/v1/watchlist", headers=supervisor)).json()["items"]
        assert [e["id"] for e in listed] == [added.json()["id"]]
        event = case_reported(indicators=["family_pressed_to_sign"], persons=[
            intake.Person(person_id="r", role="recruiter", name="X", phone="+6281355556666")])
        await publish(infra["kafka"], topics.INTAKE, event)
        case = (await _screened(http, event.case_id)).json()
    assert case["screening"]["priority"] == "high" and case["screening"]["score"] == 1
    assert [h["watch_id"] for h in case["watchlist_hits"]] == [added.json()["id"]]


async def test_queue_pages_hold_when_an_urgent_report_arrives_between_them(infra, isolation):
    older = [case_reported(indicators=["family_pressed_to_sign"]) for _ in range(3)]
    async with serving(_app(infra, isolation)) as http:
        for event in older:
            await publish(infra["kafka"], topics.INTAKE, event)
            await _screened(http, event.case_id)
        first = (await http.get("/v1/queue", headers=VERIFIER, params={"limit": 2})).json()
        urgent = case_reported(indicators=["family_pressed_to_sign"], persons=[
            intake.Person(person_id="c", role="potential_victim", name="Anak", age=14)])
        await publish(infra["kafka"], topics.INTAKE, urgent)
        await _screened(http, urgent.case_id)
        second = (await http.get("/v1/queue", headers=VERIFIER, params={"limit": 2, "cursor": first["next"]})).json()
        again = (await http.get("/v1/queue", headers=VERIFIER)).json()["items"]
        bad = await http.get("/v1/queue", headers=VERIFIER, params={"cursor": "bm90LWEtY3Vyc29y"})
    assert [i["case_id"] for i in first["items"] + second["items"]] == [e.case_id for e in older]
    assert second["next"] is None
    assert [i["case_id"] for i in again] == [urgent.case_id, *(e.case_id for e in older)]
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "cursor"


async def test_questions_and_answers_are_kept_and_cases_waiting_for_an_answer_are_listed(infra, isolation):
    event = case_reported()
    async with serving(_app(infra, isolation)) as http:
        await publish(infra["kafka"], topics.INTAKE, event)
        case = await _screened(http, event.case_id)
        asked = await http.post(f"/v1/cases/{event.case_id}/decision",
                                headers={**VERIFIER, "If-Match": case.headers["ETag"]},
                                json={"decision": "request_info", "question": "Kapan berangkat?"})
        assert asked.status_code == 200, asked.text
        waiting = (await http.get("/v1/queue", headers=VERIFIER, params={"status": "info_requested"})).json()
        assert event.case_id in [i["case_id"] for i in waiting["items"]]
        assert event.case_id not in [i["case_id"] for i in (await http.get("/v1/queue", headers=VERIFIER)).json()[
            "items"]]
        report = intake.CaseReported.model_validate(event.data)
        amended = new_event(intake.CaseAmended(answer="Minggu depan lewat Soetta.",
                                               report=report.model_copy(update={"submission": 2})),
                            case_id=event.case_id, producer="intake", actor=None, correlation_id=event.case_id,
                            causation_id=None)
        await publish(infra["kafka"], topics.INTAKE, amended)

        async def answered():
            body = (await http.get(f"/v1/cases/{event.case_id}", headers=VERIFIER)).json()
            return body if body["status"] == "awaiting_decision" else None

        case = await eventually(answered)
    [exchange] = case["exchanges"]
    assert exchange["question"] == "Kapan berangkat?" and exchange["asked_by_name"] == "Verifier"
    assert exchange["answer"] == "Minggu depan lewat Soetta." and exchange["answered_at"]
    assert case["decision"]["name"] == "Verifier"

