"""SQL of the accounts, identities, buckets and top-ups tables: one function per statement.

Functions take an open connection and run inside whatever transaction the caller holds; deciding what a
conflict means is the caller's (``billing.provisioning``) business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from balance.records import AccountKind, AccountRecord, AccountStatus, BucketRecord


@dataclass(frozen=True, slots=True)
class IdentityRow:
    kind: str
    value: str
    account_id: str
    # never shown: kept out of repr so it cannot leak through a log line or a traceback
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class TopupRow:
    account_id: str
    reference: str
    amount: int
    credited: bool


def _account(row: asyncpg.Record) -> AccountRecord:
    return AccountRecord(
        account_id=str(row["account_id"]),
        kind=AccountKind(row["kind"]),
        currency=str(row["currency"]),
        plan=str(row["plan"]),
        status=AccountStatus(row["status"]),
        credit_limit=int(row["credit_limit"]),
    )


def _bucket(row: asyncpg.Record) -> BucketRecord:
    return BucketRecord(
        bucket_id=str(row["bucket_id"]),
        service=str(row["service"]),
        units=int(row["units"]),
        expires_at=row["expires_at"],
        priority=int(row["priority"]),
    )


_ACCOUNT_COLUMNS = "account_id, kind, currency, plan, status, credit_limit"
_BUCKET_COLUMNS = "bucket_id, service, units, expires_at, priority"


# --- plans ----------------------------------------------------------------------------------------
async def plan_exists(conn: asyncpg.Connection, plan: str) -> bool:
    return await conn.fetchval("select 1 from tariff_versions where plan = $1 limit 1", plan) is not None


# --- accounts -------------------------------------------------------------------------------------
async def start_plan(
    conn: asyncpg.Connection, account_id: str, plan: str, at: datetime, *, resumed: bool = False
) -> None:
    """End the account's current plan (if any) at ``at`` and start ``plan`` there: the history the
    billing run prorates recurring fees by."""
    await conn.execute(
        "update account_plans set ended_at = $2 where account_id = $1 and ended_at is null", account_id, at
    )
    await conn.execute(
        "insert into account_plans (account_id, plan, started_at, resumed) values ($1, $2, $3, $4)",
        account_id,
        plan,
        at,
        resumed,
    )


async def insert_account(conn: asyncpg.Connection, record: AccountRecord, now: datetime) -> bool:
    """Insert the account; False (and nothing written) when the ID is taken."""
    row = await conn.fetchrow(
        "insert into accounts"
        " (account_id, kind, currency, plan, status, credit_limit, created_at, updated_at)"
        " values ($1, $2, $3, $4, $5, $6, $7, $7)"
        " on conflict (account_id) do nothing returning account_id",
        record.account_id,
        record.kind.value,
        record.currency,
        record.plan,
        record.status.value,
        record.credit_limit,
        now,
    )
    return row is not None


async def fetch_account(
    conn: asyncpg.Connection, account_id: str, *, lock: bool = False
) -> AccountRecord | None:
    """The account, or None; ``lock`` holds a row share lock until the transaction ends."""
    sql = f"select {_ACCOUNT_COLUMNS} from accounts where account_id = $1"
    row = await conn.fetchrow(sql + (" for share" if lock else ""), account_id)
    return None if row is None else _account(row)


async def accounts_after(conn: asyncpg.Connection, after: str, limit: int) -> list[AccountRecord]:
    """A page of accounts in ID order, starting after ``after`` ("" for the first page)."""
    rows = await conn.fetch(
        f"select {_ACCOUNT_COLUMNS} from accounts where account_id > $1 order by account_id limit $2",
        after,
        limit,
    )
    return [_account(r) for r in rows]


async def update_status(
    conn: asyncpg.Connection, account_id: str, status: AccountStatus, now: datetime
) -> AccountStatus | None:
    """Set the status; returns the previous one, or None when the account does not exist."""
    old = await conn.fetchval("select status from accounts where account_id = $1 for update", account_id)
    if old is None:
        return None
    if old != status.value:
        await conn.execute(
            "update accounts set status = $2, updated_at = $3, status_changed_at = $3 where account_id = $1",
            account_id,
            status.value,
            now,
        )
        # a closed account has no plan (nothing more to bill); one reopened has its plan again
        if status is AccountStatus.CLOSED:
            await conn.execute(
                "update account_plans set ended_at = $2 where account_id = $1 and ended_at is null",
                account_id,
                now,
            )
        elif old == AccountStatus.CLOSED.value:
            plan = await conn.fetchval("select plan from accounts where account_id = $1", account_id)
            await start_plan(conn, account_id, str(plan), now, resumed=True)
    return AccountStatus(old)


async def ledger_balance(conn: asyncpg.Connection, account_id: str) -> int:
    """The balance PostgreSQL explains: every top-up plus every other committed ledger amount.

    Top-ups also reach ``ledger_entries`` (kind 'topup') through the charge sink; they are counted once,
    from ``topups``, which holds them even before the sink has run.
    """
    value = await conn.fetchval(
        "select (select coalesce(sum(amount), 0) from topups where account_id = $1)"
        " + (select coalesce(sum(amount), 0) from ledger_entries where account_id = $1 and kind <> 'topup')",
        account_id,
    )
    return int(value)


# --- identities -----------------------------------------------------------------------------------
async def upsert_identity(
    conn: asyncpg.Connection, identity: IdentityRow, now: datetime
) -> IdentityRow | None:
    """Insert the identity, or change the secret of the same identity on the same account.

    Returns the row as it was before (None when new). When the identity belongs to another account nothing
    is written and that account's row is returned.
    """
    previous = await conn.fetchrow(
        "select kind, value, account_id, secret from identities where kind = $1 and value = $2 for update",
        identity.kind,
        identity.value,
    )
    if previous is None:
        inserted = await conn.fetchrow(
            "insert into identities (kind, value, account_id, secret, created_at) values ($1, $2, $3, $4, $5)"
            " on conflict (kind, value) do nothing returning kind",
            identity.kind,
            identity.value,
            identity.account_id,
            identity.secret,
            now,
        )
        if inserted is not None:
            return None
        # lost a race with a concurrent insert: judge against the winner
        return await upsert_identity(conn, identity, now)
    old = IdentityRow(
        kind=str(previous["kind"]),
        value=str(previous["value"]),
        account_id=str(previous["account_id"]),
        secret=previous["secret"],
    )
    if old.account_id == identity.account_id and old.secret != identity.secret:
        await conn.execute(
            "update identities set secret = $3 where kind = $1 and value = $2",
            identity.kind,
            identity.value,
            identity.secret,
        )
    return old


async def identities_of(conn: asyncpg.Connection, account_id: str) -> list[IdentityRow]:
    rows = await conn.fetch(
        "select kind, value, account_id, secret from identities where account_id = $1 order by kind, value",
        account_id,
    )
    return [
        IdentityRow(
            kind=str(r["kind"]), value=str(r["value"]), account_id=str(r["account_id"]), secret=r["secret"]
        )
        for r in rows
    ]


# --- buckets --------------------------------------------------------------------------------------
async def insert_bucket(
    conn: asyncpg.Connection, account_id: str, bucket: BucketRecord, now: datetime
) -> bool:
    """Insert the bucket; False (and nothing written) when the bucket ID is taken."""
    row = await conn.fetchrow(
        "insert into buckets (bucket_id, account_id, service, units, expires_at, priority, created_at)"
        " values ($1, $2, $3, $4, $5, $6, $7) on conflict (bucket_id) do nothing returning bucket_id",
        bucket.bucket_id,
        account_id,
        bucket.service,
        bucket.units,
        bucket.expires_at,
        bucket.priority,
        now,
    )
    return row is not None


async def fetch_bucket(conn: asyncpg.Connection, bucket_id: str) -> tuple[str, BucketRecord, bool] | None:
    """(account ID, bucket, loaded into the live store) for a bucket ID, or None."""
    row = await conn.fetchrow(
        f"select account_id, {_BUCKET_COLUMNS}, loaded_at from buckets where bucket_id = $1", bucket_id
    )
    return None if row is None else (str(row["account_id"]), _bucket(row), row["loaded_at"] is not None)


async def unloaded_buckets(conn: asyncpg.Connection, account_id: str, now: datetime) -> list[BucketRecord]:
    """The account's unexpired buckets the live store has not been given yet."""
    rows = await conn.fetch(
        f"select {_BUCKET_COLUMNS} from buckets"
        " where account_id = $1 and expires_at > $2 and loaded_at is null order by bucket_id",
        account_id,
        now,
    )
    return [_bucket(r) for r in rows]


