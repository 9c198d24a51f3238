"""Dunning: overdue invoices get a reminder, then the account is suspended, and reactivated once paid.

``occ dunning run --date D`` looks at every postpaid invoice still open (total above what was paid and
credited) whose due date has passed: after ``reminder_after_days`` it records a reminder, after
``suspend_after_days`` it suspends the account — through provisioning, so PostgreSQL and Redis both
hold the status and the live side denies new sessions and cuts running ones. An account this run
suspended is reactivated by a later run once every invoice that led to the suspension is settled; one
suspended by hand, or blocked, is left alone. Each step is recorded once per invoice, so running it again
on the same date does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import asyncpg

from balance.records import AccountStatus
from billing.provisioning import Provisioning, ProvisioningError
from billing.settings import DunningSettings


@dataclass
class DunningResult:
    on: date
    reminders: list[tuple[str, str]] = field(default_factory=list)  # invoice number, account
    suspended: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # account, reason


async def dunning_run(provisioning: Provisioning, settings: DunningSettings, on: date) -> DunningResult:
    conn = provisioning.conn
    result = DunningResult(on)
    now = datetime.now(UTC)
    overdue = await conn.fetch(
        "select i.invoice_id, i.number, i.account_id, i.due_on, a.status,"
        " exists (select 1 from dunning_events e where e.invoice_id = i.invoice_id and e.step = 'reminder')"
        "  as reminded,"
        " exists (select 1 from dunning_events e where e.invoice_id = i.invoice_id and e.step = 'suspended')"
        "  as suspended"
        " from invoices i join accounts a using (account_id)"
        " where i.kind = 'invoice' and i.total > i.paid + i.credited and i.due_on < $1"
        " order by i.account_id, i.due_on, i.invoice_id",
        on,
    )
    for row in overdue:
        late = (on - row["due_on"]).days
        invoice_id, account_id = int(row["invoice_id"]), str(row["account_id"])
        if late >= settings.reminder_after_days and not row["reminded"]:
            await _event(conn, invoice_id, account_id, "reminder", on)
            result.reminders.append((str(row["number"]), account_id))
        if late < settings.suspend_after_days or row["suspended"]:
            continue
        status = (
            AccountStatus(row["status"]) if account_id not in result.suspended else AccountStatus.SUSPENDED
        )
        if status is AccountStatus.ACTIVE:
            try:
                await provisioning.set_status(account_id, AccountStatus.SUSPENDED, now=now)
            except ProvisioningError as exc:
                result.failed.append((account_id, str(exc)))
                continue
            result.suspended.append(account_id)
        if account_id in result.suspended or (
            status is AccountStatus.SUSPENDED and await _ours(conn, account_id)
        ):
            await _event(conn, invoice_id, account_id, "suspended", on)

    # accounts dunning suspended whose every suspending invoice is settled now
    settled = await conn.fetch(
        "select e.account_id from dunning_events e join invoices i using (invoice_id)"
        " join accounts a on a.account_id = e.account_id"
        " where e.step = 'suspended' and a.status = 'suspended'"
        " and not exists (select 1 from dunning_events r"
        "  where r.invoice_id = e.invoice_id and r.step = 'reactivated')"
        " group by e.account_id having bool_and(i.total <= i.paid + i.credited)"
    )
    for row in settled:
        account_id = str(row[0])
        try:
            await provisioning.set_status(account_id, AccountStatus.ACTIVE, now=now)
        except ProvisioningError as exc:
            result.failed.append((account_id, str(exc)))
            continue
        await conn.execute(
            "insert into dunning_events (invoice_id, account_id, step, happened_on)"
            " select invoice_id, account_id, 'reactivated', $2 from dunning_events"
            " where account_id = $1 and step = 'suspended' on conflict do nothing",
            account_id,
            on,
        )
        result.reactivated.append(account_id)
    return result


async def _ours(conn: asyncpg.Connection, account_id: str) -> bool:
    """The account is suspended by dunning (an open suspension of ours), not by hand."""
    return bool(
        await conn.fetchval(
            "select 1 from dunning_events e where e.account_id = $1 and e.step = 'suspended'"
            " and not exists (select 1 from dunning_events r where r.invoice_id = e.invoice_id"
            "  and r.step = 'reactivated')",
            account_id,
        )
    )


async def _event(conn: asyncpg.Connection, invoice_id: int, account_id: str, step: str, on: date) -> None:
    await conn.execute(
        "insert into dunning_events (invoice_id, account_id, step, happened_on) values ($1, $2, $3, $4)"
        " on conflict do nothing",
        invoice_id,
        account_id,
        step,
        on,
    )
