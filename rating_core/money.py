"""Money as integer micro-units of the account currency, and the one place amounts are rounded.

One currency unit is ``MICRO`` (1 000 000) micro-units. Amounts are plain ``int`` at run time; the ``Money``
type marks the ones that are money. Prices are written as exact decimal strings ("0.04") and never pass
through a float.
"""

from __future__ import annotations

import enum
import re
from typing import NewType

Money = NewType("Money", int)

MICRO = 1_000_000
DECIMALS = 6

_DECIMAL = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]+))?")


class Rounding(enum.StrEnum):
    """How a rational amount becomes whole micro-units."""

    UP = "up"  # away from zero (the ceiling for the non-negative amounts rating produces)
    DOWN = "down"  # toward zero (the floor for non-negative amounts)
    HALF_EVEN = "half-even"  # to nearest, ties to the even neighbour


def parse_money(text: str) -> Money:
    """An exact decimal string ("0.04", "-1.5", "12") as micro-units; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected a decimal string, got {text!r}")
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise ValueError(f'expected a decimal string such as "0.04", got {text!r}')
    sign, whole, frac = match.groups()
    frac = frac or ""
    if len(frac) > DECIMALS:
        raise ValueError(
            f"{text!r} has more than {DECIMALS} decimal places (the smallest amount is 0.000001)"
        )
    value = int(whole) * MICRO + int(frac.ljust(DECIMALS, "0"))
    return Money(-value if sign == "-" else value)


def format_money(m: int) -> str:
    """Micro-units as a decimal string, 2 to 6 decimals: "0.04", "12.00", "0.000125", "-1.50"."""
    sign = "-" if m < 0 else ""
    whole, frac = divmod(abs(m), MICRO)
    digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


def div_round(numerator: int, denominator: int, mode: Rounding) -> int:
    """numerator / denominator rounded to an integer by ``mode``, exactly (integer arithmetic only)."""
    if denominator == 0:
        raise ZeroDivisionError("div_round: zero denominator")
    negative = (numerator < 0) != (denominator < 0)
    quotient, remainder = divmod(abs(numerator), abs(denominator))
    if remainder:
        if mode == Rounding.UP:
            quotient += 1
        elif mode == Rounding.HALF_EVEN:
            twice = 2 * remainder
            if twice > abs(denominator) or (twice == abs(denominator) and quotient % 2 == 1):
                quotient += 1
    return -quotient if negative else quotient
