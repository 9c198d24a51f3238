"""``occ balance``: an account's live money, buckets and open reservations, as Redis has them now."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from balance.records import AccountView
from balance.store import BalanceStore
from billing.provisioning import check_account_id, live_balance
from occ.cli import common
from occ.cli.account import account_json, failures, iso, usage
from rating_core.money import format_money


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    balance = common.add_command(
        sub, "balance", "live money, buckets and open reservations of an account", json_output=True
    )
    balance.add_argument("account_id", metavar="ID")
    balance.set_defaults(handler=_balance)


def _moment(ms: int) -> str:
    return iso(datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000))


def view_json(view: AccountView) -> dict[str, Any]:
    """Money as integer micro-units, each with its formatted twin under ``formatted``."""
    money = {
        "balance": view.balance,  # excludes money held by reservations
        "reserved": view.reserved,
        "credit_limit": view.account.credit_limit,
        "available": view.balance + view.account.credit_limit,  # what new reservations may still take
    }
    return {
        "account": account_json(view.account),
        **money,
        "formatted": {name: format_money(value) for name, value in money.items()},
        "buckets": [
            {
                "bucket_id": b.bucket_id,
                "service": b.service,
                "units": b.units,
                "reserved": b.reserved,
                "expires_at": _moment(b.expires_at_ms),
                "priority": b.priority,
            }
            for b in view.buckets
        ],
        "reservations": [
            {
                "session_id": r.session_id,
                "item": r.item,
                "service": r.service,
                "money": r.money,
                "money_formatted": format_money(r.money),
                "units": r.units,
                "bucket_units": r.bucket_units,
                "expires_at": _moment(r.expires_at_ms),
            }
            for r in view.reservations
        ],
    }


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _print_human(view: AccountView) -> None:
    a = view.account
    print(f"account       {a.account_id} ({a.kind.value}, plan {a.plan}, {a.status.value})")
    width = len(format_money(max(abs(view.balance), view.reserved, a.credit_limit) * 10))
    for label, value in (
        ("balance", view.balance),
        ("reserved", view.reserved),
        ("credit limit", a.credit_limit),
        ("available", view.balance + a.credit_limit),
    ):
        print(f"{label:<13} {format_money(value):>{width}} {a.currency}")
    if view.buckets:
        print("buckets")
        rows = [["ID", "SERVICE", "UNITS", "RESERVED", "EXPIRES", "PRIORITY"]]
        rows += [
            [b.bucket_id, b.service, str(b.units), str(b.reserved), _moment(b.expires_at_ms), str(b.priority)]
            for b in view.buckets
        ]
        print("\n".join(_table(rows)))
    else:
        print("buckets       none")
    if view.reservations:
        print("reservations")
        rows = [["SESSION", "ITEM", "SERVICE", "MONEY", "UNITS", "BUCKET UNITS", "EXPIRES"]]
        rows += [
            [
                r.session_id,
                r.item,
                r.service,
                format_money(r.money),
                str(r.units),
                str(r.bucket_units),
                _moment(r.expires_at_ms),
            ]
            for r in view.reservations
        ]
        print("\n".join(_table(rows)))
    else:
        print("reservations  none")


def _balance(args: argparse.Namespace) -> int:
    usage(lambda: check_account_id(args.account_id))
    s = common.settings(args)

    async def query() -> AccountView:
        store = await BalanceStore.connect(s.redis, s.balance)
        try:
            return await live_balance(store, args.account_id)
        finally:
            await store.close()

    with failures():
        view = common.run(query())
    if args.json:
        common.print_json(view_json(view))
    else:
        _print_human(view)
    return 0
