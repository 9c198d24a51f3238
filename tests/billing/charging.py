"""Charging traffic and sink helpers shared by the billing tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from balance.charges import ChargeStreams
from balance.records import AccountKind, AccountRecord
from balance.service import ChargingService, EventRequest, SessionRequest, UsageItem
from balance.store import BalanceStore
from billing import db
from billing.settings import SinkSettings
from billing.sink import ChargeSink

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EUR = 1_000_000
TARIFF = """
timezone = "UTC"
currency = "EUR"

[[plan]]
name = "sinkplan"
effective_from = "2026-01-01"

[plan.services.data]
unit = "byte"
block = 1000

[[plan.services.data.rates]]
name = "Data"
price = "0.01"

[plan.services.sms]
unit = "event"

[[plan.services.sms.rates]]
name = "SMS"
price = "0.05"
"""
FAST = SinkSettings(batch_size=50, poll_interval_s=0.01, retry_max_s=0.2, claim_idle_s=60.0)


def make_sink(
    store: BalanceStore, dsn: str, settings: SinkSettings = FAST, consumer: str = "test"
) -> ChargeSink:
    streams = ChargeStreams(store.link, store.keys, settings.group, consumer)
    return ChargeSink(streams, lambda: db.connect(dsn, 2.0), settings)


async def new_accounts(store: BalanceStore, n: int, money: int = 100 * EUR) -> list[str]:
    ids = [f"sk-{uuid.uuid4().hex[:10]}" for _ in range(n)]
    for account_id in ids:
        await store.put_account(
            AccountRecord(account_id=account_id, kind=AccountKind.PREPAID, currency="EUR", plan="sinkplan")
        )
        await store.credit(account_id, money, key="opening", reason="topup", now=NOW)
    return ids


async def traffic(service: ChargingService, account_id: str, rounds: int, tag: str = "") -> None:
    """A data session (start, updates, stop), an SMS and a refund per round."""
    for r in range(rounds):
        sid = f"s{tag}{r}"

        def req(key: str, used: int, requested: int | None, sid: str = sid) -> SessionRequest:
            item = UsageItem(item="rg1", service="data", used=used, requested=requested)
            return SessionRequest(account_id=account_id, session_id=sid, key=key, items=(item,), now=NOW)

        await service.initiate(req("0", 0, 100_000))
        await service.update(req("1", 50_000, 100_000))
        await service.terminate(req("2", 70_000, None))
        await service.event(EventRequest(account_id=account_id, key=f"e{tag}{r}", service="sms", now=NOW))
        await service.store.credit(account_id, 10_000, key=f"r{tag}{r}", reason="refund", now=NOW)


async def charge_until(done: asyncio.Event, service: ChargingService, accounts: list[str], tag: str) -> None:
    """:func:`traffic` on every account, round after round, until ``done`` is set."""

    async def one(account_id: str) -> None:
        n = 0
        while not done.is_set():
            await traffic(service, account_id, 1, tag=f"{tag}{n}")
            n += 1

    await asyncio.gather(*(one(a) for a in accounts))


async def entries_added(store: BalanceStore) -> int:
    """Records ever appended to this test's charge streams."""
    total = 0
    for p in range(store.keys.partitions):
        with contextlib.suppress(Exception):
            info = await store.link.execute("XINFO", "STREAM", store.keys.stream(p))
            total += int(dict(zip(info[::2], info[1::2], strict=True))[b"entries-added"])
    return total


async def backlog(store: BalanceStore) -> int:
    lengths = [await store.link.execute("XLEN", store.keys.stream(p)) for p in range(store.keys.partitions)]
    return sum(lengths)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def drain(sink: ChargeSink, store: BalanceStore) -> None:
    task = asyncio.create_task(sink.run())
    try:
        await until(lambda: drained(store))
    finally:
        sink.stop()
        await asyncio.wait_for(task, 10)


async def drained(store: BalanceStore) -> bool:
    return await backlog(store) == 0


async def assert_explained(
    conn: asyncpg.Connection, store: BalanceStore, accounts: list[str], rejected: int = 0
) -> None:
    """Every account's live money equals what its ledger rows add up to, and every record ever written
    is in the ledger exactly once."""
    rows = await conn.fetch(
        "select account_id, sum(amount)::bigint as total, count(*) as n from ledger_entries"
        " where account_id = any($1) group by account_id",
        accounts,
    )
    ledger = {r["account_id"]: int(r["total"]) for r in rows}
    for account_id in accounts:
        view = await store.query(account_id)
        assert ledger.get(account_id) == view.balance + view.reserved, account_id
    assert sum(int(r["n"]) for r in rows) == await entries_added(store) - rejected
