"""Fixtures shared by every test: real Redis, real PostgreSQL, isolated per test.

Redis tests get a unique key prefix (deleted afterwards); PostgreSQL tests get a throw-away database
created for the test session. Point them elsewhere with OCC_TEST_REDIS_URL / OCC_TEST_DATABASE_URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

REDIS_URL = os.environ.get("OCC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_DSN = os.environ.get("OCC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def _no_config_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their Redis, database and ports in the config files they write; the overrides that
    scripts/services.sh exports for the developer's shell (OCC_DATABASE_URL, ...) must not redirect
    them, nor the daemons they spawn."""
    for name in ("OCC_REDIS_URL", "OCC_DATABASE_URL", "OCC_METRICS_PORT", "OCC_RUN_DIR", "OCC_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
async def key_prefix() -> AsyncIterator[str]:
    """A key prefix no other test uses; every key under it is deleted after the test."""
    import redis.asyncio as aioredis

    prefix = "t" + uuid.uuid4().hex[:10]
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _dsn_for(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database with every migration applied, dropped after the session."""
    import asyncio

    import asyncpg

    name = "occ_test_" + uuid.uuid4().hex[:10]

    async def create() -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        from billing.migrate import apply_migrations

        await apply_migrations(_dsn_for(name))

    async def drop() -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    try:
        yield _dsn_for(name)
    finally:
        asyncio.run(drop())
