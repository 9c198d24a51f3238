"""Tier counters run per calendar month in the plan's time zone; the label is cached per month."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from balance.service import tier_counter
from rating_core.tariff import Catalog
from rating_core.tariff_file import load_tariff_file

DEMO = Catalog(load_tariff_file("config/tariffs/demo.toml")).plan("demo", datetime(2026, 1, 1, tzinfo=UTC))
# whole-hour, half-hour, quarter-hour and DST-shifting zones, on both sides of UTC
ZONES = (
    "Europe/London",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/St_Johns",
    "UTC",
)
PLANS = [dataclasses.replace(DEMO, timezone=zone) for zone in ZONES]

instants = st.builds(
    lambda s: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=s),
    st.integers(0, 3 * 366 * 86_400),
)
near_month_ends = st.builds(
    lambda month, hours, s: datetime(2025, month, 1, tzinfo=UTC) + timedelta(hours=hours, seconds=s),
    st.integers(1, 12),
    st.integers(-14, 14),
    st.integers(-3, 3),
)


@settings(max_examples=200, deadline=None)
@given(calls=st.lists(st.tuples(st.sampled_from(range(len(PLANS))), instants | near_month_ends), max_size=40))
def test_the_counter_names_the_local_calendar_month_whatever_was_asked_before(
    calls: list[tuple[int, datetime]],
) -> None:
    for index, now in calls:
        plan = PLANS[index]
        assert tier_counter(plan, "data", now) == f"cy:data:{now.astimezone(plan.tz):%Y%m}"
