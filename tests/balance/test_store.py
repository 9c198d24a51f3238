"""Money scripts on real Redis: what an operator would notice if one of them were wrong."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from balance import wire
from balance.link import RedisPyLink
from balance.records import AccountKind, AccountRecord, AccountStatus, BucketRecord
from balance.settings import BalanceSettings, RedisSettings
from balance.store import (
    BalanceStore,
    EventApplied,
    EventNeedsView,
    Notification,
    StepApplied,
    StepNeedsQuote,
    StepOutOfOrder,
    UnknownAccount,
)
from tests.balance.helpers import item, step

NOW_MS = 1_800_000_000_000
NOW = datetime.fromtimestamp(NOW_MS / 1000, UTC)


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    s = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    yield s
    await s.close()


async def open_account(
    store: BalanceStore, money: int, *, kind: AccountKind = AccountKind.PREPAID, limit: int = 0
) -> None:
    await store.put_account(
        AccountRecord(account_id="acct", kind=kind, currency="EUR", plan="demo", credit_limit=limit)
    )
    if money:
        await store.credit("acct", money, key="opening", reason="topup", now=NOW)


async def charges(store: BalanceStore) -> list[dict[str, str]]:
    entries = await store.link.execute("XRANGE", store.keys.account("acct").stream, "-", "+")
    return [
        {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}
        for _, fields in entries
    ]


async def applied(store: BalanceStore, s: wire.SessionStep) -> wire.StepReply:
    outcome = await store.session_step(s)
    assert isinstance(outcome, StepApplied), outcome
    return outcome.reply


async def test_terminate_releases_items_the_request_did_not_mention(store: BalanceStore) -> None:
    await open_account(store, 1000)
    await applied(
        store,
        step(
            "1",
            "s",
            "I",
            0,
            [item("10", reserve=5, reserve_money=100), item("20", reserve=5, reserve_money=100)],
        ),
    )
    reply = await applied(store, step("2", "s", "T", 1, [item("10", used=3, money=60)]))
    assert (reply.bal, reply.rsv) == (940, 0)
    view = await store.query("acct")
    assert view.reservations == () and view.balance == 940


async def test_repeated_key_returns_the_first_answer_and_moves_nothing(store: BalanceStore) -> None:
    await open_account(store, 1000)
    first = await store.session_step(step("k", "s", "I", 0, [item(reserve=60, reserve_money=300)]))
    again = await store.session_step(step("k", "s", "I", 0, [item(reserve=60, reserve_money=300)]))
    assert isinstance(first, StepApplied) and isinstance(again, StepApplied)
    assert not first.duplicate and again.duplicate and again.reply == first.reply
    view = await store.query("acct")
    assert (view.balance, view.reserved) == (700, 300)
    topup = await store.credit("acct", 500, key="bank-1", reason="topup", now=NOW)
    repeat = await store.credit("acct", 500, key="bank-1", reason="topup", now=NOW)
    assert (topup.duplicate, repeat.duplicate, repeat.balance) == (False, True, 1200)
    assert len([c for c in await charges(store) if c["k"] == "topup"]) == 2  # opening + bank-1


async def test_prepaid_reservation_never_overdraws_but_overuse_is_charged_and_flagged(
    store: BalanceStore,
) -> None:
    await open_account(store, 250)
    quote = await store.session_step(
        step("1", "s", "I", 0, [item(reserve=60, reserve_money=300, smallest=50)])
    )
    assert isinstance(quote, StepNeedsQuote) and quote.available == {"1": 250}
    assert (await store.query("acct")).balance == 250  # the refused plan left no trace
    reply = await applied(
        store, step("2", "s", "I", 0, [item(reserve=48, reserve_money=240, smallest=50, following=50)])
    )
    assert reply.it[0].fin == 1  # 10 left cannot buy the next increment: final unit indication
    reply = await applied(store, step("3", "s", "T", 1, [item(used=70, money=350)]))
    assert reply.bal == -100 and reply.it[0].over == 1
    record = (await charges(store))[-1]
    assert (record["k"], record["m"], record["f"], record["u"]) == ("usage", "-350", "over", "70")


async def test_no_money_below_the_smallest_grant_without_a_quote_round_trip(store: BalanceStore) -> None:
    await open_account(store, 30)
    reply = await applied(store, step("1", "s", "I", 0, [item(reserve=60, reserve_money=300, smallest=50)]))
    assert reply.it[0].code == "NO_MONEY" and reply.it[0].g == 0


async def test_postpaid_reserves_down_to_the_credit_limit(store: BalanceStore) -> None:
    await open_account(store, 0, kind=AccountKind.POSTPAID, limit=1000)
    reply = await applied(store, step("1", "s", "I", 0, [item(reserve=60, reserve_money=1000)]))
    assert (reply.bal, reply.rsv, reply.it[0].g) == (-1000, 1000, 60)
    assert isinstance(
        await store.session_step(step("2", "t", "I", 0, [item(reserve=1, reserve_money=1)])), StepNeedsQuote
    )


async def test_suspended_account_gets_no_grant_but_its_usage_is_still_charged(store: BalanceStore) -> None:
    await open_account(store, 1000)
    await applied(store, step("1", "s", "I", 0, [item(reserve=60, reserve_money=100)]))
    await store.set_status("acct", AccountStatus.SUSPENDED)
    reply = await applied(
        store, step("2", "s", "U", 1, [item(used=60, money=100, reserve=60, reserve_money=100)])
    )
    assert reply.it[0].code == "DENIED" and reply.it[0].g == 0
    assert (reply.bal, reply.rsv, reply.st) == (900, 0, "suspended")


async def test_buckets_are_used_before_money_in_priority_then_expiry_order(store: BalanceStore) -> None:
    await open_account(store, 1000)
    later, sooner = NOW + timedelta(days=20), NOW + timedelta(days=2)
    await store.add_bucket(
        "acct", BucketRecord(bucket_id="late", service="data", units=100, expires_at=later)
    )
    await store.add_bucket(
        "acct", BucketRecord(bucket_id="soon", service="data", units=100, expires_at=sooner)
    )
    await store.add_bucket("acct", BucketRecord(bucket_id="gone", service="data", units=999, expires_at=NOW))
    await store.add_bucket(
        "acct", BucketRecord(bucket_id="vip", service="data", units=50, expires_at=later, priority=1)
    )
    assert not await store.add_bucket(
        "acct", BucketRecord(bucket_id="vip", service="data", units=5, expires_at=later)
    )
    reply = await applied(
        store, step("1", "s", "I", 0, [item("d", service="data", reserve=120, reserve_money=7)])
    )
    assert (reply.it[0].g, reply.it[0].gb, reply.bal) == (120, 120, 1000)
    reply = await applied(store, step("2", "s", "T", 1, [item("d", service="data", used=120, covered=120)]))
    view = await store.query("acct")
    left = {b.bucket_id: b.units for b in view.buckets}
    assert left == {"soon": 30, "late": 100, "gone": 999}  # vip emptied (and removed), soon next
    assert view.balance == 1000


async def test_summary_is_the_query_without_the_sessions(store: BalanceStore) -> None:
    await open_account(store, 1000)
    await store.add_bucket(
        "acct", BucketRecord(bucket_id="b", service="data", units=100, expires_at=NOW + timedelta(days=2))
    )
    await applied(store, step("1", "s", "I", 0, [item("d", service="data", reserve=120, reserve_money=7)]))
    full, summary = await store.query("acct"), await store.summary("acct")
    assert full.reservations  # the session holds bucket units
    assert summary == msgspec.structs.replace(full, reservations=(), counters={})
    with pytest.raises(UnknownAccount):
        await store.summary("nobody")


async def test_event_uses_buckets_then_money_and_asks_for_a_split_price(store: BalanceStore) -> None:
    await open_account(store, 1000)
    await store.add_bucket(
        "acct", BucketRecord(bucket_id="sms", service="sms", units=2, expires_at=NOW + timedelta(days=1))
    )

    def event(key: str, units: int, cover: int, money: int) -> wire.EventStep:
        return wire.EventStep(
            k=key, now=NOW_MS, ittl=60, aid="acct", plan="demo", s="sms", i="sms", u=units, c=cover, m=money
        )

    whole = await store.event(event("e1", 1, -1, 50))
    assert isinstance(whole, EventApplied) and (whole.reply.m, whole.reply.bu) == (0, 1)
    split = await store.event(event("e2", 3, -1, 150))
    assert isinstance(split, EventNeedsView) and split.cover == 1
    done = await store.event(event("e2", 3, 1, 100))
    assert isinstance(done, EventApplied) and (done.reply.m, done.reply.bu, done.reply.bal) == (100, 1, 900)
    refused = await store.event(event("e3", 1, -1, 901))
    assert isinstance(refused, EventApplied) and refused.reply.code == "NO_MONEY" and refused.reply.bal == 900


async def test_reaper_returns_the_reservation_of_a_crashed_session(store: BalanceStore) -> None:
    await open_account(store, 1000)
    await applied(store, step("1", "crashed", "I", 0, [item(reserve=60, reserve_money=400)], ttl_ms=30_000))
    await applied(store, step("2", "alive", "I", 0, [item(reserve=60, reserve_money=100)], ttl_ms=30_000))
    # the live session reports again later, which renews its reservation
    later = NOW_MS + 20_000
    await applied(
        store, step("3", "alive", "U", 1, [item(used=10, money=10, reserve=60, reserve_money=100)], now=later)
    )
    assert await store.reap(NOW + timedelta(seconds=31)) == 1
    view = await store.query("acct")
    assert (view.balance, view.reserved) == (890, 100)  # 1000 - 10 used - 100 held
    assert [r.session_id for r in view.reservations] == ["alive"]
    expiry = [c for c in await charges(store) if c["k"] == "expiry"]
    assert len(expiry) == 1 and expiry[0]["rel"] == "400" and expiry[0]["sess"] == "crashed"
    assert await store.reap(NOW + timedelta(seconds=31)) == 0


async def test_unknown_account_is_reported(store: BalanceStore) -> None:
    with pytest.raises(UnknownAccount):
        await store.session_step(step("1", "s", "I", 0, [item(reserve=1, reserve_money=1)], account="nobody"))
    with pytest.raises(UnknownAccount):
        await store.query("nobody")
    with pytest.raises(UnknownAccount):
        await store.credit("nobody", 1, key="x", reason="topup", now=NOW)


async def test_fast_link_and_redis_py_give_identical_answers(redis_url: str, key_prefix: str) -> None:
    """The project's RESP client against redis-py running the same scripts on twin accounts."""
    settings = RedisSettings(url=redis_url, key_prefix=key_prefix)
    fast = await BalanceStore.connect(settings, BalanceSettings())
    library = await BalanceStore.connect(settings, BalanceSettings(), link=RedisPyLink(redis_url))
    try:
        answers = []
        for s, account in ((fast, "twin-a"), (library, "twin-b")):
            await s.put_account(
                AccountRecord(account_id=account, kind=AccountKind.PREPAID, currency="EUR", plan="demo")
            )
            await s.credit(account, 5000, key="o", reason="topup", now=NOW)
            replies = [
                await s.session_step(
                    step("1", "x", "I", 0, [item(reserve=60, reserve_money=1000)], account=account)
                ),
                await s.session_step(
                    step(
                        "2",
                        "x",
                        "U",
                        1,
                        [item(used=61, money=1100, reserve=60, reserve_money=9000)],
                        account=account,
                    )
                ),
                await s.session_step(
                    step(
                        "3",
                        "x",
                        "U",
                        1,
                        [item(used=61, money=1100, reserve=60, reserve_money=3900)],
                        account=account,
                    )
                ),
                await s.session_step(
                    step(
                        "3",
                        "x",
                        "U",
                        1,
                        [item(used=61, money=1100, reserve=60, reserve_money=3900)],
                        account=account,
                    )
                ),
            ]
            answers.append((replies, await s.query(account)))
        (fast_replies, fast_view), (lib_replies, lib_view) = answers
        assert fast_replies == lib_replies
        assert (fast_view.balance, fast_view.reserved) == (lib_view.balance, lib_view.reserved) == (0, 3900)
    finally:
        await fast.close()
        await library.close()


