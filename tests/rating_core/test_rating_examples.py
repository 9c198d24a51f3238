"""Worked rating examples, checked to the micro-unit (the demo tariff and small purpose-made ones)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rating_core import (
    Catalog,
    NoRate,
    Plan,
    Rated,
    UnknownPlan,
    Usage,
    load_tariff_file,
    parse_tariff,
    price_of,
    units_for,
)

DEMO = Path(__file__).resolve().parents[2] / "config" / "tariffs" / "demo.toml"
MONDAY_1959 = datetime(2025, 3, 3, 19, 59, tzinfo=UTC)  # London is on GMT (UTC+0) in early March
LONDON = "442079460000"
UK_MOBILE = "447700900123"
NEW_YORK = "12125550100"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(load_tariff_file(DEMO))


@pytest.fixture(scope="module")
def demo(catalog: Catalog) -> Plan:
    return catalog.plan("demo", MONDAY_1959)


def one_plan(text: str, name: str = "p") -> Plan:
    head = 'timezone = "Europe/London"\ncurrency = "EUR"\n'
    return Catalog(parse_tariff(head + text, "t.toml")).plan(name, datetime(2030, 1, 1, tzinfo=UTC))


def parts(r: Rated) -> list[tuple[str, int, int, int]]:
    return [(s.band, s.tier, s.units, s.amount) for s in r.segments]


# ---- bands ------------------------------------------------------------------------------------------


def test_peak_to_offpeak_at_2000_splits_the_call(demo: Plan) -> None:
    r = price_of(demo, Usage("voice", 90, MONDAY_1959, LONDON))
    assert r.rate == "London" and r.prefix == "4420"
    assert r.charged_units == 120
    assert parts(r) == [("peak", 0, 60, 80_000), ("offpeak", 0, 60, 40_000)]
    assert [s.start for s in r.segments] == [MONDAY_1959, datetime(2025, 3, 3, 20, 0, tzinfo=UTC)]
    assert r.amount == r.raw == 120_000


def test_band_windows_follow_the_local_clock_in_summer(demo: Plan) -> None:
    # 18:59 UTC is 19:59 BST: the same split as in winter, an hour earlier in UTC
    r = price_of(demo, Usage("voice", 90, datetime(2025, 6, 2, 18, 59, tzinfo=UTC), LONDON))
    assert parts(r) == [("peak", 0, 60, 80_000), ("offpeak", 0, 60, 40_000)]


def test_continued_pieces_land_on_their_own_band(demo: Plan) -> None:
    # the session started at 19:58:30; the piece covering seconds 60..120 lies 19:59:30-20:00:30
    start = datetime(2025, 3, 3, 19, 58, 30, tzinfo=UTC)
    first = price_of(demo, Usage("voice", 60, start, LONDON))
    second = price_of(demo, Usage("voice", 60, start, LONDON, offset=60, prior=first.raw))
    assert parts(first) == [("peak", 0, 60, 80_000)]
    # 60 charged seconds: 30 peak (19:59:30-20:00) and 30 off-peak
    assert parts(second) == [("peak", 0, 30, 40_000), ("offpeak", 0, 30, 20_000)]


def test_a_second_belongs_to_the_band_at_its_start(demo: Plan) -> None:
    # starting half a second before 20:00: the first second starts in peak, so it is peak
    start = datetime(2025, 3, 3, 19, 59, 59, 500_000, tzinfo=UTC)
    plan = one_plan(
        """
