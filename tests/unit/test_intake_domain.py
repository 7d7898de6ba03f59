import typing
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.intake import domain
from shared.auth import Principal
from shared.crypto import CaseErased, Sealer
from shared.identity import normalise_phone
from shared.contracts import verification
from shared.contracts.envelope import new_event
from tests.builders import PILOT_VILLAGE, report_body

REPORTER = Principal(sub="r1", name="Babinsa", role="reporter", region=PILOT_VILLAGE)


@pytest.mark.parametrize(("raw", "expected"), [
    ("081234567890", "+6281234567890"),
    ("0812-3456-7890", "+6281234567890"),
    ("62 812 3456 7890", "+6281234567890"),
    ("+62 (812) 3456.7890", "+6281234567890"),
    ("+62 0812 3456 7890", "+6281234567890"),  # the national 0 written after the country code
    ("+60123456789", "+60123456789"),
    ("０８１２－３４５６－７８９０", "+6281234567890"),  # full-width
    ("٠٨١٢٣٤٥٦٧٨٩٠", "+6281234567890"),  # Arabic-Indic digits
])
def test_phone_numbers_are_normalised_to_e164(raw, expected):
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize("raw", ["12345", "+62abc4567890", "0812", "+62 812", "0812-CALL-ME", "+1 555 0100",
                                 "+99 812 3456 7890"])
def test_numbers_that_are_not_real_phone_numbers_are_refused(raw):
    with pytest.raises(ValueError):
        normalise_phone(raw)


def test_unicode_digits_and_letters_in_identifiers_are_written_in_ascii():
    person = domain.PersonIn.model_validate({"role": "potential_victim", "nik": "３６０３１１５５０７０５０００１",
                                             "passport_number": "ｃ１２３４５６７", "phone": "０８１２３４５６７８９０"})
    assert (person.nik, person.passport_number, person.phone) == ("3603115507050001", "C1234567", "+6281234567890")
    arabic_indic = domain.PersonIn.model_validate({"role": "witness", "nik": "٣٦٠٣١١٥٥٠٧٠٥٠٠٠١"})
    assert arabic_indic.nik == "3603115507050001"


@pytest.mark.parametrize(("field", "value"), [("nik", "36031155070500０"), ("nik", "3603-1155-0705-0001"),
                                              ("passport_number", "C 123456"), ("passport_number", "Ç1234567")])
def test_identifiers_that_are_not_of_their_format_are_refused(field, value):
    with pytest.raises(ValidationError):
        domain.PersonIn.model_validate({"role": "witness", field: value})


@pytest.mark.parametrize(("port", "expected"), [("CGK", "CGK"), ("cgk", "CGK"), ("IDTPP", "IDTPP")])
def test_a_departure_port_is_an_airport_or_port_code(port, expected):
    assert domain.DepartureIn(port=port).port == expected


@pytest.mark.parametrize("port", ["Bandara Soekarno-Hatta, dijemput Pak Joko", "CG", "C1K", "ID TPP"])
def test_a_departure_port_that_is_not_a_code_is_refused(port):
    with pytest.raises(ValidationError, match="IATA"):
        domain.DepartureIn(port=port)


def test_the_design_example_report_is_valid():
    report = domain.ReportIn.model_validate(report_body())
    assert report.persons[1].phone == "+6281299990000"
    domain.check_against_reference(report, REPORTER, datetime.now(UTC))


