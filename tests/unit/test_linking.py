from datetime import UTC, date, datetime, timedelta

import pytest

from services.verification import domain, linking
from shared.auth import Principal
from shared.contracts import intake, verification
from shared.contracts.envelope import parse_data
from shared.crypto import Sealer
from tests.builders import OTHER_VILLAGE, PILOT_VILLAGE, case_reported

KEY = b"k" * 32
T0 = datetime(2026, 11, 28, 9, tzinfo=UTC)


def _report(persons, village=PILOT_VILLAGE, reporter="rep-a", observed=T0, indicators=("unlicensed_recruiter",)):
    event = case_reported(persons=persons, village_code=village, observed_at=observed, indicators=list(indicators),
                          reporter=intake.Reporter(id=reporter, role="reporter", region=village))
    return parse_data(event, intake.CaseReported), event.case_id


def _p(role="potential_victim", **kw):
    return intake.Person(person_id=kw.pop("person_id", "p"), role=role, **kw)


@pytest.mark.parametrize(("a", "b", "reason", "kind"), [
    (_p(nik="3603115507050001", name="Siti"), _p(nik="3603115507050001", name="Lain"), "same NIK", "shared_person"),
    (_p(passport_number="C1234567"), _p(passport_number="C1234567"), "same passport number", "shared_person"),
    (_p(phone="+6281234567890"), _p(phone="+6281234567890"), "same phone number", "shared_person"),
    (_p(name="Siti Aminah", birth_date=date(2005, 7, 15)), _p(name="siti  AMINAH", birth_date=date(2005, 7, 15)),
     "same name and birth date", "shared_person"),
    (_p("recruiter", name="Pak Joko"), _p("recruiter", name="Joko"), "same recruiter name", "shared_recruiter"),
    (_p("recruiter", phone="+6281299990000"), _p("facilitator", phone="+6281299990000"), "same recruiter phone",
     "shared_recruiter"),
])
def test_reports_sharing_a_person_or_recruiter_are_linked_across_villages(a, b, reason, kind):
    first, first_id = _report([a], village=PILOT_VILLAGE)
    second, _ = _report([b], village=OTHER_VILLAGE, reporter="rep-b")
    index = {i.digest: {**linking.case_ref(first, first_id), "kind": i.kind} for i in linking.identities(first, KEY)}
    matches = [index[i.digest] for i in linking.identities(second, KEY) if i.digest in index]
    links = linking.shared_identity_links(matches)
    assert [(link["case_id"], link["reasons"], link["kind"]) for link in links] == [(first_id, [reason], kind)]
    assert links[0]["case_number"] == first.case_number and links[0]["village_code"] == PILOT_VILLAGE


@pytest.mark.parametrize(("a", "b", "reason"), [
    (_p("recruiter", name="Pak Joko"), _p("recruiter", name="ＰＡＫ　ＪＯＫＯ"), "same recruiter name"),  # full-width
    (_p("recruiter", name="Bu Fatimah Straße"), _p("recruiter", name="fatimah strasse"), "same recruiter name"),
    (_p("recruiter", name="Haji Muhammad İbrahim"), _p("recruiter", name="muhammad ibrahim"), "same recruiter name"),
    (_p("recruiter", name="ﬁtri"), _p("recruiter", name="Fitri"), "same recruiter name"),  # a ligature
    (_p("recruiter", name="محمد علي"), _p("recruiter", name="محمد  علي"), "same recruiter name"),  # Arabic script
    (_p(nik="３６０３１１５５０７０５０００１"), _p(nik="3603115507050001"), "same NIK"),  # an event from elsewhere
    (_p(phone="٠٨١٢٣٤٥٦٧٨٩٠"), _p(phone="+6281234567890"), "same phone number"),
])
def test_look_alike_spellings_of_one_identifier_still_link(a, b, reason):
    first, first_id = _report([a])
    second, _ = _report([b], reporter="rep-b")
    index = {i.digest: {**linking.case_ref(first, first_id), "kind": i.kind} for i in linking.identities(first, KEY)}
    matches = [index[i.digest] for i in linking.identities(second, KEY) if i.digest in index]
    assert [link["reasons"] for link in linking.shared_identity_links(matches)] == [[reason]]


def test_names_in_other_scripts_are_kept_so_different_names_do_not_collide():
    first, _ = _report([_p("recruiter", name="محمد")])
    second, _ = _report([_p("recruiter", name="علي")])
    assert not {i.digest for i in linking.identities(first, KEY)} & {i.digest for i in linking.identities(second, KEY)}


