"""Identity's domain: who may hold which account, what an admin may grant, and the events each change causes
(signing in and sessions: `signin.py`). Pure: no I/O; clocks, ids and hashes are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared import regions, topics
from shared.auth import Principal
from shared.contracts import identity as events
from shared.contracts.envelope import Actor, Contract, new_event
from shared.outbox import Change, Outgoing
from shared.reference import agencies
from shared.reference import regions as known_regions

PRODUCER = "identity"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
STAFF_ROLES = ("verifier", "investigator", "supervisor", "admin")
GRANTABLE_ROLES = ("reporter", "verifier", "investigator", "supervisor")  # an admin role comes only from the CLI
MIN_PASSWORD = 10
MAX_PASSWORD = 256  # bounds the work one sign-in can ask of the hasher


class FieldProblem(Exception):
    """A request that breaks an account rule: 422 naming the fields."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['problem']}" for p in problems))
        self.problems = problems


class NotAllowed(Exception):
    """An admin acting outside what they may grant: 403."""


def problem(field: str, text: str) -> FieldProblem:
    return FieldProblem([{"field": field, "problem": text}])


def normalise_username(raw: str) -> str:
    return raw.strip().lower()


def check_username(username: str) -> None:
    if not USERNAME.match(username):
        raise problem("username", "3-64 letters, digits, '.', '_' or '-', starting with a letter or digit")


def check_grant(role: str, region: str, unit: str | None) -> None:
    """Who may hold what: a reporter covers a village; other roles a province or regency; investigators a unit."""
    problems = []
    known = known_regions().get(region)
    if known is None:
        problems.append({"field": "region", "problem": "not a Kemendagri code in the region data"})
    elif role == "reporter" and known.level not in ("village", "kelurahan"):
        problems.append({"field": "region", "problem": "a reporter's region is a village (dd.dd.dd.dddd)"})
    elif role != "reporter" and known.level not in ("province", "regency", "city"):
        problems.append({"field": "region", "problem": f"a {role}'s region is a province or regency"})
    if role == "investigator" and (not unit or unit not in agencies()):
        problems.append({"field": "unit", "problem": "an investigator needs the agency id of their unit"})
    if role != "investigator" and unit:
        problems.append({"field": "unit", "problem": "only investigators belong to a unit"})
    if problems:
        raise FieldProblem(problems)


def check_admin_may_grant(admin: Principal, role: str, region: str) -> None:
    if role not in GRANTABLE_ROLES:
        raise NotAllowed("an admin cannot give an admin role")
    if not regions.covers(admin.region, region):
        raise NotAllowed("an admin cannot give a region wider than, or outside, their own")


def check_admin_may_manage(admin: Principal, account: Mapping[str, Any]) -> bool:
    """Whether the account is within the admin's reach: in their region; another admin only if strictly narrower."""
    if account["_id"] == admin.sub or not regions.covers(admin.region, account["region"]):
        return False
    return account["role"] != "admin" or account["region"] != admin.region


def check_new_password(new: str, username: str) -> None:
    if len(new) < MIN_PASSWORD:
        raise problem("new", f"at least {MIN_PASSWORD} characters")
    if len(new) > MAX_PASSWORD:
        raise problem("new", f"at most {MAX_PASSWORD} characters")
    if normalise_username(new) == username or username in new.lower():
        raise problem("new", "must not be or contain the username")


def needs_second_factor(role: str) -> bool:
    return role in STAFF_ROLES


def in_setup(account: Mapping[str, Any]) -> bool:
    """The account must change its password or enrol its second factor before it may do anything else."""
    return bool(account.get("must_change_password")) or (
        needs_second_factor(account["role"]) and not totp_enabled(account))


def totp_enabled(account: Mapping[str, Any]) -> bool:
    return bool((account.get("totp") or {}).get("enabled"))


# --- events ---------------------------------------------------------------------------------------------------


def actor_of(principal: Principal | None) -> Actor | None:
    if principal is None:
        return None
    return Actor(id=principal.sub, role=principal.role, unit=principal.unit, region=principal.region)


def account_actor(account: Mapping[str, Any]) -> Actor:
    return Actor(id=account["_id"], role=account["role"], unit=account.get("unit"), region=account["region"])


def event(payload: Contract, account_id: str, actor: Actor | None, now: datetime) -> Outgoing:
    """An identity event, keyed by the account id (the envelope's case_id carries it)."""
    return Outgoing(topics.IDENTITY, new_event(payload, case_id=account_id, producer=PRODUCER, actor=actor,
                                               correlation_id=account_id, causation_id=None, occurred_at=now))


def stamp(moment: datetime) -> str:
    return moment.isoformat()


# --- accounts -------------------------------------------------------------------------------------------------


