"""``occ recurring run``: prepaid recurring fees through the balance engine, once per period."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from balance.store import BalanceStore
from billing.recurring import FeeDebit, RecurringResult, recurring_run
from billing.tariff_store import load_catalog
from occ.cli import common
from occ.cli.account import connected
from rating_core.money import format_money


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("recurring", help="recurring fees", description="recurring fees")
    commands = group.add_subparsers(dest="recurring_command", metavar="COMMAND", required=True)
    run = common.add_command(
        commands,
        "run",
        "debit the prepaid accounts' plan fees due on a date (monthly: once per month, prorated in the"
        " month the plan started; daily: once per day); running it again debits nothing twice",
        json_output=True,
    )
    run.add_argument("--date", metavar="YYYY-MM-DD", help="the day to charge for (default: today, UTC)")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    on = common.day(args.date, "--date")

    async def run(conn: asyncpg.Connection, store: BalanceStore) -> RecurringResult:
        return await recurring_run(conn, store, await load_catalog(conn), on)

    result = connected(args, run)
    if args.json:
        common.print_json(
            {
                "date": on.isoformat(),
                "accounts": result.accounts,
                "debited": [_debit(d) for d in result.debited],
                "already_debited": result.already,
                "refused": [{**_debit(d), "reason": reason} for d, reason in result.refused],
            }
        )
    else:
        for d, reason in result.refused:
            print(
                f"occ: account {d.account_id}: fee {d.fee} for {d.period} not debited: {reason}",
                file=sys.stderr,
            )
        total = sum(d.amount for d in result.debited)
        print(
            f"{on}: {result.accounts} prepaid accounts; debited {len(result.debited)} fees"
            f" ({format_money(total)}), {result.already} already debited, {len(result.refused)} refused"
        )
    return 0


def _debit(d: FeeDebit) -> dict[str, object]:
    return {"account_id": d.account_id, "fee": d.fee, "period": d.period, "amount": format_money(d.amount)}
