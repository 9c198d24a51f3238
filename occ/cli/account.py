"""``occ account create|set-status|show``, and the plumbing every provisioning command shares."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from balance.link import RedisError
from balance.records import AccountKind, AccountRecord, AccountStatus, BucketRecord
from balance.store import BalanceStore, StoreUnavailable
from billing import db
from billing.db import DatabaseUnavailable
from billing.provisioning import (
    AccountDetails,
    AccountResult,
    InvalidInput,
    Outcome,
    Provisioning,
    ProvisioningError,
    check_account,
    check_account_id,
)
from occ import log
from occ.cli import common
from rating_core.money import format_money, parse_money

T = TypeVar("T")


# --- shared by the provisioning commands --------------------------------------------------------


@contextmanager
def postgres_failures() -> Iterator[None]:
    """Errors PostgreSQL raises while a command runs, as CommandError."""
    try:
        yield
    except asyncpg.UndefinedTableError as exc:
        raise common.CommandError(f"PostgreSQL: {log.one_line(exc)} (run 'occ db migrate')") from None
    except asyncpg.PostgresError as exc:
        raise common.CommandError(f"PostgreSQL: {log.one_line(exc)}") from None
    except asyncpg.InterfaceError as exc:
        raise common.CommandError(f"PostgreSQL connection: {log.one_line(exc)}") from None


@contextmanager
def failures() -> Iterator[None]:
    """A provisioning command's failures as the CLI's errors: bad input exits 2, everything else 1."""
    try:
        with postgres_failures():
            yield
    except InvalidInput as exc:
        raise common.UsageError(str(exc)) from None
    except (ProvisioningError, DatabaseUnavailable, StoreUnavailable) as exc:
        raise common.CommandError(str(exc)) from None
    except RedisError as exc:
        raise common.CommandError(f"Redis failed: {exc}") from None
    except OSError as exc:
        raise common.CommandError(f"connection failed: {log.one_line(exc)}") from None


def usage(check: Callable[[], Any]) -> None:
    """Run a pure validation before any connection is opened, so bad input fails fast and exits 2."""
    try:
        check()
    except InvalidInput as exc:
        raise common.UsageError(str(exc)) from None


def provision(args: argparse.Namespace, operation: Callable[[Provisioning], Awaitable[T]]) -> T:
    """Open PostgreSQL and the live store, run one provisioning operation, close both."""
    return connected(args, lambda conn, store: operation(Provisioning(conn, store)))


def with_database(args: argparse.Namespace, operation: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Open PostgreSQL, run one operation, close it."""
    s = common.settings(args)

    async def main() -> T:
        conn = await db.connect(s.database.url, s.database.connect_timeout_s)
        try:
            return await operation(conn)
        finally:
            await conn.close()

    with failures():
        return common.run(main())


def connected(
    args: argparse.Namespace, operation: Callable[[asyncpg.Connection, BalanceStore], Awaitable[T]]
) -> T:
    """Open PostgreSQL and the live store, run one operation on both, close both."""
    s = common.settings(args)

    async def main() -> T:
        conn = await db.connect(s.database.url, s.database.connect_timeout_s)
        try:
            store = await BalanceStore.connect(s.redis, s.balance)
            try:
                return await operation(conn, store)
            finally:
                await store.close()
        finally:
            await conn.close()

    with failures():
        return common.run(main())


def now() -> datetime:
    return datetime.now(UTC)


def money(amount: str, what: str) -> int:
    try:
        return parse_money(amount)
    except ValueError:
        raise common.UsageError(
            f"invalid {what} {amount!r}: expected a decimal amount such as 10.00"
        ) from None


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def account_json(record: AccountRecord) -> dict[str, Any]:
    return {
        "account_id": record.account_id,
        "kind": record.kind.value,
        "currency": record.currency,
        "plan": record.plan,
        "status": record.status.value,
        "credit_limit": record.credit_limit,
        "credit_limit_formatted": format_money(record.credit_limit),
    }


def bucket_json(bucket: BucketRecord) -> dict[str, Any]:
    return {
        "bucket_id": bucket.bucket_id,
        "service": bucket.service,
        "units": bucket.units,
        "expires_at": iso(bucket.expires_at),
        "priority": bucket.priority,
    }