def new_account(*, account_id: str, username: str, name: str, role: str, region: str, unit: str | None,
                password_hash: str, must_change_password: bool, totp_secret: str | None, by: Actor | None,
                via: str, now: datetime) -> tuple[dict[str, Any], list[Outgoing]]:
    """A new account document and its `account.created`. `totp_secret` (sealed) is set already confirmed."""
    doc = {
        "_id": account_id,
        "username": username,
        "name": name,
        "role": role,
        "region": region,
        "region_path": regions.path(region),
        "unit": unit,
        "status": "active",
        "password_hash": password_hash,
        "must_change_password": must_change_password,
        "totp": {"enabled": totp_secret is not None, "secret": totp_secret, "pending": None, "last_step": 0},
        "created_by": by.id if by else None,
        "created_at": stamp(now),
        "updated_at": stamp(now),
    }
    created = events.AccountCreated(username=username, role=role, region=region, unit=unit,  # type: ignore[arg-type]
                                    must_change_password=must_change_password,
                                    totp_enabled=totp_secret is not None, via=via)  # type: ignore[arg-type]
    return doc, [event(created, account_id, by, now)]


def _changed_event(account: Mapping[str, Any], after: Mapping[str, Any], changed: list[str], by: Actor | None,
                   now: datetime) -> Outgoing:
    merged = {**account, **after}
    payload = events.AccountChanged(
        username=account["username"], changed=changed, role=merged["role"], region=merged["region"],
        unit=merged.get("unit"), status=merged["status"],
        totp_enabled=bool(merged.get("totp.enabled", totp_enabled(account))))
    return event(payload, account["_id"], by, now)


def change_account(account: Mapping[str, Any], wanted: Mapping[str, Any], admin: Principal, now: datetime,
                   sessions_revoked: int = 0) -> Change | None:
    """An admin's change of name, role, region, unit or status; None when nothing would change."""
    if not check_admin_may_manage(admin, account):
        raise NotAllowed("outside your reach")
    role = wanted.get("role", account["role"])
    region = wanted.get("region", account["region"])
    unit = wanted["unit"] if "unit" in wanted else account.get("unit")
    if role != "investigator" and "unit" not in wanted:
        unit = None  # a unit belongs to investigators only; leaving that role leaves the unit
    if "role" in wanted or "region" in wanted:
        check_admin_may_grant(admin, role, region)
    check_grant(role, region, unit)
    after: dict[str, Any] = {}
    for field, value in (("name", wanted.get("name", account["name"])), ("role", role), ("region", region),
                         ("unit", unit), ("status", wanted.get("status", account["status"]))):
        if value != account.get(field):
            after[field] = value
    if not after:
        return None
    if "region" in after:
        after["region_path"] = regions.path(region)
    after["updated_at"] = stamp(now)
    changed = [f for f in ("name", "role", "region", "unit", "status") if f in after]
    by = actor_of(admin)
    if after.get("status") == "disabled":
        disabled = events.AccountDisabled(username=account["username"], region=region,
                                          sessions_revoked=sessions_revoked)
        outgoing = [event(disabled, account["_id"], by, now)]
        if len(changed) > 1:
            outgoing.insert(0, _changed_event(account, after, [c for c in changed if c != "status"], by, now))
        return Change(set=after, events=outgoing)
    return Change(set=after, events=[_changed_event(account, after, changed, by, now)])


def reset_password(account: Mapping[str, Any], password_hash: str, reset_totp: bool, admin: Principal | None,
                   now: datetime, sessions_revoked: int) -> Change:
    """A one-time password: must be changed at the next sign-in; the second factor is cleared if asked."""
    fields: dict[str, Any] = {"password_hash": password_hash, "must_change_password": True,
                              "updated_at": stamp(now)}
    if reset_totp:
        fields.update({"totp.enabled": False, "totp.secret": None, "totp.pending": None})
    payload = events.AccountPasswordReset(username=account["username"], region=account["region"],
                                          totp_reset=reset_totp, sessions_revoked=sessions_revoked)
    return Change(set=fields, events=[event(payload, account["_id"], actor_of(admin), now)])


def password_changed(account: Mapping[str, Any], password_hash: str, now: datetime) -> Change:
    fields = {"password_hash": password_hash, "must_change_password": False, "updated_at": stamp(now)}
    return Change(set=fields, events=[_changed_event(account, fields, ["password"], account_actor(account), now)])


def totp_pending(sealed_secret: str, now: datetime) -> Change:
    return Change(set={"totp.pending": sealed_secret, "updated_at": stamp(now)})


def totp_confirmed(account: Mapping[str, Any], step: int, now: datetime) -> Change:
    fields = {"totp.enabled": True, "totp.secret": account["totp"]["pending"], "totp.pending": None,
              "totp.last_step": step, "updated_at": stamp(now)}
    return Change(set=fields, events=[_changed_event(account, fields, ["totp"], account_actor(account), now)])


def code_used(step: int) -> Change:
    """A TOTP code accepted at sign-in: no code of this step or an earlier one is accepted again."""
    return Change(set={"totp.last_step": step})


# --- views ----------------------------------------------------------------------------------------------------


def me_view(account: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": account["_id"], "username": account["username"], "name": account["name"],
            "role": account["role"], "region": account["region"], "unit": account.get("unit"),
            "status": account["status"], "totp_enabled": totp_enabled(account),
            "must_change_password": bool(account.get("must_change_password"))}


def admin_view(account: Mapping[str, Any]) -> dict[str, Any]:
    return {**me_view(account), "created_by": account.get("created_by"), "created_at": account.get("created_at"),
            "updated_at": account.get("updated_at")}
