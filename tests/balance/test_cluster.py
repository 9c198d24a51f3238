"""The money scripts on a real 3-master Redis Cluster started by the test.

Every script call touches keys of one slot (the account's partition tag), so the same code serves a
cluster; this proves it on redis-server --cluster-enabled with slots spread by redis-cli --cluster create.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from balance.records import AccountKind, AccountRecord
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore, StepApplied
from tests.balance.helpers import item, step

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]

NOW = datetime.fromtimestamp(1_800_000_000, UTC)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(count: int) -> list[int]:
    for _ in range(200):
        base = random.randrange(20000, 29000)
        ports = [base + i for i in range(count)]
        if all(_free(p) and _free(p + 10000) for p in ports):
            return ports
    raise RuntimeError("no free ports for a test cluster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    workdir: Path = tmp_path_factory.mktemp("cluster")
    ports = _ports(3)
    servers = []
    try:
        for port in ports:
            servers.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--dir",
                        str(workdir),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:
            _wait(lambda p=port: _cli(p, "PING") == "PONG", f"redis-server on {port}")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )
        for port in ports:
            _wait(lambda p=port: "cluster_state:ok" in _cli(p, "CLUSTER", "INFO"), "cluster_state:ok")
        yield ports
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=10)


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=5)
    return done.stdout.strip()


def _wait(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (subprocess.SubprocessError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


async def test_scripts_run_on_a_three_master_cluster(cluster: list[int]) -> None:
    seeds = ",".join(f"redis://127.0.0.1:{p}" for p in cluster)
    store = await BalanceStore.connect(
        RedisSettings(url=seeds, cluster=True, key_prefix="occ", partitions=16), BalanceSettings()
    )
    try:
        accounts = [f"sub{n}" for n in range(24)]
        for n, account in enumerate(accounts):
            await store.put_account(
                AccountRecord(account_id=account, kind=AccountKind.PREPAID, currency="EUR", plan="demo")
            )
            await store.credit(account, 1000 + n, key="opening", reason="topup", now=NOW)
            ms = int(NOW.timestamp() * 1000)
            first = await store.session_step(
                step("1", "s", "I", 0, [item(reserve=60, reserve_money=300)], account=account, now=ms)
            )
            assert isinstance(first, StepApplied)
            again = await store.session_step(
                step("1", "s", "I", 0, [item(reserve=60, reserve_money=300)], account=account, now=ms)
            )
            assert isinstance(again, StepApplied) and again.duplicate
            if n % 2:
                done = await store.session_step(
                    step("2", "s", "T", 1, [item(used=30, money=150)], account=account, now=ms)
                )
                assert isinstance(done, StepApplied)
        # half the sessions "crashed": the reaper finds them in every partition, on every node
        assert await store.reap(NOW + timedelta(hours=1)) == 12
        for n, account in enumerate(accounts):
            view = await store.query(account)
            assert view.reserved == 0
            assert view.balance == 1000 + n - (150 if n % 2 else 0)
        # the partitions really are spread over the masters
        holding = [p for p in cluster if int(_cli(p, "DBSIZE") or 0) > 0]
        assert len(holding) >= 2
        streams = sum(
            int(_cli(p, "EVAL", "return #redis.call('KEYS', 'occ:*:c')", "0") or 0) for p in cluster
        )
        assert streams == len({store.keys.partition(a) for a in accounts})
    finally:
        await store.close()
