"""``occ bucket add``: give an account a unit allowance (seconds, bytes or events of one service)."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime

from balance.records import BucketRecord
from billing.provisioning import Outcome, check_account_id, check_bucket
from occ.cli import common
from occ.cli.account import iso, now, provision, usage


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("bucket", help="unit buckets of accounts", description="unit buckets of accounts")
    commands = group.add_subparsers(dest="bucket_command", metavar="COMMAND", required=True)
    add = common.add_command(commands, "add", "add a unit bucket to an account", json_output=False)
    add.add_argument("account_id", metavar="ID")
    add.add_argument("--service", required=True, help="the service the units are for, e.g. data")
    add.add_argument("--units", required=True, type=int, help="seconds, bytes or events")
    add.add_argument(
        "--expires",
        required=True,
        metavar="ISO8601",
        help="expiry, e.g. 2025-12-31T23:59:59Z (no offset: UTC)",
    )
    add.add_argument("--priority", type=int, default=100, help="lower is used first (default 100)")
    add.add_argument(
        "--bucket-id", metavar="B", help="ID that makes a repeated command a no-op (default: a new one)"
    )
    add.set_defaults(handler=_add)


def parse_expiry(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise common.UsageError(
            f"invalid --expires {text!r}: expected ISO 8601 such as 2025-12-31T23:59:59Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _add(args: argparse.Namespace) -> int:
    usage(lambda: check_account_id(args.account_id))
    bucket_id = args.bucket_id or f"{args.account_id}:{args.service}:{uuid.uuid4().hex[:12]}"
    bucket = BucketRecord(
        bucket_id=bucket_id,
        service=args.service,
        units=args.units,
        expires_at=parse_expiry(args.expires),
        priority=args.priority,
    )
    when = now()
    usage(lambda: check_bucket(bucket, when))
    outcome: Outcome = provision(args, lambda p: p.add_bucket(args.account_id, bucket, now=when))
    verb = "added to" if outcome is Outcome.CREATED else "already on"
    print(
        f"bucket {bucket_id} ({bucket.units} {bucket.service} units until {iso(bucket.expires_at)}) "
        f"{verb} account {args.account_id}"
    )
    return 0
