"""Tariff versions in real PostgreSQL: install (atomic, immutable versions, idempotent), load the catalog.

What crosses the boundary: tariff file text in, rows in ``tariff_sources``/``tariff_versions`` out, and
back to a Catalog that rates exactly like the file it came from. Each test module gets a throw-away
database with only ``0002_tariffs.sql`` applied (the full migration chain is checked separately).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from billing.tariff_store import install_tariff, load_catalog
from occ.cli import main
from rating_core import Catalog, TariffError, Usage, parse_tariff, price_of

REPO = Path(__file__).resolve().parents[2]
DEMO_PATH = REPO / "config" / "tariffs" / "demo.toml"
DEMO = DEMO_PATH.read_text(encoding="utf-8")
MIGRATION = (REPO / "billing" / "migrations" / "0002_tariffs.sql").read_text(encoding="utf-8")
ADMIN_DSN = os.environ.get("OCC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
JAN_2025 = datetime(2025, 1, 1, tzinfo=UTC)  # London is on GMT: local midnight is 00:00 UTC


def _dsn(database: str) -> str:
    return ADMIN_DSN.rpartition("/")[0] + "/" + database


@pytest.fixture(scope="module")
def tariff_db() -> Iterator[str]:
    """A database of its own with the tariff tables; dropped at the end."""
    name = "occ_t_" + uuid.uuid4().hex[:10]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create() -> None:
        await admin(f'create database "{name}"')
        conn = await asyncpg.connect(_dsn(name))
        try:
            await conn.execute(MIGRATION)
        finally:
            await conn.close()

    asyncio.run(create())
    try:
        yield _dsn(name)
    finally:
        asyncio.run(admin(f'drop database if exists "{name}" with (force)'))


@pytest.fixture
async def conn(tariff_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to an empty tariff store."""
    connection = await asyncpg.connect(tariff_db)
    await connection.execute("truncate tariff_versions, tariff_sources")
    try:
        yield connection
    finally:
        await connection.close()


async def count(conn: asyncpg.Connection) -> tuple[int, int]:
    versions = await conn.fetchval("select count(*) from tariff_versions")
    sources = await conn.fetchval("select count(*) from tariff_sources")
    return int(versions), int(sources)


# A second, later version of "demo": sms price doubled. Written as its own file.
DEMO_2026 = (
    DEMO.split("# ---- a child plan")[0]
    .replace('"2025-01-01"', '"2026-01-01"')
    .replace('name = "SMS"\nprice = "0.05"', 'name = "SMS"\nprice = "0.10"')
)


async def test_install_then_load_rates_like_the_file(conn: asyncpg.Connection) -> None:
    installed = await install_tariff(conn, DEMO, "demo.toml")
    assert installed == [("demo", JAN_2025), ("demo-plus", JAN_2025)]
    rows = await conn.fetch("select plan, effective_from, source_name from tariff_versions order by plan")
    assert [tuple(r) for r in rows] == [("demo", JAN_2025, "demo.toml"), ("demo-plus", JAN_2025, "demo.toml")]
    assert await count(conn) == (2, 1)

    stored = await load_catalog(conn)
    from_file = Catalog(parse_tariff(DEMO, "demo.toml"))
    assert stored.names() == from_file.names() == ("demo", "demo-plus")
    for name in stored.names():
        assert stored.versions(name) == from_file.versions(name)
    at = datetime(2025, 3, 3, 19, 59, tzinfo=UTC)
    usage = Usage("voice", 90, at, "442079460000")
    assert price_of(stored.plan("demo", at), usage).amount == 120_000


async def test_installing_again_is_a_no_op(conn: asyncpg.Connection) -> None:
    await install_tariff(conn, DEMO, "demo.toml")
    assert await install_tariff(conn, DEMO, "demo.toml") == []
    # the same versions written differently (comments, a renamed file) are the same versions
    assert await install_tariff(conn, "# copy\n" + DEMO.replace('"9.99"', '"9.990"'), "copy.toml") == []
    assert await count(conn) == (2, 1)


async def test_a_changed_version_is_refused_and_nothing_is_written(conn: asyncpg.Connection) -> None:
    await install_tariff(conn, DEMO, "demo.toml")
    # demo-plus changed; the file also declares a new plan, which must not be kept either
    changed = DEMO.replace('amount = "19.99"', 'amount = "17.99"')
    changed += '\n[[plan]]\nname = "extra"\nparent = "demo"\neffective_from = "2025-06-01"\n'
    with pytest.raises(
        TariffError, match=r'changed.toml: plan "demo-plus" effective from 2025-01-01T00:00:00\+00:00 differs'
    ):
        await install_tariff(conn, changed, "changed.toml")
    assert await count(conn) == (2, 1)


