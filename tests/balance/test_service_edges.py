"""Edge cases of the charging service found in review, each a behaviour an operator would notice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from balance.records import AccountKind, AccountRecord
from balance.service import (
    ChargingService,
    EventRequest,
    InvalidRequest,
    SessionRequest,
    UsageItem,
)
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from rating_core.tariff import Catalog
from rating_core.tariff_file import parse_tariff

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EUR = 1_000_000
TARIFF = """
timezone = "UTC"
currency = "EUR"

[[plan]]
name = "tiers"
effective_from = "2026-01-01"

[plan.services.voice]
unit = "second"
increments = [60, 60]

[[plan.services.voice.rates]]
name = "Call"
price = "0.10"
setup_fee = "0.20"

[plan.services.data]
unit = "byte"
block = 1000
increments = [1, 1]

[[plan.services.data.rates]]
name = "Data"
price = "0.01"
tiers = [{ from = 10000, price = "0.005" }]

[plan.services.sms]
unit = "event"

[[plan.services.sms.rates]]
name = "SMS"
price = "0.05"
tiers = [{ from = 2, price = "0.01" }]

[[plan]]
name = "later"
effective_from = "2027-01-01"

[plan.services.voice]
unit = "second"

[[plan.services.voice.rates]]
name = "Call"
price = "9.99"
"""


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    s = await BalanceStore.connect(
        RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings(reservation_ttl_s=60)
    )
    yield s
    await s.close()


@pytest.fixture
def service(store: BalanceStore) -> ChargingService:
    catalog = Catalog(parse_tariff(TARIFF, "tiers.toml"))
    return ChargingService(store, catalog, BalanceSettings(reservation_ttl_s=60), clock=lambda: NOW)


async def open_account(store: BalanceStore, account_id: str = "acct", money: int = 100 * EUR) -> None:
    await store.put_account(
        AccountRecord(account_id=account_id, kind=AccountKind.PREPAID, currency="EUR", plan="tiers")
    )
    await store.credit(account_id, money, key="opening", reason="topup", now=NOW)


def data(item: str = "rg1", used: int = 0, requested: int | None = 0) -> UsageItem:
    return UsageItem(item=item, service="data", used=used, requested=requested)


def request(key: str, *items: UsageItem, session: str = "s", at: datetime = NOW) -> SessionRequest:
    return SessionRequest(account_id="acct", session_id=session, key=key, items=items, now=at)


async def test_concurrent_sessions_on_a_tiered_service_all_get_answers(
    store: BalanceStore, service: ChargingService
) -> None:
    await open_account(store)
    for n in range(20):
        await service.initiate(request(f"{n}:0", data(requested=100), session=f"s{n}"))
    workers = [ChargingService(store, service.catalog, service.settings, clock=lambda: NOW) for _ in range(2)]
    answers = await asyncio.gather(
        *(
            workers[n % 2].update(request(f"{n}:1", data(used=100, requested=100), session=f"s{n}"))
            for n in range(20)
        )
    )
    assert all(a.result == "OK" for a in answers)
    assert sum(a.items[0].charged for a in answers) == 20 * 1000  # 2000 bytes at 0.01/1000 B, tier 1
    assert (await store.query("acct")).counters == {"cy:data:202611": 2000}


async def test_two_items_of_one_tiered_service_are_priced_one_after_the_other(
    store: BalanceStore, service: ChargingService
) -> None:
    await open_account(store)
    await service.initiate(request("0", data("a"), data("b")))
    # 9000 B reach the tier at 10000 halfway through the second item's 2000 B
    answer = await service.update(request("1", data("a", used=9000), data("b", used=2000)))
    assert [i.charged for i in answer.items] == [90_000, 10_000 + 5_000]


async def test_negative_or_duplicate_or_huge_usage_is_refused_before_any_money_moves(
    store: BalanceStore, service: ChargingService
) -> None:
    await open_account(store)
    await service.initiate(request("0", data(requested=100)))
    for bad in (
        request("1", data(used=-500)),
        request("1", data(used=5), data(used=5)),
        request("1", data(used=2**61)),
    ):
        with pytest.raises(InvalidRequest):
            await service.update(bad)
    with pytest.raises(InvalidRequest):
        await service.event(EventRequest(account_id="acct", key="e", service="sms", units=0))
    view = await store.query("acct")
    assert view.balance + view.reserved == 100 * EUR


async def test_a_session_keeps_its_plan_and_unpriceable_usage_is_recorded_unrated(
    store: BalanceStore, service: ChargingService
) -> None:
    await open_account(store)
    call = UsageItem(item="v", service="voice", requested=60)
    await service.initiate(request("0", call))
    # the account moves to a plan with no version in force when the call started
    await store.put_account(
        AccountRecord(account_id="acct", kind=AccountKind.PREPAID, currency="EUR", plan="later")
    )
    answer = await service.update(request("1", UsageItem(item="v", service="voice", used=60, requested=60)))
    assert answer.items[0].charged == 300_000  # still the session's plan: setup 0.20 + 1 min 0.10
    fresh = ChargingService(
        store,
        Catalog(parse_tariff(TARIFF.split('[[plan]]\nname = "later"')[0], "t")),
        BalanceSettings(),
        clock=lambda: NOW,
    )
    await fresh.initiate(
        SessionRequest(account_id="acct", session_id="new", key="n0", items=(call,), now=NOW)
    )
    # a worker whose catalog lacks the plan still records the usage, at no price and flagged
    done = await fresh.terminate(
        SessionRequest(
            account_id="acct",
            session_id="new",
            key="n1",
            items=(UsageItem(item="v", service="voice", used=30),),
            now=NOW,
        )
    )
    assert done.result == "OK" and done.items[0].result == "NO_RATE"
    entries = await store.link.execute("XRANGE", store.keys.account("acct").stream, "-", "+")
    flags = [dict(zip(f[::2], f[1::2], strict=True)).get(b"f") for _, f in entries]
    assert any(b"unrated" in (f or b"").split(b",") for f in flags)


async def test_a_report_after_the_reaper_ran_continues_the_same_session(
    store: BalanceStore, service: ChargingService
) -> None:
    await open_account(store)
    await service.initiate(request("0", UsageItem(item="v", service="voice", requested=60)))
    assert await store.reap(NOW + timedelta(minutes=5)) == 1  # the reservation comes back
    later = NOW + timedelta(minutes=17)
    answer = await service.terminate(request("1", UsageItem(item="v", service="voice", used=1020), at=later))
    # 17 minutes and one setup fee, as if the reaper had never run
    assert answer.items[0].charged == 200_000 + 17 * 100_000
    assert (await store.query("acct")).balance == 100 * EUR - 1_900_000


async def test_a_kept_session_that_falls_silent_again_is_reaped_at_its_new_expiry(
    store: BalanceStore, service: ChargingService
) -> None:
    await open_account(store)
    voice = UsageItem(item="v", service="voice", requested=60)
    await service.initiate(request("0", voice))
    await store.reap(NOW + timedelta(minutes=5))
    again = NOW + timedelta(minutes=10)
    await service.update(request("1", UsageItem(item="v", service="voice", used=60, requested=60), at=again))
    assert (await store.query("acct")).reserved > 0
    assert await store.reap(again + timedelta(minutes=2)) == 1  # not 24 h later
    assert (await store.query("acct")).reserved == 0


async def test_request_kinds_do_not_share_idempotency_keys(
    store: BalanceStore, service: ChargingService
) -> None:
    await open_account(store)
    sms = await service.event(EventRequest(account_id="acct", key="order-7", service="sms"))
    refund = await service.refund("acct", sms.charged, key="order-7")
    assert not refund.duplicate and refund.balance == 100 * EUR


async def test_top_up_references_never_expire_and_charge_ids_are_unique_across_accounts(
    store: BalanceStore,
) -> None:
    await open_account(store, "alice", 1 * EUR)
    await open_account(store, "bob", 2 * EUR)
    assert await store.link.execute("TTL", store.keys.account("alice").idempotency("c", "opening")) == -1
    ids = []
    for account in ("alice", "bob"):
        entries = await store.link.execute("XRANGE", store.keys.account(account).stream, "-", "+")
        records = [dict(zip(f[::2], f[1::2], strict=True)) for _, f in entries]
        ids += [r[b"id"] for r in records if r[b"id"].endswith(b"opening")]
    assert len(ids) == len(set(ids)) == 2


async def test_events_move_the_tier_counter(store: BalanceStore, service: ChargingService) -> None:
    await open_account(store)
    charged = [
        (await service.event(EventRequest(account_id="acct", key=f"sms{n}", service="sms"))).charged
        for n in range(4)
    ]
    assert charged == [50_000, 50_000, 10_000, 10_000]