@pytest.mark.parametrize(("a", "b"), [
    (_p(name="Siti Aminah", birth_date=date(2005, 7, 15)), _p(name="Siti Aminah", birth_date=date(2006, 7, 15))),
    (_p(name="Siti Aminah"), _p(name="Siti Aminah")),  # a name alone does not make a victim the same person
    (_p(phone="+6281234567890"), _p("recruiter", phone="+6281234567891")),
])
def test_similar_but_different_people_are_not_linked(a, b):
    first, _ = _report([a])
    second, _ = _report([b])
    assert not {i.digest for i in linking.identities(first, KEY)} & {i.digest for i in linking.identities(second, KEY)}


def test_the_index_holds_keyed_hashes_not_identifiers():
    report, _ = _report([_p(nik="3603115507050001", phone="+6281234567890", name="Siti", birth_date=date(2005, 1, 1))])
    digests = [i.digest for i in linking.identities(report, KEY)]
    assert all(len(d) == 64 and "3603115507050001" not in d for d in digests)
    assert linking.identities(report, b"other-key" * 4)[0].digest not in digests


@pytest.mark.parametrize(("other_kw", "expected"), [
    ({"reporter": "rep-b"}, True),  # Babinsa and Bhabinkamtibmas of one village, same day, shared indicator
    ({"reporter": "rep-a"}, False),  # the same reporter twice is not corroboration
    ({"reporter": "rep-b", "village": OTHER_VILLAGE}, False),
    ({"reporter": "rep-b", "observed": T0 + timedelta(hours=30)}, False),
    ({"reporter": "rep-b", "indicators": ("documents_withheld",)}, False),  # nothing in common
])
def test_two_reporters_of_one_village_within_a_day_corroborate(other_kw, expected):
    new, _ = _report([_p(name="A")], reporter="rep-a")
    other, other_id = _report([_p(name="B")], **other_kw)
    assert linking.corroborates(new, linking.case_ref(other, other_id), shared_identity=False) is expected


def test_links_to_one_case_merge_their_reasons():
    a = {"case_id": "c", "case_number": "n", "village_code": "v", "kind": "shared_recruiter", "reasons": ["x"]}
    b = {**a, "kind": "corroborates", "reasons": ["y"]}
    [merged] = linking.merge_links([a], [b])
    assert merged["reasons"] == ["x", "y"]


def test_watch_list_hits_by_recruiter_name_phone_or_agency_in_the_narrative():
    report, _ = _report([_p("recruiter", name="Bu Ratna", phone="+6281311112222", person_id="r1")])
    report = report.model_copy(update={"narrative": "Diberangkatkan oleh PT Maju Jaya Abadi lewat Batam"})

    def entry(watch_id, kind, value):
        return {"_id": watch_id, "kind": kind, "digest": linking.watch_digest(KEY, kind, linking.watch_value(kind, value))}

    entries = [entry("w1", "recruiter", "Ratna"), entry("w2", "phone", "0813-1111-2222"),
               entry("w3", "agency", "PT. Maju Jaya Abadi"), entry("w4", "agency", "PT Lain")]
    hits = linking.watchlist_hits(report, entries, KEY)
    assert [(h["watch_id"], h["matched"]) for h in hits] == [("w1", "r1"), ("w2", "r1"), ("w3", "narrative")]
    assert linking.watchlist_hits(report, entries, b"another key" * 3) == []  # digests are keyed


def test_a_watch_list_entry_stores_no_name_or_phone():
    sup = Principal(sub="s", name="S", role="supervisor", region="36.03")
    label_key = bytes(32)
    doc = domain.watch_entry(domain.WatchEntryIn(kind="phone", value="0813-5555-6666", note="calo Pak Darto"), sup,
                             datetime.now(UTC), id_key=KEY, seal=Sealer(label_key, domain.WATCHLIST))
    assert "5555" not in repr(doc) and "Darto" not in repr(doc)
    assert domain.watch_view(doc, label_key)["label"] == "0813-5555-6666"


def test_a_report_links_to_the_most_recent_cases_only_and_counts_the_rest():
    links = [{"case_id": f"c{i:03d}", "reasons": ["same recruiter name"], "kind": "shared_recruiter",
              "received_at": f"2026-11-{1 + i % 28:02d}T00:00:{i % 60:02d}+00:00"}
             for i in range(linking.MAX_LINKS + 7)]
    kept, more = linking.most_recent(links)
    assert len(kept) == linking.MAX_LINKS and more == 7
    newest = sorted(links, key=lambda link: link["received_at"], reverse=True)[:linking.MAX_LINKS]
    assert {link["case_id"] for link in kept} == {link["case_id"] for link in newest}


