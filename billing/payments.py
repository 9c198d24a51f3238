"""Payments from bank statements and payment systems: read, matched, allocated or credited, once each.

The file format (docs/billing.md) is CSV with the header ``date,amount,reference,payer``: the day the
money arrived (YYYY-MM-DD), the amount (a decimal such as 25.00), the bank's reference (unique: a
reference seen before is skipped) and the payer — an invoice number or an account id.

A postpaid payment pays open invoices, the one it names first, then the oldest; what is left waits on the
payment for the next invoices. A prepaid payment is a top-up: PostgreSQL records it, then the balance
engine credits it under the key ``payment:<reference>`` (kept for good), and a failure there is retried
by the next import.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import asyncpg

from balance.store import BalanceStore, StoreUnavailable, UnknownAccount
from rating_core.money import parse_money

HEADER = ["date", "amount", "reference", "payer"]


class PaymentFileError(ValueError):
    """The file is not in the payment format; the message names the file and line of each problem."""


@dataclass(frozen=True, slots=True)
class PaymentRow:
    line: int
    received_on: date
    amount: int
    reference: str
    payer: str


@dataclass
class ImportResult:
    imported: list[tuple[PaymentRow, str, list[tuple[str, int]]]] = field(default_factory=list)
    duplicates: list[PaymentRow] = field(default_factory=list)
    unmatched: list[PaymentRow] = field(default_factory=list)
    # prepaid payments recorded but not credited to the live balance yet (Redis away); retried next time
    pending_live: int = 0


def read_payments(text: str, source: str) -> list[PaymentRow]:
    """Every row of a payment file; raises PaymentFileError naming every bad line (nothing is imported)."""
    reader = csv.reader(io.StringIO(text))
    problems: list[str] = []
    rows: list[PaymentRow] = []
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != HEADER:
        raise PaymentFileError(
            f"{source}:1: expected the header {','.join(HEADER)}, got {','.join(header or [])!r}"
        )
    for n, fields in enumerate(reader, 2):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != 4:
            problems.append(f"{source}:{n}: expected 4 fields, got {len(fields)}")
            continue
        day, amount, reference, payer = (f.strip() for f in fields)
        try:
            received = date.fromisoformat(day)
        except ValueError:
            problems.append(f"{source}:{n}: date {day!r} is not YYYY-MM-DD")
            continue
        try:
            micro: int = parse_money(amount)
        except ValueError:
            micro = 0
        if micro <= 0:
            problems.append(f"{source}:{n}: amount {amount!r} is not a positive decimal such as 25.00")
            continue
        if not reference or not payer:
            problems.append(f"{source}:{n}: reference and payer must not be empty")
            continue
        rows.append(PaymentRow(n, received, micro, reference, payer))
    if problems:
        shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise PaymentFileError(shown)
    return rows


async def import_payments(
    conn: asyncpg.Connection, store: BalanceStore, rows: list[PaymentRow], source: str, today: date
) -> ImportResult:
    result = ImportResult()
    seen: set[str] = set()
    for row in rows:
        if row.reference in seen or await conn.fetchval(
            "select 1 from payments where reference = $1", row.reference
        ):
            result.duplicates.append(row)
            continue
        seen.add(row.reference)
        target = await _payer(conn, row.payer)
        if target is None:
            result.unmatched.append(row)
            continue
        account_id, kind, invoice_id = target
        async with conn.transaction():
            await conn.execute(
                "insert into payments (reference, account_id, amount, received_on, source, unallocated)"
                " values ($1, $2, $3, $4, $5, $6)",
                row.reference,
                account_id,
                row.amount,
                row.received_on,
                source,
                row.amount if kind == "postpaid" else 0,
            )
            # the money pays open invoices on the day it arrived (the journal dates the allocation so)
            paid = (
                await allocate(conn, account_id, row.received_on, prefer=invoice_id)
                if kind == "postpaid"
                else []
            )
        result.imported.append((row, account_id, paid))
    result.pending_live = await credit_prepaid(conn, store)
    return result


async def _payer(conn: asyncpg.Connection, payer: str) -> tuple[str, str, int | None] | None:
    """(account, its kind, the invoice named) of a payer field: an invoice number or an account id."""
    row = await conn.fetchrow(
        "select i.account_id, a.kind, i.invoice_id from invoices i join accounts a using (account_id)"
        " where i.number = $1 and i.kind = 'invoice'",
        payer,
    )
    if row is not None:
        return str(row[0]), str(row[1]), int(row[2])
    row = await conn.fetchrow("select account_id, kind from accounts where account_id = $1", payer)
    return None if row is None else (str(row[0]), str(row[1]), None)


async def allocate(
    conn: asyncpg.Connection, account_id: str, today: date, prefer: int | None = None
) -> list[tuple[str, int]]:
    """Pay the account's open invoices (``prefer`` first, then the oldest) from its payments' unallocated
    money (oldest first); returns (invoice number, amount) of what was allocated. Call inside a
    transaction: the rows are locked."""
    invoices = await conn.fetch(
        "select invoice_id, number, issued_on, total - paid - credited as open from invoices"
        " where account_id = $1 and kind = 'invoice' and total > paid + credited"
        " order by invoice_id = $2 desc, issued_on, invoice_id for update",
        account_id,
        prefer if prefer is not None else -1,
    )
    payments = await conn.fetch(
        "select payment_id, unallocated from payments where account_id = $1 and unallocated > 0"
        " order by received_on, payment_id for update",
        account_id,
    )
    done: list[tuple[str, int]] = []
    left = [[int(p["payment_id"]), int(p["unallocated"])] for p in payments]
    for invoice in invoices:
        due = int(invoice["open"])
        for payment in left:
            if not due:
                break
            take = min(due, payment[1])
            if not take:
                continue
            payment[1] -= take
            due -= take
            await conn.execute(
                "insert into payment_allocations (payment_id, invoice_id, amount, allocated_on)"
                " values ($1, $2, $3, $4) on conflict (payment_id, invoice_id)"
                " do update set amount = payment_allocations.amount + excluded.amount",
                payment[0],
                invoice["invoice_id"],
                take,
                max(today, invoice["issued_on"]),  # money paid ahead pays an invoice when it is issued
            )
            await conn.execute(
                "update invoices set paid = paid + $2 where invoice_id = $1", invoice["invoice_id"], take
            )
            done.append((str(invoice["number"]), take))
    for payment_id, unallocated in left:
        await conn.execute(
            "update payments set unallocated = $2 where payment_id = $1", payment_id, unallocated
        )
    return done


async def credit_prepaid(conn: asyncpg.Connection, store: BalanceStore) -> int:
    """Credit every prepaid payment the live balance has not taken yet; returns how many are still
    pending (Redis unreachable)."""
    rows = await conn.fetch(
        "select p.payment_id, p.reference, p.account_id, p.amount from payments p"
        " join accounts a using (account_id) where a.kind = 'prepaid' and p.credited_live_at is null"
        " order by p.payment_id"
    )
    pending = 0
    for row in rows:
        try:
            await store.credit(
                str(row["account_id"]),
                int(row["amount"]),
                key=f"payment:{row['reference']}",
                reason="topup",
                now=datetime.now(UTC),
                reference=str(row["reference"]),
            )
        except (StoreUnavailable, UnknownAccount):
            pending += 1
            continue
        await conn.execute(
            "update payments set credited_live_at = now() where payment_id = $1", row["payment_id"]
        )
    return pending
