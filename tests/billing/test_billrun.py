"""The billing run on real PostgreSQL: invoices and statements from the ledger, once, numbered without gaps.

Every test has a database of its own (a run bills every account of a database).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.billrun import bill_run
from billing.invoice_model import parse_period
from billing.invoices import fetch_document, list_documents
from billing.settings import BillingSettings, OperatorSettings
from billing.tariff_store import load_catalog
from rating_core.tariff import Catalog
from tests.occ.test_provisioning_cli import run_occ, write_config

DEMO = Path(__file__).resolve().parents[2] / "config" / "tariffs" / "demo.toml"
EUR = 1_000_000
NOV = parse_period("2026-11")
ISSUED = date(2026, 12, 1)
SETTINGS = BillingSettings(
    operators={
        "default": OperatorSettings(
            name="Demo Telecom", invoice_prefix="DT-", default_tax="0.20", taxes={"data": "0.10"}
        ),
        "north": OperatorSettings(name="North Net", invoice_prefix="NN-", payment_terms_days=30),
    }
)


async def catalog(conn: asyncpg.Connection) -> Catalog:
    return await load_catalog(conn)


async def account(
    conn: asyncpg.Connection,
    kind: str = "postpaid",
    *,
    since: datetime = datetime(2025, 6, 1, tzinfo=UTC),
    operator: str = "default",
    plan: str = "demo",
    credit_limit: int = 0,
) -> str:
    """An account as provisioning writes it to PostgreSQL (accounts row and plan history)."""
    account_id = "b-" + uuid.uuid4().hex[:8]
    await conn.execute(
        "insert into accounts"
        " (account_id, kind, currency, plan, operator_id, customer_name, credit_limit, created_at)"
        " values ($1, $2, 'EUR', $3, $4, 'Ada Lovelace', $5, $6)",
        account_id,
        kind,
        plan,
        operator,
        credit_limit,
        since,
    )
    await conn.execute(
        "insert into account_plans (account_id, plan, started_at) values ($1, $2, $3)",
        account_id,
        plan,
        since,
    )
    return account_id


async def ledger(
    conn: asyncpg.Connection, account_id: str, *rows: tuple[str, str | None, int, int, datetime]
) -> None:
    await conn.executemany(
        "insert into ledger_entries (entry_id, account_id, kind, service, item, units, amount, occurred_at)"
        " values ($1, $2, $3, $4, $4, $5, $6, $7)",
        [(uuid.uuid4().hex, account_id, k, s, u, a, t) for k, s, u, a, t in rows],
    )


NOV_10 = datetime(2026, 11, 10, 12, tzinfo=UTC)


async def test_a_postpaid_invoice_has_fees_usage_and_taxes_and_a_second_run_changes_nothing(
    db: asyncpg.Connection,
) -> None:
    a = await account(db)
    await ledger(
        db,
        a,
        ("usage", "data", 50 * 1048576, -500_000, NOV_10),
        ("usage", "voice", 300, -1_234_567, NOV_10),
        ("event", "sms", 3, -150_000, NOV_10),
        ("usage", "data", 1, -99 * EUR, datetime(2026, 10, 31, 23, 59, tzinfo=UTC)),  # October: not billed
    )
    first = await bill_run(db, await catalog(db), SETTINGS, NOV, today=ISSUED)
    assert [(b.account_id, b.kind) for b in first.bills] == [(a, "invoice")]
    number = first.numbers[a]
    assert number == "DT-2026-000001"
    doc = await fetch_document(db, number)
    assert doc is not None
    assert [(line.description, line.amount, line.tax_rate) for line in doc.lines] == [
        ("subscription (demo), month", 9_990_000, 200_000),
        ("sms", 150_000, 200_000),
        ("data", 500_000, 100_000),
        ("voice", 1_230_000, 200_000),
    ]
    # 20 % of 11.37 = 2.274 -> 2.27; 10 % of 0.50 = 0.05
    assert doc.taxes == ((100_000, 500_000, 50_000), (200_000, 11_370_000, 2_270_000))
    assert (doc.subtotal, doc.tax, doc.total) == (11_870_000, 2_320_000, 14_190_000)
    assert (doc.issued_on, doc.due_on, doc.customer["name"], doc.issuer["name"]) == (
        ISSUED,
        date(2026, 12, 15),
        "Ada Lovelace",
        "Demo Telecom",
    )
    again = await bill_run(db, await catalog(db), SETTINGS, NOV, today=ISSUED)
    assert (again.bills, again.existing) == ([], 1)
    assert len(await list_documents(db)) == 1


async def test_a_dry_run_writes_nothing(db: asyncpg.Connection) -> None:
    a = await account(db)
    dry = await bill_run(db, await catalog(db), SETTINGS, NOV, today=ISSUED, dry_run=True)
    assert [b.account_id for b in dry.bills] == [a] and dry.numbers == {}
    assert await db.fetchval("select count(*) from invoices") == 0
    assert await db.fetchval("select count(*) from invoice_counters") == 0


async def test_numbers_are_gapless_per_operator_under_concurrent_runs(
    own_database: str, db: asyncpg.Connection
) -> None:
    made = [await account(db, operator="north" if n % 3 == 0 else "default") for n in range(60)]
    cat = await catalog(db)
    conns = [await asyncpg.connect(own_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(bill_run(c, cat, SETTINGS, NOV, today=ISSUED) for c in conns))
    finally:
        for c in conns:
            await c.close()
    # every account billed once, by whichever run got there first
    assert sorted(a for r in results for a in r.numbers) == sorted(made)
    rows = await db.fetch("select operator_id, number from invoices order by operator_id, number")
    for operator, prefix, count in (("default", "DT-", 40), ("north", "NN-", 20)):
        numbers = [r["number"] for r in rows if r["operator_id"] == operator]
        assert numbers == [f"{prefix}2026-{n:06d}" for n in range(1, count + 1)]


async def test_a_plan_change_prorates_both_plans(db: asyncpg.Connection) -> None:
    a = await account(db)
    change = datetime(2026, 11, 21, tzinfo=UTC)
    await db.execute("update account_plans set ended_at = $2 where account_id = $1", a, change)
    await db.execute(
        "insert into account_plans (account_id, plan, started_at) values ($1, 'demo-plus', $2)", a, change
    )
    result = await bill_run(db, await catalog(db), SETTINGS, NOV, today=ISSUED, account_id=a)
    lines = {line.description: line.amount for line in result.bills[0].draft.lines}
    assert lines == {
        "subscription (demo), 20 of 30 days": 6_660_000,
        "subscription (demo-plus), 10 of 30 days": 6_660_000,  # 19.99 x 10 / 30 = 6.6633 -> 6.66
        "activation (demo-plus)": 5_000_000,
    }


async def test_a_prepaid_statement_opens_where_the_last_closed(db: asyncpg.Connection) -> None:
    a = await account(db, "prepaid")
    await ledger(
        db,
        a,
        ("topup", None, 0, 20 * EUR, datetime(2026, 10, 2, tzinfo=UTC)),
        ("usage", "data", 1000, -3 * EUR, datetime(2026, 10, 5, tzinfo=UTC)),
        ("topup", None, 0, 10 * EUR, NOV_10),
        ("usage", "voice", 60, -1_500_000, NOV_10),
        ("refund", "voice", 0, 500_000, NOV_10),
    )
    oct_run = await bill_run(
        db, await catalog(db), SETTINGS, parse_period("2026-10"), today=date(2026, 11, 1)
    )
    assert [(b.opening, b.closing) for b in oct_run.bills] == [(0, 17 * EUR)]
    nov = await bill_run(db, await catalog(db), SETTINGS, NOV, today=ISSUED)
    statement = nov.bills[0]
    assert (statement.kind, statement.opening, statement.closing) == ("statement", 17 * EUR, 26 * EUR)
    assert [(line.kind, line.amount) for line in statement.draft.lines] == [
        ("topup", 10 * EUR),
        ("usage", -1_500_000),
        ("refund", 500_000),
    ]
    assert nov.numbers == {}  # statements take no invoice number
    doc = await fetch_document(db, f"{a}/2026-11")
    assert doc is not None and doc.closing == 26 * EUR


async def test_occ_bill_run_and_invoice_commands(
    own_database: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    a = await account(db)
    await ledger(db, a, ("usage", "data", 1048576, -10_000, NOV_10))
    config = write_config(tmp_path / "occ.toml", "redis://127.0.0.1:6379/0", "unused", own_database)
    config.write_text(
        config.read_text()
        + '\n[billing.operators.default]\nname = "Demo Telecom"\ninvoice_prefix = "DT-"\n'
        + 'default_tax = "0.20"\n'
    )
    bad = run_occ(config, "bill", "run", "--period", "2026-13")
    assert bad.code == 2 and "YYYY-MM" in bad.err
    dry = run_occ(config, "bill", "run", "--period", "2026-11", "--dry-run", "--issued-on", "2026-12-01")
    assert dry.code == 0 and "would issue 1 invoices (12.00 EUR)" in dry.out, dry
    done = run_occ(config, "bill", "run", "--period", "2026-11", "--issued-on", "2026-12-01", "--json")
    assert done.code == 0, done
    assert done.json()["bills"][0]["number"] == "DT-2026-000001" and done.json()["totals"] == {"EUR": "12.00"}
    early = run_occ(config, "bill", "run", "--period", "2026-11", "--issued-on", "2026-11-30")
    assert early.code == 2 and "not over until 2026-12-01" in early.err
    again = run_occ(config, "bill", "run", "--period", "2026-11", "--issued-on", "2026-12-02")
    assert "issued 0 invoices" in again.out and "1 already billed" in again.out
    listed = run_occ(config, "invoice", "list", "--period", "2026-11", "--json")
    assert [(i["number"], i["total"], i["status"]) for i in listed.json()] == [
        ("DT-2026-000001", "12.00", "open")
    ]
    shown = run_occ(config, "invoice", "show", "DT-2026-000001")
    assert shown.code == 0 and "subscription (demo), month" in shown.out and "Demo Telecom" in shown.out
    missing = run_occ(config, "invoice", "show", "DT-2026-999999")
    assert missing.code == 1 and missing.err.count("\n") == 1


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed")
async def test_invoices_render_as_html_and_a_pdf_that_reads_like_an_invoice(
    own_database: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    a = await account(db)
    b = await account(db, "prepaid")
    await ledger(db, a, ("usage", "voice", 120, -400_000, NOV_10))
    await ledger(db, b, ("topup", None, 0, 5 * EUR, NOV_10))
    await bill_run(db, await catalog(db), SETTINGS, NOV, today=ISSUED)
    config = write_config(tmp_path / "occ.toml", "redis://127.0.0.1:6379/0", "unused", own_database)
    config.write_text(
        config.read_text()
        + '\n[billing.operators.default]\nname = "Demo Telecom"\naddress = "1 Example Street\\nLondon"\n'
        + 'invoice_prefix = "DT-"\nbank = "IBAN GB00 0000"\n'
    )
    pdf = tmp_path / "invoice.pdf"
    written = run_occ(config, "invoice", "pdf", "DT-2026-000001", "-o", str(pdf))
    assert written.code == 0, written
    assert pdf.read_bytes().startswith(b"%PDF-")
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    for expected in (
        "Invoice",
        "DT-2026-000001",
        "Demo Telecom",
        "Ada Lovelace",
        "2026-12-15",
        "voice",
        "Total",
    ):
        assert expected in text, (expected, text)
    # the issuer details are the ones stored with the invoice, whatever the configuration says now
    assert "1 Example Street" not in text
    out = tmp_path / "out"
    batch = run_occ(config, "invoice", "render", "--period", "2026-11", "--output", str(out))
    assert batch.code == 0 and "4 files for 2 documents" in batch.out, batch
    assert sorted(p.name for p in (out / "default").iterdir()) == [
        "DT-2026-000001.html",
        "DT-2026-000001.pdf",
        f"statement_{b}_2026-11.html",
        f"statement_{b}_2026-11.pdf",
    ]
    html = (out / "default" / "DT-2026-000001.html").read_text()
    assert "Ada Lovelace" in html and "DT-2026-000001" in html
    statement = (out / "default" / f"statement_{b}_2026-11.html").read_text()
    assert "Opening balance" in statement and "Closing balance" in statement


LEDGER_ROW = st.tuples(
    st.sampled_from(["usage", "event", "refund", "adjustment", "topup", "expiry"]),
    st.sampled_from(["data", "voice", "sms", None]),
    st.integers(0, 10**7),
    st.integers(-(10**9), 10**9),
    st.integers(0, 29 * 86400),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(LEDGER_ROW, max_size=25))
async def test_property_an_invoice_is_its_lines_plus_taxes_for_any_ledger(
    db: asyncpg.Connection, rows: list[tuple[str, str | None, int, int, int]]
) -> None:
    a = await account(db)
    signed = [(k, s, u, -abs(m) if k in ("usage", "event") else abs(m), t) for k, s, u, m, t in rows]
    await ledger(db, a, *((k, s, u, m, NOV.start_at + timedelta(seconds=t)) for k, s, u, m, t in signed))
    result = await bill_run(db, await catalog(db), SETTINGS, NOV, today=ISSUED, account_id=a)
    doc = await fetch_document(db, result.numbers[a])
    assert doc is not None
    assert doc.subtotal == sum(line.amount for line in doc.lines)
    assert doc.tax == sum(tax for _, _, tax in doc.taxes) and doc.total == doc.subtotal + doc.tax
    for rate, base, tax in doc.taxes:
        assert base == sum(line.amount for line in doc.lines if line.tax_rate == rate)
        assert abs(tax * 1_000_000 - base * rate) <= 5_000 * 1_000_000  # within half a cent
    # usage lines carry what the ledger charged, each to the cent
    charged = -sum(m for k, _, _, m, _ in signed if k in ("usage", "event"))
    usage = sum(line.amount for line in doc.lines if line.kind == "usage")
    assert abs(usage - charged) <= 5_000 * max(1, sum(1 for line in doc.lines if line.kind == "usage"))