def test_reports_around_midnight_share_a_corroboration_bucket():
    late, _ = _report([_p(name="A")], observed=datetime(2026, 11, 28, 23, 50, tzinfo=UTC))
    early, _ = _report([_p(name="B")], observed=datetime(2026, 11, 29, 0, 10, tzinfo=UTC))
    assert linking.own_bucket(late) in linking.bucket_ids(early)


def test_erased_identifiers_link_nothing():
    from shared import crypto

    report, _ = _report([_p(nik=crypto.ERASED, name=crypto.ERASED, birth_date=None, phone=crypto.ERASED),
                         _p("recruiter", name=crypto.ERASED, phone=crypto.ERASED)])
    assert linking.identities(report, KEY) == []


def test_a_later_report_links_back_by_event_and_the_earlier_case_finds_it_in_the_index():
    recruiter = _p("recruiter", phone="+6281299990000")
    first_event = case_reported(persons=[recruiter], reporter=intake.Reporter(id="rep-a", role="reporter",
                                                                              region=PILOT_VILLAGE))
    first = parse_data(first_event, intake.CaseReported)
    second, second_id = _report([recruiter], reporter="rep-b", observed=first.observed_at)
    second = second.model_copy(update={"received_at": first.received_at + timedelta(minutes=5)})
    [identity] = linking.identities(second, KEY)
    index = {**linking.case_ref(first, first_event.case_id), "kind": identity.kind}
    links = linking.shared_identity_links([index])
    event = case_reported(case_id=second_id, **second.model_dump())
    change = domain.on_reported(None, event, T0, key=None, links=links)
    told = {(e.event.case_id, link.linked_case_id) for e in change.events if e.event.type == "case.linked"
            for link in parse_data(e.event, verification.CasesLinked).links}
    assert told == {(second_id, first_event.case_id), (first_event.case_id, second_id)}  # both trails
    earlier = {"_id": first_event.case_id, "received_at": first.received_at.isoformat(),
               "report": first.model_dump(mode="json"), "links": []}
    later_ref, older_ref = linking.case_ref(second, second_id), linking.case_ref(first, first_event.case_id)
    entries = [(identity.kind, {"cases": [later_ref, older_ref]})]
    [link] = domain.with_later_links(earlier, entries)["links"]  # itself and earlier cases are not links
    assert (link["case_id"], link["kind"], link["reasons"]) == (second_id, "shared_recruiter", ["same recruiter phone"])
    # another reporter of the village that day, with an indicator in common, corroborates it
    [link] = domain.with_later_links(earlier, [("bucket", {"cases": [later_ref, older_ref]})])["links"]
    assert (link["case_id"], link["kind"]) == (second_id, "corroborates")


def test_a_report_linked_to_many_cases_tells_its_own_trail_once_and_each_earlier_trail_once():
    """A report naming a recruiter of three earlier cases: one event for its own trail naming all three (with their
    reasons), one for each earlier case naming it; not one per link and direction."""
    recruiter = _p("recruiter", phone="+6281299990000")
    earlier = [_report([recruiter], reporter=f"rep-{i}") for i in range(3)]
    [identity] = linking.identities(earlier[0][0], KEY)
    links = linking.shared_identity_links([{**linking.case_ref(report, case_id), "kind": identity.kind}
                                           for report, case_id in earlier])
    new, new_id = _report([recruiter], reporter="rep-new")
    change = domain.on_reported(None, case_reported(case_id=new_id, **new.model_dump()), T0, key=None, links=links)
    told = {e.event.case_id: parse_data(e.event, verification.CasesLinked).links
            for e in change.events if e.event.type == "case.linked"}
    assert len([e for e in change.events if e.event.type == "case.linked"]) == 4 == len(told)
    assert {(link.linked_case_id, tuple(link.reasons)) for link in told[new_id]} == \
        {(case_id, ("same recruiter phone",)) for _, case_id in earlier}
    for _, case_id in earlier:
        assert [(link.linked_case_id, link.reasons) for link in told[case_id]] == [(new_id, ["same recruiter phone"])]
    # the same report delivered again changes nothing: no event at all
    assert domain.on_reported({"_id": new_id, "links": links}, case_reported(case_id=new_id, **new.model_dump()), T0,
                              key=None, links=links) is None
