"""``occ dunning run``: reminders, suspensions and reactivations for overdue invoices."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from balance.store import BalanceStore
from billing.dunning import DunningResult, dunning_run
from billing.provisioning import Provisioning
from occ.cli import common
from occ.cli.account import connected


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("dunning", help="overdue invoices", description="overdue invoices")
    commands = group.add_subparsers(dest="dunning_command", metavar="COMMAND", required=True)
    run = common.add_command(
        commands,
        "run",
        "remind overdue invoices, suspend accounts after billing.dunning.suspend_after_days (PostgreSQL and"
        " Redis: sessions are cut), reactivate them once paid",
        json_output=True,
    )
    run.add_argument("--date", metavar="YYYY-MM-DD", help="the day to judge by (default: today, UTC)")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    on = common.day(args.date, "--date")
    settings = common.settings(args).billing.dunning

    async def run(conn: asyncpg.Connection, store: BalanceStore) -> DunningResult:
        return await dunning_run(Provisioning(conn, store), settings, on)

    result = connected(args, run)
    if args.json:
        common.print_json(
            {
                "date": on.isoformat(),
                "reminders": [{"invoice": n, "account_id": a} for n, a in result.reminders],
                "suspended": result.suspended,
                "reactivated": result.reactivated,
                "failed": [{"account_id": a, "reason": r} for a, r in result.failed],
            }
        )
    else:
        for account_id, reason in result.failed:
            print(f"occ: account {account_id}: {reason}", file=sys.stderr)
        for number, account_id in result.reminders:
            print(f"reminder: invoice {number} of account {account_id} is overdue")
        for account_id in result.suspended:
            print(f"suspended: account {account_id}")
        for account_id in result.reactivated:
            print(f"reactivated: account {account_id}")
        print(
            f"{on}: {len(result.reminders)} reminders, {len(result.suspended)} suspended,"
            f" {len(result.reactivated)} reactivated, {len(result.failed)} failed"
        )
    return 1 if result.failed else 0
