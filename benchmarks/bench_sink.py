"""Charge sink benchmark: charge records/s from the Redis streams into the ledger, next to raw asyncpg COPY
of the same rows, in the same run.

    python benchmarks/bench_sink.py [--records 200000] [--accounts 1000] [--batch-size 1000]
        [--redis redis://127.0.0.1:6379/0] [--database postgresql://postgres@127.0.0.1:5432/postgres]

Records shaped like the session script's usage records are appended to the 16 partition streams of a
fresh key prefix; a fresh database gets the migrations. Measured, one after the other:

- raw COPY: the same rows (parsed from the streams) with one ``copy_records_to_table`` into a plain
  table of the ledger's columns, no keys: the most PostgreSQL takes in;
- raw COPY into ``ledger_entries`` itself (month partitions, primary key, account index), emptied after;
- the sink: ChargeSink from its first read until every stream is empty, i.e. every record read,
  committed, acknowledged and trimmed.

The goal (issue: sink >= 0.25x raw COPY) is judged against the plain-table COPY. The ledger is checked
afterwards: as many rows as records and the same total amount. Results are printed and written to
benchmarks/results/ with the command and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from balance.charges import LINE_COLUMNS, ChargeRecord, ChargeStreams  # noqa: E402
from balance.keys import KeySpace  # noqa: E402
from balance.link import FastLink  # noqa: E402
from billing import db  # noqa: E402
from billing.ledger import Ledger  # noqa: E402
from billing.settings import SinkSettings  # noqa: E402
from billing.sink import ChargeSink  # noqa: E402
from occ.bench_common import (  # noqa: E402
    add_script_options,
    finish,
    head_lines,
    scratch_database,
    script_facts,
    verdict_lines,
)

GOAL = 0.25
PARTITIONS = 16
START_MS = int(datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp() * 1000)


async def fill_streams(link: FastLink, keys: KeySpace, records: int, accounts: int) -> int:
    """Append usage records (as session.lua writes them); returns the total amount."""
    total = 0
    chunk: list[Any] = []
    for n in range(records):
        account = f"b{n % accounts:06d}"
        amount = -(1000 + n % 977)
        total += amount
        stream = keys.account(account).stream
        fields = [  # as lib.lua's add_record writes them: every field, in its order
            *("id", f"{account}:s:sess{n}:{n}:1", "a", account, "k", "usage", "s", "data", "i", "10"),
            *("sess", f"sess{n}", "u", 1_048_576, "bu", 0, "m", amount, "rel", "", "ref", ""),
            *("t", START_MS + n, "f", "", "bal", 1_000_000_000 + amount, "rsv", 5_000_000),
        ]
        chunk.append(link.execute("XADD", stream, "*", *fields))
        if len(chunk) == 5000:
            await asyncio.gather(*chunk)
            chunk = []
    await asyncio.gather(*chunk)
    return total


async def read_back(link: FastLink, keys: KeySpace) -> list[ChargeRecord]:
    streams = ChargeStreams(link, keys, "unused", "unused")
    rows: list[ChargeRecord] = []
    for p in range(keys.partitions):
        rows += await streams.entries_up_to(p, "+")
    return rows


async def raw_copy(dsn: str, rows: list[ChargeRecord], table: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table(table, records=rows, columns=LINE_COLUMNS)
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def run_sink(link: FastLink, keys: KeySpace, dsn: str, records: int, batch: int) -> tuple[float, int]:
    settings = SinkSettings(batch_size=batch, poll_interval_s=0.005)
    streams = ChargeStreams(link, keys, settings.group, "bench")
    await streams.ensure_groups()
    sink = ChargeSink(streams, lambda: db.connect(dsn, 5.0), settings)
    started = time.perf_counter()
    task = asyncio.create_task(sink.run())
    while sink.stored + sink.duplicates < records:
        await asyncio.sleep(0.002)
        if task.done():
            task.result()
            raise RuntimeError("the sink stopped early")
    while sum([await link.execute("XLEN", keys.stream(p)) for p in range(keys.partitions)]):
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started
    sink.stop()
    await task
    return records / elapsed, sink.duplicates


async def main(options: argparse.Namespace) -> dict[str, Any]:
    keys = KeySpace("bsink" + uuid.uuid4().hex[:8], PARTITIONS)
    link = FastLink(options.redis)
    try:
        async with scratch_database(options.database, "occ_bench_sink") as dsn:
            total = await fill_streams(link, keys, options.records, options.accounts)
            rows = await read_back(link, keys)
            conn = await asyncpg.connect(dsn)
            await conn.execute("create table raw_copy (like ledger_entries including defaults)")
            await Ledger(conn).ensure_partitions({datetime(2026, 11, 1).date()})
            await conn.close()
            plain = await raw_copy(dsn, rows, "raw_copy")
            keyed = await raw_copy(dsn, rows, "ledger_entries")
            conn = await asyncpg.connect(dsn)
            await conn.execute("truncate ledger_entries")
            await conn.close()
            sink, duplicates = await run_sink(link, keys, dsn, options.records, options.batch_size)
            conn = await asyncpg.connect(dsn)
            count, stored_total = await conn.fetchrow("select count(*), sum(amount) from ledger_entries")
            await conn.close()
    finally:
        cursor: Any = 0
        while True:
            cursor, found = await link.execute("SCAN", cursor, "MATCH", f"{keys.prefix}:*", "COUNT", 1000)
            if found:
                await link.execute("DEL", *found)
            if int(cursor) == 0:
                break
        await link.close()
    ratio = sink / plain
    return {
        **script_facts("sink", options),
        "records": options.records,
        "rows_per_s": {"raw COPY (plain table)": plain, "raw COPY (ledger_entries)": keyed, "sink": sink},
        "ledger_check": {
            "rows": int(count),
            "expected_rows": options.records,
            "amount": int(stored_total),
            "expected_amount": total,
            "duplicates_skipped": duplicates,
            "ok": int(count) == options.records and int(stored_total) == total,
        },
        "ratios": {"sink / raw COPY (plain table)": ratio, "sink / raw COPY (ledger_entries)": sink / keyed},
        "goals": {f"sink >= {GOAL}x raw COPY": {"value": ratio, "met": ratio >= GOAL}},
    }


def render(report: dict[str, Any]) -> str:
    lines = head_lines("charge sink: Redis charge streams -> PostgreSQL ledger", report)
    lines.append(f"records: {report['records']}")
    for name, rate in report["rows_per_s"].items():
        lines.append(f"  {name:<30} {rate:>12,.0f} rows/s")
    check = report["ledger_check"]
    lines.append(
        f"ledger: {check['rows']} rows (expected {check['expected_rows']}), amount {check['amount']}"
        f" (expected {check['expected_amount']}): {'exact' if check['ok'] else 'MISMATCH'}"
    )
    lines += verdict_lines(report)
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1000, help="entries per partition per round")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    add_script_options(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    opts = parse()
    import uvloop

    result = uvloop.run(main(opts))
    ok = bool(result["ledger_check"]["ok"])
    sys.exit(finish(result, render(result), opts.out, "sink", save=not opts.no_save, ok=ok))
