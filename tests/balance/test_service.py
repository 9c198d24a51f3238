"""The charging service on real Redis with the demo tariff: every figure checked to the micro-unit.

Demo voice to London (prefix 4420): 0.08/min peak (Mon-Fri 08-20 Europe/London), 0.04/min off-peak,
60/60 increments, rounded up. Data: 0.01 per MiB, 1 KiB increments. SMS: 0.05 each.
"""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from balance.records import AccountKind, AccountRecord, AccountStatus, BucketRecord
from balance.service import ChargingService, EventRequest, SessionAnswer, SessionRequest, UsageItem
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from rating_core.tariff import Catalog
from rating_core.tariff_file import load_tariff_file, parse_tariff

PEAK = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday; London is on UTC in November
LONDON = "442079460000"
EUR = 1_000_000


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(load_tariff_file("config/tariffs/demo.toml"))


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    s = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    yield s
    await s.close()


@pytest.fixture
def service(store: BalanceStore, catalog: Catalog) -> ChargingService:
    return ChargingService(store, catalog, BalanceSettings(), clock=lambda: PEAK)


async def account(store: BalanceStore, money: int, account_id: str = "alice") -> str:
    await store.put_account(
        AccountRecord(account_id=account_id, kind=AccountKind.PREPAID, currency="EUR", plan="demo")
    )
    if money:
        await store.credit(account_id, money, key="opening", reason="topup", now=PEAK)
    return account_id


def voice(used: int = 0, requested: int | None = None) -> UsageItem:
    return UsageItem(item="voice", service="voice", destination=LONDON, used=used, requested=requested)


def request(key: str, *items: UsageItem, session: str = "call-1", at: datetime = PEAK) -> SessionRequest:
    return SessionRequest(account_id="alice", session_id=session, key=key, items=items, now=at, started=PEAK)


def only(answer: SessionAnswer) -> tuple[str, int, int, bool]:
    assert answer.result == "OK", answer
    (item,) = answer.items
    return item.result, item.granted, item.charged, item.final


async def test_voice_call_initiate_updates_terminate(store: BalanceStore, service: ChargingService) -> None:
    await account(store, 10 * EUR)
    first = await service.initiate(request("c1:0", voice()))
    assert only(first) == ("OK", 300, 0, False)  # default grant 300 s, 5 min reserved
    assert (first.balance, first.reserved) == (9_600_000, 400_000)
    # 125 s used -> 180 s charged (60/60) = 0.24; the next 300 s reserved as a continuation
    second = await service.update(request("c1:1", voice(used=125)))
    assert only(second) == ("OK", 300, 240_000, False)
    assert (second.balance, second.reserved) == (9_360_000, 400_000)
    third = await service.update(request("c1:2", voice(used=100)))  # 125..225 s: one more minute
    assert only(third)[2] == 80_000
    last = await service.terminate(request("c1:3", voice(used=35)))  # 225..260 s: the fifth minute
    assert only(last) == ("OK", 0, 80_000, False)
    assert (last.balance, last.reserved) == (9_600_000, 0)  # 260 s = 5 started minutes = 0.40


async def test_a_call_crossing_into_off_peak_is_split(store: BalanceStore, service: ChargingService) -> None:
    await account(store, 10 * EUR)
    evening = datetime(2026, 11, 23, 19, 58, tzinfo=UTC)
    start = SessionRequest(account_id="alice", session_id="eve", key="e:0", items=(voice(),), now=evening)
    await service.initiate(start)
    stop = SessionRequest(
        account_id="alice",
        session_id="eve",
        key="e:1",
        items=(voice(used=240),),
        now=evening + timedelta(minutes=4),
    )
    # 2 min peak at 0.08 + 2 min off-peak at 0.04
    assert only(await service.terminate(stop))[2] == 240_000


