"""Recurring fees and the postpaid live balance, through the real balance engine (Redis) and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg

from balance.records import AccountKind, AccountRecord
from balance.store import BalanceStore
from billing.billrun import bill_run
from billing.invoice_model import parse_period
from billing.recurring import due_fees, recurring_run
from billing.tariff_store import load_catalog
from tests.billing.charging import drain, make_sink
from tests.billing.test_billrun import SETTINGS, account

DEMO = Path(__file__).resolve().parents[2] / "config" / "tariffs" / "demo.toml"
EUR = 1_000_000


async def live_account(
    db: asyncpg.Connection, store: BalanceStore, kind: str, since: datetime, money: int = 0, limit: int = 0
) -> str:
    """An account in PostgreSQL and in the live store, with ``money`` topped up."""
    account_id = await account(db, kind, since=since, credit_limit=limit)
    await store.put_account(
        AccountRecord(
            account_id=account_id, kind=AccountKind(kind), currency="EUR", plan="demo", credit_limit=limit
        )
    )
    if money:
        await store.credit(account_id, money, key="opening", reason="topup", now=since)
    return account_id


async def test_monthly_fees_are_debited_once_per_month_and_prorated_when_joining(
    db: asyncpg.Connection, store: BalanceStore
) -> None:
    old = await live_account(db, store, "prepaid", datetime(2026, 1, 1, tzinfo=UTC), money=20 * EUR)
    new = await live_account(db, store, "prepaid", datetime(2026, 11, 16, 9, tzinfo=UTC), money=20 * EUR)
    poor = await live_account(db, store, "prepaid", datetime(2026, 1, 1, tzinfo=UTC), money=EUR)
    catalog = await load_catalog(db)
    first = await recurring_run(db, store, catalog, date(2026, 11, 20))
    debited = {(d.account_id, d.fee): d.amount for d in first.debited}
    assert debited == {
        (old, "subscription"): 9_990_000,
        (new, "subscription"): 4_995_000,  # 15 of 30 days
        (new, "activation"): 5 * EUR,  # the plan started: its once fee
    }
    assert [(d.account_id, reason) for d, reason in first.refused] == [(poor, "insufficient funds")]
    assert (await store.query(old)).balance == 20 * EUR - 9_990_000
    assert (await store.query(poor)).balance == EUR  # nothing moved
    again = await recurring_run(db, store, catalog, date(2026, 11, 30))
    assert (again.debited, again.already) == ([], 3)
    december = await recurring_run(db, store, catalog, date(2026, 12, 1))
    assert {(d.account_id, d.period) for d in december.debited} == {(old, "2026-12"), (new, "2026-12")}


def test_due_fees_for_a_plan_that_starts_on_the_last_day() -> None:
    from rating_core.tariff import Catalog
    from rating_core.tariff_file import load_tariff_file

    catalog = Catalog(load_tariff_file(DEMO))
    fees = due_fees("a", datetime(2028, 2, 29, 22, tzinfo=UTC), catalog, "demo", date(2028, 2, 29))
    assert {(f.fee, f.amount) for f in fees} == {("subscription", 344_483), ("activation", 5 * EUR)}  # 1/29


async def test_a_postpaid_invoice_gives_the_period_usage_back_to_the_live_balance_once(
    db: asyncpg.Connection, store: BalanceStore, own_database: str
) -> None:
    a = await live_account(db, store, "postpaid", datetime(2026, 1, 1, tzinfo=UTC), limit=50 * EUR)
    # the period's usage, as the sink would have stored it, and as Redis has it
    nov = datetime(2026, 11, 10, tzinfo=UTC)
    await db.execute(
        "insert into ledger_entries (entry_id, account_id, kind, service, units, amount, occurred_at)"
        " values ($1, $2, 'usage', 'data', 1000, -30000000, $3)",
        uuid.uuid4().hex,
        a,
        nov,
    )
    await store.link.execute("HINCRBY", store.keys.account(a).account, "bal", -30 * EUR)
    catalog = await load_catalog(db)
    run = await bill_run(db, catalog, SETTINGS, parse_period("2026-11"), today=date(2026, 12, 1), store=store)
    assert (run.settled_live, run.pending_live) == (1, 0)
    assert (await store.query(a)).balance == 0  # the credit limit is whole again for December
    # (the "billed" credit is a charge record of today's date: the sink stores it before the next run)
    await drain(make_sink(store, own_database), store)
    again = await bill_run(
        db, catalog, SETTINGS, parse_period("2026-11"), today=date(2026, 12, 1), store=store
    )
    assert (again.settled_live, (await store.query(a)).balance) == (0, 0)
