"""Credit notes: a document that takes back (part of) an invoice, numbered in the invoice's sequence."""

from __future__ import annotations

from datetime import date

import asyncpg

from billing.invoice_model import CENT, BillingError, to_cents
from billing.numbering import invoice_number, lock_counter, save_counter
from billing.payments import allocate
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
        total, credited = int(invoice["total"]), int(invoice["credited"])
        left = total - credited
        if amount > left:
            raise BillingError(
                f"invoice {number} has {format_money(left)} left to credit, less than the amount asked"
            )
        rates = [
            (int(r[0]), int(r[1]), int(r[2]))
            for r in await conn.fetch(
                "select tax_rate, base, tax from invoice_taxes where invoice_id = $1"
                " order by base + tax desc, tax_rate",
                invoice["invoice_id"],
            )
        ] or [(0, int(invoice["subtotal"]), int(invoice["tax"]))]
        # what all credit notes of the invoice take from each rate, before and with this one, each figure
        # rounded once: partial notes add up to exactly what one note for their sum would be, and a
        # note for the whole invoice gives back exactly each rate's net and tax
        before, after = _split(credited, rates, total), _split(credited + amount, rates, total)
        parts = [
            (rate, a_net - b_net, (a_gross - a_net) - (b_gross - b_net))
            for (rate, b_gross, b_net), (_, a_gross, a_net) in zip(before, after, strict=True)
        ]
        net = sum(p[1] for p in parts)
        tax = amount - net
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
        for n, (rate, part_net, part_tax) in enumerate(parts, 1):
            await conn.execute(
                "insert into invoice_lines"
                " (invoice_id, line_no, kind, service, description, amount, tax_rate)"
                " values ($1, $2, 'credit', 'fees', $3, $4, $5)",
                note_id,
                n,
                f"credit for invoice {number}: {reason}",
                part_net,
                rate,
            )
            await conn.execute(
                "insert into invoice_taxes (invoice_id, tax_rate, base, tax) values ($1, $2, $3, $4)",
                note_id,
                rate,
                part_net,
                part_tax,
            )
        await conn.execute(
            "update invoices set credited = credited + $2 where invoice_id = $1",
            invoice["invoice_id"],
            amount,
        )
        excess = int(invoice["paid"]) + credited + amount - total
        if excess > 0:
            await _refund_to_credit(conn, int(invoice["invoice_id"]), excess, today)
            await allocate(conn, str(invoice["account_id"]), today)  # it pays other open invoices
    return note


def _split(credited: int, rates: list[tuple[int, int, int]], total: int) -> list[tuple[int, int, int]]:
    """(rate, gross, net) that ``credited`` of the invoice's ``total`` takes from each tax rate: gross in
    proportion to the rate's own gross (the largest rate takes the rounding rest), net in proportion to the
    rate's base within it; cents, half to even."""
    if not total:
        return [(rate, 0, 0) for rate, _, _ in rates]
    grosses = [
        to_cents(div_round(credited * (base + tax), total, Rounding.HALF_EVEN)) for _, base, tax in rates[1:]
    ]
    grosses.insert(0, credited - sum(grosses))
    out = []
    for (rate, base, tax), gross in zip(rates, grosses, strict=True):
        whole = base + tax
        net = to_cents(div_round(gross * base, whole, Rounding.HALF_EVEN)) if whole else gross
        out.append((rate, gross, net))
    return out


async def _refund_to_credit(conn: asyncpg.Connection, invoice_id: int, excess: int, today: date) -> None:
    """An invoice credited after it was paid: what it no longer needs goes back to the payments that
    paid it (newest first) as customer credit for the next invoices, recorded as reversals."""
    rows = await conn.fetch(
        "select a.payment_id, a.amount - coalesce((select sum(r.amount) from payment_reversals r"
        "  where r.payment_id = a.payment_id and r.invoice_id = a.invoice_id), 0) as left"
        " from payment_allocations a where a.invoice_id = $1"
        " order by a.allocated_on desc, a.payment_id desc for update",
        invoice_id,
    )
    for row in rows:
        back = min(excess, int(row["left"]))
        if back <= 0:
            continue
        excess -= back
        await conn.execute(
            "insert into payment_reversals (payment_id, invoice_id, amount, reversed_on)"
            " values ($1, $2, $3, $4)",
            row["payment_id"],
            invoice_id,
            back,
            today,
        )
        await conn.execute(
            "update payments set unallocated = unallocated + $2 where payment_id = $1",
            row["payment_id"],
            back,
        )
        await conn.execute("update invoices set paid = paid - $2 where invoice_id = $1", invoice_id, back)
