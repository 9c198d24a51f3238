"""``occ serve`` with ``server.workers = 2``: two processes on the same ports, supervised.

Real processes, real UDP and TCP: Access-Requests from one NAS socket reach both workers (SO_REUSEPORT
with the authenticator spread), Diameter connections are dealt evenly by the supervisor (a restarted
worker too), a reload reaches both, a killed worker is started again, and SIGTERM stops them all.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import asyncpg
import pyrad.client
import pyrad.dictionary
import pyrad.packet
import pytest

from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from billing.tariff_store import install_tariff
from occ.bench_spawn import to_toml
from occ.diameter.client import DiameterClient
from tests.occ.test_daemon import OCC, REPO, child_env, free_port, request
from tests.radius.test_interop import subscriber


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def install_demo(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("select 1 from tariff_versions where plan = 'demo' limit 1") is None:
            demo = REPO / "config" / "tariffs" / "demo.toml"
            await install_tariff(conn, demo.read_text(encoding="utf-8"), demo.name)
    finally:
        await conn.close()


def metric(port: int, name: str) -> float:
    _, _, body = request(port, "GET", "/metrics")
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", body.decode(), re.M)
    return sum(float(v) for v in found)


async def hold_diameter_connections(port: int, count: int, metrics_ports: list[int]) -> list[float]:
    """Open ``count`` connections (CER/CEA each, one after the other) and read, while they are open, how
    many open peers each worker's /metrics shows."""
    clients = []
    try:
        for n in range(count):
            clients.append(await DiameterClient.connect("127.0.0.1", port, origin_host=f"gw{n}.test"))
        return [await asyncio.to_thread(metric, p, 'occ_diameter_peers{state="open"}') for p in metrics_ports]
    finally:
        for client in clients:
            client.abort()


def wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def two_workers(
    tmp_path: Path, redis_url: str, key_prefix: str, database_url: str
) -> tuple[Path, int, int, int, int]:
    """A config of two workers on free loopback ports: (file, metrics, diameter, auth, acct ports)."""
    metrics_port, diameter_port = free_port(), free_port()
    while metrics_port + 1 == diameter_port:
        diameter_port = free_port()
    auth, acct = free_udp_port(), free_udp_port()
    raw = tomllib.loads((REPO / "config" / "occ.toml").read_text(encoding="utf-8"))
    raw["server"].update(run_dir=str(tmp_path / "run"), shutdown_grace_s=3.0, workers=2)
    raw["metrics"].update(listen="127.0.0.1", port=metrics_port)
    raw["redis"].update(url=redis_url, key_prefix=key_prefix)
    raw["database"]["url"] = database_url
    raw["diameter"].update(listen="127.0.0.1", port=diameter_port)
    raw["radius"].update(listen=["127.0.0.1"], auth_port=auth, acct_port=acct)
    config = tmp_path / "occ.toml"
    config.write_text(to_toml(raw), encoding="utf-8")
    asyncio.run(install_demo(database_url))  # the workers read the tariffs at start
    return config, metrics_port, diameter_port, auth, acct


def serve(config: Path, metrics_port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """``occ serve`` on ``config``, its log next to it; returns once both workers answer /health."""
    log = config.parent / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*OCC, "serve", "--config", str(config)], cwd=REPO, env=child_env(), stdout=out, stderr=out
        )
    try:
        wait_for(
            lambda: all(request(p, "GET", "/health")[0] == 200 for p in (metrics_port, metrics_port + 1))
        )
    except BaseException:
        proc.kill()
        raise
    return proc, log


def test_two_workers_share_the_ports_reload_restart_and_stop(
    tmp_path: Path, redis_url: str, key_prefix: str, database_url: str
) -> None:
    config, metrics_port, diameter_port, auth, acct = two_workers(
        tmp_path, redis_url, key_prefix, database_url
    )
    proc, log = serve(config, metrics_port)
    try:
        assert (tmp_path / "run" / "occ.pid").read_text().strip() == str(proc.pid)

        async def provision() -> None:
            store = await BalanceStore.connect(
                RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings()
            )
            await subscriber(store, "w-sub", "w-user", "w-password")
            await store.close()

        asyncio.run(provision())
        dictionary = pyrad.dictionary.Dictionary(str(REPO / "config/dictionaries/dictionary"))
        accepted = 0
        # one NAS, one source port: Access-Requests are spread by their authenticators (aaa.spread)
        client = pyrad.client.Client(
            server="127.0.0.1", authport=auth, acctport=acct, secret=b"testing123", dict=dictionary, timeout=3
        )
        for _ in range(16):
            packet = client.CreateAuthPacket(code=pyrad.packet.AccessRequest, User_Name="w-user")
            packet["User-Password"] = packet.PwCrypt("w-password")
            accepted += client.SendPacket(packet).code == pyrad.packet.AccessAccept
        assert accepted == 16
        served = [metric(p, "occ_radius_requests_total") for p in (metrics_port, metrics_port + 1)]
        assert sum(served) == 16 and all(n > 0 for n in served), served
        both = [metrics_port, metrics_port + 1]
        # Diameter connections go to the worker holding the fewest: 2 + 2, whatever the kernel's hash
        open_peers = asyncio.run(hold_diameter_connections(diameter_port, 4, both))
        assert open_peers == [2.0, 2.0], open_peers

        reloads = [metric(p, "occ_config_reloads_total") for p in (metrics_port, metrics_port + 1)]
        proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                [metric(p, "occ_config_reloads_total") for p in (metrics_port, metrics_port + 1)] > reloads
            )
        )

        # each worker keeps its own /metrics port over the reload, as the file's port is not its own
        assert "require a restart" not in log.read_text()

        worker_2 = int((tmp_path / "run" / "occ-worker-2.pid").read_text())
        subprocess.run(["kill", "-9", str(worker_2)], check=True)
        wait_for(lambda: int((tmp_path / "run" / "occ-worker-2.pid").read_text()) != worker_2)
        wait_for(lambda: request(metrics_port + 1, "GET", "/health")[0] == 200)
        assert "worker exited: starting it again" in log.read_text()
        # the new worker 2 is dealt connections as well
        open_peers = asyncio.run(hold_diameter_connections(diameter_port, 2, both))
        assert open_peers == [1.0, 1.0], open_peers
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()
    time.sleep(0.5)
    with pytest.raises(OSError):
        request(metrics_port, "GET", "/health", timeout=1)


def test_workers_stop_when_the_supervisor_is_killed(
    tmp_path: Path, redis_url: str, key_prefix: str, database_url: str
) -> None:
    # an orphaned worker would go on sharing the RADIUS ports with the next `occ serve`
    config, metrics_port, *_ = two_workers(tmp_path, redis_url, key_prefix, database_url)
    proc, log = serve(config, metrics_port)
    try:
        workers = [int((tmp_path / "run" / f"occ-worker-{n}.pid").read_text()) for n in (1, 2)]
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "stopping" in log.read_text()  # a graceful stop (SIGTERM), not a kill
