"""A gateway against the real daemon: `occ serve` with real Redis and PostgreSQL, Gy over real TCP.

A data session (Rating-Group 10 = demo data, 0.01 per MiB charged per KiB) opens, reports twice and
closes; the balance is checked to the micro-unit, the daemon's /metrics counts the answers, and a
graceful stop sends the gateway a DPR before the process exits 0.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from balance.records import AccountKind, AccountRecord
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from billing.tariff_store import install_tariff
from occ.diameter import dictionary as d
from occ.diameter.client import DiameterClient, MsccSpec, UnitsSpec, build_ccr
from occ.diameter.codec import Message, find
from tests.occ.test_daemon import MakeDaemon, make_daemon  # noqa: F401  (make_daemon is a fixture)

MIB = 1_048_576
EUR = 1_000_000


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    s = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    yield s
    await s.close()


def result(message: Message) -> int:
    found = message.find(d.AVP_RESULT_CODE)
    assert found is not None
    return found.u32()


def granted_octets(message: Message) -> int | None:
    (mscc,) = message.find_all(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    gsu = find(mscc.grouped(), d.AVP_GRANTED_SERVICE_UNIT)
    if gsu is None:
        return None
    total = find(gsu.grouped(), d.AVP_CC_TOTAL_OCTETS)
    return None if total is None else total.u64()


async def test_a_data_session_through_the_running_daemon(
    make_daemon: MakeDaemon,  # noqa: F811
    store: BalanceStore,
    database_url: str,
    tmp_path: Path,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await install_tariff(conn, Path("config/tariffs/demo.toml").read_text(), "demo.toml")
    finally:
        await conn.close()
    await store.put_account(
        AccountRecord(account_id="gw-sub", kind=AccountKind.PREPAID, currency="EUR", plan="demo")
    )
    await store.credit("gw-sub", 10 * EUR, key="opening", reason="topup", now=datetime.now(UTC))
    await store.put_identity("msisdn", "447700900777", "gw-sub")

    daemon = make_daemon("gy")
    proc = daemon.start()
    line = daemon.wait_log(r"Diameter listening")
    port = int(re.search(r"port=(\d+)", line).group(1))  # type: ignore[union-attr]
    daemon.wait_log(r"msg=ready")
    client = await DiameterClient.connect("127.0.0.1", port, origin_host="pgw.test", origin_realm="test")
    number = 0

    async def ccr(kind: int, mscc: MsccSpec) -> Message:
        nonlocal number
        hbh, e2e = client.next_ids()
        data = build_ccr(
            "pgw.test;1;data",
            kind,
            number,
            origin_host="pgw.test",
            origin_realm="test",
            destination_realm="localdomain",
            hop_by_hop=hbh,
            end_to_end=e2e,
            subscription=(d.SUBSCRIPTION_ID_TYPE_END_USER_E164, "447700900777"),
            msccs=[mscc],
        )
        number += 1
        return await client.send(data, hbh)

    try:
        cca = await ccr(d.CC_REQUEST_TYPE_INITIAL_REQUEST, MsccSpec(rating_group=10))
        assert (result(cca), granted_octets(cca)) == (d.DIAMETER_SUCCESS, 10 * MIB)
        for _ in range(2):
            cca = await ccr(
                d.CC_REQUEST_TYPE_UPDATE_REQUEST,
                MsccSpec(rating_group=10, used=UnitsSpec(total=5 * MIB), requested=UnitsSpec()),
            )
            assert (result(cca), granted_octets(cca)) == (d.DIAMETER_SUCCESS, 10 * MIB)
        cca = await ccr(
            d.CC_REQUEST_TYPE_TERMINATION_REQUEST, MsccSpec(rating_group=10, used=UnitsSpec(total=MIB))
        )
        assert result(cca) == d.DIAMETER_SUCCESS and granted_octets(cca) is None
        view = await store.query("gw-sub")
        assert (view.balance, view.reserved) == (10 * EUR - 110_000, 0)  # 11 MiB at 0.01
        assert daemon.metric("occ_diameter_cc_requests_total", 'result_code="2001",type="update"') == 2.0

        proc.send_signal(signal.SIGTERM)
        dpr = await asyncio.wait_for(client.server_requests.get(), 10)
        assert dpr.code == d.CMD_DISCONNECT_PEER
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        client.abort()
