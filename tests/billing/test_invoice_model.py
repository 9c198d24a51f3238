"""Invoice arithmetic, pure: periods, proration edges, taxes and totals that always add up."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.invoice_model import (
    CENT,
    BillingError,
    Line,
    PlanSpan,
    UsageTotal,
    days_in,
    invoice,
    parse_period,
    recurring_lines,
    statement_lines,
    to_cents,
    usage_lines,
    with_tax,
)
from rating_core.tariff import Catalog
from rating_core.tariff_file import load_tariff_file

DEMO = Path(__file__).resolve().parents[2] / "config" / "tariffs" / "demo.toml"
CATALOG = Catalog(load_tariff_file(DEMO))
EUR = 1_000_000


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_periods_are_calendar_months() -> None:
    feb = parse_period("2028-02")
    assert (feb.start, feb.end, feb.days) == (date(2028, 2, 1), date(2028, 3, 1), 29)
    dec = parse_period("2026-12")
    assert (dec.end, dec.days) == (date(2027, 1, 1), 31)
    for bad in ("2026-13", "2026-1", "26-01", "2026-00", "2026-01-01"):
        with pytest.raises(BillingError, match="YYYY-MM"):
            parse_period(bad)


def test_a_plan_counts_its_first_day_and_not_the_day_it_ended() -> None:
    nov = parse_period("2026-11")
    assert days_in(PlanSpan("demo", at(2026, 1, 1)), nov) == 30
    assert days_in(PlanSpan("demo", at(2026, 11, 30, 23, 59)), nov) == 1  # started on the last day
    assert days_in(PlanSpan("demo", at(2026, 11, 10), at(2026, 11, 20, 8)), nov) == 10
    assert days_in(PlanSpan("demo", at(2026, 10, 1), at(2026, 11, 1)), nov) == 0
    assert days_in(PlanSpan("demo", at(2026, 12, 1)), nov) == 0


def test_monthly_fees_are_prorated_by_day_and_once_fees_charged_in_the_first_period() -> None:
    full = recurring_lines([PlanSpan("demo", at(2025, 3, 1))], CATALOG, parse_period("2026-11"))
    assert [(line.kind, line.amount) for line in full] == [("recurring", 9_990_000)]
    assert full[0].description == "subscription (demo), month"
    # joined on the last day of a month: 1 of 31 days, and the activation fee
    first = recurring_lines([PlanSpan("demo", at(2026, 1, 31, 18))], CATALOG, parse_period("2026-01"))
    assert sorted((line.kind, line.amount) for line in first) == [
        ("one_time", 5 * EUR),
        ("recurring", 320_000),
    ]
    # leap February, half of it: 9.99 x 15 / 29 = 5.1672... -> 5.17
    leap = recurring_lines([PlanSpan("demo", at(2028, 2, 15))], CATALOG, parse_period("2028-02"))
    recurring = [line for line in leap if line.kind == "recurring"]
    assert recurring[0].amount == 5_170_000 and "15 of 29 days" in recurring[0].description


def test_a_plan_change_mid_period_bills_each_plan_for_its_days() -> None:
    change = at(2026, 11, 11, 9, 30)
    spans = [PlanSpan("demo", at(2025, 5, 1), change), PlanSpan("demo-plus", change)]
    lines = recurring_lines(spans, CATALOG, parse_period("2026-11"))
    # demo 9.99 for 10 of 30 days, demo-plus 19.99 for 20 of 30 days; demo-plus starts here, so its
    # "once" fee (activation, inherited from demo) is charged with it
    by_plan = {line.description.split(" ")[1]: line.amount for line in lines if line.kind == "recurring"}
    assert by_plan == {
        "(demo),": to_cents(9_990_000 * 10 // 30),
        "(demo-plus),": to_cents(19_990_000 * 20 // 30),
    }
    assert [line.amount for line in lines if line.kind == "one_time"] == [5 * EUR]


def test_an_unknown_plan_is_a_billing_error() -> None:
    with pytest.raises(BillingError, match="nope"):
        recurring_lines([PlanSpan("nope", at(2026, 1, 1))], CATALOG, parse_period("2026-11"))


def test_usage_lines_group_by_service_and_rating_group_and_credit_refunds() -> None:
    totals = [
        UsageTotal("usage", "data", "10", 3 * 1048576, -30_000),
        UsageTotal("usage", "voice", "voice", 600, -1_234_567),
        UsageTotal("event", "sms", "", 4, -200_000),
        UsageTotal("refund", "voice", None, 0, 500_000),
        UsageTotal("topup", None, None, 0, 10 * EUR),
        UsageTotal("expiry", None, None, 0, 0),
    ]
    lines = usage_lines(totals, {"data": "byte", "voice": "second", "sms": "event"}.get)
    assert [(line.kind, line.description, line.quantity, line.unit, line.amount) for line in lines] == [
        ("usage", "sms", 4, "event", 200_000),
        ("credit", "refund", None, None, -500_000),
        ("usage", "data, rating group 10", 3 * 1048576, "byte", 30_000),
        ("usage", "voice", 600, "second", 1_230_000),
    ]


cents = st.integers(-1_000_000, 10_000_000).map(lambda n: n * CENT)
rates = st.sampled_from([0, 50_000, 70_000, 190_000, 200_000, 210_000, 250_000])


@given(st.lists(st.tuples(cents, rates), max_size=40))
def test_property_invoice_totals_are_lines_plus_taxes(items: list[tuple[int, int]]) -> None:
    lines = [Line("usage", "data", "x", amount, tax_rate=rate) for amount, rate in items]
    draft = invoice(lines)
    assert draft.subtotal == sum(amount for amount, _ in items)
    assert draft.tax == sum(t.tax for t in draft.taxes)
    assert draft.total == draft.subtotal + draft.tax
    for t in draft.taxes:
        assert t.base == sum(a for a, r in items if r == t.rate)
        assert t.tax % CENT == 0
        assert abs(t.tax * 1_000_000 - t.base * t.rate) <= CENT * 1_000_000 // 2  # within half a cent


@given(st.integers(-(10**12), 10**12))
def test_property_cent_rounding_is_half_even_and_within_half_a_cent(micro: int) -> None:
    rounded = to_cents(micro)
    assert rounded % CENT == 0 and abs(rounded - micro) <= CENT // 2
    if abs(rounded - micro) == CENT // 2:
        assert (rounded // CENT) % 2 == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["topup", "usage", "event", "refund", "adjustment", "fee", "expiry"]),
            st.sampled_from(["data", "voice", "sms", None]),
            st.integers(0, 10**9),
            st.integers(-(10**9), 10**9),
        ),
        max_size=20,
    ),
    st.integers(-(10**9), 10**9),
)
def test_property_a_statement_adds_up_to_the_micro_unit(
    totals: list[tuple[str, str | None, int, int]], opening: int
) -> None:
    items = [UsageTotal(k, s, s, u, a if k != "expiry" else 0) for k, s, u, a in totals]
    lines = statement_lines(items)
    assert opening + sum(line.amount for line in lines) == opening + sum(t.amount for t in items)


def test_taxes_follow_the_service_rate_with_a_default() -> None:
    lines = with_tax(
        [Line("usage", "data", "d", 1 * EUR), Line("recurring", "fees", "f", 2 * EUR)],
        {"data": 100_000},
        200_000,
    )
    draft = invoice(lines)
    assert [(t.rate, t.base, t.tax) for t in draft.taxes] == [
        (100_000, EUR, 100_000),
        (200_000, 2 * EUR, 400_000),
    ]
    assert draft.total == 3 * EUR + 500_000
