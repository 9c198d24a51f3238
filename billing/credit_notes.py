"""Credit notes: a document that takes back (part of) an invoice, numbered in the invoice's sequence."""

from __future__ import annotations

from datetime import date

import asyncpg

from billing.billrun import invoice_number, lock_counter, save_counter
from billing.invoice_model import CENT, BillingError, to_cents
from billing.settings import BillingSettings
from rating_core.money import Rounding, div_round, format_money


async def issue_credit_note(
    conn: asyncpg.Connection, settings: BillingSettings, number: str, amount: int, reason: str, today: date
) -> str:
    """Credit ``amount`` (gross, tax included) of invoice ``number``; returns the credit note's number.

    The amount splits into net and tax in the invoice's own proportion (net rounded to the cent, tax the
    rest), so crediting an invoice's whole total gives back exactly its net and its tax. The invoice's
    open amount falls by ``amount``; more than it has left to credit is refused."""
    if amount <= 0 or amount % CENT:
        raise BillingError("a credit note's amount must be positive and in whole cents")
    if not reason.strip():
        raise BillingError("a credit note needs a reason")
    async with conn.transaction():
        invoice = await conn.fetchrow(
            "select * from invoices where number = $1 and kind = 'invoice' for update", number
        )
        if invoice is None:
            raise BillingError(f"no invoice {number!r}")
        left = int(invoice["total"]) - int(invoice["credited"])
        if amount > left:
            raise BillingError(
                f"invoice {number} has {format_money(left)} left to credit, less than the amount asked"
            )
        total = int(invoice["total"])
        net = (
            to_cents(div_round(amount * int(invoice["subtotal"]), total, Rounding.HALF_EVEN))
            if total
            else amount
        )
        tax = amount - net
        rates = [int(r[0]) for r in await conn.fetch(
            "select tax_rate from invoice_taxes where invoice_id = $1", invoice["invoice_id"]
        )]  # fmt: skip
        rate = rates[0] if len(rates) == 1 else 0
        operator_id = str(invoice["operator_id"])
        operator = settings.operators.get(operator_id)
        if operator is None:
            raise BillingError(f"operator {operator_id!r} is not in [billing.operators]")
        last = await lock_counter(conn, operator_id, today.year) + 1
        await save_counter(conn, operator_id, today.year, last)
        note = invoice_number(operator, today.year, last)
        note_id = await conn.fetchval(
            "insert into invoices (number, kind, operator_id, account_id, period, period_start, period_end,"
            " currency, issued_on, subtotal, tax, total, credits_number, reason, issuer, customer)"
            " values ($1, 'credit_note', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
            " returning invoice_id",
            note,
            operator_id,
            invoice["account_id"],
            invoice["period"],
            invoice["period_start"],
            invoice["period_end"],
            invoice["currency"],
            today,
            net,
            tax,
            amount,
            number,
            reason,
            invoice["issuer"],
            invoice["customer"],
        )
        await conn.execute(
            "insert into invoice_lines (invoice_id, line_no, kind, service, description, amount, tax_rate)"
            " values ($1, 1, 'credit', 'fees', $2, $3, $4)",
            note_id,
            f"credit for invoice {number}: {reason}",
            net,
            rate,
        )
        await conn.execute(
            "insert into invoice_taxes (invoice_id, tax_rate, base, tax) values ($1, $2, $3, $4)",
            note_id,
            rate,
            net,
            tax,
        )
        await conn.execute(
            "update invoices set credited = credited + $2 where invoice_id = $1",
            invoice["invoice_id"],
            amount,
        )
    return note
