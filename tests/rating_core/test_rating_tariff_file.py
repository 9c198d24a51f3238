"""The tariff file: malformed values raise TariffError; every semantic problem is reported, located."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from rating_core import Catalog, TariffError, check_tariff, load_tariff_file, parse_tariff
from rating_core.tariff_file import combine_sets

DEMO = Path(__file__).resolve().parents[2] / "config" / "tariffs" / "demo.toml"
HEAD = 'timezone = "Europe/London"\ncurrency = "EUR"\n'

PLAN = """
[[plan]]
name = "demo"
effective_from = "2025-01-01"
default_band = "offpeak"
[plan.bands.peak]
windows = [{ days = "mon-fri", from = "08:00", to = "20:00" }]
[plan.services.voice]
unit = "second"
"""


def rate(body: str, prefix: str = "44", name: str = "UK") -> str:
    return f'[[plan.services.voice.rates]]\nname = "{name}"\nprefix = "{prefix}"\n{body}\n'


def problems(text: str, head: str = HEAD) -> list[str]:
    return [str(p) for p in check_tariff(parse_tariff(head + text, "demo.toml"))]


def error(text: str, head: str = HEAD) -> str:
    with pytest.raises(TariffError) as info:
        parse_tariff(head + text, "demo.toml")
    return str(info.value)


def test_demo_tariff_is_clean() -> None:
    tariff = load_tariff_file(DEMO)
    assert check_tariff(tariff) == []
    assert {name for name, _ in tariff.declared} == {"demo", "demo-plus"}
    assert Catalog(tariff).names() == ("demo", "demo-plus")


# ---- malformed values: TariffError naming file, plan, rate and key ---------------------------------------


def test_price_of_the_wrong_type_names_everything() -> None:
    assert error(PLAN + rate("price = -1")) == (
        'demo.toml: plan "demo" rate "voice/44 UK": price: expected a decimal string, got -1'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            PLAN + rate('price = "0.0000001"'),
            "rate \"voice/44 UK\": price: '0.0000001' has more than 6 decimal",
        ),
        (PLAN + rate("price = 0.1"), 'rate "voice/44 UK": price: expected a decimal string, got 0.1'),
        (PLAN + rate("price = { peak = 1 }"), "price.peak: expected a decimal string, got 1"),
        (PLAN + rate('price = "1"\nrounding = "sideways"'), "rounding: expected one of up, down, half-even"),
        (PLAN + rate('price = "1"\ncolour = "red"'), "colour: unknown key"),
        (
            PLAN + rate('price = "1"\nincrements = [30]'),
            "increments: expected [first, subsequent], got an array",
        ),
        (PLAN + rate('price = "1"\nblock = "60"'), 'block: expected an integer, got "60"'),
        (PLAN + rate('price = "1"\ntiers = [{ from = 10 }]'), "tiers[0].price: required key is missing"),
        (PLAN + rate(""), 'rate "voice/44 UK": price: required key is missing'),
        (PLAN.replace('unit = "second"', 'unit = "minute"'), "services.voice.unit: expected one of second"),
        (PLAN.replace('"08:00"', '"8am"'), 'bands.peak.windows[0].from: expected a time of day "HH:MM"'),
        (PLAN.replace('"08:00"', '"24:00"'), "from: expected a time of day 00:00-23:59"),
        (PLAN.replace('"20:00"', '"24:01"'), "to: expected a time of day 00:00-24:00"),
        (PLAN.replace('"mon-fri"', '"weekdays"'), 'days: expected weekdays such as "mon-fri"'),
        (PLAN.replace('"2025-01-01"', '"2025-01-01T00:00:00"'), "effective_from: expected a date"),
        (
            PLAN.replace('"2025-01-01"', '"soon"'),
            "effective_from: expected a date (YYYY-MM-DD) or a date-time",
        ),
        (PLAN.replace('effective_from = "2025-01-01"\n', ""), 'plan "demo": effective_from: required key'),
        (PLAN.replace('name = "demo"\n', ""), "demo.toml: plan[0].name: required key is missing"),
        (
            PLAN + '[plan.fees.monthly]\namount = 9.99\nperiod = "monthly"\n',
            "fees.monthly.amount: expected a decimal",
        ),
        (
            PLAN + '[plan.fees.monthly]\namount = "9.99"\nperiod = "yearly"\n',
            "fees.monthly.period: expected one of",
        ),
        (
            PLAN + '[plan.allowances.data]\nunits = 10\nperiod = "once"\n',
            "allowances.data.period: expected one of",
        ),
        ("", "demo.toml: plan: no [[plan]] tables"),
        ("[[plan]\n", "demo.toml: not valid TOML"),
        ('colour = "red"\n' + PLAN, "demo.toml: colour: unknown key"),
    ],
)
def test_malformed_values(text: str, message: str) -> None:
    assert message in error(text)


def test_native_toml_dates_are_accepted() -> None:
    text = PLAN.replace('"2025-01-01"', "2025-01-01T00:00:00+02:00") + rate('price = "1"')
    text += '[plan.bands.offpeak]\nholidays = [2025-12-25, "2025-12-26"]\n'
    tariff = parse_tariff(HEAD + text, "demo.toml")
    assert tariff.problems == ()
    assert tariff.declared == (("demo", datetime(2024, 12, 31, 22, 0, tzinfo=UTC)),)


# ---- problems: collected, each naming plan (and rate) ------------------------------------------------


def test_overlapping_band_windows() -> None:
    text = (
        PLAN + '[plan.bands.evening]\nwindows = [{ days = ["mon", "sun"], from = "19:00", to = "22:00" }]\n'
    )
    assert problems(text + rate('price = { peak = "1", offpeak = "1", evening = "1" }')) == [
        'demo.toml: plan "demo": bands: windows overlap on mon: "peak" mon-fri 08:00-20:00 and '
        '"evening" mon,sun 19:00-22:00'
    ]


def test_window_ending_before_it_starts_and_duplicate_holidays() -> None:
    text = PLAN.replace('"20:00"', '"07:00"') + rate('price = "1"')
    text += '[plan.bands.offpeak]\nholidays = ["2025-12-25"]\n[plan.bands.xmas]\nholidays = ["2025-12-25"]\n'
    found = problems(text)
    assert found[0].startswith('demo.toml: plan "demo": bands.peak.windows[0]: from must be before to')
    assert 'bands.xmas.holidays: 2025-12-25 is also a holiday of band "offpeak"' in found[1]


def test_unreachable_prefixes() -> None:
    text = (
        PLAN + rate('price = "1"') + rate('price = "2"', name="UK again") + rate('price = "1"', prefix="+33")
    )
    assert problems(text) == [
        'demo.toml: plan "demo" rate "voice/44 UK again": prefix: same prefix as rate "voice/44 UK": '
        "unreachable",
        'demo.toml: plan "demo" rate "voice/+33 UK": prefix: "+33" is not a digit string: no destination '
        "matches it (unreachable)",
    ]


def test_negative_amounts() -> None:
    text = PLAN + rate('price = { peak = "-0.10", offpeak = "0.05" }\nsetup_fee = "-1"\nminimum = "-0.5"')
    text += '[plan.fees.monthly]\namount = "-9.99"\nperiod = "monthly"\n'
    text += "[plan.allowances.voice]\nunits = -5\n"
    assert problems(text) == [
        'demo.toml: plan "demo" rate "voice/44 UK": setup_fee: negative amount -1.00',
        'demo.toml: plan "demo" rate "voice/44 UK": minimum: negative amount -0.50',
        'demo.toml: plan "demo" rate "voice/44 UK": price.peak: negative price -0.10',
        'demo.toml: plan "demo": allowances.voice.units: must not be negative, got -5',
        'demo.toml: plan "demo": fees.monthly.amount: negative amount -9.99',
    ]


def test_unknown_parent() -> None:
    text = (
        PLAN + rate('price = "1"') + '[[plan]]\nname = "kid"\nparent = "dad"\neffective_from = "2025-01-01"\n'
    )
    assert problems(text) == ['demo.toml: plan "kid": parent: unknown plan "dad"']


def test_inheritance_cycle() -> None:
    text = "".join(
        f'[[plan]]\nname = "{n}"\nparent = "{p}"\neffective_from = "2025-01-01"\n'
        for n, p in (("a", "b"), ("b", "c"), ("c", "a"))
    )
    text += '[[plan]]\nname = "d"\nparent = "a"\neffective_from = "2025-01-01"\n'
    assert problems(text) == [
        'demo.toml: plan "a": parent: inheritance cycle: "a" -> "b" -> "c" -> "a"',
        'demo.toml: plan "b": parent: inheritance cycle: "a" -> "b" -> "c" -> "a"',
        'demo.toml: plan "c": parent: inheritance cycle: "a" -> "b" -> "c" -> "a"',
        'demo.toml: plan "d": parent: plan "a" could not be resolved',
    ]


def test_parent_without_a_version_in_force() -> None:
    text = (
        PLAN
        + rate('price = "1"')
        + '[[plan]]\nname = "kid"\nparent = "demo"\neffective_from = "2024-06-01"\n'
    )
    assert problems(text) == [
        'demo.toml: plan "kid": parent: plan "demo" has no version in force at 2024-06-01T00:00:00+01:00'
    ]


def test_price_table_with_an_unknown_band_or_a_missing_one() -> None:
    assert problems(PLAN + rate('price = { peak = "1", offpeak = "1", night = "1" }')) == [
        'demo.toml: plan "demo" rate "voice/44 UK": price.night: band "night" is not defined '
        "(bands: offpeak, peak)"
    ]
    assert problems(PLAN + rate('price = { peak = "1" }')) == [
        'demo.toml: plan "demo" rate "voice/44 UK": price: no price for band "offpeak", which can occur'
    ]
    tiers = 'price = "1"\ntiers = [{ from = 100, price = { offpeak = "0.5" } }]'
    assert problems(PLAN + rate(tiers)) == [
        'demo.toml: plan "demo" rate "voice/44 UK": tiers[0].price: no price for band "peak", which can occur'
    ]


def test_the_default_band_needs_no_price_when_windows_cover_the_week() -> None:
    text = PLAN.replace('"mon-fri", from = "08:00", to = "20:00"', '"all", from = "00:00", to = "24:00"')
    assert problems(text + rate('price = { peak = "1" }')) == []


def test_a_child_adding_a_band_needs_prices_for_inherited_rates() -> None:
    text = PLAN + rate('price = { peak = "1", offpeak = "0.5" }')
    text += '[[plan]]\nname = "kid"\nparent = "demo"\neffective_from = "2025-01-01"\n'
    text += '[plan.bands.weekend]\nwindows = [{ days = "sat-sun", from = "00:00", to = "24:00" }]\n'
    assert problems(text) == [
        'demo.toml: plan "kid" rate "voice/44 UK": price: no price for band "weekend", which can occur'
    ]


def test_inherited_problems_are_reported_once_on_the_parent() -> None:
    text = (
        PLAN
        + rate('price = "-1"')
        + '[[plan]]\nname = "kid"\nparent = "demo"\neffective_from = "2025-02-01"\n'
    )
    assert problems(text) == ['demo.toml: plan "demo" rate "voice/44 UK": price: negative price -1.00']


def test_non_positive_block_and_increments() -> None:
    text = PLAN.replace('unit = "second"', 'unit = "second"\nblock = 0\nincrements = [60, -6]')
    text += rate('price = "1"\nblock = -60\nincrements = [0, 6]')
    text += rate('price = "1"\ntiers = [{ from = 50, price = "1" }, { from = 50, price = "2" }]', prefix="1")
    assert problems(text) == [
        'demo.toml: plan "demo": services.voice.block: must be a positive number of units, got 0',
        'demo.toml: plan "demo": services.voice.increments: must be a positive number of units, got -6',
        'demo.toml: plan "demo" rate "voice/44 UK": block: must be a positive number of units, got -60',
        'demo.toml: plan "demo" rate "voice/44 UK": increments: must be a positive number of units, got 0',
        'demo.toml: plan "demo" rate "voice/1 UK": tiers[1].from: must be greater than the previous tier\'s '
        "from (50), got 50",
    ]


def test_bad_or_missing_time_zone_and_currency() -> None:
    text = PLAN.replace('name = "demo"', 'name = "demo"\ntimezone = "Mars/Olympus"') + rate('price = "1"')
    assert problems(text) == [
        'demo.toml: plan "demo": timezone: unknown time zone "Mars/Olympus" (expected an IANA name such as '
        '"Europe/London")'
    ]
    assert problems(PLAN + rate('price = "1"'), head="") == [
        'demo.toml: plan "demo": timezone: not set (set it on the plan or at the top of the file)',
        'demo.toml: plan "demo": currency: not set (set it on the plan or at the top of the file)',
    ]
    assert problems(PLAN + rate('price = "1"'), head='timezone = "UTC"\ncurrency = "euro"\n') == [
        'demo.toml: plan "demo": currency: expected an ISO 4217 code such as "EUR", got "euro"'
    ]


def test_unit_missing_or_changed_by_a_child_and_allowance_for_no_service() -> None:
    text = PLAN + rate('price = "1"') + "[plan.allowances.data]\nunits = 100\n"
    text += '[[plan]]\nname = "kid"\nparent = "demo"\neffective_from = "2025-01-01"\n'
    text += '[plan.services.voice]\nunit = "event"\n[plan.services.fax]\nblock = 1\n'
    assert problems(text) == [
        'demo.toml: plan "demo": allowances.data: no service "data" in the plan',
        'demo.toml: plan "kid": services.voice.unit: "event" differs from the parent\'s unit "second"',
        'demo.toml: plan "kid": services.fax.unit: not set (second, byte or event)',
    ]


def test_duplicate_version_is_named_with_its_date() -> None:
    text = (
        PLAN
        + rate('price = "1"')
        + PLAN.replace('"2025-01-01"', '"2025-01-01T00:00:00Z"')
        + rate('price = "2"')
    )
    assert problems(text) == [
        'demo.toml: plan "demo": effective_from: another version of the plan is effective from '
        "2025-01-01T00:00:00+00:00 too"
    ]
    two = PLAN + rate('price = "-1"') + PLAN.replace('"2025-01-01"', '"2025-06-01"') + rate('price = "1"')
    assert problems(two) == [
        'demo.toml: plan "demo" (from 2025-01-01) rate "voice/44 UK": price: negative price -1.00'
    ]


def test_catalog_refuses_a_set_with_problems() -> None:
    tariff = parse_tariff(HEAD + PLAN + rate('price = "-1"'), "demo.toml")
    with pytest.raises(
        TariffError, match=r'demo.toml: plan "demo" rate "voice/44 UK": price: negative'
    ) as info:
        Catalog(tariff)
    assert len(info.value.problems) == 1


def test_combining_sets_detects_conflicting_declarations() -> None:
    a = parse_tariff(HEAD + PLAN + rate('price = "1"'), "a.toml")
    same = parse_tariff(HEAD + "# a comment\n" + PLAN + rate('price = "1.00"'), "b.toml")
    other = parse_tariff(HEAD + PLAN + rate('price = "2"'), "c.toml")
    assert a.declares_same(same, "demo", a.declared[0][1])
    assert not a.declares_same(other, "demo", a.declared[0][1])
    assert combine_sets([(a, None), (same, None)]).problems == ()
    assert [str(p) for p in combine_sets([(a, None), (other, None)]).problems] == [
        'c.toml: plan "demo": effective_from: another version of the plan in a.toml is effective from '
        "2025-01-01T00:00:00+00:00 too"
    ]
    with pytest.raises(TariffError):
        Catalog(a, other)


def test_load_tariff_file_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(TariffError, match=r"missing\.toml: file not found"):
        load_tariff_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text(HEAD + PLAN + rate("price = -1"), encoding="utf-8")
    with pytest.raises(TariffError, match=r"bad.toml: plan \"demo\" rate \"voice/44 UK\": price"):
        load_tariff_file(bad)


def test_a_catalog_refuses_plans_that_count_one_service_in_different_units() -> None:
    from rating_core.tariff import Catalog, TariffError

    text = """
timezone = "UTC"
currency = "EUR"
[[plan]]
name = "bytes"
effective_from = "2026-01-01"
[plan.services.data]
unit = "byte"
[[plan.services.data.rates]]
name = "Data"
price = "0.01"
[[plan]]
name = "seconds"
effective_from = "2026-01-01"
[plan.services.data]
unit = "second"
[[plan.services.data.rates]]
name = "Day pass"
price = "0.01"
"""
    with pytest.raises(TariffError, match='service "data" is counted in bytes by plan "bytes"'):
        Catalog(parse_tariff(text, "two.toml"))
