"""``occ reconcile``: every account's live money against what the PostgreSQL ledger explains."""

from __future__ import annotations

import argparse
import sys

import asyncpg

from balance.charges import ChargeStreams
from balance.store import BalanceStore
from billing.reconcile import AccountCheck, Report, reconcile
from occ.cli import common
from occ.cli.account import connected
from rating_core.money import format_money


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = common.add_command(
        sub,
        "reconcile",
        "Check every account: Redis balance + open reservations == the sum of its PostgreSQL ledger"
        " rows (plus records the charge sink has not stored yet), at one instant per partition, while"
        " charging goes on. Exits 1 listing every drift.",
        json_output=True,
    )
    parser.set_defaults(handler=_reconcile)


def _reconcile(args: argparse.Namespace) -> int:
    group = common.settings(args).sink.group

    async def run(conn: asyncpg.Connection, store: BalanceStore) -> Report:
        return await reconcile(conn, ChargeStreams(store.link, store.keys, group, "reconcile"))

    report = connected(args, run)
    if args.json:
        common.print_json({"accounts": report.checked, "drifts": [_json(c) for c in report.drifts]})
    else:
        for check in report.drifts:
            print(_line(check), file=sys.stderr)
        verdict = "no drift" if not report.drifts else f"{len(report.drifts)} with drift"
        print(f"reconciled {report.checked} accounts: {verdict}")
    return 1 if report.drifts else 0


def _money(amount: int | None) -> str | None:
    return None if amount is None else format_money(amount)


def _json(check: AccountCheck) -> dict[str, object]:
    return {
        "account_id": check.account_id,
        "problem": check.problem,
        "balance": _money(check.balance),
        "reserved": _money(check.reserved),
        "ledger": format_money(check.ledger),
        "in_flight": format_money(check.in_flight),
        "drift": format_money(check.drift),
    }


def _line(check: AccountCheck) -> str:
    live = "not in Redis"
    if check.live is not None:
        live = (
            f"live {_money(check.live)} (balance {_money(check.balance)} + reserved {_money(check.reserved)})"
        )
    return (
        f"drift: account {check.account_id}: {check.problem}: {live}, ledger {format_money(check.ledger)},"
        f" in flight {format_money(check.in_flight)}, difference {format_money(check.drift)}"
    )