[[plan]]
name = "p"
effective_from = "2025-01-01"
default_band = "off"
[plan.bands.peak]
windows = [{ days = "mon-fri", from = "08:00", to = "20:00" }]
[plan.services.voice]
unit = "second"
block = 1
[[plan.services.voice.rates]]
name = "all"
price = { peak = "2", off = "1" }
"""
    )
    r = price_of(plan, Usage("voice", 3, start))
    assert parts(r) == [("peak", 0, 1, 2_000_000), ("off", 0, 2, 2_000_000)]
    assert demo.bands.band_at(start) == "peak"


def test_weekend_is_offpeak_all_day(demo: Plan) -> None:
    saturday_noon = datetime(2025, 3, 8, 12, 0, tzinfo=UTC)
    assert parts(price_of(demo, Usage("voice", 60, saturday_noon, LONDON))) == [("offpeak", 0, 60, 40_000)]


def test_holiday_is_in_its_band_all_day(demo: Plan) -> None:
    # Thursday 25 December 2025 is listed as an off-peak holiday; a week earlier is a normal peak Thursday
    christmas = datetime(2025, 12, 25, 10, 0, tzinfo=UTC)
    assert parts(price_of(demo, Usage("voice", 60, christmas, "44"))) == [("offpeak", 0, 60, 50_000)]
    ordinary = christmas - timedelta(days=7)
    assert parts(price_of(demo, Usage("voice", 60, ordinary, "44"))) == [("peak", 0, 60, 100_000)]
    # a call from 23:59 on Christmas Eve (a peak-free evening anyway) into Christmas Day
    eve = datetime(2025, 12, 24, 19, 59, tzinfo=UTC)
    assert [s.band for s in price_of(demo, Usage("voice", 120, eve, "44")).segments] == ["peak", "offpeak"]


DST_PLAN = """
[[plan]]
name = "p"
effective_from = "2025-01-01"
[plan.bands.early]
windows = [{ days = "all", from = "01:30", to = "02:00" }]
[plan.services.voice]
unit = "second"
block = 1
[[plan.services.voice.rates]]
name = "all"
price = { early = "0.000002", default = "0.000001" }
"""


def test_band_change_inside_the_repeated_hour_of_autumn() -> None:
    # 26 Oct 2025: 02:00 BST becomes 01:00 GMT at 01:00 UTC, so local 01:30-02:00 happens twice
    plan = one_plan(DST_PLAN)
    r = price_of(plan, Usage("voice", 3 * 3600, datetime(2025, 10, 26, 0, 0, tzinfo=UTC)))
    assert [(s.band, s.units) for s in r.segments] == [
        ("default", 1800),  # 01:00-01:30 BST
        ("early", 1800),  # 01:30-02:00 BST
        ("default", 1800),  # 01:00-01:30 GMT
        ("early", 1800),  # 01:30-02:00 GMT
        ("default", 3600),
    ]
    assert r.amount == 3 * 3600 + 3600


def test_band_change_inside_the_skipped_hour_of_spring() -> None:
    # 30 Mar 2025: 01:00 GMT becomes 02:00 BST; local 01:30 never happens, 02:00 BST is already past it
    plan = one_plan(DST_PLAN.replace('"02:00"', '"03:00"'))
    r = price_of(plan, Usage("voice", 2 * 3600, datetime(2025, 3, 30, 0, 30, tzinfo=UTC)))
    assert [(s.band, s.units) for s in r.segments] == [
        ("default", 1800),  # 00:30-01:00 GMT
        ("early", 3600),  # 02:00-03:00 BST
        ("default", 1800),
    ]


# ---- increments, setup fee, minimum ------------------------------------------------------------------


def test_30_6_increments(demo: Plan) -> None:
    def charged(q: int, offset: int = 0) -> tuple[int, int]:
        r = price_of(demo, Usage("voice", q, MONDAY_1959 - timedelta(hours=2), NEW_YORK, offset=offset))
        return r.charged_units, r.amount

    assert charged(1) == (30, 50_000)  # 30 s at 0.10/min
    assert charged(30) == (30, 50_000)
    assert charged(31) == (36, 60_000)
    assert charged(37) == (42, 70_000)
    assert charged(6, offset=31) == (6, 10_000)  # F(37) - F(31) = 42 - 36
    assert charged(5, offset=31) == (0, 0)  # within the increment already paid
    assert charged(0) == (0, 0)


def test_setup_fee_only_with_the_first_piece(demo: Plan) -> None:
    start = MONDAY_1959 - timedelta(hours=2)
    first = price_of(demo, Usage("voice", 30, start, "4930123"))  # World: peak 0.50/min, setup 0.20
    assert (first.setup_fee, first.raw, first.amount) == (200_000, 500_000, 700_000)
    more = price_of(demo, Usage("voice", 60, start, "4930123", offset=30, prior=first.raw))
    assert (more.setup_fee, more.raw, more.amount) == (0, 500_000, 500_000)
    nothing = price_of(demo, Usage("voice", 0, start, "4930123"))
    assert nothing.amount == 0 and nothing.setup_fee == 0


def test_minimum_charge_tops_up_and_telescopes(demo: Plan) -> None:
    start = MONDAY_1959 - timedelta(hours=2)  # peak; UK mobile 0.20/min, minimum 0.30
    short = price_of(demo, Usage("voice", 30, start, UK_MOBILE))
    assert (short.raw, short.minimum_adjustment, short.amount) == (200_000, 100_000, 300_000)
    # the call goes on: the top-up given before is taken back as the raw amount passes the minimum
    more = price_of(demo, Usage("voice", 60, start, UK_MOBILE, offset=30, prior=short.raw))
    assert (more.raw, more.minimum_adjustment, more.amount) == (200_000, -100_000, 100_000)
    whole = price_of(demo, Usage("voice", 90, start, UK_MOBILE))
    assert whole.amount == short.amount + more.amount == 400_000
    assert whole.minimum_adjustment == 0


# ---- tiers -------------------------------------------------------------------------------------------


TIERED = """
[[plan]]
name = "p"
effective_from = "2025-01-01"
[plan.services.data]
unit = "byte"
block = 1048576
[[plan.services.data.rates]]
name = "data"
price = "1.00"
tiers = [{ from = 10485760, price = "0.50" }, { from = 20971520, price = "0.25" }]
"""
MIB = 1_048_576


def test_tiers_crossing_inside_a_piece() -> None:
    plan = one_plan(TIERED)
    start = datetime(2025, 5, 1, tzinfo=UTC)
    r = price_of(plan, Usage("data", 2 * MIB, start, cycle_used=9 * MIB))
    assert parts(r) == [("default", 0, MIB, 1_000_000), ("default", 10 * MIB, MIB, 500_000)]
    across = price_of(plan, Usage("data", 12 * MIB, start, cycle_used=9 * MIB))
    assert parts(across) == [
        ("default", 0, MIB, 1_000_000),
        ("default", 10 * MIB, 10 * MIB, 5_000_000),
        ("default", 20 * MIB, MIB, 250_000),
    ]
    assert across.amount == 6_250_000


def test_units_for_across_tiers() -> None:
    plan = one_plan(TIERED)
    usage = Usage("data", 0, datetime(2025, 5, 1, tzinfo=UTC), cycle_used=9 * MIB)
    assert units_for(plan, usage, 1_500_000, 100 * MIB) == 2 * MIB
    # a byte of the 0.50 tier costs 0.477 micro: 2 MiB - 1 and - 2 still round up to 1.500000
    assert units_for(plan, usage, 1_499_999, 100 * MIB) == 2 * MIB - 3
    assert units_for(plan, usage, 10**12, 100 * MIB) == 100 * MIB


def test_demo_data_tier_and_increments(demo: Plan) -> None:
    r = price_of(demo, Usage("data", 5_000_000, MONDAY_1959))
    assert r.charged_units == 5_000_192  # 4883 KiB
    assert r.amount == 47_686  # 5000192 * 0.01 / 1048576 = 0.0476856..., rounded up
    gib10 = 10 * 1024 * MIB
    late = price_of(demo, Usage("data", 2 * MIB, MONDAY_1959, cycle_used=gib10 - MIB))
    assert parts(late) == [("peak", 0, MIB, 10_000), ("peak", gib10, MIB, 5_000)]


# ---- lookups, inheritance, versions -----------------------------------------------------------------


def test_longest_prefix(demo: Plan) -> None:
    assert demo.rate_for("voice", "442079460000").name == "London"
    assert demo.rate_for("voice", "+447700900123").name == "UK mobile"
    assert demo.rate_for("voice", "4413").name == "UK"
    assert demo.rate_for("voice", "4").name == "World"
    assert demo.rate_for("voice", "").name == "World"
    assert demo.rate_for("sms", "1555").name == "SMS North America"
    with pytest.raises(NoRate, match='no service "fax"'):
        demo.rate_for("fax", "1")
    with pytest.raises(NoRate, match="fax"):
        price_of(demo, Usage("fax", 1, MONDAY_1959))


def test_inheritance_overrides_and_inherits(catalog: Catalog) -> None:
    plus = catalog.plan("demo-plus", MONDAY_1959)
    assert plus.parent == "demo" and plus.currency == "EUR" and plus.timezone == "Europe/London"
    assert plus.rate_for("voice", LONDON).name == "London"
    assert parts(price_of(plus, Usage("voice", 90, MONDAY_1959, LONDON))) == [
        ("peak", 0, 60, 20_000),
        ("offpeak", 0, 60, 20_000),
    ]
    assert plus.rate_for("voice", "33142").name == "France"  # added by the child
    assert plus.rate_for("voice", UK_MOBILE).minimum == 300_000  # inherited
    assert price_of(plus, Usage("sms", 1, MONDAY_1959)).amount == 50_000  # inherited service
    assert {(f.name, f.amount, f.period.value) for f in plus.fees} == {
        ("activation", 5_000_000, "once"),
        ("subscription", 19_990_000, "monthly"),
    }
    assert [(a.service, a.units) for a in plus.allowances] == [("data", 1_073_741_824)]
    demo = catalog.plan("demo", MONDAY_1959)
    assert [(a.service, a.units) for a in demo.allowances] == [("data", 104_857_600)]
    assert demo.rate_for("voice", "33142").name == "World"


GRANDCHILD = """
[[plan]]
name = "base"
effective_from = "2025-01-01"
[plan.services.voice]
unit = "second"
increments = [60, 60]
[[plan.services.voice.rates]]
name = "all"
price = "1.00"
[[plan.services.voice.rates]]
name = "near"
prefix = "1"
price = "0.50"
[plan.fees.monthly]
amount = "10"
period = "monthly"

