"""Schema migrations: the ``billing/migrations/*.sql`` files, applied once each, in name order.

Each file runs in its own transaction together with its row in ``schema_migrations``, so a file is either
applied and recorded or not at all. A session advisory lock serialises concurrent runs (several hosts
starting at once): the second run waits, then finds nothing left to do.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

from billing.db import connect

# pg_advisory_lock key of the migration lock: any constant no other lock in this database uses.
_LOCK_KEY = 0x6F63635F6D6967  # "occ_mig"

_CREATE_TABLE = """
create table if not exists schema_migrations (
    name       text primary key,
    applied_at timestamptz not null default now()
)
"""


def migration_files() -> list[tuple[str, str]]:
    """(file name, SQL text) of every migration shipped with the package, in name order."""
    folder = resources.files("billing") / "migrations"
    files = [f for f in folder.iterdir() if f.is_file() and f.name.endswith(".sql")]
    return [(f.name, f.read_text(encoding="utf-8")) for f in sorted(files, key=lambda f: f.name)]


async def apply_migrations(dsn: str, *, timeout: float = 10.0) -> list[str]:
    """Apply every migration not applied yet; returns the names applied (empty when up to date).

    Raises DatabaseUnavailable when PostgreSQL cannot be reached; a failing migration raises the
    asyncpg error after rolling back that file (earlier files stay applied).
    """
    conn = await connect(dsn, timeout)
    try:
        return await apply_on(conn)
    finally:
        await conn.close()


async def apply_on(conn: asyncpg.Connection) -> list[str]:
    """Apply the pending migrations on an open connection (not inside a transaction)."""
    await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        done = {str(r["name"]) for r in await conn.fetch("select name from schema_migrations")}
        applied: list[str] = []
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("insert into schema_migrations (name) values ($1)", name)
            applied.append(name)
        return applied
    finally:
        await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)
