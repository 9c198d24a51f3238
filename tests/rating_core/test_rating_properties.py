"""Properties of rating over generated tariffs: splitting a usage, monotonicity, units_for exactness.

Each example builds a one-rate plan from drawn parameters (unit, block, increments, rounding, band prices,
tiers, setup fee, minimum, a peak window in Europe/London, DST included) and a usage context.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rating_core import (
    Catalog,
    Plan,
    Rate,
    Usage,
    div_round,
    format_money,
    parse_tariff,
    price_of,
    quote,
    units_for,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Case:
    plan: Plan
    unit: str
    edges: tuple[int, int]  # the local hours where the peak window starts and ends

    @property
    def rate(self) -> Rate:
        return self.plan.rate_for("svc", "")


def _price(micro: int) -> str:
    return f'"{format_money(micro)}"'


@st.composite
def cases(draw: st.DrawFn) -> Case:
    unit = draw(st.sampled_from(["second", "byte", "event"]))
    block = draw(st.sampled_from([1, 6, 60, 1024]))
    first = draw(st.integers(1, 90))
    subsequent = draw(st.integers(1, 30))
    rounding = draw(st.sampled_from(["up", "down", "half-even"]))
    prices = st.integers(0, 3_000_000)

    def price() -> str:
        if draw(st.booleans()):
            return _price(draw(prices))
        return f"{{ peak = {_price(draw(prices))}, off = {_price(draw(prices))} }}"

    tiers = []
    at = 0
    for _ in range(draw(st.integers(0, 2))):
        at += draw(st.integers(1, 400))
        tiers.append(f"{{ from = {at}, price = {price()} }}")
    h1 = draw(st.integers(0, 22))
    h2 = draw(st.integers(h1 + 1, 24))
    text = f"""