async def mark_loaded(conn: asyncpg.Connection, bucket_ids: list[str], now: datetime) -> None:
    await conn.execute(
        "update buckets set loaded_at = $2 where bucket_id = any($1::text[]) and loaded_at is null",
        bucket_ids,
        now,
    )


async def live_buckets(conn: asyncpg.Connection, account_id: str, now: datetime) -> list[BucketRecord]:
    """The account's buckets not expired at ``now``, in consumption order."""
    rows = await conn.fetch(
        f"select {_BUCKET_COLUMNS} from buckets where account_id = $1 and expires_at > $2"
        " order by priority, expires_at, bucket_id",
        account_id,
        now,
    )
    return [_bucket(r) for r in rows]


# --- top-ups --------------------------------------------------------------------------------------
async def insert_topup(
    conn: asyncpg.Connection, account_id: str, reference: str, amount: int, now: datetime
) -> TopupRow | None:
    """Record the top-up; returns None when new, else the row already stored under that reference."""
    row = await conn.fetchrow(
        "insert into topups (account_id, reference, amount, created_at) values ($1, $2, $3, $4)"
        " on conflict (account_id, reference) do nothing returning reference",
        account_id,
        reference,
        amount,
        now,
    )
    if row is not None:
        return None
    old = await conn.fetchrow(
        "select amount, credited_at from topups where account_id = $1 and reference = $2",
        account_id,
        reference,
    )
    return TopupRow(
        account_id=account_id,
        reference=reference,
        amount=int(old["amount"]),
        credited=old["credited_at"] is not None,
    )


async def mark_credited(conn: asyncpg.Connection, account_id: str, reference: str, now: datetime) -> None:
    await conn.execute(
        "update topups set credited_at = $3 where account_id = $1 and reference = $2 and credited_at is null",
        account_id,
        reference,
        now,
    )


async def uncredited_topups(conn: asyncpg.Connection, account_id: str) -> list[str]:
    """References of the account's top-ups the live store is not known to hold."""
    rows = await conn.fetch(
        "select reference from topups where account_id = $1 and credited_at is null order by reference",
        account_id,
    )
    return [str(r["reference"]) for r in rows]


async def mark_all_credited(
    conn: asyncpg.Connection, account_id: str, references: list[str], now: datetime
) -> None:
    """After a rebuild restored a balance that includes these top-ups."""
    await conn.execute(
        "update topups set credited_at = $3 where account_id = $1 and reference = any($2::text[])"
        " and credited_at is null",
        account_id,
        references,
        now,
    )
