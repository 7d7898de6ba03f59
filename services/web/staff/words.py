"""The words officers read for the APIs' ids (DOMAIN.md glossary), marked with N_ for the staff catalog and
translated when a page is rendered. Words a reporter also reads (case kinds, indicators, person roles) come from
services.web.vocabulary."""

from __future__ import annotations

from services.web.vocabulary import N_

ROLES: dict[str, str] = {
    "reporter": N_("Reporter"), "verifier": N_("Verifier"), "investigator": N_("Investigator"),
    "supervisor": N_("Supervisor"), "admin": N_("Administrator"),
}

# Case kinds where space is short (chart legends, table headings).
SHORT_KINDS: dict[str, str] = {
    "tppo": N_("TPPO"), "tppm": N_("TPPM"), "np_pmi": N_("Irregular worker"), "unknown": N_("Not known yet"),
}

PRIORITIES: dict[str, str] = {
    "critical": N_("Critical"), "high": N_("High"), "medium": N_("Medium"), "low": N_("Low"),
}

# verification's case statuses
CASE_STATUSES: dict[str, str] = {
    "awaiting_decision": N_("Awaiting a decision"), "info_requested": N_("Waiting for the reporter's answer"),
    "verified": N_("Verified"), "rejected": N_("Rejected"), "withdrawn": N_("Withdrawn by the reporter"),
}

# audit's view of a case's status
TRAIL_STATUSES: dict[str, str] = {
    "reported": N_("Reported"), "screened": N_("Screened"), "info_requested": N_("Question to the reporter"),
    "verified": N_("Verified"), "rejected": N_("Rejected"), "withdrawn": N_("Withdrawn"),
    "referred": N_("Referred"), "closed": N_("Closed"),
}

DECISIONS: dict[str, str] = {
    "verify": N_("Verified"), "reject": N_("Rejected"), "request_info": N_("Asked the reporter a question"),
}

REFERRAL_STATUSES: dict[str, str] = {
    "created": N_("New"), "acknowledged": N_("Acknowledged"), "accepted": N_("Accepted"),
    "declined": N_("Declined"), "closed": N_("Closed"),
}

REFERRAL_ACTIONS: dict[str, str] = {
    "create": N_("Referred to the unit"), "acknowledge": N_("Acknowledged"), "accept": N_("Accepted"),
    "decline": N_("Declined"), "update": N_("Progress update"), "close": N_("Closed"),
}

MILESTONES: dict[str, str] = {
    "lp_filed": N_("Police report filed (LP)"), "sp2hp_sent": N_("Progress letter sent (SP2HP)"),
    "departure_deferred": N_("Departure deferred"), "victim_handed_to_services": N_("Victim handed to services"),
    "note": N_("Note"),
}

OUTCOMES: dict[str, str] = {
    "police_report_filed": N_("Police report filed"), "departure_deferred": N_("Departure deferred"),
    "victim_handed_to_services": N_("Victim handed to services"), "no_offence_found": N_("No offence found"),
    "transferred": N_("Transferred to another unit"), "other": N_("Other (explain in the note)"),
}

DEADLINES: dict[str, str] = {
    "acknowledge": N_("acknowledge"), "first_update": N_("first update"), "next_update": N_("next update"),
}

FUNCTIONS: dict[str, str] = {
    "police": N_("Police"), "immigration_office": N_("Immigration office"),
    "migrant_worker_agency": N_("Migrant-worker agency"), "departure_checkpoint": N_("Immigration checkpoint (TPI)"),
    "child_protection": N_("Child protection"), "witness_protection": N_("Witness and victim protection"),
    "consular_protection": N_("Protection of citizens abroad"),
}

TRIGGERS: dict[str, str] = {
    "tppo": N_("Trafficking (TPPO)"), "tppm": N_("Smuggling (TPPM)"), "np_pmi": N_("Irregular migrant worker"),
    "unknown": N_("Kind not yet known"), "departure_planned": N_("Planned departure"),
    "child_involved": N_("A child is involved"), "person_threatened": N_("A person is threatened"),
    "victim_abroad": N_("Victim abroad"),
}

LINK_KINDS: dict[str, str] = {
    "shared_person": N_("Same person"), "shared_recruiter": N_("Same recruiter"),
    "corroborates": N_("Another report of the same thing"),
}

LINK_REASONS: dict[str, str] = {
    "same NIK": N_("same NIK"), "same passport number": N_("same passport number"),
    "same phone number": N_("same phone number"), "same name and birth date": N_("same name and birth date"),
    "same recruiter phone": N_("same recruiter phone"), "same recruiter name": N_("same recruiter name"),
    "two reporters of the village within a day": N_("two reporters of the village within a day"),
}

WATCH_KINDS: dict[str, str] = {
    "recruiter": N_("Recruiter on the watch list"), "phone": N_("Phone number on the watch list"),
    "agency": N_("Agency on the watch list"),
}

ESCALATIONS: dict[str, str] = {
    "child_involved": N_("A child is involved"), "departure_within_72h": N_("Departure within 72 hours"),
}

# What each recorded event means in a trail's timeline.
EVENTS: dict[str, str] = {
    "case.reported": N_("Report received"), "case.amended": N_("Reporter answered"),
    "case.withdrawn": N_("Withdrawn by the reporter"), "case.screened": N_("Screened"),
    "case.linked": N_("Linked to another case"), "case.info_requested": N_("Question to the reporter"),
    "case.verified": N_("Verified"), "case.rejected": N_("Rejected"),
    "referral.created": N_("Referred to a unit"), "referral.acknowledged": N_("Unit acknowledged"),
    "referral.accepted": N_("Unit accepted"), "referral.declined": N_("Unit declined"),
    "referral.updated": N_("Unit's progress update"), "referral.escalated": N_("Deadline missed: escalated"),
    "referral.closed": N_("Unit closed its referral"), "case.closed": N_("Case closed"),
    "case.viewed": N_("Read"), "case.exported": N_("Exported"), "case.searched": N_("Listed in a search"),
    "cases.listed": N_("Listed in a search"),
    "case.erased": N_("Personal data erased"),
    "account.created": N_("Account created"), "account.changed": N_("Account changed"),
    "account.disabled": N_("Account disabled"), "account.password_reset": N_("One-time password issued"),
    "login.succeeded": N_("Signed in"), "login.failed": N_("Sign-in refused"),
    "session.revoked": N_("Session ended"),
}

# What a not-found page says it did not find.
THINGS = (N_("case"), N_("referral"), N_("account"))

ACCOUNT_STATUSES: dict[str, str] = {"active": N_("Active"), "disabled": N_("Disabled")}
