"""Rating: what a piece of usage costs under a plan, and how many units an amount buys.

The rules, exactly (see also ``docs/tariffs.md``):

* **Increments.** With a rate's increments ``[first, subsequent]``, a session that used ``x`` units is charged
  ``F(x)`` units: ``F(0) = 0``, ``F(x) = first`` for ``0 < x <= first``, else ``first + ceil((x - first) /
  subsequent) * subsequent``. A piece that continues a session after ``offset`` units is charged
  ``F(offset + quantity) - F(offset)`` units, so pieces telescope to the charge of the whole session.
* **Segments.** The piece's charged units are positions ``F(offset) .. F(offset + quantity) - 1`` of the
  session. For "second" services, charged second ``p`` lies at ``start + p`` and is priced in the band in
  force at its beginning; byte and event pieces are priced in the band in force at ``start``. Unit ``k`` of
  the piece sits at position ``cycle_used + k`` of the billing cycle and is priced in the tier whose ``from``
  is the largest not above it. Runs of units with the same band and tier form one segment.
* **Rounding.** A segment costs ``div_round(units * price, block, rate.rounding)`` micro-units. That is the
  only rounding: splitting a usage into more pieces can change the total by at most one micro-unit per
  extra segment the split creates (and not at all when every segment's amount is exact).
* **Setup fee and minimum.** The setup fee is charged by the piece with ``offset == 0`` and ``quantity > 0``.
  A minimum charge ``M`` tops the session's raw amount up: with ``T(x) = max(0, M - x)`` a piece costs
  ``setup + raw + T(prior + raw) - (T(prior) if offset > 0 else 0)``, so a whole session costs
  ``setup + raw_total + T(raw_total)``, however it is split. A session that used nothing costs nothing.

Allowances (free units) are not applied here: the balance layer spends unit buckets first and rates the rest.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import msgspec

from rating_core.money import Money, Rounding, div_round
from rating_core.tariff import NoRate, Plan, Rate, Service, Unit


@dataclass(frozen=True, slots=True)
class Usage:
    """One piece of a session's usage of a service, to be rated."""

    service: str
    quantity: int  # units used in this piece (seconds, bytes or events), >= 0
    # aware. "second" services: when the session started; the piece's charged seconds lie on the timeline at
    # [start + F(offset), start + F(offset + quantity)). byte/event: the band is the one in force at `start`.
    start: datetime
    destination: str = ""
    offset: int = 0  # units of this service already used earlier in the same session (continuation)
    prior: int = 0  # raw amount (micro) already rated earlier in this session, for the minimum charge
    cycle_used: int = 0  # charged units of this service already consumed in the current cycle (tiers)


# Results are msgspec Structs rather than dataclasses: they are built on the hot path, where a frozen
# dataclass costs ~1 µs per instance and a frozen Struct ~0.1 µs; they also encode to JSON as they are.


class Segment(msgspec.Struct, frozen=True, kw_only=True):
    """Charged units of one band and one tier, and what they cost."""

    band: str
    tier: int  # the tier's `from` (0 for the rate's base price)
    units: int
    price: Money  # per block
    block: int
    amount: Money  # div_round(units * price, block, rounding)
    start: datetime | None = None  # "second" services: the instant the segment's first second begins (UTC)


class Rated(msgspec.Struct, frozen=True, kw_only=True):
    amount: Money  # what this piece costs: setup_fee + raw + minimum_adjustment
    raw: Money  # sum of the segments' amounts
    charged_units: int  # F(offset + quantity) - F(offset)
    setup_fee: Money
    minimum_adjustment: Money
    rate: str  # the rate's name
    service: str
    prefix: str
    segments: tuple[Segment, ...]


_ZERO = Money(0)
_SECOND = timedelta(seconds=1)