async def test_grants_shrink_to_the_balance_then_final_unit_then_no_money(
    store: BalanceStore, service: ChargingService
) -> None:
    await account(store, 500_000)
    assert only(await service.initiate(request("c:0", voice()))) == ("OK", 300, 0, False)
    # 300 s used (0.40); 0.10 left buys one minute: the last grant, flagged final
    assert only(await service.update(request("c:1", voice(used=300)))) == ("OK", 60, 400_000, True)
    answer = await service.update(request("c:2", voice(used=60)))
    assert only(answer) == ("NO_MONEY", 0, 80_000, False)
    assert (answer.balance, answer.reserved) == (20_000, 0)


async def test_a_retransmission_gets_the_first_answer_and_charges_once(
    store: BalanceStore, service: ChargingService
) -> None:
    await account(store, 10 * EUR)
    await service.initiate(request("r:0", voice()))
    first = await service.update(request("r:1", voice(used=60)))
    again = await service.update(request("r:1", voice(used=60)))
    assert again.duplicate and again.items == first.items and again.balance == first.balance
    assert (await store.query("alice")).balance == first.balance


async def test_any_worker_can_take_the_next_request_of_a_session(
    store: BalanceStore, catalog: Catalog
) -> None:
    await account(store, 10 * EUR)
    workers = [ChargingService(store, catalog, BalanceSettings(), clock=lambda: PEAK) for _ in range(2)]
    await workers[0].initiate(request("w:0", voice()))
    charged = 0
    for n in range(1, 7):
        answer = await workers[n % 2].update(request(f"w:{n}", voice(used=45)))
        charged += only(answer)[2]
    # 6 x 45 s = 270 s -> F(270) = 300 s = 5 minutes, whichever worker rated each piece
    assert charged == 400_000


async def test_data_uses_the_included_allowance_before_money(
    store: BalanceStore, service: ChargingService
) -> None:
    await account(store, 10 * EUR)
    expires = PEAK + timedelta(days=7)
    await store.add_bucket(
        "alice", BucketRecord(bucket_id="mib", service="data", units=1_048_576, expires_at=expires)
    )
    data = UsageItem(item="rg10", service="data")
    grant = await service.initiate(request("d:0", data, session="pdp"))
    assert (grant.items[0].granted, grant.items[0].from_buckets, grant.balance) == (
        1_048_576,
        1_048_576,
        10 * EUR,
    )
    # 1 MiB from the bucket plus 512000 bytes beyond the grant: 500 KiB at 0.01/MiB = 4882.8 -> 4883 (up)
    over = UsageItem(item="rg10", service="data", used=1_048_576 + 512_000)
    answer = await service.update(request("d:1", over, session="pdp"))
    item = answer.items[0]
    assert (item.charged, item.overuse, item.granted, item.from_buckets) == (4_883, True, 10_485_760, 0)
    assert answer.reserved == 100_000  # the next 10 MiB are paid with money
    assert [b.bucket_id for b in (await store.query("alice")).buckets] == []


async def test_sms_event_uses_buckets_then_money(store: BalanceStore, service: ChargingService) -> None:
    await account(store, 10 * EUR)
    await store.add_bucket(
        "alice", BucketRecord(bucket_id="sms", service="sms", units=2, expires_at=PEAK + timedelta(days=1))
    )
    free = await service.event(
        EventRequest(account_id="alice", key="sms-1", service="sms", destination="447700900123")
    )
    assert (free.result, free.charged, free.from_buckets) == ("OK", 0, 1)
    split = await service.event(EventRequest(account_id="alice", key="sms-2", service="sms", units=3))
    assert (split.result, split.charged, split.from_buckets) == ("OK", 100_000, 1)
    repeat = await service.event(EventRequest(account_id="alice", key="sms-2", service="sms", units=3))
    assert repeat.duplicate and repeat.balance == split.balance == 9_900_000


async def test_suspended_accounts_get_no_grants_and_unknowns_are_named(
    store: BalanceStore, service: ChargingService
) -> None:
    await account(store, 10 * EUR)
    await store.set_status("alice", AccountStatus.SUSPENDED)
    assert only(await service.initiate(request("s:0", voice())))[0] == "DENIED"
    unknown = SessionRequest(account_id="nobody", session_id="x", key="x", items=(voice(),), now=PEAK)
    assert (await service.initiate(unknown)).result == "UNKNOWN_ACCOUNT"
    assert (
        await service.update(request("s:1", voice(used=5), session="never-started"))
    ).result == "UNKNOWN_SESSION"


