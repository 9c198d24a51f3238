"""``occ redis rebuild``: recreate in Redis the accounts it lost, from PostgreSQL."""

from __future__ import annotations

import argparse

from billing.provisioning import RebuildResult
from occ.cli import common
from occ.cli.account import now, provision


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("redis", help="the live store", description="the live store")
    commands = group.add_subparsers(dest="redis_command", metavar="COMMAND", required=True)
    rebuild = common.add_command(
        commands,
        "rebuild",
        "restore every account Redis lacks (balance, identities, unexpired buckets) from PostgreSQL;"
        " run it with charging stopped",
        json_output=True,
    )
    rebuild.set_defaults(handler=_rebuild)


def _rebuild(args: argparse.Namespace) -> int:
    when = now()
    result: RebuildResult = provision(args, lambda p: p.rebuild(now=when))
    if args.json:
        common.print_json(
            {
                "accounts": result.accounts,
                "restored": result.restored,
                "identities": result.identities,
                "buckets": result.buckets,
            }
        )
    else:
        print(
            f"restored {result.restored} of {result.accounts} accounts"
            f" ({result.identities} identities, {result.buckets} buckets)"
        )
    return 0
