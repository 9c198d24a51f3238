"""Billing run benchmark: ``occ bill run`` over a month of ledger rows, next to the bare SQL GROUP BY over the
same rows, in the same run and database.

    python benchmarks/bench_billing.py [--rows 1000000] [--accounts 10000] [--prepaid-share 0.3]
        [--database postgresql://postgres@127.0.0.1:5432/postgres]

A fresh database gets the migrations, the demo tariff, the accounts (postpaid and prepaid) and the rows
(usage of data, voice and SMS, top-ups, refunds) spread over November 2026, written with COPY and
analyzed. Measured, after one warm-up of the query:

- the bare GROUP BY the run is built on (account, kind, service, rating group; sums of units and money),
  fetched to the client;
- the billing run itself, dry and for real (invoices and statements written, numbered).

The goal (issue: billing run >= 0.5x the bare GROUP BY) is the ratio of their rates, i.e. GROUP BY time
divided by run time. Results are printed and written to benchmarks/results/ with the command and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from billing.billrun import bill_run  # noqa: E402
from billing.invoice_model import parse_period  # noqa: E402
from billing.ledger import Ledger  # noqa: E402
from billing.settings import BillingSettings, OperatorSettings  # noqa: E402
from billing.tariff_store import install_tariff, load_catalog  # noqa: E402
from occ.bench_common import (  # noqa: E402
    add_script_options,
    finish,
    head_lines,
    scratch_database,
    script_facts,
    verdict_lines,
)

GOAL = 0.5
PERIOD = parse_period("2026-11")
GROUP_BY = (
    "select account_id, kind, service, item, coalesce(sum(units), count(*))::bigint as units,"
    " sum(amount)::bigint as amount from ledger_entries"
    " where occurred_at >= $1 and occurred_at < $2 group by account_id, kind, service, item"
)
SETTINGS = BillingSettings(
    operators={"default": OperatorSettings(name="Bench Telecom", invoice_prefix="BT-", default_tax="0.20")}
)


def rows_for(n: int, accounts: list[str]) -> list[tuple[object, ...]]:
    start = PERIOD.start_at
    span = (PERIOD.end_at - start).total_seconds()
    out: list[tuple[object, ...]] = []
    shapes = (
        ("usage", "data", "10", 1_048_576, -10_000),
        ("usage", "voice", "voice", 60, -100_000),
        ("event", "sms", "sms", 1, -50_000),
        ("usage", "data", "20", 2_097_152, -20_000),
        ("topup", None, None, None, 10_000_000),
        ("refund", "voice", None, None, 5_000),
    )
    for i in range(n):
        kind, service, item, units, amount = shapes[i % 6 if i % 50 else 4 + (i // 50) % 2]
        account = accounts[(i * 7919) % len(accounts)]
        at = start + timedelta(seconds=span * i / n)
        out.append((f"{account}:b:{i}", account, kind, service, item, units, amount, at))
    return out


async def main(options: argparse.Namespace) -> dict[str, Any]:
    async with scratch_database(options.database, "occ_bench_billing") as dsn:
        conn = await asyncpg.connect(dsn)
        demo = ROOT / "config" / "tariffs" / "demo.toml"
        await install_tariff(conn, demo.read_text(encoding="utf-8"), demo.name)
        prepaid = int(options.accounts * options.prepaid_share)
        accounts = [f"acct{n:07d}" for n in range(options.accounts)]
        since = datetime(2026, 1, 1, tzinfo=UTC)
        await conn.copy_records_to_table(
            "accounts",
            records=[
                (a, "prepaid" if n < prepaid else "postpaid", "EUR", "demo", since)
                for n, a in enumerate(accounts)
            ],
            columns=("account_id", "kind", "currency", "plan", "created_at"),
        )
        await conn.copy_records_to_table(
            "account_plans",
            records=[(a, "demo", since) for a in accounts],
            columns=("account_id", "plan", "started_at"),
        )
        await Ledger(conn).ensure_partitions([date(2026, 11, 1)])
        filled = time.perf_counter()
        await conn.copy_records_to_table(
            "ledger_entries",
            records=rows_for(options.rows, accounts),
            columns=("entry_id", "account_id", "kind", "service", "item", "units", "amount", "occurred_at"),
        )
        fill_s = time.perf_counter() - filled
        await conn.execute("analyze")
        await conn.fetch(GROUP_BY, PERIOD.start_at, PERIOD.end_at)  # warm-up: pages in memory
        started = time.perf_counter()
        groups = await conn.fetch(GROUP_BY, PERIOD.start_at, PERIOD.end_at)
        group_by_s = time.perf_counter() - started
        catalog = await load_catalog(conn)
        started = time.perf_counter()
        dry = await bill_run(conn, catalog, SETTINGS, PERIOD, today=date(2026, 12, 1), dry_run=True)
        dry_s = time.perf_counter() - started
        started = time.perf_counter()
        real = await bill_run(conn, catalog, SETTINGS, PERIOD, today=date(2026, 12, 1))
        run_s = time.perf_counter() - started
        invoices = await conn.fetchval("select count(*) from invoices")
        ledger_total = await conn.fetchval("select sum(amount) from ledger_entries")
        await conn.close()
    ratio = group_by_s / run_s
    return {
        **script_facts("billing", options),
        "rows": options.rows,
        "accounts": options.accounts,
        "seconds": {
            "COPY of the rows": fill_s,
            "bare GROUP BY": group_by_s,
            "billing run (dry)": dry_s,
            "billing run": run_s,
        },
        "rows_per_s": {"bare GROUP BY": options.rows / group_by_s, "billing run": options.rows / run_s},
        "result": {
            "groups": len(groups),
            "documents": invoices,
            "dry_run_documents": len(dry.bills),
            "errors": len(real.errors),
            "ledger_total": int(ledger_total),
            "ok": invoices == len(dry.bills) == len(real.bills) and not real.errors,
        },
        "ratios": {
            "billing run / bare GROUP BY (rates)": ratio,
            "dry billing run / bare GROUP BY": group_by_s / dry_s,
        },
        "goals": {f"billing run >= {GOAL}x bare GROUP BY": {"value": ratio, "met": ratio >= GOAL}},
    }


def render(report: dict[str, Any]) -> str:
    lines = head_lines("billing run over a month of ledger rows", report)
    lines.append(f"rows: {report['rows']:,} over {report['accounts']:,} accounts")
    for what, seconds in report["seconds"].items():
        lines.append(f"  {what:<22} {seconds:8.3f} s")
    r = report["result"]
    lines.append(
        f"documents: {r['documents']} ({r['groups']} groups from the ledger), errors {r['errors']}:"
        f" {'ok' if r['ok'] else 'MISMATCH'}"
    )
    lines += verdict_lines(report)
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--prepaid-share", type=float, default=0.3)
    add_script_options(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    opts = parse()
    result = asyncio.run(main(opts))
    ok = bool(result["result"]["ok"])
    sys.exit(finish(result, render(result), opts.out, "billing", save=not opts.no_save, ok=ok))
