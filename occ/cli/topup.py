"""``occ topup``: credit money to an account, once per reference."""

from __future__ import annotations

import argparse

from billing.provisioning import TopupResult, check_topup, new_reference
from occ.cli import common
from occ.cli.account import money, now, provision, usage
from rating_core.money import format_money


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topup = common.add_command(
        sub, "topup", "credit money to an account, once per reference", json_output=True
    )
    topup.add_argument("account_id", metavar="ID")
    topup.add_argument("amount", metavar="AMOUNT", help="decimal amount in the account currency, e.g. 10.00")
    topup.add_argument(
        "--reference",
        metavar="REF",
        help="payment reference; repeating it credits nothing (default: a new UUID)",
    )
    topup.set_defaults(handler=_topup)


def _topup(args: argparse.Namespace) -> int:
    amount = money(args.amount, "amount")
    reference: str = args.reference if args.reference is not None else new_reference()
    usage(lambda: check_topup(args.account_id, amount, reference))
    when = now()
    result: TopupResult = provision(args, lambda p: p.topup(args.account_id, amount, reference, now=when))
    if args.json:
        common.print_json(
            {
                "account_id": result.account_id,
                "reference": result.reference,
                "amount": result.amount,
                "amount_formatted": format_money(result.amount),
                "duplicate": result.duplicate,
                "balance": result.balance,
                "balance_formatted": format_money(result.balance),
            }
        )
    elif result.duplicate:
        print(f"reference {reference} was credited before; balance {format_money(result.balance)}")
    else:
        print(
            f"credited {format_money(amount)} to {args.account_id} (reference {reference}); "
            f"balance {format_money(result.balance)}"
        )
    return 0
