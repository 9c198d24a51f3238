"""Processes of ``occ bench diameter``: the spawned daemon, the python-diameter baseline node, raw EVALSHA.

Spawning ``occ serve``, CPU accounting and the machine description are :mod:`occ.bench_common`'s.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from balance.store import BalanceStore
from occ.bench_common import ROOT, money_core_module
from occ.bench_spawn import ProcessError, Spawned, child_env, free_ports, serve_config, spawn_occ_serve


async def spawn_daemon(config: Path, workdir: Path, startup_timeout: float = 60.0) -> Spawned:
    """``python -m occ serve`` on a copy of ``config`` with free ports and a private run directory."""
    # RADIUS on free ports of its own: never in the way of a running daemon (fixed ones, which several
    # workers can share)
    auth_port, acct_port = free_ports(2, socket.SOCK_DGRAM)
    raw = serve_config(
        tomllib.loads(config.read_text(encoding="utf-8")),
        workdir,
        {"auth_port": auth_port, "acct_port": acct_port, "listen": ["127.0.0.1"]},
    )
    return await spawn_occ_serve(raw, workdir, startup_timeout=startup_timeout)


BASELINE_SCRIPT = ROOT / "benchmarks" / "baseline_diameter_node.py"


async def spawn_baseline(workdir: Path, peers: int, grant: int, startup_timeout: float = 30.0) -> Spawned:
    """The python-diameter node of ``benchmarks/baseline_diameter_node.py`` on a free port."""
    if not BASELINE_SCRIPT.exists():
        raise ProcessError(f"{BASELINE_SCRIPT} not found (a source checkout is needed for the baseline)")
    port = free_ports(1)[0]
    log = workdir / "baseline.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(BASELINE_SCRIPT), "--port", str(port), "--peers", str(peers),
            "--grant", str(grant), stdout=asyncio.subprocess.PIPE, stderr=sink, env=child_env(),
        )  # fmt: skip
    spawned = Spawned(process, port, log)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), startup_timeout)
    except TimeoutError:
        line = b""
    if not line.startswith(b"ready"):
        await spawned.stop()
        raise ProcessError(f"baseline node did not start:\n{spawned.tail()}")
    return spawned


async def raw_redis_evalsha(store: BalanceStore, url: str, seconds: float) -> tuple[float | None, str]:
    """Session-script EVALSHA calls/s by ``redis-benchmark`` (32 connections, unpipelined) under a throw-away
    key prefix, measured by ``bench_money_core.redis_benchmark`` (kept working by tests/test_benchmarks.py),
    and where the figure came from."""
    module = money_core_module()
    if module is None or shutil.which("redis-benchmark") is None:
        return None, "not measured: benchmarks/bench_money_core.py or redis-benchmark missing"
    from balance.settings import RedisSettings

    prefix = "benchd" + secrets.token_hex(4)
    scratch = await BalanceStore.connect(
        RedisSettings(url=url.split(",")[0], key_prefix=prefix, partitions=store.keys.partitions),
        store.settings,
    )
    try:
        measure: Callable[[int], float] = lambda n: module.redis_benchmark(url, scratch, 32, 1, n)  # noqa: E731
        source = "benchmarks/bench_money_core.py redis_benchmark()"
        await module.prepare(scratch)
        probe = await asyncio.to_thread(measure, 20_000)
        await module.cleanup(scratch, prefix)
        await module.prepare(scratch)
        n = max(20_000, int(probe * seconds))
        rate = await asyncio.to_thread(measure, n)
        # each call must have opened a session (a repeated random id would take the cheap replay path)
        opened = int(await module.sessions_opened(scratch))
        if opened < n * 0.99:
            return None, f"discarded: {opened} sessions opened by {n} calls, not the full step ({source})"
        return rate, source
    finally:
        await module.cleanup(scratch, prefix)
        await scratch.close()
