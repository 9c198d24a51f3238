"""``occ db migrate``: bring the PostgreSQL schema up to date."""

from __future__ import annotations

import argparse

from billing.db import DatabaseUnavailable
from billing.migrate import apply_migrations
from occ.cli import common
from occ.cli.account import postgres_failures


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("db", help="PostgreSQL schema", description="PostgreSQL schema")
    commands = group.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    migrate = common.add_command(
        commands, "migrate", "apply the schema migrations not applied yet", json_output=False
    )
    migrate.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    s = common.settings(args)
    with postgres_failures():
        try:
            applied = common.run(apply_migrations(s.database.url, timeout=s.database.connect_timeout_s))
        except DatabaseUnavailable as exc:
            raise common.CommandError(str(exc)) from None
    if not applied:
        print("up to date")
    for name in applied:
        print(f"applied {name}")
    return 0
