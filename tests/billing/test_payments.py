"""Payments, credit notes, dunning and the GL journal on real PostgreSQL and Redis."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest

from balance.records import AccountStatus
from balance.store import BalanceStore
from billing.billrun import bill_run
from billing.credit_notes import issue_credit_note
from billing.dunning import dunning_run
from billing.gl import check_balanced, journal
from billing.invoice_model import BillingError, parse_period
from billing.invoices import fetch_document
from billing.payments import PaymentFileError, import_payments, read_payments
from billing.provisioning import Provisioning
from billing.settings import DunningSettings
from billing.tariff_store import load_catalog
from tests.billing.test_billrun import SETTINGS
from tests.billing.test_recurring import live_account
from tests.occ.test_provisioning_cli import run_occ, write_config

EUR = 1_000_000
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


async def invoiced(
    db: asyncpg.Connection, store: BalanceStore, periods: tuple[str, ...] = ("2026-10", "2026-11")
) -> str:
    """A postpaid account with one invoice per period (the demo subscription, 9.99 + 20 % tax = 11.99)."""
    a = await live_account(db, store, "postpaid", SINCE, limit=50 * EUR)
    catalog = await load_catalog(db)
    for label in periods:
        period = parse_period(label)
        await bill_run(db, catalog, SETTINGS, period, today=period.end, account_id=a)
    return a


def test_a_payment_file_with_a_bad_line_is_refused_whole() -> None:
    good = "date,amount,reference,payer\n2026-12-02,11.99,BANK-1,DT-2026-000001\n"
    assert [r.amount for r in read_payments(good, "f.csv")] == [11_990_000]
    with pytest.raises(PaymentFileError, match=r"f\.csv:1: expected the header"):
        read_payments("when,amount,ref,who\n", "f.csv")
    bad = good + "2026-13-01,5.00,B2,x\n2026-12-03,-1,B3,x\n2026-12-03,1.5,,x\n2026-12-03,1\n"
    with pytest.raises(PaymentFileError) as caught:
        read_payments(bad, "f.csv")
    message = str(caught.value)
    for fragment in ("f.csv:3: date", "f.csv:4: amount", "f.csv:5: reference", "f.csv:6: expected 4 fields"):
        assert fragment in message


async def test_postpaid_payments_pay_the_named_then_the_oldest_invoices_once(
    db: asyncpg.Connection, store: BalanceStore
) -> None:
    a = await invoiced(db, store)
    oct_no, nov_no = "DT-2026-000001", "DT-2026-000002"
    rows = read_payments(
        "date,amount,reference,payer\n"
        f"2026-12-02,5.00,BANK-1,{nov_no}\n"  # names November: pays it first
        f"2026-12-03,15.00,BANK-2,{a}\n"  # the account: October (oldest), then the rest of November
        "2026-12-03,1.00,BANK-3,nobody\n",
        "bank.csv",
    )
    result = await import_payments(db, store, rows, "bank.csv", date(2026, 12, 3))
    assert [(r.reference, paid) for r, _, paid in result.imported] == [
        ("BANK-1", [(nov_no, 5 * EUR)]),
        ("BANK-2", [(oct_no, 11_990_000), (nov_no, 3_010_000)]),
    ]
    assert [r.reference for r in result.unmatched] == ["BANK-3"]
    again = await import_payments(db, store, rows, "bank.csv", date(2026, 12, 4))
    assert ([r.reference for r in again.duplicates], again.imported) == (["BANK-1", "BANK-2"], [])
    oct_doc, nov_doc = await fetch_document(db, oct_no), await fetch_document(db, nov_no)
    assert oct_doc is not None and nov_doc is not None
    assert (oct_doc.status, nov_doc.paid, nov_doc.status) == ("paid", 8_010_000, "open")
    # money paid ahead waits on the payment and pays the next invoice as it is issued
    await import_payments(
        db,
        store,
        read_payments(f"date,amount,reference,payer\n2026-12-05,20.00,BANK-4,{a}\n", "b2"),
        "b2",
        date(2026, 12, 5),
    )
    assert (
        await db.fetchval("select unallocated from payments where reference = 'BANK-4'")
        == 20 * EUR - 3_980_000
    )
    await bill_run(
        db, await load_catalog(db), SETTINGS, parse_period("2026-12"), today=date(2027, 1, 1), account_id=a
    )
    dec = await fetch_document(db, "DT-2027-000001")
    assert dec is not None and dec.status == "paid"


async def test_a_prepaid_payment_credits_the_balance_once(
    db: asyncpg.Connection, store: BalanceStore
) -> None:
    a = await live_account(db, store, "prepaid", SINCE)
    rows = read_payments(f"date,amount,reference,payer\n2026-12-02,25.00,PSP-77,{a}\n", "psp.csv")
    await import_payments(db, store, rows, "psp.csv", date(2026, 12, 2))
    await import_payments(db, store, rows, "psp.csv", date(2026, 12, 3))
    assert (await store.query(a)).balance == 25 * EUR
    assert await db.fetchval("select credited_live_at is not null from payments where reference = 'PSP-77'")


async def test_credit_notes_split_like_their_invoice_and_share_its_numbering(
    db: asyncpg.Connection, store: BalanceStore
) -> None:
    await invoiced(db, store, ("2026-11",))
    with pytest.raises(BillingError, match="left to credit"):
        await issue_credit_note(db, SETTINGS, "DT-2026-000001", 12 * EUR, "too much", date(2026, 12, 5))
    with pytest.raises(BillingError, match="whole cents"):
        await issue_credit_note(db, SETTINGS, "DT-2026-000001", 1, "dust", date(2026, 12, 5))
    note = await issue_credit_note(
        db, SETTINGS, "DT-2026-000001", 11_990_000, "service outage", date(2026, 12, 5)
    )
    assert note == "DT-2026-000002"
    doc = await fetch_document(db, note)
    assert doc is not None
    assert (doc.kind, doc.subtotal, doc.tax, doc.total, doc.credits_number) == (
        "credit_note", 9_990_000, 2_000_000, 11_990_000, "DT-2026-000001"
    )  # fmt: skip
    invoice = await fetch_document(db, "DT-2026-000001")
    assert invoice is not None and invoice.status == "paid"  # nothing left to pay


async def test_dunning_reminds_suspends_live_and_reactivates_when_paid(
    db: asyncpg.Connection, store: BalanceStore
) -> None:
    a = await invoiced(db, store, ("2026-11",))  # issued 2026-12-01, due 2026-12-15
    by_hand = await invoiced(db, store, ("2026-11",))
    prov = Provisioning(db, store)
    await prov.set_status(by_hand, AccountStatus.SUSPENDED, now=datetime.now(UTC))
    rules = DunningSettings(reminder_after_days=7, suspend_after_days=21)
    early = await dunning_run(prov, rules, date(2026, 12, 20))
    assert (early.reminders, early.suspended) == ([], [])
    reminded = await dunning_run(prov, rules, date(2026, 12, 23))
    assert {acct for _, acct in reminded.reminders} == {a, by_hand} and reminded.suspended == []
    cut = await dunning_run(prov, rules, date(2027, 1, 6))
    assert cut.suspended == [a] and cut.reminders == []
    assert (await store.query(a)).account.status is AccountStatus.SUSPENDED  # the live side cuts sessions
    assert await db.fetchval("select status from accounts where account_id = $1", a) == "suspended"
    assert (await dunning_run(prov, rules, date(2027, 1, 6))).suspended == []
    # a third account: suspended by dunning, then reactivated and suspended again by hand
    toggled = await invoiced(db, store, ("2026-11",))
    third = await dunning_run(prov, rules, date(2027, 1, 6))
    assert third.suspended == [toggled], third
    await prov.set_status(toggled, AccountStatus.ACTIVE, now=datetime.now(UTC))
    await prov.set_status(toggled, AccountStatus.SUSPENDED, now=datetime.now(UTC))
    for account_id in (a, by_hand, toggled):
        rows = read_payments(
            f"date,amount,reference,payer\n2027-01-07,11.99,P-{account_id},{account_id}\n", "p"
        )
        await import_payments(db, store, rows, "p", date(2027, 1, 7))
    back = await dunning_run(prov, rules, date(2027, 1, 8))
    assert back.reactivated == [a]  # the accounts suspended by hand stay suspended
    assert (await store.query(toggled)).account.status is AccountStatus.SUSPENDED
    assert (await store.query(a)).account.status is AccountStatus.ACTIVE
    assert (await store.query(by_hand)).account.status is AccountStatus.SUSPENDED


async def test_the_journal_balances_and_occ_gl_export_writes_it(
    own_database: str, db: asyncpg.Connection, store: BalanceStore, tmp_path: Path
) -> None:
    a = await invoiced(db, store, ("2026-11",))
    await issue_credit_note(db, SETTINGS, "DT-2026-000001", 2_000_000, "goodwill", date(2026, 12, 3))
    await import_payments(
        db,
        store,
        read_payments(f"date,amount,reference,payer\n2026-12-04,9.99,B-9,{a}\n", "b"),
        "b",
        date(2026, 12, 4),
    )
    p = await live_account(db, store, "prepaid", SINCE)
    await db.execute(
        "insert into ledger_entries (entry_id, account_id, kind, service, units, amount, occurred_at) values"
        " ('t1', $1, 'topup', null, null, 30000000, $2), ('u1', $1, 'usage', 'data', 5, -4000000, $2)",
        p,
        datetime(2026, 12, 10, tzinfo=UTC),
    )
    lines = await journal(db, parse_period("2026-12"))
    debits, credits = check_balanced(lines)
    assert debits == credits > 0
    postings = {(line.entry, line.account): (line.debit, line.credit) for line in lines}
    assert postings[("invoice DT-2026-000001", "1100")] == (11_990_000, 0)
    assert postings[("invoice DT-2026-000001", "4000-fees")] == (0, 9_990_000)
    assert postings[("invoice DT-2026-000001", "2200")] == (0, 2_000_000)
    assert postings[("credit note DT-2026-000002", "1100")] == (0, 2_000_000)
    assert postings[("payment B-9 to DT-2026-000001", "1100")] == (0, 9_990_000)
    assert postings[("prepaid usage data 2026-12", "4000-data")] == (0, 4 * EUR)
    assert postings[("prepaid top-ups 2026-12", "1000")] == (30 * EUR, 0)
    config = write_config(tmp_path / "occ.toml", "redis://127.0.0.1:6379/0", store.keys.prefix, own_database)
    out = tmp_path / "gl.csv"
    done = run_occ(config, "gl", "export", "--period", "2026-12", "-o", str(out))
    assert done.code == 0 and "debits" in done.out, done
    text = out.read_text()
    assert text.startswith("date,entry,account,account_name,debit,credit,currency\n")
    assert "Accounts receivable" in text and "Deferred revenue" in text
    bad = run_occ(config, "payments", "import", str(tmp_path / "missing.csv"))
    assert bad.code == 2 and "cannot read" in bad.err


async def test_crediting_a_paid_invoice_turns_the_excess_into_customer_credit(
    db: asyncpg.Connection, store: BalanceStore
) -> None:
    a = await invoiced(db, store, ("2026-11",))
    pay = read_payments(f"date,amount,reference,payer\n2026-12-02,11.99,PAID-1,{a}\n", "p")
    await import_payments(db, store, pay, "p", date(2026, 12, 2))
    await issue_credit_note(db, SETTINGS, "DT-2026-000001", 4 * EUR, "outage", date(2026, 12, 5))
    invoice = await fetch_document(db, "DT-2026-000001")
    assert invoice is not None and (invoice.paid, invoice.credited, invoice.status) == (
        7_990_000,
        4 * EUR,
        "paid",
    )
    assert await db.fetchval("select unallocated from payments where reference = 'PAID-1'") == 4 * EUR
    debits, credits = check_balanced(await journal(db, parse_period("2026-12")))
    assert debits == credits
    # the customer credit pays the next invoice
    await bill_run(
        db, await load_catalog(db), SETTINGS, parse_period("2026-12"), today=date(2027, 1, 1), account_id=a
    )
    dec = await fetch_document(db, "DT-2027-000001")
    assert dec is not None and dec.paid == 4 * EUR


async def test_a_closed_account_is_billed_no_more_fees(db: asyncpg.Connection, store: BalanceStore) -> None:
    a = await invoiced(db, store, ("2026-11",))
    await Provisioning(db, store).set_status(a, AccountStatus.CLOSED, now=datetime(2026, 12, 10, tzinfo=UTC))
    dec = await bill_run(
        db, await load_catalog(db), SETTINGS, parse_period("2026-12"), today=date(2027, 1, 1), account_id=a
    )
    assert [line.description for line in dec.bills[0].draft.lines] == ["subscription (demo), 9 of 31 days"]
    jan = await bill_run(
        db, await load_catalog(db), SETTINGS, parse_period("2027-01"), today=date(2027, 2, 1), account_id=a
    )
    assert (jan.bills, jan.empty) == ([], 1)


async def test_partial_credit_notes_over_two_tax_rates_give_back_each_rate_exactly(
    db: asyncpg.Connection, store: BalanceStore
) -> None:
    a = await live_account(db, store, "postpaid", SINCE, limit=50 * EUR)
    await db.execute(
        "insert into ledger_entries (entry_id, account_id, kind, service, units, amount, occurred_at)"
        " values ('d1', $1, 'usage', 'data', 1, -38720000, $2)",
        a,
        datetime(2026, 11, 5, tzinfo=UTC),
    )
    zero_fees = SETTINGS.operators["default"]
    import msgspec

    settings = msgspec.structs.replace(
        SETTINGS,
        operators={"default": msgspec.structs.replace(zero_fees, default_tax="0.00", taxes={"data": "0.20"})},
    )
    await bill_run(
        db, await load_catalog(db), settings, parse_period("2026-11"), today=date(2026, 12, 1), account_id=a
    )
    invoice = await fetch_document(db, "DT-2026-000001")
    assert invoice is not None and len(invoice.taxes) == 2
    notes = []
    left = invoice.total
    for part in (11_540_000, 3_330_000, 7_770_000):  # three partial notes, then the rest
        notes.append(
            await issue_credit_note(db, settings, "DT-2026-000001", min(part, left), "p", date(2026, 12, 5))
        )
        left -= min(part, left)
    notes.append(await issue_credit_note(db, settings, "DT-2026-000001", left, "rest", date(2026, 12, 6)))
    by_rate: dict[int, list[int]] = {}
    for number in notes:
        doc = await fetch_document(db, number)
        assert doc is not None
        for rate, base, tax in doc.taxes:
            totals = by_rate.setdefault(rate, [0, 0])
            totals[0] += base
            totals[1] += tax
    assert {rate: tuple(t) for rate, t in by_rate.items()} == {
        rate: (base, tax) for rate, base, tax in invoice.taxes
    }


async def test_a_reopened_account_pays_its_plan_again_but_not_its_once_fees(
    db: asyncpg.Connection, store: BalanceStore
) -> None:
    a = await invoiced(db, store, ("2026-11",))
    prov = Provisioning(db, store)
    await prov.set_status(a, AccountStatus.CLOSED, now=datetime(2026, 12, 10, tzinfo=UTC))
    await prov.set_status(a, AccountStatus.ACTIVE, now=datetime(2026, 12, 20, tzinfo=UTC))
    dec = await bill_run(
        db, await load_catalog(db), SETTINGS, parse_period("2026-12"), today=date(2027, 1, 1), account_id=a
    )
    assert sorted(line.description for line in dec.bills[0].draft.lines) == [
        "subscription (demo), 12 of 31 days",
        "subscription (demo), 9 of 31 days",
    ]