def _segment_amount(units: int, price: int, block: int, rounding: Rounding) -> int:
    numerator = units * price
    if rounding is Rounding.UP and numerator >= 0:  # the common case, without the call
        return -(-numerator // block)
    return div_round(numerator, block, rounding)


def _no_price(plan: Plan, rate: Rate, band: str) -> NoRate:
    return NoRate(f'plan "{plan.name}" rate "{rate.label}" has no price for band "{band}"')


def _segments(
    plan: Plan, rate: Rate, unit: Unit, usage: Usage, first: int, n: int, out: list[Segment] | None
) -> tuple[int, int]:
    """The raw amount of ``n`` charged units from session position ``first`` and the price (per block) of
    the last of them; appends the segments to ``out``."""
    bands = plan.bands
    seconds = unit is Unit.SECOND
    runs: Sequence[tuple[str, int, datetime | None]]
    if seconds and (bands.windows or bands.holidays):
        runs = bands.runs(usage.start + _SECOND * first if first else usage.start, n)
    else:
        band = bands.band_at(usage.start)
        if out is None and len(rate.tiers) == 1:  # one band, one tier: one segment
            price = rate.tiers[0].prices.get(band)
            if price is None:
                raise _no_price(plan, rate, band)
            return _segment_amount(n, price, rate.block, rate.rounding), price
        runs = [(band, n, usage.start + _SECOND * first if seconds and out is not None else None)]
    tiers = rate.tiers
    starts = rate.tier_starts
    block = rate.block
    rounding = rate.rounding
    raw = last = 0
    position = usage.cycle_used
    for band, count, run_start in runs:
        done = 0
        while done < count:
            if len(starts) == 1:
                index, take = 0, count
            else:
                index = bisect_right(starts, position) - 1
                limit = starts[index + 1] - position if index + 1 < len(starts) else count
                take = min(count - done, limit)
            price = tiers[index].prices.get(band)
            if price is None:
                raise _no_price(plan, rate, band)
            amount = _segment_amount(take, price, block, rounding)
            raw += amount
            last = price
            if out is not None:
                at = run_start + _SECOND * done if run_start is not None and done else run_start
                out.append(
                    Segment(
                        band=band,
                        tier=starts[index],
                        units=take,
                        price=price,
                        block=block,
                        amount=Money(amount),
                        start=at,
                    )
                )
            done += take
            position += take
    return raw, last


def _lookup(plan: Plan, usage: Usage) -> tuple[Service, Rate]:
    service = plan.services.get(usage.service)
    if service is None:
        raise NoRate(f'plan "{plan.name}" has no service "{usage.service}"')
    try:
        return service, service.rate_for(usage.destination)
    except NoRate as exc:
        raise NoRate(f'plan "{plan.name}": {exc}') from None


def _check(usage: Usage, quantity: int) -> None:
    if quantity < 0 or usage.offset < 0 or usage.cycle_used < 0:
        raise ValueError(f"usage quantity, offset and cycle_used must not be negative: {usage!r}")
    if usage.start.tzinfo is None:
        raise ValueError(f"usage start {usage.start.isoformat()} is naive; pass an aware datetime")


def _cost(plan: Plan, service: Service, rate: Rate, usage: Usage, quantity: int) -> tuple[int, int, int, int]:
    """(amount, raw, charged units, price per block of the last unit) of ``quantity`` units continuing
    ``usage``: price_of's arithmetic without building the breakdown."""
    offset = usage.offset
    if quantity == 0 and offset == 0:
        return 0, 0, 0, 0
    first = rate.charged(offset)
    n = rate.charged(offset + quantity) - first
    raw, price = _segments(plan, rate, service.unit, usage, first, n, None) if n else (0, 0)
    amount = raw + (rate.setup_fee if offset == 0 else 0)
    minimum = rate.minimum
    if minimum:
        prior = usage.prior
        amount += max(0, minimum - prior - raw) - (max(0, minimum - prior) if offset > 0 else 0)
    return amount, raw, n, price


def _amount(plan: Plan, service: Service, rate: Rate, usage: Usage, quantity: int) -> tuple[int, int]:
    """price_of(...).amount without building the breakdown, and the price per block of the last unit."""
    amount, _, _, price = _cost(plan, service, rate, usage, quantity)
    return amount, price


class Quote(NamedTuple):
    """:func:`price_of` without the breakdown: what the charging hot path needs."""

    amount: int
    raw: int
    charged_units: int


def quote(plan: Plan, usage: Usage) -> Quote:
    """``price_of(plan, usage)``'s amount, raw and charged units, without building segments (the same
    arithmetic; tests hold the two equal)."""
    _check(usage, usage.quantity)
    service, rate = _lookup(plan, usage)
    amount, raw, n, _ = _cost(plan, service, rate, usage, usage.quantity)
    return Quote(amount, raw, n)


def price_of(plan: Plan, usage: Usage) -> Rated:
    """What ``usage`` costs under ``plan``, with the breakdown. :class:`NoRate` if the plan cannot rate it."""
    _check(usage, usage.quantity)
    service, rate = _lookup(plan, usage)
    offset = usage.offset
    quantity = usage.quantity
    if quantity == 0 and offset == 0:
        return Rated(
            amount=_ZERO,
            raw=_ZERO,
            charged_units=0,
            setup_fee=_ZERO,
            minimum_adjustment=_ZERO,
            rate=rate.name,
            service=service.name,
            prefix=rate.prefix,
            segments=(),
        )
    first = rate.charged(offset)
    n = rate.charged(offset + quantity) - first
    segments: list[Segment] = []
    raw = _segments(plan, rate, service.unit, usage, first, n, segments)[0] if n else 0
    setup = rate.setup_fee if offset == 0 else _ZERO
    adjustment = 0
    minimum = rate.minimum
    if minimum:
        prior = usage.prior
        adjustment = max(0, minimum - prior - raw) - (max(0, minimum - prior) if offset > 0 else 0)
    return Rated(
        amount=Money(setup + raw + adjustment),
        raw=Money(raw),
        charged_units=n,
        setup_fee=setup,
        minimum_adjustment=Money(adjustment),
        rate=rate.name,
        service=service.name,
        prefix=rate.prefix,
        segments=tuple(segments),
    )


def units_for(plan: Plan, usage: Usage, amount: int, cap: int) -> int:
    """The most units (at most ``cap``) that continuing ``usage`` can use for at most ``amount`` micro-units.

    ``usage.quantity`` is ignored. The answer ``q`` ends on an increment boundary (``F(offset + q) ==
    offset + q``), so no unit is paid for and left unused, unless ``q == cap`` (returned whenever ``cap``
    units are affordable, e.g. because the rate is free). 0 when not even the next increment is affordable.
    Exact: the search evaluates the same cost function as :func:`price_of`, which is monotone in the quantity.
    """
    if cap < 0:
        raise ValueError(f"units_for: cap must not be negative, got {cap}")
    _check(usage, 0)
    service, rate = _lookup(plan, usage)
    if cap == 0:
        return 0

    offset = usage.offset
    head, step = rate.first, rate.subsequent
    # Candidates: the boundaries x_k = head + k * step with offset < x_k < offset + cap (q = x_k - offset),
    # and cap itself, which is only worth trying when every boundary below it fits.
    k_low = 0 if offset < head else (offset - head) // step + 1
    last = offset + cap - 1
    k_high = (last - head) // step if last >= head else -1
    if k_high < k_low:
        return cap if _amount(plan, service, rate, usage, cap)[0] <= amount else 0

    # Invariant: boundary `good` fits (k_low - 1 stands for q = 0), boundary `bad` does not (k_high + 1
    # stands for "cap or more", only checked at the end). Newton steps on the cost, using the price of the
    # last unit as the slope, narrow the bracket fast (piecewise-linear costs: a step per price change, and
    # a right first guess costs two evaluations); bisection then makes the answer exact whatever happened.
    good, bad = k_low - 1, k_high + 1
    k = min(max(_guess(plan, service, rate, usage, amount), k_low), k_high)
    for _ in range(8):
        cost, price = _amount(plan, service, rate, usage, head + k * step - offset)
        if cost <= amount:
            good = k
        else:
            bad = k
        if bad - good <= 1 or price <= 0:
            break
        k += (amount - cost) * rate.block // price // step  # floor: below k when over budget
        k = min(max(k, good + 1), bad - 1)
    while bad - good > 1:
        mid = (good + bad) // 2
        if _amount(plan, service, rate, usage, head + mid * step - offset)[0] <= amount:
            good = mid
        else:
            bad = mid
    if good == k_high and _amount(plan, service, rate, usage, cap)[0] <= amount:
        return cap
    return head + good * step - offset if good >= k_low else 0


def _guess(plan: Plan, service: Service, rate: Rate, usage: Usage, amount: int) -> int:
    """A boundary index near the answer, from the price of the first unit (any value is safe)."""
    offset = usage.offset
    budget = amount - (rate.setup_fee if offset == 0 else 0)
    if rate.minimum:
        floor = max(0, rate.minimum - usage.prior)
        if offset > 0:
            budget += floor
        elif budget < floor:
            return 0
    first = rate.charged(offset)
    if service.unit is Unit.SECOND:
        band = plan.bands.band_at(usage.start + _SECOND * first if first else usage.start)
    else:
        band = plan.bands.band_at(usage.start)
    tier = bisect_right(rate.tier_starts, usage.cycle_used) - 1
    price = rate.tiers[tier].prices.get(band, 0)
    if price <= 0:
        return 1 << 62
    units = max(0, budget) * rate.block // price
    return (first + units - rate.first) // rate.subsequent
