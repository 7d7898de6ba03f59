"""The words a reporter reads for the API's ids (DOMAIN.md glossary). Marked with N_ for the gettext catalogs;
translated when a page is rendered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared import reference


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "translate later"
    return message


# DOMAIN.md §3 groups indicators by stage; the order a reporter meets them in.
STAGES: dict[str, str] = {
    "recruitment": N_("When someone is recruited"),
    "departure": N_("Before and at departure"),
    "transit": N_("Foreigners passing through the village"),
    "exploitation": N_("After leaving: signs of exploitation"),
    "return": N_("After coming home"),
}

# A short plain title per indicator; the one-line explanation is the label in indicators.csv.
INDICATOR_TITLES: dict[str, str] = {
    "unlicensed_recruiter": N_("Recruiter without a licence (calo, sponsor)"),
    "cash_advance_to_family": N_("Cash advance (uang panjar) given to the family"),
    "placement_cost_debt": N_("Worker must pay placement costs or owes a debt"),
    "implausible_high_pay": N_("Pay offered is too high to be true"),
    "social_media_recruitment": N_("Recruited only through social media or chat"),
    "no_written_contract": N_("No written work contract"),
    "non_work_visa": N_("Going to work on a tourist, visit or umrah visa"),
    "moratorium_domestic_work": N_("Housework for a family in the Middle East"),
    "scam_hub_destination": N_("Office job in Cambodia, Myanmar or nearby"),
    "minor_or_altered_identity": N_("A child, or age or identity changed"),
    "passport_biodata_anomaly": N_("Passport made far from home, or data that do not match"),
    "implausible_travel_story": N_("Cannot explain the trip"),
    "no_family_permission": N_("Family or village head not asked"),
    "confined_in_holding_house": N_("Kept in a holding house (penampungan)"),
    "documents_withheld": N_("Passport or ID held by someone else"),
    "irregular_route": N_("Leaving by an unofficial route (jalur tikus)"),
    "handled_group_travel": N_("Young group travelling with a handler"),
    "distress_signal_abroad": N_("Worker abroad in trouble or out of contact"),
    "repeat_departure_same_network": N_("Returned person leaving again with the same network"),
    "undocumented_foreigners_lodged": N_("Foreigners without papers staying in the village"),
    "paid_to_move_foreigners": N_("Villagers paid to house or move foreigners"),
    "agent_arranged_internship": N_("Paid internship or work holiday through an agent"),
    "brokered_marriage_or_child_sent": N_("Arranged marriage to a foreigner, or a child sent away"),
    "family_pressed_to_sign": N_("Family pressed to sign papers"),
}

CASE_TYPES: dict[str, tuple[str, str]] = {
    "tppo": (N_("Trafficking in persons (TPPO)"), N_("People recruited or moved to be exploited")),
    "tppm": (N_("People smuggling (TPPM)"), N_("Bringing people across a border without the right to")),
    "np_pmi": (N_("Irregular migrant worker (PMI non-prosedural)"), N_("Going to work abroad outside the legal procedure")),
    "unknown": (N_("Not sure yet"), N_("The officer will decide")),
}


def titles(table: dict[str, tuple[str, str]], gettext: Callable[[str], str]) -> dict[str, str]:
    """Each entry's title in the page's language, for the scripts that word what the phone stored."""
    return {key: gettext(title) for key, (title, _explain) in table.items()}

PERSON_ROLES: dict[str, str] = {
    "potential_victim": N_("Victim (korban)"),
    "recruiter": N_("Recruiter (perekrut, calo)"),
    "facilitator": N_("Helper of the recruiter (driver, holding house)"),
    "witness": N_("Witness (saksi)"),
    "family": N_("Family of the victim"),
}

SEXES: dict[str, str] = {"female": N_("Woman"), "male": N_("Man"), "unknown": N_("Unknown")}

# The reporter's view of a case's status, and what happens next (intake's statuses, README "What the reporter sees").
STATUSES: dict[str, tuple[str, str]] = {
    "reported": (N_("Received"), N_("Your report was received and is being checked.")),
    "screened": (N_("Waiting for an officer"), N_("An immigration officer will review your report.")),
    "info_requested": (N_("Officer has a question"), N_("Answer the officer's question below.")),
    "verified": (N_("Verified"), N_("Your report was verified and is passed to the units that will act on it.")),
    "rejected": (N_("Not taken further"), N_("Your report was reviewed and not taken further.")),
    "withdrawn": (N_("Withdrawn"), N_("You withdrew this report.")),
}

# What a reporter is told about a field the API refused (by field name, then by the kind of problem).
FIELD_PROBLEMS: dict[str, str] = {
    "village_code": N_("Choose a village you cover."),
    "observed_at": N_("Give a date and time that is not in the future."),
    "suspected_types": N_("Choose at least one kind of case."),
    "indicators": N_("Choose from the list."),
    "narrative": N_("Write what you saw (at most 5000 characters)."),
    "persons": N_("Check this person."),
    "role": N_("Choose who this person is."),
    "name": N_("Write a name (at most 200 characters)."),
    "nik": N_("NIK must be exactly 16 digits."),
    "phone": N_("Write a phone number, for example 0812 3456 7890."),
    "age": N_("Age must be a number from 0 to 120."),
    "sex": N_("Choose from the list."),
    "passport_number": N_("Passport number: 6 to 12 letters and digits."),
    "planned_date": N_("Give a valid date."),
    "port": N_("At most 100 characters."),
    "destination_country": N_("Choose a country from the list."),
    "answer": N_("Write your answer."),
    "reason": N_("Write a reason."),
}
PERSON_NEEDS_IDENTITY = N_("Give at least a name, NIK or phone number for this person.")
INVALID = N_("This is not valid.")

# Destinations reporters meet most often (DOMAIN.md §3), as ISO 3166-1 alpha-2.
COUNTRIES: dict[str, str] = {
    "MY": N_("Malaysia"), "SA": N_("Saudi Arabia"), "AE": N_("United Arab Emirates"), "KH": N_("Cambodia"),
    "MM": N_("Myanmar"), "TH": N_("Thailand"), "LA": N_("Laos"), "PH": N_("Philippines"), "VN": N_("Vietnam"),
    "SG": N_("Singapore"), "HK": N_("Hong Kong"), "TW": N_("Taiwan"), "KR": N_("South Korea"), "JP": N_("Japan"),
    "QA": N_("Qatar"), "KW": N_("Kuwait"), "OM": N_("Oman"), "TR": N_("Turkey"),
}


@dataclass(frozen=True)
class IndicatorChoice:
    id: str
    title: str
    explanation_en: str
    explanation_id: str


def indicator_groups() -> list[tuple[str, list[IndicatorChoice]]]:
    """Indicators of indicators.csv grouped by stage, in DOMAIN.md's order."""
    groups: dict[str, list[IndicatorChoice]] = {stage: [] for stage in STAGES}
    for ind in reference.indicators().values():
        groups.setdefault(ind.stage, []).append(
            IndicatorChoice(ind.id, INDICATOR_TITLES.get(ind.id, ind.label_en), ind.label_en, ind.label_id))
    return [(stage, items) for stage, items in groups.items() if items]
