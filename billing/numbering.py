"""Invoice numbers: ``<invoice_prefix><year>-<6 digits>``, gapless per operator and year.

Whoever numbers documents (the billing run, credit notes) takes the operator's counter row with
:func:`lock_counter` inside the transaction that writes them and stores the last number given with
:func:`save_counter` before it commits: a rolled back transaction gives its numbers back, and concurrent
writers queue on the row.
"""

from __future__ import annotations

import asyncpg

from billing.settings import OperatorSettings


async def lock_counter(conn: asyncpg.Connection, operator_id: str, year: int) -> int:
    """The operator's last invoice number of ``year``, its row locked until the transaction ends: whoever
    numbers documents holds it, so numbers are gapless and never given twice."""
    await conn.execute(
        "insert into invoice_counters (operator_id, year) values ($1, $2) on conflict do nothing",
        operator_id,
        year,
    )
    last: int = await conn.fetchval(
        "select last_number from invoice_counters where operator_id = $1 and year = $2 for update",
        operator_id,
        year,
    )
    return last


async def save_counter(conn: asyncpg.Connection, operator_id: str, year: int, last: int) -> None:
    await conn.execute(
        "update invoice_counters set last_number = $3 where operator_id = $1 and year = $2",
        operator_id,
        year,
        last,
    )


def invoice_number(operator: OperatorSettings, year: int, n: int) -> str:
    return f"{operator.invoice_prefix}{year}-{n:06d}"