[[plan]]
name = "mid"
parent = "base"
effective_from = "2025-01-01"
[plan.services.voice]
increments = [1, 1]
[[plan.services.voice.rates]]
name = "nearer"
prefix = "12"
price = "0.25"

[[plan]]
name = "leaf"
parent = "mid"
effective_from = "2025-02-01"
[[plan.services.voice.rates]]
name = "all, cheaper"
price = "0.60"
block = 30
[plan.fees.monthly]
amount = "0"
period = "monthly"
"""


def test_inheritance_tree_of_depth_three() -> None:
    at = datetime(2025, 6, 1, tzinfo=UTC)
    catalog = Catalog(parse_tariff('timezone = "UTC"\ncurrency = "USD"\n' + GRANDCHILD, "tree.toml"))
    leaf = catalog.plan("leaf", at)
    rates = {r.prefix: (r.name, r.block, r.first, r.subsequent) for r in leaf.services["voice"].rates}
    # service defaults set by "mid" apply to the rates it inherits from "base" as well
    assert rates == {
        "": ("all, cheaper", 30, 1, 1),
        "1": ("near", 60, 1, 1),
        "12": ("nearer", 60, 1, 1),
    }
    assert leaf.fees == ()  # amount 0 switches the inherited fee off
    assert price_of(leaf, Usage("voice", 45, at, "999")).amount == 900_000  # 45 s at 0.60 per 30 s
    assert price_of(catalog.plan("base", at), Usage("voice", 45, at, "999")).amount == 1_000_000
    with pytest.raises(UnknownPlan):
        catalog.plan("leaf", datetime(2025, 1, 15, tzinfo=UTC))  # leaf starts in February


VERSIONS = """
[[plan]]
name = "p"
effective_from = "2025-01-01"
[plan.services.sms]
unit = "event"
[[plan.services.sms.rates]]
name = "sms"
price = "0.10"