timezone = "Europe/London"
currency = "EUR"
[[plan]]
name = "p"
effective_from = "2020-01-01"
default_band = "off"
[plan.bands.peak]
windows = [{{ days = "mon-fri", from = "{h1:02d}:00", to = "{h2:02d}:00" }}]
[plan.services.svc]
unit = "{unit}"
[[plan.services.svc.rates]]
name = "r"
price = {price()}
tiers = [{", ".join(tiers)}]
block = {block}
increments = [{first}, {subsequent}]
rounding = "{rounding}"
setup_fee = {_price(draw(st.sampled_from([0, 1, 250_000])))}
minimum = {_price(draw(st.sampled_from([0, 1, 999_999, 5_000_000])))}
"""
    plan = Catalog(parse_tariff(text, "generated.toml")).plan("p", datetime(2025, 1, 1, tzinfo=UTC))
    return Case(plan, unit, (h1, h2))


# Starts spread over 2025 (both DST changes included), to the microsecond.
starts = st.builds(
    lambda s, us: datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=s, microseconds=us),
    st.integers(0, 365 * 86_400),
    st.integers(0, 999_999) | st.just(0),
)


@st.composite
def contexts(draw: st.DrawFn, case: Case) -> Usage:
    """A usage continuing a session: offset, prior and cycle position drawn."""
    offset = draw(st.integers(0, 300) | st.just(0))
    return Usage(
        service="svc",
        quantity=0,
        start=draw(starts),
        offset=offset,
        prior=draw(st.integers(0, 3_000_000)) if offset else 0,
        cycle_used=draw(st.integers(0, 600)),
    )


@SETTINGS
@given(data=st.data())
def test_splitting_a_usage_changes_only_the_rounding(data: st.DataObject) -> None:
    case = data.draw(cases())
    base = data.draw(contexts(case))
    total = data.draw(st.integers(0, 30_000))
    cuts = sorted(data.draw(st.lists(st.integers(0, total), max_size=6)))
    whole = price_of(case.plan, replace(base, quantity=total))

    usage = base
    amount = charged = segments = 0
    for size in (b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)):
        piece = price_of(case.plan, replace(usage, quantity=size))
        amount += piece.amount
        charged += piece.charged_units
        segments += len(piece.segments)
        assert piece.amount == piece.setup_fee + piece.raw + piece.minimum_adjustment
        assert piece.raw == sum(s.amount for s in piece.segments)
        assert piece.charged_units == sum(s.units for s in piece.segments)
        usage = replace(
            usage,
            offset=usage.offset + size,
            prior=usage.prior + piece.raw,
            cycle_used=usage.cycle_used + piece.charged_units,
        )
    assert charged == whole.charged_units
    extra = segments - len(whole.segments)
    assert extra >= 0
    assert abs(amount - whole.amount) <= extra


@SETTINGS
@given(data=st.data())
def test_segments_agree_with_a_unit_by_unit_oracle(data: st.DataObject) -> None:
    """Every charged unit is in the band at its own start (seconds) or at the usage start, and in the tier
    of its cycle position; each segment costs div_round(units * price, block)."""
    case = data.draw(cases())
    base = data.draw(contexts(case))
    # start the session within an hour (and a bit) before a band edge or midnight, on a day of 2025
    day = datetime(2025, 1, 1, tzinfo=case.plan.tz) + timedelta(days=data.draw(st.integers(0, 364)))
    edge = day.replace(hour=0) + timedelta(hours=data.draw(st.sampled_from([0, *case.edges])))
    start = (edge - timedelta(microseconds=data.draw(st.integers(0, 4_000_000_000)))).astimezone(UTC)
    usage = replace(base, start=start, quantity=data.draw(st.integers(0, 5_000)))
    rated = price_of(case.plan, usage)
    rate = case.rate
    first = rate.charged(usage.offset)
    expected = []
    for k in range(rated.charged_units):
        if case.unit == "second":
            band = case.plan.bands.band_at(start + timedelta(seconds=first + k))
        else:
            band = case.plan.bands.band_at(start)
        tier = rate.tier_starts[bisect_right(rate.tier_starts, usage.cycle_used + k) - 1]
        expected.append((band, tier))
    got = [(s.band, s.tier) for s in rated.segments for _ in range(s.units)]
    assert got == expected
    for s in rated.segments:
        price = rate.tiers[rate.tier_starts.index(s.tier)].prices[s.band]
        assert (s.price, s.block) == (price, rate.block)
        assert s.amount == div_round(s.units * price, rate.block, rate.rounding)
        if case.unit == "second":
            assert s.start is not None and case.plan.bands.band_at(s.start) == s.band
    neighbours = list(zip(rated.segments, rated.segments[1:], strict=False))
    assert all((a.band, a.tier) != (b.band, b.tier) for a, b in neighbours)


@SETTINGS
@given(data=st.data())
def test_the_charging_quote_is_price_of_without_the_breakdown(data: st.DataObject) -> None:
    case = data.draw(cases())
    usage = replace(data.draw(contexts(case)), quantity=data.draw(st.integers(0, 20_000)))
    rated = price_of(case.plan, usage)
    assert quote(case.plan, usage) == (rated.amount, rated.raw, rated.charged_units)


@SETTINGS
@given(data=st.data())
def test_price_is_monotone_in_quantity(data: st.DataObject) -> None:
    case = data.draw(cases())
    base = data.draw(contexts(case))
    q = data.draw(st.integers(0, 20_000))
    more = q + data.draw(st.integers(0, 5_000))
    assert (
        price_of(case.plan, replace(base, quantity=q)).amount
        <= price_of(case.plan, replace(base, quantity=more)).amount
    )


def _affordable_brute_force(case: Case, usage: Usage, amount: int, cap: int) -> int:
    rate = case.rate

    def cost(q: int) -> int:
        return price_of(case.plan, replace(usage, quantity=q)).amount

    if cost(cap) <= amount:
        return cap
    best = 0
    for q in range(1, cap):
        x = usage.offset + q
        if rate.charged(x) == x and cost(q) <= amount:
            best = q
    return best


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_units_for_equals_brute_force_on_small_caps(data: st.DataObject) -> None:
    case = data.draw(cases())
    usage = data.draw(contexts(case))
    cap = data.draw(st.integers(0, 150))
    amount = data.draw(st.integers(-10, 8_000_000))
    assert units_for(case.plan, usage, amount, cap) == _affordable_brute_force(case, usage, amount, cap)


@SETTINGS
@given(data=st.data())
def test_units_for_is_affordable_maximal_and_inverts_price_of(data: st.DataObject) -> None:
    case = data.draw(cases())
    usage = data.draw(contexts(case))
    q = data.draw(st.integers(0, 50_000))
    cap = q + data.draw(st.integers(0, 100_000))
    paid = price_of(case.plan, replace(usage, quantity=q)).amount
    amount = paid + data.draw(st.sampled_from([0, 0, 1, 7, 12_345]))

    got = units_for(case.plan, usage, amount, cap)
    assert got >= q if amount >= paid else True
    assert 0 <= got <= cap
    assert price_of(case.plan, replace(usage, quantity=got)).amount <= amount
    if got < cap:
        rate = case.rate
        end = usage.offset + got
        assert got == 0 or rate.charged(end) == end  # ends on an increment boundary
        following = rate.charged(end + 1) - usage.offset  # the next boundary
        assert price_of(case.plan, replace(usage, quantity=min(following, cap))).amount > amount