async def test_a_file_with_problems_is_refused(conn: asyncpg.Connection) -> None:
    bad = DEMO.replace('price = "0.05"', 'price = "-0.05"')
    with pytest.raises(TariffError) as info:
        await install_tariff(conn, bad, "bad.toml")
    assert [p.key for p in info.value.problems] == ["price"]
    assert str(info.value) == 'bad.toml: plan "demo" rate "sms/* SMS": price: negative price -0.05'
    assert await count(conn) == (0, 0)


async def test_a_child_follows_a_parent_version_installed_later(conn: asyncpg.Connection) -> None:
    await install_tariff(conn, DEMO, "demo.toml")
    assert await install_tariff(conn, DEMO_2026, "demo-2026.toml") == [
        ("demo", datetime(2026, 1, 1, tzinfo=UTC))
    ]
    catalog = await load_catalog(conn)
    before, after = datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    assert price_of(catalog.plan("demo-plus", before), Usage("sms", 1, before)).amount == 50_000
    plus = catalog.plan("demo-plus", after)
    assert price_of(plus, Usage("sms", 1, after)).amount == 100_000  # from demo's 2026 version
    assert plus.rate_for("voice", "33").name == "France"  # its own rates stay
    assert [p.effective_from.year for p in catalog.versions("demo-plus")] == [2025, 2026]
    # the installed rows stay what was declared: derived versions are not rows
    assert await count(conn) == (3, 2)


async def test_a_parent_version_that_breaks_an_installed_child_is_refused(conn: asyncpg.Connection) -> None:
    await install_tariff(conn, DEMO, "demo.toml")
    # a weekend band priced on demo's own rates, but demo-plus's France rate (installed) has no weekend price
    weekend = '[plan.bands.weekend]\nwindows = [{ days = "sat-sun", from = "00:00", to = "24:00" }]\n'
    text = DEMO_2026.replace("[plan.bands.offpeak]", weekend + "\n[plan.bands.offpeak]")
    text = text.replace('offpeak = "0.', 'weekend = "0.01", offpeak = "0.')
    with pytest.raises(TariffError) as info:
        await install_tariff(conn, text, "weekend.toml")
    assert [str(p) for p in info.value.problems] == [
        'demo.toml: plan "demo-plus" rate "voice/33 France": price: no price for band "weekend", '
        "which can occur"
    ]
    assert await count(conn) == (2, 1)


async def test_concurrent_conflicting_installs_one_wins(conn: asyncpg.Connection, tariff_db: str) -> None:
    other = await asyncpg.connect(tariff_db)
    try:
        a = DEMO
        b = DEMO.replace('amount = "9.99"', 'amount = "8.99"')
        results = await asyncio.gather(
            install_tariff(conn, a, "a.toml"), install_tariff(other, b, "b.toml"), return_exceptions=True
        )
    finally:
        await other.close()
    assert sorted(type(r).__name__ for r in results) == ["TariffError", "list"]
    assert await count(conn) == (2, 1)


async def test_load_catalog_of_an_empty_store(conn: asyncpg.Connection) -> None:
    assert (await load_catalog(conn)).names() == ()


def test_cli_load_then_rate_from_postgresql(
    tariff_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OCC_CONFIG", "OCC_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)

    async def empty() -> None:
        c = await asyncpg.connect(tariff_db)
        try:
            await c.execute("truncate tariff_versions, tariff_sources")
        finally:
            await c.close()

    asyncio.run(empty())
    config = tmp_path / "occ.toml"
    config.write_text(f'[database]\nurl = "{tariff_db}"\n', encoding="utf-8")
    assert main(["tariff", "load", str(DEMO_PATH), "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "installed demo effective from 2025-01-01T00:00:00+00:00",
        "installed demo-plus effective from 2025-01-01T00:00:00+00:00",
    ]
    assert main(["tariff", "load", str(DEMO_PATH), "--config", str(config)]) == 0
    assert "nothing new" in capsys.readouterr().out
    argv = ["rate", "--plan", "demo-plus", "--service", "voice", "--destination", "33142"]
    argv += ["--start", "2025-03-03T19:59:00Z", "--quantity", "61", "--config", str(config)]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "total 0.25 EUR"  # 0.15 peak + 0.10 off-peak

    changed = tmp_path / "changed.toml"
    changed.write_text(DEMO.replace('"9.99"', '"1.99"'), encoding="utf-8")
    assert main(["tariff", "load", str(changed), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'plan "demo" effective from 2025-01-01T00:00:00+00:00 differs' in err


async def test_the_migration_chain_creates_the_tariff_tables(database_url: str) -> None:
    # database_url (tests/conftest.py) has every migration applied by billing.migrate, in name order
    c = await asyncpg.connect(database_url)
    try:
        tables = {r["table_name"] for r in await c.fetch("select table_name from information_schema.tables")}
    finally:
        await c.close()
    assert {"tariff_sources", "tariff_versions"} <= tables
