"""``occ gl export``: the month's general ledger journal as CSV, debits equal to credits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import asyncpg

from billing.gl import JournalLine, UnbalancedJournal, check_balanced, journal, to_csv
from billing.invoice_model import BillingError, parse_period
from occ.cli import common
from occ.cli.account import with_database
from rating_core.money import format_money


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("gl", help="general ledger", description="general ledger")
    commands = group.add_subparsers(dest="gl_command", metavar="COMMAND", required=True)
    export = common.add_command(
        commands,
        "export",
        "write the month's double-entry journal (invoices, credit notes, payments, prepaid top-ups and"
        " usage) as CSV; refused if any entry does not balance",
        json_output=False,
    )
    export.add_argument("--period", required=True, metavar="YYYY-MM")
    export.add_argument("-o", "--output", required=True, metavar="FILE.csv", help="'-' for stdout")
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    try:
        period = parse_period(args.period)
    except BillingError as exc:
        raise common.UsageError(str(exc)) from None

    async def run(conn: asyncpg.Connection) -> list[JournalLine]:
        return await journal(conn, period)

    lines = with_database(args, run)
    try:
        debits, credits = check_balanced(lines)
    except UnbalancedJournal as exc:
        raise common.CommandError(str(exc)) from None
    text = to_csv(lines)
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise common.CommandError(f"cannot write {args.output}: {exc.strerror}") from None
    print(
        f"wrote {len(lines)} journal lines for {period.label} to {args.output}:"
        f" debits {format_money(debits)} = credits {format_money(credits)}"
    )
    return 0
