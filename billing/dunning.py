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

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import asyncpg

from balance.records import AccountStatus
from balance.store import StoreUnavailable, UnknownAccount
from billing.provisioning import Provisioning, ProvisioningError
from billing.settings import DunningSettings


@dataclass
class DunningResult:
    on: date
    reminders: list[tuple[str, str]] = field(default_factory=list)  # invoice number, account
    suspended: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # account, reason

    @property
    def failed_ids(self) -> set[str]:
        return {a for a, _ in self.failed}


async def dunning_run(provisioning: Provisioning, settings: DunningSettings, on: date) -> DunningResult:
    conn = provisioning.conn
    result = DunningResult(on)
    await _resync_live(provisioning, result)
    overdue = await conn.fetch(
        "select i.invoice_id, i.number, i.account_id, i.due_on,"
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
            await _event(conn, invoice_id, account_id, "reminder", on, None)
            result.reminders.append((str(row["number"]), account_id))
        if late < settings.suspend_after_days or row["suspended"] or account_id in result.failed_ids:
            continue
        status = await conn.fetchval("select status from accounts where account_id = $1", account_id)
        if status == AccountStatus.ACTIVE.value:
            if await _set_status(
                provisioning, account_id, AccountStatus.SUSPENDED, [invoice_id], "suspended", on, result
            ):
                result.suspended.append(account_id)
        elif status == AccountStatus.SUSPENDED.value:
            ours = await _our_suspension(conn, account_id)
            if ours is not None:  # suspended by dunning for an earlier invoice: this one keeps it so too
                await _event(conn, invoice_id, account_id, "suspended", on, ours)

    # accounts dunning suspended, whose status nobody changed since, and whose suspending invoices are
    # all settled now
    settled = await conn.fetch(
        "select e.account_id, array_agg(e.invoice_id) as invoices from dunning_events e"
        " join invoices i using (invoice_id) join accounts a on a.account_id = e.account_id"
        " where e.step = 'suspended' and a.status = 'suspended'"
        " and not exists (select 1 from dunning_events r"
        "  where r.invoice_id = e.invoice_id and r.step = 'reactivated')"
        " group by e.account_id, a.status_changed_at"
        " having bool_and(i.total <= i.paid + i.credited) and a.status_changed_at <= max(e.status_at)"
    )
    for row in settled:
        account_id = str(row["account_id"])
        invoices = [int(i) for i in row["invoices"]]
        if await _set_status(
            provisioning, account_id, AccountStatus.ACTIVE, invoices, "reactivated", on, result
        ):
            result.reactivated.append(account_id)
    return result


async def _set_status(
    provisioning: Provisioning,
    account_id: str,
    status: AccountStatus,
    invoices: list[int],
    step: str,
    on: date,
    result: DunningResult,
) -> bool:
    """The status change and its dunning events in one transaction around provisioning's PostgreSQL and
    Redis writes: a Redis failure rolls the events and the status back, so nothing is half done."""
    conn = provisioning.conn
    now = datetime.now(UTC)
    try:
        async with conn.transaction():
            for invoice_id in invoices:
                await _event(conn, invoice_id, account_id, step, on, now)
            await provisioning.set_status(account_id, status, now=now)
    except (ProvisioningError, StoreUnavailable) as exc:
        result.failed.append((account_id, str(exc)))
        # PostgreSQL rolled back; Redis may have taken the change before the failure: put it back
        with contextlib.suppress(StoreUnavailable, UnknownAccount):
            kept = await conn.fetchval("select status from accounts where account_id = $1", account_id)
            await provisioning.store.set_status(account_id, AccountStatus(kept))
        return False
    return True


async def _resync_live(provisioning: Provisioning, result: DunningResult) -> None:
    """Accounts dunning ever touched get their PostgreSQL status pushed to Redis again, should an earlier
    run have changed one side only (a commit lost after the Redis write)."""
    rows = await provisioning.conn.fetch(
        "select distinct a.account_id, a.status from dunning_events e join accounts a using (account_id)"
        " where e.step in ('suspended', 'reactivated')"
    )
    for row in rows:
        try:
            await provisioning.store.set_status(str(row["account_id"]), AccountStatus(row["status"]))
        except (UnknownAccount, StoreUnavailable) as exc:
            result.failed.append((str(row["account_id"]), f"live status not refreshed: {exc}"))


async def _our_suspension(conn: asyncpg.Connection, account_id: str) -> datetime | None:
    """When dunning suspended the account, if its current suspension is dunning's (an open suspension
    event, and nobody changed the status since); None when it was suspended by hand."""
    at: datetime | None = await conn.fetchval(
        "select max(e.status_at) from dunning_events e join accounts a using (account_id)"
        " where e.account_id = $1 and e.step = 'suspended'"
        " and not exists (select 1 from dunning_events r where r.invoice_id = e.invoice_id"
        "  and r.step = 'reactivated')"
        " having max(a.status_changed_at) <= max(e.status_at)",
        account_id,
    )
    return at


async def _event(
    conn: asyncpg.Connection,
    invoice_id: int,
    account_id: str,
    step: str,
    on: date,
    status_at: datetime | None,
) -> None:
    await conn.execute(
        "insert into dunning_events (invoice_id, account_id, step, happened_on, status_at)"
        " values ($1, $2, $3, $4, $5) on conflict do nothing",
        invoice_id,
        account_id,
        step,
        on,
        status_at,
    )