# --- occ account ...-------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "account", help="create and manage accounts", description="create and manage accounts"
    )
    commands = group.add_subparsers(dest="account_command", metavar="COMMAND", required=True)

    create = common.add_command(
        commands, "create", "create an account with this period's allowances of its plan", json_output=True
    )
    create.add_argument("account_id", metavar="ID")
    create.add_argument("--type", dest="kind", required=True, choices=[k.value for k in AccountKind])
    create.add_argument("--plan", required=True, help="a plan installed with 'occ tariff'")
    create.add_argument("--currency", required=True, help="ISO 4217 code, e.g. EUR")
    create.add_argument(
        "--credit-limit", metavar="AMOUNT", help="postpaid only: how far below zero, e.g. 50.00"
    )
    create.set_defaults(handler=_create)

    status = common.add_command(commands, "set-status", "set an account's status", json_output=False)
    status.add_argument("account_id", metavar="ID")
    status.add_argument("status", metavar="STATUS", choices=[s.value for s in AccountStatus])
    status.set_defaults(handler=_set_status)

    plan = common.add_command(
        commands,
        "set-plan",
        "move an account to another plan from now on (the billing run prorates the recurring fees)",
        json_output=False,
    )
    plan.add_argument("account_id", metavar="ID")
    plan.add_argument("plan", metavar="PLAN")
    plan.set_defaults(handler=_set_plan)

    show = common.add_command(
        commands, "show", "an account as PostgreSQL has it: attributes, identities, buckets", json_output=True
    )
    show.add_argument("account_id", metavar="ID")
    show.set_defaults(handler=_show)


def _create(args: argparse.Namespace) -> int:
    kind = AccountKind(args.kind)
    if args.credit_limit is not None and kind is not AccountKind.POSTPAID:
        raise common.UsageError("--credit-limit is for postpaid accounts only")
    limit = 0 if args.credit_limit is None else money(args.credit_limit, "credit limit")
    record = AccountRecord(
        account_id=args.account_id,
        kind=kind,
        currency=args.currency.upper(),
        plan=args.plan,
        credit_limit=limit,
    )
    usage(lambda: check_account(record))
    when = now()
    result: AccountResult = provision(args, lambda p: p.create_account(record, now=when))
    if args.json:
        common.print_json(
            {
                "outcome": result.outcome.value,
                "account": account_json(result.account),
                "buckets": [bucket_json(b) for b in result.buckets],
            }
        )
        return 0
    a = result.account
    verb = "created" if result.outcome is Outcome.CREATED else "exists"
    print(f"account {a.account_id} {verb}: {a.kind.value}, plan {a.plan}, {a.currency}, {a.status.value}")
    for b in result.buckets:
        print(f"  allowance {b.bucket_id}: {b.units} {b.service} units until {iso(b.expires_at)}")
    return 0


def _set_status(args: argparse.Namespace) -> int:
    status = AccountStatus(args.status)
    usage(lambda: check_account_id(args.account_id))
    when = now()
    outcome: Outcome = provision(args, lambda p: p.set_status(args.account_id, status, now=when))
    if outcome is Outcome.UPDATED:
        print(f"account {args.account_id} is now {status.value}")
    else:
        print(f"account {args.account_id} was already {status.value}")
    return 0


def _set_plan(args: argparse.Namespace) -> int:
    usage(lambda: check_account_id(args.account_id))
    when = now()
    outcome: Outcome = provision(args, lambda p: p.set_plan(args.account_id, args.plan, now=when))
    if outcome is Outcome.UPDATED:
        print(f"account {args.account_id} is now on plan {args.plan}")
    else:
        print(f"account {args.account_id} was already on plan {args.plan}")
    return 0


def _show(args: argparse.Namespace) -> int:
    usage(lambda: check_account_id(args.account_id))
    when = now()
    details: AccountDetails = provision(args, lambda p: p.show(args.account_id, now=when))
    # identities are listed by kind and value only: a secret is never printed
    identities = [
        {"kind": i.kind, "value": i.value, "has_password": i.secret is not None} for i in details.identities
    ]
    if args.json:
        common.print_json(
            {
                "account": account_json(details.account),
                "identities": identities,
                "buckets": [bucket_json(b) for b in details.buckets],
                "in_redis": details.in_live_store,
            }
        )
        return 0
    a = details.account
    print(f"account       {a.account_id}")
    print(f"type          {a.kind.value}")
    print(f"plan          {a.plan}")
    print(f"currency      {a.currency}")
    print(f"status        {a.status.value}")
    if a.kind is AccountKind.POSTPAID:
        print(f"credit limit  {format_money(a.credit_limit)}")
    print(f"in redis      {'yes' if details.in_live_store else 'NO (run occ redis rebuild)'}")
    for i in identities:
        print(f"identity      {i['kind']} {i['value']}" + (" (password set)" if i["has_password"] else ""))
    for b in details.buckets:
        until = iso(b.expires_at)
        print(
            f"bucket        {b.bucket_id}: {b.units} {b.service} units until {until}, priority {b.priority}"
        )
    return 0
