"""Prepaid recurring fees, debited through the balance engine (so they reach the ledger like any charge).

``occ recurring run --date D`` debits, for every prepaid account that is not closed, each fee of the
plan version in force on D: a monthly fee once per calendar month (prorated by day in the month the plan
started), a daily fee once per day, a "once" fee once, in the month the plan started. Each debit's
idempotency key names the fee and its period, kept for good by the store, so running the command
again — the same day or any day of the month — debits nothing twice. A fee the balance (plus credit
limit) cannot pay is refused and reported; nothing moves for it (the operator's dunning or a top-up
follows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time

import asyncpg

from balance.store import BalanceStore, Refused, StoreUnavailable, UnknownAccount
from billing.invoice_model import PlanSpan, days_in, parse_period, prorated
from rating_core.tariff import Catalog, Period, UnknownPlan


@dataclass(frozen=True, slots=True)
class FeeDebit:
    account_id: str
    fee: str
    period: str  # the month, day or plan start the fee is for
    amount: int
    plan: str = ""
    plan_started: str = ""  # YYYY-MM-DD

    @property
    def key(self) -> str:
        """The idempotency key: this fee of this plan (since its start) for this period. A plan change
        mid-month is a new plan start, so its prorated fee is not taken for the old plan's."""
        return f"{self.plan}@{self.plan_started}/{self.fee}@{self.period}"


@dataclass
class RecurringResult:
    on: date
    accounts: int = 0
    debited: list[FeeDebit] = field(default_factory=list)
    already: int = 0  # fees of these periods debited by an earlier run
    refused: list[tuple[FeeDebit, str]] = field(default_factory=list)


def due_fees(
    account_id: str, plan_started: datetime, catalog: Catalog, plan: str, on: date, *, resumed: bool = False
) -> list[FeeDebit]:
    """The fees an account on ``plan`` (since ``plan_started``) owes for the day ``on``."""
    at = datetime.combine(on, time(), UTC)
    version = catalog.plan(plan, at=max(at, plan_started))
    month = parse_period(f"{on:%Y-%m}")
    started = plan_started.astimezone(UTC).date()
    first_month = month.start <= started < month.end

    def debit(fee: str, period: str, amount: int) -> FeeDebit:
        return FeeDebit(account_id, fee, period, amount, plan, started.isoformat())

    debits = []
    for fee in version.fees:
        if fee.period is Period.MONTHLY:
            days = days_in(PlanSpan(plan, plan_started), month)  # joined this month: the rest of it
            debits.append(debit(fee.name, month.label, prorated(fee.amount, days, month)))
        elif fee.period is Period.DAILY:
            debits.append(debit(fee.name, on.isoformat(), fee.amount))
        elif first_month and not resumed:  # once: in the plan's first month
            debits.append(debit(fee.name, "once", fee.amount))
    return [d for d in debits if d.amount > 0]


async def recurring_run(
    conn: asyncpg.Connection, store: BalanceStore, catalog: Catalog, on: date
) -> RecurringResult:
    result = RecurringResult(on)
    day_start = datetime.combine(on, time(), UTC)
    rows = await conn.fetch(
        "select a.account_id, p.plan, p.started_at, p.resumed from accounts a"
        " join account_plans p on p.account_id = a.account_id"
        " and p.started_at <= $1 and (p.ended_at is null or p.ended_at > $1)"
        " where a.kind = 'prepaid' and a.status <> 'closed' order by a.account_id",
        day_start,
    )
    result.accounts = len(rows)
    now = datetime.now(UTC)
    for row in rows:
        account_id = str(row["account_id"])
        try:
            fees = due_fees(
                account_id, row["started_at"], catalog, str(row["plan"]), on, resumed=row["resumed"]
            )
        except UnknownPlan as exc:
            result.refused.append((FeeDebit(account_id, "?", on.isoformat(), 0), str(exc)))
            continue
        for debit in fees:
            key = debit.key
            try:
                done = await store.debit_fee(account_id, debit.amount, key=key, reference=key, now=now)
            except Refused as exc:
                result.refused.append((debit, str(exc)))
                continue
            except UnknownAccount:
                result.refused.append((debit, "not in the live store"))
                continue
            except StoreUnavailable:
                raise
            if done.duplicate:
                result.already += 1
            else:
                result.debited.append(debit)
    return result
