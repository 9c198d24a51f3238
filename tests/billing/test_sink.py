"""The charge sink on real Redis and real PostgreSQL: every committed charge lands in the ledger once.

Traffic goes through the real charging service (sessions, events, top-ups, reaper expiries), so the
records are the ones the Lua scripts write. Each test has its own Redis key prefix and account ids; the
PostgreSQL database is the session's.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balance.charges import ChargeStreams, parse_entry
from balance.service import ChargingService, EventRequest, SessionRequest, UsageItem
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from billing.ledger import Ledger
from billing.settings import SinkSettings
from billing.sink import ChargeSink
from rating_core.tariff import Catalog
from rating_core.tariff_file import parse_tariff
from tests.billing.charging import (
    EUR,
    NOW,
    TARIFF,
    assert_explained,
    backlog,
    charge_until,
    drain,
    drained,
    entries_added,
    make_sink,
    new_accounts,
    traffic,
    until,
)
from tests.billing.tcp_proxy import TcpProxy


async def test_every_record_lands_once_with_its_fields(
    store: BalanceStore, service: ChargingService, conn: asyncpg.Connection, database_url: str
) -> None:
    accounts = await new_accounts(store, 3)
    for account_id in accounts:
        await traffic(service, account_id, 2)
    sink = make_sink(store, database_url)
    await drain(sink, store)
    await assert_explained(conn, store, accounts)
    assert sink.stored == await entries_added(store) and sink.duplicates == 0
    usage = await conn.fetch(
        "select * from ledger_entries where account_id = $1 and kind = 'usage'"
        " order by stream_ms, stream_seq",
        accounts[0],
    )
    # the stop of the first session: 70 kB at 0.01 per kB is 0.70, from the session's own record
    stop = next(r for r in usage if r["entry_id"].endswith(":2:1") and r["session_id"] == "s0")
    assert (stop["service"], stop["item"], stop["units"], stop["amount"]) == ("data", "rg1", 70_000, -700_000)
    assert stop["occurred_at"] == NOW
    where = await conn.fetchval(
        "select tableoid::regclass::text from ledger_entries where entry_id = $1", stop["entry_id"]
    )
    assert where == "ledger_entries_2026_11"
    # the next month's partition is ready before the first record of that month arrives
    assert (
        await conn.fetchval("select to_regclass('ledger_entries_2026_12')::text") == "ledger_entries_2026_12"
    )
    # acknowledged records are trimmed from Redis
    assert await backlog(store) == 0


async def test_a_batch_stored_but_not_acknowledged_is_replayed_into_nothing(
    store: BalanceStore, service: ChargingService, conn: asyncpg.Connection, database_url: str
) -> None:
    accounts = await new_accounts(store, 2)
    for account_id in accounts:
        await traffic(service, account_id, 3)
    # a sink reads a batch, commits it, and dies before acknowledging it
    first = make_sink(store, database_url, consumer="crashed")
    await first.streams.ensure_groups()
    batches = await first.streams.read_new(1000)
    assert await first.store(batches)
    await first._close()
    # the same consumer restarts: its pending entries come first, and none is stored twice
    again = make_sink(store, database_url, consumer="crashed")
    await drain(again, store)
    assert again.stored == 0 and again.duplicates == first.stored > 0
    await assert_explained(conn, store, accounts)


async def test_entries_another_sink_left_pending_are_claimed(
    store: BalanceStore, service: ChargingService, conn: asyncpg.Connection, database_url: str
) -> None:
    accounts = await new_accounts(store, 2)
    for account_id in accounts:
        await traffic(service, account_id, 2)
    dead = make_sink(store, database_url, consumer="dead")
    await dead.streams.ensure_groups()
    assert await dead.streams.read_new(1000)  # read, never stored, never acknowledged
    await asyncio.sleep(0.3)
    claimer = make_sink(
        store, database_url, SinkSettings(poll_interval_s=0.01, claim_idle_s=0.2), consumer="other"
    )
    await drain(claimer, store)
    await assert_explained(conn, store, accounts)


async def test_postgresql_gone_mid_stream_loses_and_doubles_nothing(
    store: BalanceStore, service: ChargingService, conn: asyncpg.Connection, database_url: str
) -> None:
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    via_proxy = database_url.replace(f"{parts.hostname}:{parts.port or 5432}", f"127.0.0.1:{proxy.port}")
    if via_proxy == database_url:  # a DSN without host:port
        via_proxy = f"postgresql://{parts.username or 'postgres'}@127.0.0.1:{proxy.port}{parts.path}"
    accounts = await new_accounts(store, 4)
    sink = make_sink(store, via_proxy)
    task = asyncio.create_task(sink.run())
    try:
        done = asyncio.Event()
        charging = asyncio.create_task(charge_until(done, service, accounts, "x"))
        await until(lambda: _stored_some(sink))
        await proxy.cut()  # PostgreSQL unreachable while charging goes on
        stored_before = sink.stored
        await asyncio.sleep(1.0)
        assert await backlog(store) > 0  # the backlog waits in Redis
        await proxy.restore()
        await asyncio.sleep(0.5)
        done.set()
        await charging
        await until(lambda: drained(store))
    finally:
        sink.stop()
        await asyncio.wait_for(task, 10)
        await proxy.close()
    assert sink.stored > stored_before
    await assert_explained(conn, store, accounts)


async def _stored_some(sink: ChargeSink) -> bool:
    return sink.stored > 0


async def _stored(sink: ChargeSink, n: int) -> bool:
    return sink.stored >= n


async def test_an_entry_that_is_no_charge_record_is_kept_aside_and_the_sink_goes_on(
    store: BalanceStore, service: ChargingService, conn: asyncpg.Connection, database_url: str
) -> None:
    accounts = await new_accounts(store, 1)
    stream = store.keys.account(accounts[0]).stream
    bad_id = (
        await store.link.execute("XADD", stream, "*", "id", "x", "a", accounts[0], "k", "usage")
    ).decode()
    await traffic(service, accounts[0], 1)
    await drain(make_sink(store, database_url), store)
    reject = await conn.fetchrow("select * from ledger_rejects where stream_id = $1", bad_id)
    assert reject is not None and "lacks field" in reject["reason"] and accounts[0] in reject["fields"]
    await assert_explained(conn, store, accounts, rejected=1)


async def test_records_stay_in_redis_until_every_group_has_them(
    store: BalanceStore, service: ChargingService, database_url: str
) -> None:
    accounts = await new_accounts(store, 1)
    await traffic(service, accounts[0], 1)
    await drain(make_sink(store, database_url), store)
    written = await entries_added(store)
    other = ChargeStreams(store.link, store.keys, "audit", "a1")
    await other.ensure_groups()  # a second group that starts from the first entry still there
    await traffic(service, accounts[0], 1, tag="b")
    sink = make_sink(store, database_url)
    task = asyncio.create_task(sink.run())
    new = await entries_added(store) - written
    try:
        await until(lambda: _stored(sink, new))
    finally:
        sink.stop()
        await task
    # stored and acknowledged by the sink's group, still held for the audit group
    assert await backlog(store) == new > 0
    batches = await other.read_new(1000)
    for batch in batches:
        await other.ack(batch.partition, batch.ids)
    assert await backlog(store) == 0


def test_parse_entry_reads_every_field() -> None:
    values = [b"id", b"A:s:x:1:1", b"a", b"A", b"k", b"usage", b"s", b"data", b"i", b"rg1", b"sess", b"x",
              b"u", b"70000", b"bu", b"0", b"m", b"-700", b"t", b"1795428000000", b"f", b"", b"bal", b"5",
              b"rsv", b"0"]  # fmt: skip
    record = parse_entry(3, b"1795428000123-7", values)
    assert record.entry_id == "A:s:x:1:1" and record.amount == -700 and record.flags is None
    assert record.occurred_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert (record.stream_partition, record.stream_id) == (3, "1795428000123-7")
    with pytest.raises(ValueError, match="odd number"):
        parse_entry(0, b"1-1", values[:-1])
    with pytest.raises(ValueError, match="bad value"):
        parse_entry(0, b"1-1", [b"id", b"x", b"a", b"A", b"k", b"usage", b"m", b"lots", b"t", b"1"])


# --- property: whatever the traffic and however often the sink dies, the ledger explains every balance
Operation = tuple[str, int, int]
operations = st.lists(
    st.tuples(st.sampled_from(["session", "event", "refund", "reap", "crash"]), st.integers(0, 2),
              st.integers(1, 200_000)),
    min_size=1,
    max_size=12,
)  # fmt: skip


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
async def test_property_ledger_explains_every_balance(
    redis_url: str, database_url: str, ops: list[Operation]
) -> None:
    prefix = "tp" + uuid.uuid4().hex[:10]
    store = await BalanceStore.connect(
        RedisSettings(url=redis_url, key_prefix=prefix, partitions=2), BalanceSettings()
    )
    conn = await asyncpg.connect(database_url)
    try:
        catalog = Catalog(parse_tariff(TARIFF, "sink.toml"))
        clock = [NOW]
        service = ChargingService(
            store, catalog, BalanceSettings(reservation_ttl_s=60), clock=lambda: clock[0]
        )
        accounts = await new_accounts(store, 3, money=5 * EUR)
        for n, (op, who, size) in enumerate(ops):
            await _apply(store, service, conn, database_url, clock, accounts[who], n, op, size)
        # the sinks that died left their entries pending: this one claims them
        claiming = SinkSettings(batch_size=5, poll_interval_s=0.01, claim_idle_s=0.02)
        await drain(make_sink(store, database_url, claiming, consumer="last"), store)
        await assert_explained(conn, store, accounts)
    finally:
        await conn.close()
        keys: list[Any] = await store.link.execute("KEYS", f"{prefix}:*")
        if keys:
            await store.link.execute("DEL", *keys)
        await store.close()


async def _apply(
    store: BalanceStore,
    service: ChargingService,
    conn: asyncpg.Connection,
    dsn: str,
    clock: list[datetime],
    account_id: str,
    n: int,
    op: str,
    size: int,
) -> None:
    at = clock[0]
    if op == "session":
        item = UsageItem(item="rg1", service="data", requested=size)
        await service.initiate(
            SessionRequest(account_id=account_id, session_id=f"s{n}", key="0", items=(item,), now=at)
        )
        if size % 2:  # half the sessions end; the others are left for the reaper
            used = UsageItem(item="rg1", service="data", used=size // 2)
            await service.terminate(
                SessionRequest(account_id=account_id, session_id=f"s{n}", key="1", items=(used,), now=at)
            )
    elif op == "event":
        await service.event(
            EventRequest(account_id=account_id, key=f"e{n}", service="sms", units=1 + size % 3, now=at)
        )
    elif op == "refund":
        await store.credit(account_id, size, key=f"r{n}", reason="refund", now=at)
    elif op == "reap":
        clock[0] = at + timedelta(minutes=2)
        await store.reap(clock[0])
    else:  # a sink stores what is there and dies before acknowledging; the next one replays it
        sink = make_sink(store, dsn, consumer=f"c{n % 2}")
        await sink.streams.ensure_groups()
        batches = await sink.streams.read_new(3)
        if batches:
            assert await sink.store(batches)
        await sink._close()
    del conn  # the connection is the test's; the ledger is checked at the end


async def test_ledger_store_counts_a_replay_as_duplicates(
    store: BalanceStore, service: ChargingService, conn: asyncpg.Connection
) -> None:
    accounts = await new_accounts(store, 1)
    await traffic(service, accounts[0], 1)
    streams = ChargeStreams(store.link, store.keys, "g", "c")
    await streams.ensure_groups()
    batches = await streams.read_new(100)
    n = sum(len(b.lines) for b in batches)
    ledger = Ledger(conn)
    first = await ledger.store(batches)
    batches[0].lines.append(batches[0].lines[0])
    again = await ledger.store(batches)
    assert (first.inserted, first.duplicates) == (n, 0)
    assert (again.inserted, again.duplicates) == (0, n + 1)


async def test_odd_values_are_escaped_and_values_postgresql_refuses_are_kept_aside(
    store: BalanceStore, service: ChargingService, conn: asyncpg.Connection, database_url: str
) -> None:
    accounts = await new_accounts(store, 1)
    odd = "nas\t1\\x\nport\r"  # a NAS may put anything in a session id
    start = UsageItem(item="rg1", service="data", requested=1000)
    await service.initiate(
        SessionRequest(account_id=accounts[0], session_id=odd, key="0", items=(start,), now=NOW)
    )
    stop = UsageItem(item="rg1", service="data", used=500)
    await service.terminate(
        SessionRequest(account_id=accounts[0], session_id=odd, key="1", items=(stop,), now=NOW)
    )
    # a record in add_record's layout that PostgreSQL refuses: its amount is no integer
    stream = store.keys.account(accounts[0]).stream
    bad = [*("id", "x:1", "a", accounts[0], "k", "usage", "s", "", "i", "", "sess", "", "u", ""),
           *("bu", "", "m", "1e3", "rel", "", "ref", "", "t", "1795428000000", "f", ""),
           *("bal", "0", "rsv", "0")]  # fmt: skip
    bad_id = (await store.link.execute("XADD", stream, "*", *bad)).decode()
    await traffic(service, accounts[0], 1)
    await drain(make_sink(store, database_url), store)
    rows = await conn.fetch("select session_id, kind from ledger_entries where account_id = $1", accounts[0])
    assert [r["session_id"] for r in rows].count(odd) == 1, rows
    reject = await conn.fetchrow("select * from ledger_rejects where stream_id = $1", bad_id)
    assert reject is not None and "PostgreSQL refused it" in reject["reason"]
    await assert_explained(conn, store, accounts, rejected=1)


def test_an_odd_time_takes_the_careful_path_and_never_stops_the_sink() -> None:
    from balance.charges import _batch

    def entry(t: bytes) -> list[bytes]:
        head = [
            b"id",
            b"A:e:1",
            b"a",
            b"A",
            b"k",
            b"event",
            b"s",
            b"sms",
            b"i",
            b"",
            b"sess",
            b"",
            b"u",
            b"1",
        ]
        return [
            *head,
            b"bu",
            b"0",
            b"m",
            b"-5",
            b"rel",
            b"",
            b"ref",
            b"",
            b"t",
            t,
            b"f",
            b"",
            b"bal",
            b"1",
            b"rsv",
            b"0",
        ]

    batch = _batch(2, [[b"1-1", entry(b"abc1234")], [b"1-2", entry(b"")], [b"1-3", entry(b"-1500")]])
    assert [r[0] for r in batch.rejects] == ["1-1", "1-2"]
    # a time before 1970 is unusual, not wrong: exact, through the careful path
    assert len(batch.lines) == 1 and b"1969-12-31T23:59:58.500000+00:00" in batch.lines[0]
    assert batch.ids == ["1-1", "1-2", "1-3"]


async def test_a_replayed_batch_with_a_line_postgresql_refuses_is_stored_line_by_line(
    store: BalanceStore, service: ChargingService, conn: asyncpg.Connection
) -> None:
    accounts = await new_accounts(store, 1)
    await traffic(service, accounts[0], 1)
    streams = ChargeStreams(store.link, store.keys, "g2", "c")
    await streams.ensure_groups()
    batches = await streams.read_new(100)
    ledger = Ledger(conn)
    first = await ledger.store(batches)
    fields = batches[0].lines[0].split(b"\t")
    fields[0], fields[8] = b"other-id", b"1e3"  # an amount that is no integer
    batches[0].lines.append(b"\t".join(fields))
    again = await ledger.store(batches)
    assert (again.inserted, again.duplicates, again.rejects) == (0, first.inserted, 1)
