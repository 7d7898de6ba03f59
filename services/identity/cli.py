"""The command line: the first admin (`make admin USERNAME=… REGION=…`) and the dev demo accounts.

Both work on identity's own database through its store, and their events leave through the outbox like every
other change: published right away when Kafka is up, else by the running service's sweeper.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import segno
from pydantic import ValidationError

from services.identity import credentials, domain
from services.identity.accounts import Directory
from services.identity.app import IdentitySettings, build_directory
from services.identity.store import UsernameTaken
from shared.service import build_runtime

DEMO_PASSWORD = "waspada-demo-2026"
DEV_TOTP_SECRET = "WASPADADEVTOTPSECRETFORDEMOONLY2"  # documented in README; demo accounts in dev only
DEMO_ACCOUNTS = (  # username, role, region, unit
    ("demo-pelapor", "reporter", "36.03.11.2009", None),
    ("demo-verifikator", "verifier", "36.03", None),
    ("demo-penyidik", "investigator", "36.03", "polresta_tangerang"),
    ("demo-pengawas", "supervisor", "36.03", None),
    ("demo-admin", "admin", "36", None),
)


async def with_directory(settings: IdentitySettings, work: Callable[[Directory], Awaitable[Any]]) -> Any:
    runtime = build_runtime(settings.model_copy(update={"log_level": "WARNING"}))
    directory = build_directory(runtime, settings)
    try:
        await directory.store.ensure_indexes()
        await runtime.relay.ensure_indexes()
        try:
            await runtime.broker.start()
        except Exception as exc:  # noqa: BLE001 - the events wait in the outbox for the service's sweeper
            print(f"waspada: Kafka not reachable ({type(exc).__name__}); events stay in the outbox", file=sys.stderr)
        return await work(directory)
    finally:
        await runtime.broker.stop()
        await runtime.client.close()


async def create_admin(directory: Directory, *, username: str, region: str, name: str, password: str,
                       totp_secret: str) -> dict[str, Any]:
    """The first admin: their own password, and a second factor confirmed from the start (shown once, here)."""
    domain.check_new_password(password, domain.normalise_username(username))
    account, _ = await directory.create_account(username=username, name=name, role="admin", region=region,
                                                unit=None, admin=None, via="cli", password=password,
                                                totp_secret=totp_secret)
    return account


async def create_demo_accounts(directory: Directory) -> list[str]:
    """The dev demo accounts, once each (a second run finds them and changes nothing)."""
    made = []
    for username, role, region, unit in DEMO_ACCOUNTS:
        if await directory.store.by_username(username) is not None:
            continue
        try:
            await directory.create_account(
                username=username, name=username.replace("-", " ").title(), role=role, region=region, unit=unit,
                admin=None, via="demo", password=DEMO_PASSWORD,
                totp_secret=DEV_TOTP_SECRET if domain.needs_second_factor(role) else None,
                account_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"waspada:demo:{username}")))
            made.append(username)
        except UsernameTaken:
            continue  # made meanwhile by another run
    return made


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password (at least 10 characters): ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("waspada: the passwords differ")
    return first


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.identity")
    commands = parser.add_subparsers(dest="command", required=True)
    admin = commands.add_parser("admin", help="create an admin account (the first one, or any later)")
    admin.add_argument("--username", required=True)
    admin.add_argument("--region", required=True, help="Kemendagri province or regency code, e.g. 36 or 36.03")
    admin.add_argument("--name", help="display name (default: the username)")
    admin.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    commands.add_parser("demo", help="create the demo accounts (WASPADA_ENV=dev only)")
    args = parser.parse_args(argv)
    try:
        settings = IdentitySettings()
    except ValidationError as exc:
        raise SystemExit(f"waspada: refusing to start: {exc.errors()[0]['msg']}") from None

    if args.command == "demo":
        if settings.env != "dev":
            raise SystemExit("waspada: demo accounts are made only with WASPADA_ENV=dev")
        made = asyncio.run(with_directory(settings, create_demo_accounts))
        print(f"demo accounts: {', '.join(made) if made else 'all exist'} (password {DEMO_PASSWORD})")
        return

    password = _read_password(args.password_stdin)
    secret = credentials.new_totp_secret()
    try:
        account = asyncio.run(with_directory(settings, lambda d: create_admin(
            d, username=args.username, region=args.region, name=args.name or args.username, password=password,
            totp_secret=secret)))
    except domain.FieldProblem as exc:
        raise SystemExit(f"waspada: {exc}") from None
    except UsernameTaken:
        raise SystemExit(f"waspada: the username {args.username!r} is taken") from None
    uri = credentials.enrolment_uri(secret, account["username"], settings.totp_issuer)
    print(f"admin {account['username']} created (id {account['_id']}, region {account['region']}).")
    print("Scan this with an authenticator app now; it is shown only once:\n")
    segno.make(uri, error="m").terminal(compact=True)
    print(f"\n{uri}")
