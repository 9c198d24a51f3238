"""Fixtures of the billing tests: a live store under a fresh key prefix, a charging service on it, and a
PostgreSQL connection to the session's database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from balance.service import ChargingService
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from billing.ledger import Ledger
from billing.migrate import apply_migrations
from billing.tariff_store import install_tariff
from rating_core.tariff import Catalog
from rating_core.tariff_file import parse_tariff
from tests.billing.charging import NOW, TARIFF
from tests.conftest import ADMIN_DSN, _dsn_for
from tests.occ.test_daemon import make_daemon  # noqa: F401  (a fixture of the daemon tests, used here too)

DEMO_TARIFF = Path(__file__).resolve().parents[2] / "config" / "tariffs" / "demo.toml"


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    s = await BalanceStore.connect(
        RedisSettings(url=redis_url, key_prefix=key_prefix, partitions=4), BalanceSettings()
    )
    yield s
    await s.close()


@pytest.fixture
def service(store: BalanceStore) -> ChargingService:
    catalog = Catalog(parse_tariff(TARIFF, "sink.toml"))
    return ChargingService(store, catalog, BalanceSettings(reservation_ttl_s=60), clock=lambda: NOW)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    yield c
    await c.close()


@pytest.fixture
async def own_database() -> AsyncIterator[str]:
    """A migrated database of the test's own, for what looks at every account of a database."""
    name = "occ_rec_" + uuid.uuid4().hex[:10]
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await apply_migrations(_dsn_for(name))
    yield _dsn_for(name)
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db(own_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's own database with the demo tariff installed and the ledger's months of
    the billing tests (2026-10 to 2027-01) ready."""
    conn = await asyncpg.connect(own_database)
    await install_tariff(conn, DEMO_TARIFF.read_text(encoding="utf-8"), DEMO_TARIFF.name)
    await Ledger(conn).ensure_partitions(
        [date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)]
    )
    yield conn
    await conn.close()
