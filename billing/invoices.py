"""Reading invoices, statements and credit notes back: the list, and one document with its lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    kind: str
    service: str
    description: str
    quantity: int | None
    unit: str | None
    amount: int
    tax_rate: int


@dataclass(frozen=True, slots=True)
class Document:
    """An invoice, statement or credit note as stored."""

    invoice_id: int
    number: str | None
    kind: str
    operator_id: str
    account_id: str
    period: str
    period_start: date
    period_end: date
    currency: str
    issued_on: date
    due_on: date | None
    subtotal: int
    tax: int
    total: int
    paid: int
    credited: int
    opening: int | None
    closing: int | None
    credits_number: str | None
    reason: str | None
    issuer: dict[str, Any]
    customer: dict[str, Any]
    lines: tuple[InvoiceLine, ...] = ()
    taxes: tuple[tuple[int, int, int], ...] = ()  # rate, base, tax

    @property
    def status(self) -> str:
        if self.kind == "statement":
            return "statement"
        if self.kind == "credit_note":
            return "credit note"
        return "paid" if self.paid + self.credited >= self.total else "open"


_COLUMNS = (
    "invoice_id, number, kind, operator_id, account_id, period, period_start, period_end, currency,"
    " issued_on, due_on, subtotal, tax, total, paid, credited, opening, closing, credits_number, reason,"
    " issuer, customer"
)


def _document(
    row: asyncpg.Record, lines: tuple[InvoiceLine, ...] = (), taxes: tuple[Any, ...] = ()
) -> Document:
    values = dict(row)
    values["issuer"] = json.loads(values["issuer"])
    values["customer"] = json.loads(values["customer"])
    return Document(**values, lines=lines, taxes=taxes)


async def list_documents(
    conn: asyncpg.Connection, *, period: str | None = None, account_id: str | None = None
) -> list[Document]:
    rows = await conn.fetch(
        f"select {_COLUMNS} from invoices where ($1::text is null or period = $1)"
        " and ($2::text is null or account_id = $2) order by invoice_id",
        period,
        account_id,
    )
    return [_document(r) for r in rows]


async def fetch_document(conn: asyncpg.Connection, number: str) -> Document | None:
    """The invoice or credit note with this number, or a statement named ``<account>/<YYYY-MM>``."""
    if "/" in number and not await conn.fetchval("select 1 from invoices where number = $1", number):
        account_id, _, period = number.rpartition("/")
        row = await conn.fetchrow(
            f"select {_COLUMNS} from invoices where kind = 'statement' and account_id = $1 and period = $2",
            account_id,
            period,
        )
    else:
        row = await conn.fetchrow(f"select {_COLUMNS} from invoices where number = $1", number)
    if row is None:
        return None
    lines = tuple(
        InvoiceLine(
            str(r["kind"]),
            str(r["service"]),
            str(r["description"]),
            r["quantity"],
            r["unit"],
            int(r["amount"]),
            int(r["tax_rate"]),
        )
        for r in await conn.fetch(
            "select kind, service, description, quantity, unit, amount, tax_rate from invoice_lines"
            " where invoice_id = $1 order by line_no",
            row["invoice_id"],
        )
    )
    taxes = tuple(
        (int(r[0]), int(r[1]), int(r[2]))
        for r in await conn.fetch(
            "select tax_rate, base, tax from invoice_taxes where invoice_id = $1 order by tax_rate",
            row["invoice_id"],
        )
    )
    return _document(row, lines, taxes)