async def test_a_request_numbered_below_the_last_applied_one_is_refused(store: BalanceStore) -> None:
    await open_account(store, 1000)
    first = wire.SessionStep(
        **{**msgspec.structs.asdict(step("a", "s", "I", 0, [item(reserve=1, reserve_money=10)])), "n": 1}
    )
    await applied(store, first)
    third = wire.SessionStep(
        **{**msgspec.structs.asdict(step("c", "s", "U", 1, [item(used=1, money=10)])), "n": 3}
    )
    await applied(store, third)
    late = wire.SessionStep(
        **{**msgspec.structs.asdict(step("b", "s", "U", 2, [item(used=1, money=10)])), "n": 2}
    )
    assert isinstance(await store.session_step(late), StepOutOfOrder)
    assert (await store.query("acct")).balance == 990  # the late request moved nothing


async def test_credits_and_status_changes_are_published(store: BalanceStore) -> None:
    await open_account(store, 0)
    received: list[Notification] = []

    async def listen() -> None:
        async for notice in store.notifications():
            received.append(notice)
            if len(received) == 2:
                return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)  # subscribed
    await store.credit("acct", 500, key="n1", reason="topup", now=NOW)
    await store.set_status("acct", AccountStatus.SUSPENDED)
    await asyncio.wait_for(listener, 5)
    assert received == [
        Notification(kind="credit", account_id="acct"),
        Notification(kind="status", account_id="acct", status="suspended"),
    ]


async def test_a_closed_session_mark_is_written_once_and_found_after(store: BalanceStore) -> None:
    # the Stop's one round trip: write the mark unless one is there, and say which one is
    assert await store.mark_closed_first("radius:nas|x:s1", 1000, 1_700_000_000, 60) is None
    assert await store.mark_closed_first("radius:nas|x:s1", 5000, 1_700_000_100, 60) == (1000, 1_700_000_000)
    assert await store.closed_total("radius:nas|x:s1") == (1000, 1_700_000_000)  # not overwritten
    ttl = await store.link.execute("TTL", store.keys.closed_session("radius:nas|x:s1"))
    assert 0 < ttl <= 60
    await store.mark_closed("radius:nas|x:s1", 7000, 1_700_000_000, 60)  # a late report's new total
    assert await store.mark_closed_first("radius:nas|x:s1", 0, 0, 60) == (7000, 1_700_000_000)
    await store.clear_closed("radius:nas|x:s1")
    assert await store.closed_total("radius:nas|x:s1") is None
