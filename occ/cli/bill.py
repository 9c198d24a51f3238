"""``occ bill run``: invoices (postpaid) and statements (prepaid) for a billing period."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import asyncpg

from balance.store import BalanceStore
from billing.billrun import RunResult, bill_run
from billing.invoice_model import BillingError, parse_period
from billing.tariff_store import load_catalog
from occ.cli import common
from occ.cli.account import connected
from rating_core.money import format_money


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("bill", help="billing runs", description="billing runs")
    commands = group.add_subparsers(dest="bill_command", metavar="COMMAND", required=True)
    run = common.add_command(
        commands,
        "run",
        "bill a period: an invoice per postpaid account (prorated recurring fees, one-time fees, usage by"
        " service and rating group, taxes) and a statement per prepaid account; running it again changes"
        " nothing",
        json_output=True,
    )
    run.add_argument("--period", required=True, metavar="YYYY-MM", help="the calendar month to bill (UTC)")
    run.add_argument("--account", metavar="ID", help="bill this account only")
    run.add_argument("--dry-run", action="store_true", help="compute and show, write nothing")
    run.add_argument(
        "--issued-on", metavar="YYYY-MM-DD", help="issue date printed on the invoices (default: today, UTC)"
    )
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        period = parse_period(args.period)
    except BillingError as exc:
        raise common.UsageError(str(exc)) from None
    today = common.day(args.issued_on, "--issued-on")
    settings = common.settings(args).billing
    bar = _progress_bar() if sys.stderr.isatty() and not args.json else None

    async def run(conn: asyncpg.Connection, store: BalanceStore) -> RunResult:
        catalog = await load_catalog(conn)
        return await bill_run(
            conn,
            catalog,
            settings,
            period,
            today=today,
            account_id=args.account,
            dry_run=args.dry_run,
            progress=bar,
            store=store,
        )

    try:
        result = connected(args, run)
    except BillingError as exc:
        raise common.UsageError(str(exc)) from None
    if bar is not None:
        sys.stderr.write("\n")
    if args.json:
        common.print_json(_json(result))
    else:
        _print(result)
    return 1 if result.errors else 0


def _progress_bar() -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} accounts")
        sys.stderr.flush()

    return show


def _json(result: RunResult) -> dict[str, object]:
    return {
        "period": result.period,
        "dry_run": result.dry_run,
        "accounts": result.accounts,
        "invoices": sum(1 for b in result.bills if b.kind == "invoice"),
        "statements": sum(1 for b in result.bills if b.kind == "statement"),
        "already_billed": result.existing,
        "nothing_to_bill": result.empty,
        "totals": {currency: format_money(total) for currency, total in result.totals().items()},
        "bills": [
            {
                "account_id": b.account_id,
                "kind": b.kind,
                "number": result.numbers.get(b.account_id),
                "currency": b.currency,
                "subtotal": format_money(b.draft.subtotal),
                "tax": format_money(b.draft.tax),
                "total": format_money(b.draft.total),
            }
            for b in result.bills
        ],
        "errors": [{"account_id": a, "reason": r} for a, r in result.errors],
    }


def _print(result: RunResult) -> None:
    invoices = [b for b in result.bills if b.kind == "invoice"]
    statements = len(result.bills) - len(invoices)
    verb = "would issue" if result.dry_run else "issued"
    for account_id, reason in result.errors:
        print(f"occ: account {account_id}: {reason}", file=sys.stderr)
    totals = ", ".join(f"{format_money(t)} {c}" for c, t in sorted(result.totals().items())) or "nothing"
    print(
        f"period {result.period}: {result.accounts} accounts; {verb} {len(invoices)} invoices ({totals})"
        f" and {statements} statements; {result.existing} already billed, {result.empty} with nothing to"
        f" bill, {len(result.errors)} failed"
    )
