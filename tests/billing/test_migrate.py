"""Migrations against a real PostgreSQL: recorded once, safe to run concurrently, all-or-nothing per file."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from billing import migrate
from billing.db import DatabaseUnavailable, connect
from billing.migrate import apply_migrations, migration_files


def _admin_dsn(database_url: str) -> str:
    return database_url.rpartition("/")[0] + "/postgres"


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    """A database with no schema at all, dropped afterwards."""
    name = "occ_mig_" + uuid.uuid4().hex[:10]
    admin = await asyncpg.connect(_admin_dsn(database_url))
    try:
        await admin.execute(f'create database "{name}"')
        yield database_url.rpartition("/")[0] + "/" + name
        await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


async def _recorded(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["name"] for r in await conn.fetch("select name from schema_migrations order by name")]
    finally:
        await conn.close()


def test_migration_files_are_found_in_name_order() -> None:
    names = [name for name, _ in migration_files()]
    assert "0001_core.sql" in names
    assert names == sorted(names)


async def test_rerun_on_migrated_database_applies_nothing(database_url: str) -> None:
    assert await apply_migrations(database_url) == []
    assert await _recorded(database_url) == [name for name, _ in migration_files()]


async def test_concurrent_runs_apply_each_migration_exactly_once(empty_database: str) -> None:
    results = await asyncio.gather(*(apply_migrations(empty_database) for _ in range(5)))
    applied = [name for result in results for name in result]
    expected = [name for name, _ in migration_files()]
    assert sorted(applied) == expected  # every file once, by exactly one of the runs
    assert await _recorded(empty_database) == expected
    assert await apply_migrations(empty_database) == []


async def test_failing_migration_rolls_back_alone(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = migration_files()[:1]
    bad = ("9999_broken.sql", "create table half_done (x int); select 1 / 0;")
    monkeypatch.setattr(migrate, "migration_files", lambda: [*good, bad])
    with pytest.raises(asyncpg.DivisionByZeroError):
        await apply_migrations(empty_database)
    assert await _recorded(empty_database) == [good[0][0]]
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("select to_regclass('half_done')") is None
    finally:
        await conn.close()
    # the lock went with the failed run: the next run is not blocked
    monkeypatch.setattr(migrate, "migration_files", lambda: good)
    assert await asyncio.wait_for(apply_migrations(empty_database), 10) == []


async def test_unreachable_database_is_one_line_without_password() -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        await connect("postgresql://occ:hunter2@127.0.0.1:1/occ", timeout=2.0)
    message = str(caught.value)
    assert "hunter2" not in message
    assert "\n" not in message
    assert message.startswith("cannot connect to PostgreSQL at postgresql://occ@127.0.0.1:1/occ: ")


async def test_wrong_password_is_reported_without_it(database_url: str) -> None:
    # a user that does not exist is refused the same way a wrong password is
    parts = urlsplit(database_url)
    dsn = urlunsplit(parts._replace(netloc=f"nobody_here:hunter2@{parts.hostname}:{parts.port or 5432}"))
    with pytest.raises(DatabaseUnavailable) as caught:
        await connect(dsn, timeout=5.0)
    assert "hunter2" not in str(caught.value)
    assert "\n" not in str(caught.value)
