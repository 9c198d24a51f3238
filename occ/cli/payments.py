"""``occ payments import``: bank statements and payment-system exports in, each payment once."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from balance.store import BalanceStore
from billing.payments import ImportResult, PaymentFileError, import_payments, read_payments
from occ.cli import common
from occ.cli.account import connected
from rating_core.money import format_money


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("payments", help="payments received", description="payments received")
    commands = group.add_subparsers(dest="payments_command", metavar="COMMAND", required=True)
    imp = common.add_command(
        commands,
        "import",
        "import a CSV of payments (header date,amount,reference,payer; payer: an invoice number or an"
        " account id): references seen before are skipped, postpaid payments pay the oldest open"
        " invoices, prepaid ones credit the balance; unmatched rows are listed",
        json_output=True,
    )
    imp.add_argument("file", metavar="FILE.csv")
    imp.set_defaults(handler=_import)


def _import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise common.UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise common.UsageError(f"{path}: not UTF-8 text") from None
    try:
        rows = read_payments(text, path.name)
    except PaymentFileError as exc:
        raise common.UsageError(str(exc)) from None
    today = datetime.now(UTC).date()

    async def run(conn: asyncpg.Connection, store: BalanceStore) -> ImportResult:
        return await import_payments(conn, store, rows, path.name, today)

    result = connected(args, run)
    if args.json:
        common.print_json(
            {
                "imported": [
                    {
                        "line": row.line,
                        "reference": row.reference,
                        "account_id": account,
                        "amount": format_money(row.amount),
                        "paid": [{"invoice": n, "amount": format_money(a)} for n, a in paid],
                    }
                    for row, account, paid in result.imported
                ],
                "duplicates": [{"line": r.line, "reference": r.reference} for r in result.duplicates],
                "unmatched": [
                    {"line": r.line, "reference": r.reference, "payer": r.payer} for r in result.unmatched
                ],
                "pending_live_credit": result.pending_live,
            }
        )
        return 0
    for row in result.unmatched:
        print(
            f"occ: {path.name}:{row.line}: payer {row.payer!r} is no invoice or account; not imported",
            file=sys.stderr,
        )
    total = sum(row.amount for row, _, _ in result.imported)
    print(
        f"imported {len(result.imported)} payments ({format_money(total)});"
        f" {len(result.duplicates)} seen before,"
        f" {len(result.unmatched)} unmatched"
        + (f"; {result.pending_live} prepaid credits wait for Redis" if result.pending_live else "")
    )
    return 0
