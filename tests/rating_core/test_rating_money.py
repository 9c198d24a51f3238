"""Money: exact decimal parsing and formatting in micro-units, and the three rounding modes."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rating_core.money import MICRO, Rounding, div_round, format_money, parse_money


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("0.04", 40_000),
        ("-1.5", -1_500_000),
        ("12", 12_000_000),
        ("0.000001", 1),
        ("+3.25", 3_250_000),
        ("9.99", 9_990_000),
        ("0", 0),
        ("-0.000125", -125),
        ("007.10", 7_100_000),
        ("123456789.123456", 123_456_789_123_456),
    ],
)
def test_parse_money(text: str, micro: int) -> None:
    assert parse_money(text) == micro


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.0000001", "more than 6 decimal places"),
        ("1.1234567", "more than 6 decimal places"),
        ("abc", "expected a decimal string"),
        ("1e3", "expected a decimal string"),
        ("1.", "expected a decimal string"),
        (".5", "expected a decimal string"),
        ("", "expected a decimal string"),
        (" 1", "expected a decimal string"),
        ("1,50", "expected a decimal string"),
        ("--1", "expected a decimal string"),
        ("NaN", "expected a decimal string"),
    ],
)
def test_parse_money_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_money(text)


def test_parse_money_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="expected a decimal string"):
        parse_money(0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (40_000, "0.04"),
        (12_000_000, "12.00"),
        (125, "0.000125"),
        (-1_500_000, "-1.50"),
        (0, "0.00"),
        (1, "0.000001"),
        (-1, "-0.000001"),
        (1_234_567, "1.234567"),
        (1_230_000, "1.23"),
        (1_200_000, "1.20"),
        (1_234_500, "1.2345"),
        (9_990_000, "9.99"),
    ],
)
def test_format_money(micro: int, text: str) -> None:
    assert format_money(micro) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_then_parse_is_identity(micro: int) -> None:
    text = format_money(micro)
    assert parse_money(text) == micro
    decimals = text.partition(".")[2]
    assert 2 <= len(decimals) <= 6
    assert len(decimals) == 2 or not decimals.endswith("0")


@pytest.mark.parametrize(
    ("n", "d", "up", "down", "half_even"),
    [
        (7, 2, 4, 3, 4),  # 3.5 -> ties to even 4
        (5, 2, 3, 2, 2),  # 2.5 -> ties to even 2
        (6, 3, 2, 2, 2),  # exact
        (1, 3, 1, 0, 0),
        (2, 3, 1, 0, 1),
        (0, 7, 0, 0, 0),
        (-7, 2, -4, -3, -4),  # away from / toward zero for negatives
        (-5, 2, -3, -2, -2),
        (7, -2, -4, -3, -4),
        (-7, -2, 4, 3, 4),
        (10**30 + 1, 10**15, 10**15 + 1, 10**15, 10**15),
    ],
)
def test_div_round_modes(n: int, d: int, up: int, down: int, half_even: int) -> None:
    assert div_round(n, d, Rounding.UP) == up
    assert div_round(n, d, Rounding.DOWN) == down
    assert div_round(n, d, Rounding.HALF_EVEN) == half_even


def test_div_round_by_zero() -> None:
    with pytest.raises(ZeroDivisionError):
        div_round(1, 0, Rounding.UP)


@given(st.integers(-(10**18), 10**18), st.integers(1, 10**9) | st.integers(-(10**9), -1))
def test_div_round_matches_exact_rationals(n: int, d: int) -> None:
    exact = Fraction(n, d)
    up, down, even = (div_round(n, d, mode) for mode in Rounding)
    assert {up, down, even} <= {exact.__floor__(), exact.__ceil__()}
    if exact.denominator == 1:
        assert up == down == even == exact
        return
    assert abs(up) == abs(exact).__ceil__()  # away from zero
    assert abs(down) == abs(exact).__floor__()  # toward zero
    assert even == round(exact)  # Fraction rounds half to even
    assert abs(even - exact) <= Fraction(1, 2)


def test_micro() -> None:
    assert MICRO == 1_000_000
    assert [m.value for m in Rounding] == ["up", "down", "half-even"]
