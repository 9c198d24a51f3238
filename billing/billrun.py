"""The billing run: one invoice (postpaid) or statement (prepaid) per account and period, from PostgreSQL.

Reading is a handful of set queries for the whole run — the ledger is summed with one GROUP BY over the
period's partition — so the run's cost is close to that of the bare GROUP BY (see
benchmarks/bench_billing.py). Writing happens in chunks of accounts, one transaction each, holding the
operator's invoice counter row: numbers are gapless (a failed chunk rolls its numbers back), concurrent
runs queue on the counter and find the invoices the other one made, so running twice changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import asyncpg

from balance.charges import ChargeStreams
from balance.store import BalanceStore, StoreUnavailable, UnknownAccount
from billing import invoice_model as model
from billing.invoice_model import BillingError, BillingPeriod, Draft, Line, PlanSpan, UsageTotal
from billing.numbering import invoice_number, lock_counter, save_counter
from billing.settings import BillingSettings, OperatorSettings
from rating_core.money import parse_money
from rating_core.tariff import Catalog, UnknownPlan

CHUNK = 5000
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Bill:
    """What the run makes for one account: an invoice (postpaid) or a statement (prepaid)."""

    account_id: str
    kind: str  # invoice | statement
    operator_id: str
    currency: str
    draft: Draft
    opening: int | None = None
    closing: int | None = None
    customer: dict[str, str] = field(default_factory=dict)
    # postpaid: the period's net usage debit, given back to the live balance once the invoice is issued
    live_credit: int = 0


@dataclass
class RunResult:
    """What a run did; ``pending_live`` counts postpaid invoices whose usage the live store has not
    taken back yet (Redis was unreachable): the next run retries them."""

    period: str
    dry_run: bool
    accounts: int = 0
    bills: list[Bill] = field(default_factory=list)  # made by this run (or that it would make)
    numbers: dict[str, str] = field(default_factory=dict)  # account -> invoice number given
    existing: int = 0  # accounts billed for the period before
    empty: int = 0  # accounts with nothing to bill
    errors: list[tuple[str, str]] = field(default_factory=list)  # account, reason
    settled_live: int = 0
    pending_live: int = 0

    def totals(self) -> dict[str, int]:
        """Invoiced totals by currency."""
        out: dict[str, int] = defaultdict(int)
        for bill in self.bills:
            if bill.kind == "invoice":
                out[bill.currency] += bill.draft.total
        return dict(out)


def tax_rates(operator: OperatorSettings) -> tuple[dict[str, int], int]:
    return {s: parse_money(r) for s, r in operator.taxes.items()}, parse_money(operator.default_tax)


async def bill_run(
    conn: asyncpg.Connection,
    catalog: Catalog,
    settings: BillingSettings,
    period: BillingPeriod,
    *,
    today: date,
    account_id: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    store: BalanceStore | None = None,
) -> RunResult:
    result = RunResult(period.label, dry_run)
    if not dry_run and today < period.end:
        raise BillingError(f"{period.label} is not over until {period.end}; use --dry-run to look before")
    if store is not None and not dry_run:
        await _check_ledger_complete(store, period)
    accounts = await conn.fetch(
        "select account_id, kind, currency, operator_id, customer_name, billing_address from accounts"
        " where created_at < $1 and ($2::text is null or account_id = $2) order by account_id",
        period.end_at,
        account_id,
    )
    if account_id is not None and not accounts:
        raise BillingError(f"unknown account {account_id!r} (or created after {period.label})")
    result.accounts = len(accounts)
    existing = {
        str(r[0])
        for r in await conn.fetch(
            "select account_id from invoices where period = $1 and kind <> 'credit_note'"
            " and ($2::text is null or account_id = $2)",
            period.label,
            account_id,
        )
    }
    spans = await _spans(conn, period, account_id)
    usage = await _usage(conn, period, account_id)
    charges = await _one_time(conn, period, account_id)
    prepaid = [str(a["account_id"]) for a in accounts if a["kind"] == "prepaid"]
    openings = await _openings(conn, period, prepaid) if prepaid else {}

    pricing = _Pricing(catalog, settings, period)
    # Each chunk of bills is written while the next one is computed: PostgreSQL stores one while Python
    # prices the other (one transaction at a time on the connection, in order).
    made: list[Bill] = []
    writing: asyncio.Task[list[Bill]] | None = None
    chunk: list[Bill] = []
    try:
        for n, row in enumerate(accounts, 1):
            if n % 100 == 0 or n == len(accounts):
                if progress is not None:
                    progress(n, len(accounts))
                await asyncio.sleep(0)  # let the chunk being written go on
            aid = str(row["account_id"])
            if aid in existing:
                result.existing += 1
                continue
            try:
                bill = _bill(row, pricing, spans, usage, charges, openings)
            except BillingError as exc:
                result.errors.append((aid, str(exc)))
                continue
            if bill is None:
                result.empty += 1
                continue
            result.bills.append(bill)
            chunk.append(bill)
            if len(chunk) == CHUNK and not dry_run:
                if writing is not None:
                    made += await writing
                writing = asyncio.create_task(_issue(conn, settings, period, today, chunk, result))
                chunk = []
    except BaseException:
        if writing is not None:  # never leave a chunk's transaction running behind an error
            writing.cancel()
            with contextlib.suppress(BaseException):
                await writing
        raise
    if not dry_run:
        if writing is not None:
            made += await writing
        if chunk:
            made += await _issue(conn, settings, period, today, chunk, result)
        result.bills = made
        await _allocate_credit(conn, today)
        if store is not None:
            await _settle_live(conn, store, account_id, result)
    return result


class _Pricing:
    """What accounts with the same plan history share, worked out once per run: most accounts of a
    period have the same few plan histories, so their fee lines and service units are computed once."""

    def __init__(self, catalog: Catalog, settings: BillingSettings, period: BillingPeriod) -> None:
        self.catalog = catalog
        self.settings = settings
        self.period = period
        self._fees: dict[tuple[PlanSpan, ...], list[Line]] = {}
        self._units: dict[tuple[PlanSpan, ...], Callable[[str], str | None]] = {}
        self._rates: dict[str, tuple[dict[str, int], int]] = {}

    def fees(self, spans: tuple[PlanSpan, ...]) -> list[Line]:
        found = self._fees.get(spans)
        if found is None:
            found = self._fees[spans] = model.recurring_lines(spans, self.catalog, self.period)
        return list(found)

    def units(self, spans: tuple[PlanSpan, ...]) -> Callable[[str], str | None]:
        found = self._units.get(spans)
        if found is None:
            found = self._units[spans] = _unit_finder(self.catalog, spans, self.period)
        return found

    def rates(self, operator_id: str, operator: OperatorSettings) -> tuple[dict[str, int], int]:
        found = self._rates.get(operator_id)
        if found is None:
            found = self._rates[operator_id] = tax_rates(operator)
        return found


def _bill(
    row: asyncpg.Record,
    pricing: _Pricing,
    spans: dict[str, list[PlanSpan]],
    usage: dict[str, list[UsageTotal]],
    charges: dict[str, list[Line]],
    openings: dict[str, int],
) -> Bill | None:
    settings = pricing.settings
    aid, operator_id = str(row["account_id"]), str(row["operator_id"])
    operator = settings.operators.get(operator_id)
    if operator is None:
        raise BillingError(f"operator {operator_id!r} is not in [billing.operators]")
    customer = {
        "account_id": aid,
        "name": str(row["customer_name"]) or aid,
        "address": str(row["billing_address"]),
    }
    if row["kind"] == "prepaid":
        lines = model.statement_lines(usage.get(aid, ()))
        opening = openings.get(aid, 0)
        if not lines and not opening:
            return None
        moved = sum(line.amount for line in lines)
        draft = Draft(tuple(lines), (), moved, 0, moved)
        return Bill(
            aid, "statement", operator_id, str(row["currency"]), draft, opening, opening + moved, customer
        )
    history = tuple(spans.get(aid, ()))
    lines = pricing.fees(history)
    lines += charges.get(aid, [])
    lines += model.usage_lines(usage.get(aid, ()), pricing.units(history))
    if not lines:
        return None
    rates, default = pricing.rates(operator_id, operator)
    draft = model.invoice(model.with_tax(lines, rates, default))
    owed = -sum(t.amount for t in usage.get(aid, ()) if t.kind in ("usage", "event", "refund", "adjustment"))
    return Bill(
        aid, "invoice", operator_id, str(row["currency"]), draft, customer=customer, live_credit=max(owed, 0)
    )


def _unit_finder(
    catalog: Catalog, spans: Iterable[PlanSpan], period: BillingPeriod
) -> Callable[[str], str | None]:
    plans = []
    for span in spans:
        try:
            plans.append(catalog.plan(span.plan, at=max(span.started, period.start_at)))
        except UnknownPlan:  # a unit is a label: a plan that cannot say one has none
            continue

    def unit_of(service: str) -> str | None:
        for plan in reversed(plans):
            if service in plan.services:
                return plan.services[service].unit.value
        return None

    return unit_of


# --- reading --------------------------------------------------------------------------------------
T = TypeVar("T")


async def _by_account(
    conn: asyncpg.Connection,
    sql: str,
    period: tuple[object, object],
    account_id: str | None,
    make: Callable[[asyncpg.Record], T],
) -> dict[str, list[T]]:
    """Rows of a query over the period ($1, $2) and optionally one account ($3), grouped by account."""
    out: dict[str, list[T]] = defaultdict(list)
    for r in await conn.fetch(sql, *period, account_id):
        out[str(r["account_id"])].append(make(r))
    return out


async def _spans(
    conn: asyncpg.Connection, period: BillingPeriod, account_id: str | None
) -> dict[str, list[PlanSpan]]:
    return await _by_account(
        conn,
        "select account_id, plan, started_at, ended_at, resumed from account_plans"
        " where (ended_at is null or ended_at > $1) and started_at < $2"
        " and ($3::text is null or account_id = $3) order by account_id, started_at",
        (period.start_at, period.end_at),
        account_id,
        lambda r: PlanSpan(str(r["plan"]), r["started_at"], r["ended_at"], bool(r["resumed"])),
    )


async def _usage(
    conn: asyncpg.Connection, period: BillingPeriod, account_id: str | None
) -> dict[str, list[UsageTotal]]:
    return await _by_account(
        conn,
        "select account_id, kind, service, item, coalesce(sum(units), count(*))::bigint as units,"
        " sum(amount)::bigint as amount from ledger_entries"
        " where occurred_at >= $1 and occurred_at < $2 and ($3::text is null or account_id = $3)"
        " group by account_id, kind, service, item",
        (period.start_at, period.end_at),
        account_id,
        lambda r: UsageTotal(str(r["kind"]), r["service"], r["item"], int(r["units"]), int(r["amount"])),
    )


async def _one_time(
    conn: asyncpg.Connection, period: BillingPeriod, account_id: str | None
) -> dict[str, list[Line]]:
    return await _by_account(
        conn,
        "select account_id, description, service, amount from account_charges"
        " where charged_on >= $1 and charged_on < $2 and ($3::text is null or account_id = $3)"
        " order by account_id, charged_on, charge_id",
        (period.start, period.end),
        account_id,
        lambda r: Line(
            "one_time", str(r["service"]), str(r["description"]), model.to_cents(int(r["amount"]))
        ),
    )


async def _openings(conn: asyncpg.Connection, period: BillingPeriod, accounts: list[str]) -> dict[str, int]:
    """Each prepaid account's money at the period's start: the previous statement's closing when there
    is one (no scan of the whole history), else the sum of its ledger before the period."""
    previous = model.parse_period(f"{(period.start - timedelta(days=1)):%Y-%m}")
    rows = await conn.fetch(
        "select account_id, closing from invoices where kind = 'statement' and period = $1"
        " and account_id = any($2)",
        previous.label,
        accounts,
    )
    out = {str(r[0]): int(r[1]) for r in rows}
    rest = [a for a in accounts if a not in out]
    if rest:
        rows = await conn.fetch(
            "select account_id, sum(amount)::bigint from ledger_entries"
            " where occurred_at < $1 and account_id = any($2) group by account_id",
            period.start_at,
            rest,
        )
        out.update({str(r[0]): int(r[1]) for r in rows})
    return out


async def _allocate_credit(conn: asyncpg.Connection, today: date) -> None:
    """Money customers paid ahead (payments no invoice had taken) pays the open invoices — the ones this
    run issued, and any an interrupted earlier run left."""
    from billing.payments import allocate  # payments build on the run's documents

    ahead = await conn.fetch(
        "select distinct p.account_id from payments p where p.unallocated > 0 and exists"
        " (select 1 from invoices i where i.account_id = p.account_id and i.kind = 'invoice'"
        "  and i.total > i.paid + i.credited)"
    )
    for row in ahead:
        async with conn.transaction():
            await allocate(conn, str(row[0]), today)


# --- the live balance of postpaid accounts --------------------------------------------------------
async def _settle_live(
    conn: asyncpg.Connection, store: BalanceStore, account_id: str | None, result: RunResult
) -> None:
    """Give each issued postpaid invoice's period usage (``live_credit``, fixed when it was issued) back to
    the live balance — a "billed" credit keyed by the invoice number, so once — so the credit limit bounds
    unbilled usage only; an unpaid invoice is the dunning's business. The invoice (PostgreSQL) comes
    first; invoices whose credit Redis did not take yet, of any period, are retried by every run."""
    rows = await conn.fetch(
        "select invoice_id, number, account_id, live_credit from invoices"
        " where kind = 'invoice' and settled_live_at is null and ($1::text is null or account_id = $1)"
        " order by invoice_id",
        account_id,
    )
    now = datetime.now(UTC)
    for row in rows:
        aid, number, owed = str(row["account_id"]), str(row["number"]), int(row["live_credit"])
        try:
            if owed > 0:
                await store.credit(
                    aid, owed, key=f"billed:{number}", reason="billed", now=now, reference=number
                )
        except UnknownAccount:
            pass  # not in the live store (closed and removed): no live balance to give back to
        except StoreUnavailable as exc:
            result.pending_live += 1
            result.errors.append((aid, f"invoice {number} issued; live balance not updated yet: {exc}"))
            continue
        await conn.execute("update invoices set settled_live_at = $2 where invoice_id = $1", row[0], now)
        result.settled_live += 1


async def _check_ledger_complete(store: BalanceStore, period: BillingPeriod) -> None:
    """Refuse to bill a period whose records are not all in the ledger yet: the oldest record still in a
    charge stream (not stored and acknowledged by every reader) must be later than the period's end."""
    lags = await ChargeStreams(store.link, store.keys, "ledger", "billing").lag()
    oldest = min((lag.oldest_ms for lag in lags if lag.oldest_ms is not None), default=None)
    end_ms = int(period.end_at.timestamp() * 1000)
    if oldest is not None and oldest < end_ms:
        since = datetime.fromtimestamp(oldest / 1000, UTC).isoformat(timespec="seconds")
        raise BillingError(
            f"the charge sink has not stored every record of {period.label} yet (the oldest waiting is from"
            f" {since}); bill once occ_sink_lag_seconds shows it caught up"
        )


