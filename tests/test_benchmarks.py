"""The benchmarks keep working as the code changes: a tiny run of each measured path."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import bench_money_core as money


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark is not installed")
async def test_the_raw_baseline_runs_full_session_steps(redis_url: str, key_prefix: str) -> None:
    store = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    try:
        await money.prepare(store)
        rate = money.redis_benchmark(redis_url, store, 2, 1, 200)
        assert rate > 0
        assert await money.sessions_opened(store) >= 199  # each call opened its own session
        # the store's own path with the same step shape
        step = money._step("py-1", "py-1")
        await store.session_step(step)
        assert await money.sessions_opened(store) >= 200
    finally:
        await store.close()
