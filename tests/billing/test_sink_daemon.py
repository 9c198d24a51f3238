"""The charge sink as an operator runs it: inside ``occ serve``, and alone as ``occ sink``."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid

import asyncpg

from balance.records import AccountKind, AccountRecord
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from tests.billing.charging import NOW
from tests.occ.test_daemon import OCC, REPO, MakeDaemon, child_env, render


async def top_up(redis_url: str, prefix: str, reference: str, register_in: str | None = None) -> str:
    """A new account with a top-up (in PostgreSQL's accounts table too when ``register_in`` names a
    database); returns the account id."""
    store = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=prefix), BalanceSettings())
    account_id = "dm-" + uuid.uuid4().hex[:10]
    if register_in is not None:
        conn = await asyncpg.connect(register_in)
        await conn.execute(
            "insert into accounts (account_id, kind, currency, plan) values ($1, 'prepaid', 'EUR', 'demo')",
            account_id,
        )
        await conn.close()
    try:
        await store.put_account(
            AccountRecord(account_id=account_id, kind=AccountKind.PREPAID, currency="EUR", plan="demo")
        )
        await store.credit(account_id, 2_500_000, key=reference, reason="topup", now=NOW, reference=reference)
    finally:
        await store.close()
    return account_id


def ledger_amounts(database_url: str, account_id: str, timeout: float = 15.0) -> list[int]:
    async def fetch() -> list[int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("select amount from ledger_entries where account_id = $1", account_id)
            return [int(r[0]) for r in rows]
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout
    while not (found := asyncio.run(fetch())) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def test_occ_serve_runs_the_sink_and_reconcile_finds_no_drift(
    make_daemon: MakeDaemon, redis_url: str, key_prefix: str, own_database: str
) -> None:
    daemon = make_daemon(database_url=own_database)
    daemon.start_and_wait_healthy()
    account_id = asyncio.run(top_up(redis_url, key_prefix, "bank-1", register_in=own_database))
    assert ledger_amounts(own_database, account_id) == [2_500_000]
    assert daemon.metric("occ_sink_records_total", 'outcome="stored"') >= 1
    daemon.wait_metric("occ_sink_lag_entries", "", 0.0)
    assert daemon.metric("occ_up", 'component="sink"') == 1.0
    # the end of every integration run: the live money is what the ledger says
    checked = daemon.occ("reconcile")
    assert (checked.returncode, checked.stdout) == (0, "reconciled 1 accounts: no drift\n"), checked
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_occ_sink_runs_alone_beside_a_serve_without_one(
    make_daemon: MakeDaemon, redis_url: str, key_prefix: str, database_url: str
) -> None:
    serve = make_daemon("serve")
    serve.rewrite(render(serve, extra="[sink]\nenabled = false\n"))
    serve.start_and_wait_healthy()
    sink = make_daemon("sink")
    sink.rewrite(render(sink, extra=f"[sink]\nmetrics_port = {sink.port}\n"))
    proc = subprocess.Popen(
        [*OCC, "sink", "--config", str(sink.config)],
        cwd=REPO,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=sink.log_file.open("ab"),
        stderr=subprocess.STDOUT,
    )
    sink.proc = proc
    try:
        sink.wait_log(r"msg=ready")
        assert (sink.run_dir / "occ-sink.pid").exists()
        assert "sink" in sink.wait_log(r"msg=ready")
        account_id = asyncio.run(top_up(redis_url, key_prefix, "bank-2"))
        assert ledger_amounts(database_url, account_id) == [2_500_000]
        assert sink.metric("occ_sink_records_total", 'outcome="stored"') >= 1
        # the serving daemon has no sink of its own
        _, _, body = serve.get("/metrics")
        assert b'occ_up{component="sink"}' not in body
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        serve.signal(signal.SIGTERM)
        assert serve.wait_exit() == 0