[[plan]]
name = "p"
effective_from = "2025-07-01"
[plan.services.sms]
unit = "event"
[[plan.services.sms.rates]]
name = "sms"
price = "0.20"

[[plan]]
name = "child"
parent = "p"
effective_from = "2025-03-01T12:00:00+01:00"
[plan.services.mms]
unit = "event"
[[plan.services.mms.rates]]
name = "mms"
price = "0.50"
"""


def test_version_in_force_when_the_usage_started() -> None:
    catalog = Catalog(parse_tariff('timezone = "Europe/London"\ncurrency = "GBP"\n' + VERSIONS, "v.toml"))
    last_v1 = datetime(2025, 6, 30, 22, 59, 59, 999_999, tzinfo=UTC)  # 23:59:59.999999 BST
    first_v2 = datetime(2025, 6, 30, 23, 0, tzinfo=UTC)  # local midnight, 1 July
    v1, v2 = catalog.plan("p", last_v1), catalog.plan("p", first_v2)
    assert price_of(v1, Usage("sms", 1, last_v1)).amount == 100_000
    assert price_of(v2, Usage("sms", 1, first_v2)).amount == 200_000
    assert v1.effective_from == datetime(2025, 1, 1, tzinfo=UTC)
    assert [p.effective_from for p in catalog.versions("p")] == [v1.effective_from, first_v2]
    with pytest.raises(UnknownPlan, match='plan "p" is not in force'):
        catalog.plan("p", datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC))
    with pytest.raises(UnknownPlan, match='unknown plan "nope"'):
        catalog.plan("nope", first_v2)
    with pytest.raises(ValueError, match="naive"):
        catalog.plan("p", datetime(2025, 1, 1))


def test_a_child_follows_its_parents_later_versions() -> None:
    catalog = Catalog(parse_tariff('timezone = "Europe/London"\ncurrency = "GBP"\n' + VERSIONS, "v.toml"))
    versions = catalog.versions("child")
    assert [v.effective_from for v in versions] == [
        datetime(2025, 3, 1, 11, 0, tzinfo=UTC),
        datetime(2025, 6, 30, 23, 0, tzinfo=UTC),
    ]
    assert all(v.declared_from == versions[0].effective_from for v in versions)
    assert catalog.names() == ("child", "p")
    june, july = datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 2, tzinfo=UTC)
    assert price_of(catalog.plan("child", june), Usage("sms", 1, june)).amount == 100_000
    assert price_of(catalog.plan("child", july), Usage("sms", 1, july)).amount == 200_000
    assert price_of(catalog.plan("child", july), Usage("mms", 1, july)).amount == 500_000


def test_catalog_of_several_files_resolves_across_them() -> None:
    head = 'timezone = "UTC"\ncurrency = "EUR"\n'
    base = parse_tariff(head + GRANDCHILD.split('[[plan]]\nname = "mid"')[0], "base.toml")
    child = parse_tariff(
        head + '[[plan]]\nname = "kid"\nparent = "base"\neffective_from = "2025-03-01"\n', "kid.toml"
    )
    assert [p.key for p in child.problems] == ["parent"]  # alone, the parent is unknown
    at = datetime(2025, 4, 1, tzinfo=UTC)
    kid = Catalog(base, child).plan("kid", at)
    assert price_of(kid, Usage("voice", 60, at, "1")).amount == 500_000


# ---- units_for ---------------------------------------------------------------------------------------


def test_units_for_whole_increments(demo: Plan) -> None:
    start = MONDAY_1959 - timedelta(hours=2)  # peak; London 0.08/min in whole minutes
    usage = Usage("voice", 0, start, LONDON)
    assert units_for(demo, usage, 80_000, 3600) == 60
    assert units_for(demo, usage, 159_999, 3600) == 60
    assert units_for(demo, usage, 160_000, 3600) == 120
    assert units_for(demo, usage, 79_999, 3600) == 0
    assert units_for(demo, usage, 10**9, 3600) == 3600
    assert units_for(demo, usage, 10**9, 90) == 90  # the cap itself when affordable
    # mid-session, 10 s into a paid minute: the 50 s left are free, then whole minutes
    later = Usage("voice", 0, start, LONDON, offset=10, prior=80_000)
    assert units_for(demo, later, 0, 3600) == 50
    assert units_for(demo, later, 80_000, 3600) == 110


def test_units_for_with_setup_fee_and_minimum(demo: Plan) -> None:
    start = MONDAY_1959 - timedelta(hours=2)
    world = Usage("voice", 0, start, "4930123")  # setup 0.20 + 0.50/min
    assert units_for(demo, world, 699_999, 3600) == 0
    assert units_for(demo, world, 700_000, 3600) == 60
    mobile = Usage("voice", 0, start, UK_MOBILE)  # 0.20/min, minimum 0.30
    assert units_for(demo, mobile, 299_999, 3600) == 0
    assert units_for(demo, mobile, 300_000, 3600) == 60  # 2 minutes would cost 0.40
    assert units_for(demo, mobile, 400_000, 3600) == 120


def test_units_for_across_the_band_change(demo: Plan) -> None:
    # from 19:59: one peak minute at 0.08, then off-peak minutes at 0.04
    usage = Usage("voice", 0, MONDAY_1959, LONDON)
    assert units_for(demo, usage, 80_000 + 2 * 40_000, 3600) == 180
    assert units_for(demo, usage, 80_000 + 2 * 40_000 - 1, 3600) == 120


def test_free_rate_returns_the_cap() -> None:
    plan = one_plan(
        '[[plan]]\nname = "p"\neffective_from = "2025-01-01"\n[plan.services.data]\nunit = "byte"\n'
        '[[plan.services.data.rates]]\nname = "free"\nprice = "0"\n'
    )
    assert units_for(plan, Usage("data", 0, MONDAY_1959), 0, 123_456_789) == 123_456_789


def test_bad_usage_is_refused(demo: Plan) -> None:
    with pytest.raises(ValueError, match="naive"):
        price_of(demo, Usage("voice", 1, datetime(2025, 3, 3, 12, 0), LONDON))
    with pytest.raises(ValueError, match="negative"):
        price_of(demo, Usage("voice", -1, MONDAY_1959, LONDON))
    with pytest.raises(ValueError, match="cap"):
        units_for(demo, Usage("voice", 0, MONDAY_1959, LONDON), 100, -1)