# --- writing --------------------------------------------------------------------------------------
async def _issue(
    conn: asyncpg.Connection,
    settings: BillingSettings,
    period: BillingPeriod,
    today: date,
    bills: list[Bill],
    result: RunResult,
) -> list[Bill]:
    """Write a chunk of bills in one transaction; returns those written (not billed meanwhile)."""
    async with conn.transaction():
        # runs of one period queue here, statements included (invoices also queue on their counter)
        await conn.execute("select pg_advisory_xact_lock(hashtext($1))", f"occ-bill:{period.label}")
        counters: dict[str, int] = {}
        for operator_id in sorted({b.operator_id for b in bills if b.kind == "invoice"}):
            counters[operator_id] = await lock_counter(conn, operator_id, today.year)
        # another run may have billed some of these accounts while this one was computing
        done = {
            str(r[0])
            for r in await conn.fetch(
                "select account_id from invoices where period = $1 and kind <> 'credit_note'"
                " and account_id = any($2)",
                period.label,
                [b.account_id for b in bills],
            )
        }
        issued = [b for b in bills if b.account_id not in done]
        result.existing += len(bills) - len(issued)
        ids = [
            int(r[0])
            for r in await conn.fetch(
                "select nextval('invoices_invoice_id_seq') from generate_series(1, $1)", len(issued)
            )
        ]
        issuers = {
            o: json.dumps(issuer_details(o, settings.operators[o])) for o in {b.operator_id for b in issued}
        }
        invoice_rows: list[tuple[object, ...]] = []
        line_rows: list[tuple[object, ...]] = []
        tax_rows: list[tuple[object, ...]] = []
        for invoice_id, bill in zip(ids, issued, strict=True):
            operator = settings.operators[bill.operator_id]
            number = None
            due = None
            if bill.kind == "invoice":
                counters[bill.operator_id] += 1
                number = invoice_number(operator, today.year, counters[bill.operator_id])
                due = today + timedelta(days=operator.payment_terms_days)
                result.numbers[bill.account_id] = number
            d = bill.draft
            invoice_rows.append(
                (invoice_id, number, bill.kind, bill.operator_id, bill.account_id, period.label,
                 period.start, period.end, bill.currency, today, due, d.subtotal, d.tax, d.total,
                 bill.opening, bill.closing, issuers[bill.operator_id],
                 json.dumps(bill.customer), bill.live_credit)
            )  # fmt: skip
            for no, line in enumerate(d.lines, 1):
                line_rows.append(
                    (invoice_id, no, line.kind, line.service, line.description, line.quantity, line.unit,
                     line.amount, line.tax_rate)
                )  # fmt: skip
            for t in d.taxes:
                tax_rows.append((invoice_id, t.rate, t.base, t.tax))
        if invoice_rows:
            await conn.copy_records_to_table("invoices", records=invoice_rows, columns=_INVOICE_COLUMNS)
        if line_rows:
            await conn.copy_records_to_table(
                "invoice_lines",
                records=line_rows,
                columns=("invoice_id", "line_no", "kind", "service", "description", "quantity", "unit",
                         "amount", "tax_rate"),
            )  # fmt: skip
        if tax_rows:
            await conn.copy_records_to_table(
                "invoice_taxes", records=tax_rows, columns=("invoice_id", "tax_rate", "base", "tax")
            )
        for operator_id, last in counters.items():
            await save_counter(conn, operator_id, today.year, last)
    return issued


_INVOICE_COLUMNS = (
    *("invoice_id", "number", "kind", "operator_id", "account_id", "period", "period_start", "period_end"),
    *("currency", "issued_on", "due_on", "subtotal", "tax", "total", "opening", "closing", "issuer"),
    *("customer", "live_credit"),
)


def issuer_details(operator_id: str, operator: OperatorSettings) -> dict[str, object]:
    return {
        "operator_id": operator_id,
        "name": operator.name,
        "address": operator.address,
        "tax_id": operator.tax_id,
        "email": operator.email,
        "bank": operator.bank,
        "payment_terms_days": operator.payment_terms_days,
    }