async def test_two_hundred_concurrent_sessions_never_overdraw_one_account(
    store: BalanceStore, catalog: Catalog
) -> None:
    opening = 5 * EUR  # buys 62 London peak minutes (4.96)
    await account(store, opening)
    workers = [ChargingService(store, catalog, BalanceSettings(), clock=lambda: PEAK) for _ in range(3)]
    seen_balances: list[int] = []
    used_minutes = 0

    async def call(n: int) -> None:
        nonlocal used_minutes
        rng = random.Random(n)
        session = f"c{n}"
        answer = await rng.choice(workers).initiate(
            request(f"{session}:0", voice(requested=60), session=session)
        )
        seen_balances.append(answer.balance)
        granted, step = answer.items[0].granted, 1
        while granted and step < 100:
            await asyncio.sleep(0)
            answer = await rng.choice(workers).update(
                request(f"{session}:{step}", voice(used=granted, requested=60), session=session)
            )
            seen_balances.append(answer.balance)
            used_minutes += granted // 60
            granted, step = answer.items[0].granted, step + 1
        await rng.choice(workers).terminate(request(f"{session}:end", voice(), session=session))

    await asyncio.gather(*(call(n) for n in range(200)))
    view = await store.query("alice")
    assert min(seen_balances) >= 0
    assert view.reserved == 0 and view.reservations == ()
    assert used_minutes == 62
    assert view.balance == opening - used_minutes * 80_000 == 40_000


async def test_a_session_is_rated_by_the_plan_version_in_force_when_it_started(store: BalanceStore) -> None:
    text = """
timezone = "UTC"
currency = "EUR"
[[plan]]
name = "demo"
effective_from = "2026-01-01"
[plan.services.voice]
unit = "second"
increments = [60, 60]
[[plan.services.voice.rates]]
name = "Any"
price = "0.10"
[[plan]]
name = "demo"
effective_from = "2026-11-23T10:30:00+00:00"
[plan.services.voice]
unit = "second"
increments = [60, 60]
[[plan.services.voice.rates]]
name = "Any"
price = "0.50"
"""
    versions = Catalog(parse_tariff(text, "versions.toml"))
    service = ChargingService(store, versions, BalanceSettings())
    await account(store, 50 * EUR)
    call = UsageItem(item="voice", service="voice", requested=3600)
    started = SessionRequest(account_id="alice", session_id="long", key="l:0", items=(call,), now=PEAK)
    await service.initiate(started)
    later = SessionRequest(
        account_id="alice",
        session_id="long",
        key="l:1",
        items=(UsageItem(item="voice", service="voice", used=3600),),
        now=PEAK + timedelta(hours=1),
    )
    assert only(await service.terminate(later))[2] == 60 * 100_000  # 60 min at the old 0.10
    new_call = SessionRequest(
        account_id="alice", session_id="new", key="n:0", items=(call,), now=PEAK + timedelta(hours=1)
    )
    assert (await service.initiate(new_call)).reserved == 60 * 500_000  # a new call: the new version


async def test_what_a_worker_caches_per_session_and_account_is_invisible_to_the_cyclic_collector(
    store: BalanceStore, service: ChargingService
) -> None:
    # a worker caches up to 100,000 sessions; as tracked objects, every full collection walked them all
    # (~45 ms at that size: an event-loop stall in every request's latency)
    await account(store, 10 * EUR)
    await service.initiate(request("gc:0", voice()))
    await service.update(request("gc:1", voice(used=60)))
    (session,) = service._sessions.values()
    (view,) = service._accounts.values()
    for cached in (
        session,
        session.it,
        *session.it.values(),
        view,
        view.counters,
        store.keys.account("alice"),
    ):
        assert not gc.is_tracked(cached), cached
