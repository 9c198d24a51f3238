"""Tariff plan versions in PostgreSQL (tables of ``migrations/0002_tariffs.sql``): install and load.

A version, once installed, never changes: installing a file again is a no-op for every version it
declares identically (comments and layout aside) and an error for one it declares differently — a changed
plan is a new version with a later ``effective_from``. The catalog is every stored version resolved
together, so a child plan follows its parent's versions whichever file they were installed from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from rating_core.tariff import Catalog, TariffError
from rating_core.tariff_file import TariffSet, combine_sets, parse_tariff

# Installers take this lock (it conflicts with itself, not with readers), so two concurrent loads see each
# other's versions and cannot both insert conflicting ones.
_LOCK = "lock table tariff_versions in share row exclusive mode"

_STORED = """
select v.plan, v.effective_from, v.source_name, v.loaded_at, s.sha256, s.source, s.source_name as text_name
from tariff_versions v join tariff_sources s on s.sha256 = v.source_sha256
order by v.plan, v.effective_from
"""


@dataclass(frozen=True, slots=True)
class _Row:
    plan: str
    effective_from: datetime
    source_name: str
    loaded_at: datetime
    sha256: str


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def _stored(conn: asyncpg.Connection) -> tuple[list[_Row], dict[str, TariffSet]]:
    """Every version row, and each stored text parsed once (by digest)."""
    rows: list[_Row] = []
    sets: dict[str, TariffSet] = {}
    for r in await conn.fetch(_STORED):
        sha = str(r["sha256"])
        if sha not in sets:
            sets[sha] = parse_tariff(str(r["source"]), str(r["text_name"]))
        rows.append(_Row(r["plan"], r["effective_from"], r["source_name"], r["loaded_at"], sha))
    return rows, sets


def _resolve(
    rows: Iterable[_Row],
    sets: dict[str, TariffSet],
    extra: Sequence[tuple[TariffSet, list[tuple[str, datetime]]]] = (),
) -> TariffSet:
    """The stored versions (each from the text it was declared in), plus ``extra``, resolved together."""
    chosen: dict[str, list[tuple[str, datetime]]] = {}
    for row in rows:
        chosen.setdefault(row.sha256, []).append((row.plan, row.effective_from))
    parts = [(sets[sha], keys) for sha, keys in chosen.items()]
    return combine_sets([*parts, *extra], source="database")


async def install_tariff(conn: asyncpg.Connection, text: str, source_name: str) -> list[tuple[str, datetime]]:
    """Install every plan version a tariff file declares, in one transaction; returns those newly stored.

    Raises :class:`TariffError` (with ``problems`` set) when the file has problems alone or together with
    the stored versions, or when it declares a stored (plan, effective_from) differently. A version stored
    identically already is skipped, so installing the same file twice is a no-op.
    """
    tariff = parse_tariff(text, source_name)
    if tariff.problems:
        raise TariffError.of(tariff.problems)
    sha = _digest(text)
    async with conn.transaction():
        await conn.execute(_LOCK)
        rows, sets = await _stored(conn)
        by_key = {(r.plan, r.effective_from): r for r in rows}
        new: list[tuple[str, datetime]] = []
        for name, effective_from in tariff.declared:
            row = by_key.get((name, effective_from))
            if row is None:
                new.append((name, effective_from))
            elif not tariff.declares_same(sets[row.sha256], name, effective_from):
                loaded = row.loaded_at.isoformat(timespec="seconds")
                raise TariffError(
                    f'{source_name}: plan "{name}" effective from {effective_from.isoformat()} differs from '
                    f"the version installed from {row.source_name} at {loaded}; an installed version "
                    "never changes: give the new one a later effective_from"
                )
        if not new:
            return []
        combined = _resolve(rows, sets, [(tariff, new)])
        if combined.problems:
            raise TariffError.of(combined.problems)
        await conn.execute(
            "insert into tariff_sources (sha256, source_name, source) values ($1, $2, $3) "
            "on conflict (sha256) do nothing",
            sha,
            source_name,
            text,
        )
        await conn.executemany(
            "insert into tariff_versions (plan, effective_from, source_name, source_sha256) "
            "values ($1, $2, $3, $4)",
            [(name, effective_from, source_name, sha) for name, effective_from in new],
        )
    return new


async def load_catalog(conn: asyncpg.Connection) -> Catalog:
    """Every installed plan version, resolved into a catalog. TariffError if the stored set is invalid."""
    rows, sets = await _stored(conn)
    combined = _resolve(rows, sets)
    if combined.problems:
        raise TariffError.of(combined.problems)
    return Catalog(combined)