def _errors(body):
    with pytest.raises(ValidationError) as info:
        domain.ReportIn.model_validate(body)
    return {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


def test_every_bad_field_is_named():
    body = report_body(village_code="36.3.11", suspected_types=[], narrative="")
    body["persons"][0]["nik"] = "123"
    body["persons"][1]["age"] = -1
    assert {"village_code", "suspected_types", "narrative", "persons.0.nik", "persons.1.age"} <= _errors(body)


@pytest.mark.parametrize("key", ["$where", "a.b", "$set"])
def test_keys_a_database_would_interpret_are_refused(key):
    body = report_body()
    body[key] = 1
    body["persons"][0][key] = 1
    assert {key, f"persons.0.{key}"} <= _errors(body)


def test_narrative_has_a_size_limit():
    assert "narrative" in _errors(report_body(narrative="x" * (domain.MAX_NARRATIVE + 1)))


def test_a_person_must_be_identifiable():
    assert "persons.0" in _errors(report_body(persons=[{"role": "witness", "age": 30}]))


def test_unknown_village_and_indicator_are_named():
    report = domain.ReportIn.model_validate(report_body(village_code="36.03.11.2999", indicators=["made_up"]))
    with pytest.raises(domain.FieldProblem) as info:
        domain.check_against_reference(report, REPORTER, datetime.now(UTC))
    assert {p["field"] for p in info.value.problems} == {"village_code", "indicators.0"}


def test_a_village_outside_the_reporters_regency_is_refused():
    report = domain.ReportIn.model_validate(report_body())
    far = Principal(sub="r2", name="x", role="reporter", region="36.01.01.2001")
    with pytest.raises(domain.FieldProblem):
        domain.check_against_reference(report, far, datetime.now(UTC))


def test_observations_in_the_future_are_refused():
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    report = domain.ReportIn.model_validate(report_body(observed_at=later))
    with pytest.raises(domain.FieldProblem):
        domain.check_against_reference(report, REPORTER, datetime.now(UTC))


def test_same_body_same_fingerprint_other_body_other_fingerprint():
    body = report_body(narrative="satu")
    a = domain.ReportIn.model_validate(body)
    assert domain.request_hash(a) == domain.request_hash(domain.ReportIn.model_validate(dict(body)))
    assert domain.request_hash(a) != domain.request_hash(domain.ReportIn.model_validate({**body, "narrative": "dua"}))


def test_case_numbers_are_per_regency_and_year():
    assert domain.case_number("36.03", 2026, 42) == "3603-2026-000042"


KEY = bytes(range(32))
SEAL = Sealer(KEY, "c1")


def _filed(**over):
    report = domain.ReportIn.model_validate(report_body(**over))
    doc, events = domain.file_report(report, REPORTER, case_id="c1", number="3603-2026-000001",
                                     idempotency_id="r1:k", fingerprint="h", now=datetime.now(UTC), seal=SEAL)
    doc["version"] = 1
    return doc, events


def test_filing_a_report_records_case_reported_keyed_by_case():
    doc, events = _filed()
    assert doc["status"] == "reported"
    [out] = events
    assert out.topic == "waspada.intake.v1"
    assert (out.event.type, out.event.case_id, out.event.correlation_id) == ("case.reported", "c1", "c1")
    assert out.event.actor.id == "r1"
    assert all(p["person_id"] for p in out.event.data["persons"])


def test_a_report_urgent_on_its_face_is_marked_for_consumers_to_take_first():
    assert _filed()[1][0].headers == {}  # an adult, a departure in 20 days, no indicator that forces escalation
    soon = {"planned_date": (datetime.now(UTC) + timedelta(days=2)).date().isoformat(), "port": "CGK",
            "destination_country": "SA"}
    child = [{"role": "potential_victim", "name": "Dewi", "age": 16}, {"role": "recruiter", "name": "Pak Joko"}]
    for urgent in ({"departure": soon}, {"persons": child}, {"indicators": ["minor_or_altered_identity"]}):
        [out] = _filed(**urgent)[1]
        assert out.headers == {"urgent": "1"}, urgent


def _verification_event(payload):
    return new_event(payload, case_id="c1", producer="verification", actor=None, correlation_id="c1",
                     causation_id=None)


def test_verification_outcomes_move_the_reporters_status_forward_only():
    doc, _ = _filed()
    asked = _verification_event(verification.CaseInfoRequested(question="Kapan berangkat?"))
    change = domain.on_verification_event(doc, asked, datetime.now(UTC))
    assert change.set["status"] == "info_requested" and change.set["question"] == "Kapan berangkat?"
    doc.update(change.set)
    rejected = _verification_event(verification.CaseRejected(reason="duplikat"))
    doc.update(domain.on_verification_event(doc, rejected, datetime.now(UTC)).set)
    assert doc["status"] == "rejected"
    late_request = _verification_event(verification.CaseInfoRequested(question="?"))
    assert domain.on_verification_event(doc, late_request, datetime.now(UTC)) is None


def test_the_consumer_skips_without_a_read_only_events_that_change_no_report():
    """Intake's consumer reads the report only for the event types `may_move` names: a link (fifty per report
    naming a prolific recruiter) changes no status whatever the report's, so it is not read for one."""
    doc, _ = _filed()
    linked = _verification_event(verification.CaseLinked(linked_case_id="c2", reasons=["same recruiter phone"]))
    assert not domain.may_move(linked.type)
    for status in typing.get_args(domain.Status):
        assert domain.on_verification_event({**doc, "status": status}, linked, datetime.now(UTC)) is None
    screened = _verification_event(verification.CaseInfoRequested(question="?"))
    assert domain.may_move(screened.type) and domain.on_verification_event(doc, screened, datetime.now(UTC))


def test_withdrawal_only_before_a_decision():
    doc, _ = _filed()
    change = domain.withdraw(doc, REPORTER, "keliru", datetime.now(UTC), SEAL)
    assert change.set["status"] == "withdrawn" and change.events[0].event.type == "case.withdrawn"
    doc["status"] = "verified"
    with pytest.raises(domain.InvalidTransition):
        domain.withdraw(doc, REPORTER, "keliru", datetime.now(UTC), SEAL)


def test_the_withdrawal_reason_is_sealed_and_refused_once_the_case_is_erased():
    doc, _ = _filed()
    event = domain.withdraw(doc, REPORTER, "Bu Ani sudah pulang", datetime.now(UTC), SEAL).events[0].event
    assert "Bu Ani" not in event.to_json() and SEAL.open(event.data["reason"]) == "Bu Ani sudah pulang"
    with pytest.raises(CaseErased):
        domain.withdraw(doc, REPORTER, "Bu Ani sudah pulang", datetime.now(UTC), Sealer(None, "c1"))


def test_the_departure_route_is_sealed_like_the_narrative():
    doc, [out] = _filed(departure={"port": "CGK", "route": "lewat rumah Pak Joko di Rajeg"})
    assert "Pak Joko" not in out.event.to_json() + repr(doc)
    assert out.event.data["departure"]["port"] == "CGK"
    assert domain.reporter_view(doc, KEY)["report"]["departure"]["route"] == "lewat rumah Pak Joko di Rajeg"


def test_personal_data_leaves_intake_sealed_and_reads_back_only_with_the_key():
    doc, [out] = _filed()
    flat = out.event.to_json() + repr(doc)
    for secret in ("Siti Aminah", "3603115507050001", "+6281234567890", "Seorang sponsor", "Pak Joko"):
        assert secret not in flat
    victim = out.event.data["persons"][0]
    assert victim["nik"].startswith("enc:v1:") and victim["age"] == 19 and victim["role"] == "potential_victim"
    view = domain.reporter_view(doc, KEY)
    assert view["report"]["persons"][0]["nik"] == "3603115507050001"
    assert view["report"]["narrative"].startswith("Seorang sponsor")
    erased = domain.reporter_view(doc, None)
    assert erased["report"]["persons"][0]["name"] == "[erased]" and erased["report"]["persons"][0]["age"] == 19


def test_an_amendment_reseals_the_amended_report():
    doc, _ = _filed()
    doc["status"] = "info_requested"
    amendment = domain.AmendmentIn(answer="Paspor dipegang Pak Joko", add_persons=[
        {"role": "witness", "name": "Bu Ani", "phone": "081300001111"}])
    change = domain.amend(doc, amendment, REPORTER, datetime.now(UTC), SEAL)
    event = change.events[0].event
    assert "Bu Ani" not in event.to_json() and "Paspor dipegang" not in event.to_json()
    opened = domain.reporter_view({**doc, **change.set}, KEY)["report"]
    assert opened["persons"][-1]["name"] == "Bu Ani" and opened["narrative"].endswith("Paspor dipegang Pak Joko")
    assert opened["submission"] == 2
