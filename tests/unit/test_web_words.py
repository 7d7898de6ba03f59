"""The web service's words and small rules: intake's 422 details in the person's language, time zones, villages,
complete catalogs, safe redirects."""

from babel.messages.pofile import read_po

from services.web.i18n import LOCALES, Locale, load_catalogs, zone_of
from services.web.pages import local_path
from services.web.reporter import field_messages, villages_for

CATALOGS = load_catalogs()


def _loc(lang: str) -> Locale:
    return Locale(lang, CATALOGS[lang], zone_of("36.03.11.2009"))


def test_intakes_field_problems_become_indonesian_messages_per_field():
    details = [
        {"field": "persons.0.nik", "problem": "Value error, NIK must be exactly 16 digits", "type": "value_error"},
        {"field": "persons.1", "problem": "Value error, a person needs at least a name, NIK, passport number or phone",
         "type": "value_error"},
        {"field": "observed_at", "problem": "is in the future"},
        {"field": "departure.destination_country", "problem": "String should match pattern"},
        {"field": "something_new", "problem": "?"},
    ]
    assert field_messages(details, _loc("id")) == {
        "persons.0.nik": "NIK harus tepat 16 angka.",
        "persons.1": "Isi paling sedikit nama, NIK atau nomor HP orang ini.",
        "observed_at": "Isi tanggal dan jam yang tidak di masa depan.",
        "departure.destination_country": "Pilih negara dari daftar.",
        "something_new": "Isian ini tidak valid.",
    }
    assert field_messages(details, _loc("en"))["persons.0.nik"] == "NIK must be exactly 16 digits."
    assert field_messages("not a list", _loc("id")) == {}


def test_dates_follow_the_regions_own_zone():
    assert (zone_of("36.03.11.2009").name, zone_of("36.03").offset) == ("WIB", "+07:00")
    assert (zone_of("51.71").name, zone_of("73").offset) == ("WITA", "+08:00")
    assert (zone_of("91.01").name, zone_of("94").offset) == ("WIT", "+09:00")
    assert _loc("id").when("2026-11-30T22:05:00+00:00") == "1 Des 2026 05.05 WIB"


def test_a_village_reporter_has_their_village_and_a_kecamatan_reporter_chooses_by_name():
    assert villages_for("36.03.11.2009") == [("36.03.11.2009", "Tanjakan Mekar")]
    names = [name for _, name in villages_for("36.03.11")]
    assert len(names) == 13 and names == sorted(names) and "Tanjakan Mekar" in names
    assert villages_for(None) == []


def test_every_string_of_the_pages_is_translated_in_both_catalogs():
    def ids(lang):
        with (LOCALES / lang / "LC_MESSAGES" / "messages.po").open("rb") as f:
            return {m.id: m.string for m in read_po(f) if m.id}

    indonesian, english = ids("id"), ids("en")
    assert set(indonesian) == set(english) and len(indonesian) > 150
    assert [k for k, v in indonesian.items() if not v] == []
    assert _loc("id").gettext("Outbox") == "Kotak keluar"


def test_redirect_targets_stay_on_this_site():
    assert local_path("/reports?x=1") == "/reports?x=1"
    for bad in ("//evil.example", "https://evil.example", "/\\evil.example", "", None, "reports"):
        assert local_path(bad) == "/"
