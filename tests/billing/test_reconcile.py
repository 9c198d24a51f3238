"""Reconcile on real Redis and PostgreSQL: silent while charging and the sink run, loud on any drift.

Reconcile looks at every account of a database, so each test here gets a database of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg

from balance.charges import ChargeStreams
from balance.service import ChargingService
from balance.store import BalanceStore
from billing.reconcile import reconcile
from tests.billing.charging import EUR, charge_until, drain, make_sink, new_accounts, traffic
from tests.occ.test_provisioning_cli import run_occ, write_config


async def register(conn: asyncpg.Connection, accounts: list[str]) -> None:
    """The accounts table rows provisioning would have written."""
    await conn.executemany(
        "insert into accounts (account_id, kind, currency, plan) values ($1, 'prepaid', 'EUR', 'sinkplan')",
        [(a,) for a in accounts],
    )


def streams_of(live: BalanceStore) -> ChargeStreams:
    return ChargeStreams(live.link, live.keys, "ledger", "reconcile")


async def test_no_drift_while_charging_and_the_sink_run(
    store: BalanceStore, service: ChargingService, own_database: str
) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        accounts = await new_accounts(store, 4)
        await register(conn, accounts)
        sink = make_sink(store, own_database)
        sinking = asyncio.create_task(sink.run())
        done = asyncio.Event()
        charging = asyncio.create_task(charge_until(done, service, accounts, "c"))
        reports = []
        for _ in range(8):  # records in flight, some stored, some not: every instant adds up
            reports.append(await reconcile(conn, streams_of(store)))
            await asyncio.sleep(0.05)
        done.set()
        await charging
        sink.stop()
        await sinking
        assert sink.stored > 0
        assert [r.drifts for r in reports] == [[]] * 8
        assert all(r.checked == 4 for r in reports)
    finally:
        await conn.close()


async def test_an_injected_drift_is_named_with_its_amount(
    store: BalanceStore, service: ChargingService, own_database: str
) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        accounts = await new_accounts(store, 3)
        await register(conn, accounts)
        for a in accounts:
            await traffic(service, a, 1)
        await drain(make_sink(store, own_database), store)
        assert (await reconcile(conn, streams_of(store))).drifts == []
        # money appears in Redis without a charge record
        await store.link.execute("HINCRBY", store.keys.account(accounts[1]).account, "bal", 1234)
        report = await reconcile(conn, streams_of(store))
        assert [(d.account_id, d.drift, d.problem) for d in report.drifts] == [
            (accounts[1], 1234, "live money differs from the ledger")
        ]
    finally:
        await conn.close()


async def test_accounts_missing_on_one_side_are_drift(store: BalanceStore, own_database: str) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        only_redis = (await new_accounts(store, 1))[0]
        only_db = "sk-db-" + uuid.uuid4().hex[:6]
        await register(conn, [only_db])
        await drain(make_sink(store, own_database), store)
        report = await reconcile(conn, streams_of(store))
        problems = {d.account_id: d.problem for d in report.drifts}
        assert problems == {only_redis: "not in the accounts table", only_db: "not in the live store"}
    finally:
        await conn.close()


async def test_occ_reconcile_exits_1_listing_each_drift(
    store: BalanceStore, service: ChargingService, own_database: str, redis_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        accounts = await new_accounts(store, 2, money=10 * EUR)
        await register(conn, accounts)
        await traffic(service, accounts[0], 1)
    finally:
        await conn.close()
    config = write_config(tmp_path / "occ.toml", redis_url, store.keys.prefix, own_database)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[database]", "partitions = 4\n\n[database]"), encoding="utf-8")
    # records not stored yet are still explained: from the stream
    clean = run_occ(config, "reconcile")
    assert (clean.code, clean.out) == (0, "reconciled 2 accounts: no drift\n"), clean
    await store.link.execute("HINCRBY", store.keys.account(accounts[0]).account, "rsv", -500_000)
    drifted = run_occ(config, "reconcile", "--json")
    assert drifted.code == 1, drifted
    assert drifted.json()["drifts"] == [
        {
            "account_id": accounts[0],
            "problem": "live money differs from the ledger",
            "balance": drifted.json()["drifts"][0]["balance"],
            "reserved": drifted.json()["drifts"][0]["reserved"],
            "ledger": "0.00",
            "in_flight": drifted.json()["drifts"][0]["in_flight"],
            "drift": "-0.50",
        }
    ]
    listed = run_occ(config, "reconcile")
    assert listed.code == 1 and listed.out == "reconciled 2 accounts: 1 with drift\n"
    assert listed.err.startswith(f"drift: account {accounts[0]}: live money differs from the ledger")
