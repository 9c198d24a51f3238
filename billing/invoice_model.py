"""The arithmetic of invoices and statements, pure: periods, prorated recurring fees, usage lines, taxes.

Rounding (documented in docs/billing.md):

* the ledger is exact to the micro-unit; an invoice is in cents (``CENT`` = 10 000 micro-units);
* each invoice line is rounded to the cent once, half to even;
* taxes are computed per tax rate on the sum of that rate's rounded lines, rounded to the cent once,
  half to even; so subtotal = sum of lines, tax = sum of the per-rate taxes, total = subtotal + tax,
  exactly, and every printed figure adds up;
* a monthly fee for part of a month is amount x days / days in the month (the day a plan starts
  counts, the day it ends belongs to the next plan);
* statements (prepaid) are not rounded: opening + every line = closing, to the micro-unit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from rating_core.money import Rounding, div_round
from rating_core.tariff import Catalog, Period, UnknownPlan

CENT = 10_000
PPM = 1_000_000  # tax rates are parts per million: 200 000 = 20 %
# services of lines that are no usage: recurring and one-time fees
FEES = "fees"

_PERIOD = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


class BillingError(ValueError):
    """Input the billing run cannot bill from (an unknown plan, a bad period); the message says which."""


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    label: str  # YYYY-MM
    start: date
    end: date  # exclusive: the first day of the next month

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def end_at(self) -> datetime:
        return datetime.combine(self.end, time(), UTC)


def parse_period(text: str) -> BillingPeriod:
    """``YYYY-MM`` as the calendar month it names (UTC)."""
    match = _PERIOD.fullmatch(text)
    if not match:
        raise BillingError(f"invalid period {text!r}: expected YYYY-MM, such as 2026-11")
    year, month = int(match.group(1)), int(match.group(2))
    start = date(year, month, 1)
    return BillingPeriod(text, start, next_month(start))


def next_month(month: date) -> date:
    """The first day of the month after the one ``month`` is in."""
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


@dataclass(frozen=True, slots=True)
class PlanSpan:
    """A plan an account had from ``started`` until ``ended`` (None: still has it)."""

    plan: str
    started: datetime
    ended: datetime | None = None
    resumed: bool = False  # the same plan again after the account was reopened: no "once" fees


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """The ledger of one account and period, summed by kind, service and item."""

    kind: str
    service: str | None
    item: str | None
    units: int
    amount: int  # signed micro-units, as in the ledger


@dataclass(frozen=True, slots=True)
class Line:
    kind: str  # recurring | one_time | usage | credit | topup | refund
    service: str
    description: str
    amount: int  # net micro-units (rounded to the cent on invoices)
    quantity: int | None = None
    unit: str | None = None
    tax_rate: int = 0


@dataclass(frozen=True, slots=True)
class TaxLine:
    rate: int
    base: int
    tax: int


@dataclass(frozen=True, slots=True)
class Draft:
    lines: tuple[Line, ...]
    taxes: tuple[TaxLine, ...]
    subtotal: int
    tax: int
    total: int


def to_cents(micro: int) -> int:
    """Micro-units rounded to the cent, half to even."""
    return div_round(micro, CENT, Rounding.HALF_EVEN) * CENT


def prorated(amount: int, days: int, period: BillingPeriod) -> int:
    """A monthly amount for ``days`` of the period, half to even (the whole amount for all its days)."""
    return div_round(amount * days, period.days, Rounding.HALF_EVEN)


def days_in(span: PlanSpan, period: BillingPeriod) -> int:
    """Days of the period the plan covers: its first day counts, the day it ended does not."""
    first = max(span.started.astimezone(UTC).date(), period.start)
    last = period.end if span.ended is None else min(span.ended.astimezone(UTC).date(), period.end)
    return max(0, (last - first).days)


def recurring_lines(spans: Iterable[PlanSpan], catalog: Catalog, period: BillingPeriod) -> list[Line]:
    """Each plan fee for the part of the period its plan covered; "once" fees in the period the plan
    started."""
    lines = []
    for span in spans:
        days = days_in(span, period)
        started_here = period.start <= span.started.astimezone(UTC).date() < period.end and not span.resumed
        if not days and not started_here:
            continue
        try:
            plan = catalog.plan(span.plan, at=max(span.started, period.start_at))
        except UnknownPlan as exc:
            raise BillingError(str(exc)) from None
        for fee in plan.fees:
            if fee.period is Period.ONCE:
                if started_here and fee.amount:
                    lines.append(Line("one_time", FEES, f"{fee.name} ({plan.name})", to_cents(fee.amount)))
                continue
            if not days or not fee.amount:
                continue
            if fee.period is Period.MONTHLY:
                amount = prorated(fee.amount, days, period)
                what = "month" if days == period.days else f"{days} of {period.days} days"
            else:
                amount, what = fee.amount * days, f"{days} days"
            lines.append(
                Line("recurring", FEES, f"{fee.name} ({plan.name}), {what}", to_cents(amount), days, "day")
            )
    return lines


def usage_lines(totals: Iterable[UsageTotal], unit_of: Callable[[str], str | None]) -> list[Line]:
    """Charges by service and rating group; refunds and adjustments as credits. Top-ups and expiries
    are no invoice matter (an expiry moves no money)."""
    lines = []
    for t in sorted(totals, key=lambda t: (t.kind, t.service or "", t.item or "")):
        service = t.service or FEES
        if t.kind in ("usage", "event"):
            what = service if not t.item or t.item == service else f"{service}, rating group {t.item}"
            lines.append(Line("usage", service, what, to_cents(-t.amount), t.units, unit_of(service)))
        elif t.kind in ("refund", "adjustment") and t.amount:
            lines.append(Line("credit", service, t.kind, to_cents(-t.amount)))
    return [line for line in lines if line.amount or line.quantity]


def with_tax(lines: Iterable[Line], rates: Mapping[str, int], default_rate: int) -> list[Line]:
    return [_taxed(line, rates.get(line.service, default_rate)) for line in lines]


def _taxed(line: Line, rate: int) -> Line:
    return Line(line.kind, line.service, line.description, line.amount, line.quantity, line.unit, rate)


def invoice(lines: Sequence[Line]) -> Draft:
    """Totals of an invoice's (taxed, rounded) lines: one tax per rate, rounded once."""
    bases: dict[int, int] = {}
    for line in lines:
        bases[line.tax_rate] = bases.get(line.tax_rate, 0) + line.amount
    taxes = tuple(
        TaxLine(rate, base, div_round(base * rate, PPM * CENT, Rounding.HALF_EVEN) * CENT)
        for rate, base in sorted(bases.items())
    )
    subtotal = sum(line.amount for line in lines)
    tax = sum(t.tax for t in taxes)
    return Draft(tuple(lines), taxes, subtotal, tax, subtotal + tax)


def statement_lines(totals: Iterable[UsageTotal]) -> list[Line]:
    """A prepaid period's money movements, exact: top-ups, charges by service, refunds, fees."""
    lines = []
    for t in sorted(totals, key=lambda t: (_STATEMENT_ORDER.get(t.kind, 9), t.service or "", t.item or "")):
        if not t.amount and not t.units:
            continue
        service = t.service or FEES
        if t.kind == "topup":
            lines.append(Line("topup", FEES, "top-ups", t.amount))
        elif t.kind in ("usage", "event"):
            what = service if not t.item or t.item == service else f"{service}, rating group {t.item}"
            lines.append(Line("usage", service, what, t.amount, t.units))
        elif t.kind == "fee":
            lines.append(Line("recurring", FEES, f"recurring fees ({service})", t.amount))
        elif t.amount:
            lines.append(Line("refund" if t.kind == "refund" else "credit", service, t.kind, t.amount))
    return lines


_STATEMENT_ORDER = {"topup": 0, "fee": 1, "usage": 2, "event": 2, "refund": 3, "adjustment": 3}
