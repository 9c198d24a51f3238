"""The general ledger journal of a month, in double entry, derived from the documents and the ledger.

Entries (account codes in ``CHART``):

* invoice issued: Dr receivables total / Cr revenue per service (net) / Cr tax payable (tax);
* credit note: the reverse, with the net on "credit notes";
* payment received (postpaid): Dr bank / Cr customer credit; allocated to an invoice: Dr customer credit /
  Cr receivables — so money paid ahead sits on customer credit until an invoice takes it;
* prepaid top-ups (and prepaid payments, which are top-ups): Dr bank / Cr deferred revenue;
* prepaid usage, events and fees (deferred revenue release): Dr deferred revenue / Cr revenue per service;
* prepaid refunds and adjustments: Dr credit notes / Cr deferred revenue.

Postpaid usage is revenue through its invoice, not when used. Every entry balances (debits = credits),
and :func:`check_balanced` proves it for the export; the journal is recomputed from the documents and
the ledger each time, so an export is reproducible and never drifts from them.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from billing.invoice_model import BillingPeriod
from rating_core.money import format_money

CHART: dict[str, str] = {
    "1000": "Bank",
    "1100": "Accounts receivable",
    "2200": "Tax payable",
    "2300": "Customer credit (paid ahead)",
    "2400": "Deferred revenue (prepaid balances)",
    "4000": "Revenue",
    "4900": "Credit notes and refunds",
}


# Money moving between two accounts, one entry per row: (query of day, what, amount and currency over
# the days $1..$2, the account debited, the account credited).
_TRANSFERS = (
    (  # a postpaid payment received: customer credit until an invoice takes it
        "select p.received_on as day, 'payment ' || p.reference as what, p.amount, a.currency"
        " from payments p join accounts a using (account_id)"
        " where a.kind = 'postpaid' and p.received_on >= $1 and p.received_on < $2 order by p.payment_id",
        "1000",
        "2300",
    ),
    (  # ... allocated to an invoice
        "select x.allocated_on as day, 'payment ' || p.reference || ' to ' || i.number as what, x.amount,"
        " i.currency from payment_allocations x join payments p using (payment_id)"
        " join invoices i using (invoice_id) where x.allocated_on >= $1 and x.allocated_on < $2"
        " order by p.payment_id, i.invoice_id",
        "2300",
        "1100",
    ),
    (  # ... given back from an invoice a credit note took back
        "select x.reversed_on as day, 'payment ' || p.reference || ' back from ' || i.number as what,"
        " x.amount, i.currency from payment_reversals x join payments p using (payment_id)"
        " join invoices i using (invoice_id) where x.reversed_on >= $1 and x.reversed_on < $2"
        " order by p.payment_id, i.invoice_id",
        "1100",
        "2300",
    ),
)


def revenue(service: str | None) -> str:
    return f"4000-{service or 'fees'}"


@dataclass(frozen=True, slots=True)
class JournalLine:
    posted_on: str  # YYYY-MM-DD
    entry: str  # what it records, e.g. "invoice DT-2026-000001"
    account: str  # GL account code
    debit: int
    credit: int
    currency: str


class UnbalancedJournal(Exception):
    """An entry whose debits differ from its credits: a bug; the export is refused."""


def account_name(code: str) -> str:
    base, _, service = code.partition("-")
    return f"{CHART.get(base, base)}: {service}" if service else CHART.get(base, code)


async def journal(conn: asyncpg.Connection, period: BillingPeriod) -> list[JournalLine]:
    lines: list[JournalLine] = []
    start, end = period.start, period.end

    def entry(day: object, what: str, currency: str, *postings: tuple[str, int, int]) -> None:
        for account, debit, credit in postings:
            if debit or credit:
                lines.append(JournalLine(str(day), what, account, debit, credit, currency))

    documents = await conn.fetch(
        "select invoice_id, number, kind, issued_on, currency, total, tax from invoices"
        " where kind in ('invoice', 'credit_note') and issued_on >= $1 and issued_on < $2"
        " order by invoice_id",
        start,
        end,
    )
    nets: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for r in await conn.fetch(
        "select l.invoice_id, l.service, sum(l.amount)::bigint from invoice_lines l"
        " join invoices i using (invoice_id) where i.issued_on >= $1 and i.issued_on < $2"
        " and i.kind in ('invoice', 'credit_note') group by l.invoice_id, l.service order by 1, 2",
        start,
        end,
    ):
        nets[int(r[0])].append((str(r[1]), int(r[2])))
    for d in documents:
        what, cur = f"{d['kind'].replace('_', ' ')} {d['number']}", str(d["currency"])
        by_service = nets[int(d["invoice_id"])]
        if d["kind"] == "invoice":
            entry(
                d["issued_on"],
                what,
                cur,
                ("1100", int(d["total"]), 0),
                *((revenue(s), max(-n, 0), max(n, 0)) for s, n in by_service),
                ("2200", max(-int(d["tax"]), 0), max(int(d["tax"]), 0)),
            )
        else:
            net = sum(n for _, n in by_service)
            entry(
                d["issued_on"],
                what,
                cur,
                ("4900", max(net, 0), max(-net, 0)),
                ("2200", max(int(d["tax"]), 0), max(-int(d["tax"]), 0)),
                ("1100", 0, int(d["total"])),
            )

    for sql, debit, credit in _TRANSFERS:
        for t in await conn.fetch(sql, start, end):
            amount = int(t["amount"])
            entry(t["day"], str(t["what"]), str(t["currency"]), (debit, amount, 0), (credit, 0, amount))

    # prepaid money movements of the month, from the ledger, one entry per kind and service
    last_day = (period.end - timedelta(days=1)).isoformat()
    for m in await conn.fetch(
        "select l.kind, l.service, a.currency, sum(l.amount)::bigint as amount from ledger_entries l"
        " join accounts a using (account_id) where a.kind = 'prepaid'"
        " and l.occurred_at >= $1 and l.occurred_at < $2"
        " group by l.kind, l.service, a.currency order by 1, 2, 3",
        period.start_at,
        period.end_at,
    ):
        amount, cur, kind = int(m["amount"]), str(m["currency"]), str(m["kind"])
        if kind == "topup":
            entry(last_day, f"prepaid top-ups {period.label}", cur, ("1000", amount, 0), ("2400", 0, amount))
        elif kind in ("usage", "event", "fee"):
            what = f"prepaid {kind} {m['service'] or 'fees'} {period.label}"
            entry(last_day, what, cur, ("2400", -amount, 0), (revenue(m["service"]), 0, -amount))
        elif kind in ("refund", "adjustment"):
            what = f"prepaid {kind}s {period.label}"
            entry(last_day, what, cur, ("4900", amount, 0), ("2400", 0, amount))
    return lines


def check_balanced(lines: Iterable[JournalLine]) -> tuple[int, int]:
    """Total debits and credits; raises UnbalancedJournal naming every entry whose sides differ."""
    sides: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for line in lines:
        side = sides[(line.entry, line.currency)]
        side[0] += line.debit
        side[1] += line.credit
    wrong = [f"{e} ({format_money(d)} vs {format_money(c)})" for (e, _), (d, c) in sides.items() if d != c]
    if wrong:
        raise UnbalancedJournal("unbalanced journal entries: " + "; ".join(wrong))
    return sum(d for d, _ in sides.values()), sum(c for _, c in sides.values())


def to_csv(lines: Iterable[JournalLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "entry", "account", "account_name", "debit", "credit", "currency"])
    for line in lines:
        writer.writerow(
            [
                line.posted_on,
                line.entry,
                line.account,
                account_name(line.account),
                format_money(line.debit) if line.debit else "",
                format_money(line.credit) if line.credit else "",
                line.currency,
            ]
        )
    return out.getvalue()
