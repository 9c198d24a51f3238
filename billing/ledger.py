"""Writing charge records into the ledger exactly once (``ledger_entries``, partitioned by month).

A batch goes in with one COPY (text format, lines built from the stream entries' bytes without
decoding them, see ``balance.charges``) straight into the partitioned table. A record that is already there
(the sink stored a batch, then died before acknowledging it, and the batch came back) makes that COPY
fail on the primary key; the batch is then written again through a staging table with
``on conflict do nothing``, which skips every copy already stored. So the common case costs one COPY and
a replay costs one more, and no record is ever stored twice. A batch PostgreSQL refuses as data (a
record no add_record wrote) is stored line by line, and the refused lines are kept in ledger_rejects.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from balance.charges import LINE_COLUMNS, Batch
from billing.invoice_model import next_month

_STAGE = "ledger_stage"
_COLUMNS = ", ".join(LINE_COLUMNS)
# a stream entry kept in ledger_rejects: partition, stream id, its fields as text, the reason
Reject = tuple[int, str, str, str]


@dataclass(frozen=True, slots=True)
class Stored:
    inserted: int  # records new to the ledger
    duplicates: int  # records the ledger already held (a replayed batch)
    rejects: int  # stream entries kept in ledger_rejects


def partition_name(month: date) -> str:
    return f"ledger_entries_{month.year:04d}_{month.month:02d}"


class Ledger:
    """The ledger as one connection writes it; remembers which month partitions exist."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._months: set[date] = set()
        self._staged = False

    async def ensure_partitions(self, months: Iterable[date]) -> None:
        """Create the month partitions (and each following month's, so a month boundary under traffic
        finds its partition ready) that do not exist yet. Months are UTC."""
        for month in sorted(set(months) - self._months):
            for m in (month, next_month(month)):
                if m in self._months:
                    continue
                # another writer may create it between our check and our create
                with contextlib.suppress(asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                    await self.conn.execute(
                        f"create table if not exists {partition_name(m)} partition of ledger_entries"
                        f" for values from ('{m.isoformat()} 00:00:00+00')"
                        f" to ('{next_month(m).isoformat()} 00:00:00+00')"
                    )
                self._months.add(m)

    async def store(self, batches: Sequence[Batch]) -> Stored:
        """Store the batches' lines and rejects in one transaction; returns what was new. Raises
        asyncpg/OS errors when PostgreSQL fails (nothing is stored then)."""
        lines = [line for b in batches for line in b.lines]
        rejects = [(b.partition, *reject) for b in batches for reject in b.rejects]
        await self.ensure_partitions(set().union(*(b.months for b in batches)))
        try:
            async with self.conn.transaction():
                inserted = await self._copy("ledger_entries", lines)
                await self._store_rejects(rejects)
                return Stored(inserted, 0, len(rejects))
        except asyncpg.UniqueViolationError:
            return await self._store_replayed(lines, rejects)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
            return await self._store_one_by_one(lines, rejects)

    async def _copy(self, table: str, lines: Sequence[bytes]) -> int:
        if not lines:
            return 0
        status = await self.conn.copy_to_table(
            table, source=io.BytesIO(b"".join(lines)), columns=LINE_COLUMNS, format="text", null=""
        )
        return _count(status)

    async def _store_replayed(self, lines: Sequence[bytes], rejects: Sequence[Reject]) -> Stored:
        if not self._staged:
            await self.conn.execute(
                f"create temp table if not exists {_STAGE}"
                f" (like ledger_entries including defaults) on commit delete rows"
            )
            self._staged = True
        try:
            async with self.conn.transaction():
                await self._copy(_STAGE, lines)
                status = await self.conn.execute(
                    f"insert into ledger_entries ({_COLUMNS}) select {_COLUMNS} from {_STAGE}"
                    " on conflict do nothing"
                )
                inserted = _count(status)
                await self._store_rejects(rejects)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
            # a replayed batch that also holds a line PostgreSQL refuses: line by line
            return await self._store_one_by_one(lines, rejects)
        return Stored(inserted, len(lines) - inserted, len(rejects))

    async def _store_one_by_one(self, lines: Sequence[bytes], rejects: Sequence[Reject]) -> Stored:
        """A batch PostgreSQL refused as data: every line alone, the refused ones kept as rejects."""
        inserted = duplicates = 0
        refused: list[Reject] = []
        for line in lines:
            try:
                async with self.conn.transaction():
                    inserted += await self._copy("ledger_entries", [line])
            except asyncpg.UniqueViolationError:
                duplicates += 1
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                fields = line.rstrip(b"\n").split(b"\t")
                partition, stream_id = int(fields[-3]), f"{int(fields[-2])}-{int(fields[-1])}"
                text = line.decode(errors="replace").rstrip("\n").replace("\t", " ")
                refused.append((partition, stream_id, text, f"PostgreSQL refused it: {exc}"))
        async with self.conn.transaction():
            await self._store_rejects([*rejects, *refused])
        return Stored(inserted, duplicates, len(rejects) + len(refused))

    async def _store_rejects(self, rejects: Sequence[Reject]) -> None:
        if rejects:
            await self.conn.executemany(
                "insert into ledger_rejects (stream_partition, stream_id, fields, reason)"
                " values ($1, $2, $3, $4) on conflict do nothing",
                rejects,
            )


def _count(status: str) -> int:
    """Rows of a command status such as "COPY 10" or "INSERT 0 10"."""
    return int(status.rsplit(" ", 1)[1])
