"""Reconcile: every account's live money in Redis against what PostgreSQL explains.

Invariant (ARCHITECTURE.md): balance + open reservations = opening + credits - committed debits, i.e.
the sum of the account's ledger amounts. Charging goes on while this runs, so the two sides are compared
at one instant per group of accounts: ``snapshot.lua`` reads their money together with the position of
their partition's charge stream, and only ledger rows up to that position count. Records up to it
that the sink has not stored yet are still in the stream (one leaves Redis only after its commit), so
they are added from there: a record is counted from PostgreSQL or from Redis, never both, never neither.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import asyncpg

from balance.charges import ChargeRecord, ChargeStreams

_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class AccountCheck:
    account_id: str
    balance: int | None  # available money in Redis; None: the live store lacks the account
    reserved: int | None
    ledger: int  # sum of the ledger rows up to the snapshot
    in_flight: int  # records up to the snapshot the sink has not stored yet
    in_database: bool  # the accounts table has it

    @property
    def live(self) -> int | None:
        if self.balance is None or self.reserved is None:
            return None
        return self.balance + self.reserved

    @property
    def drift(self) -> int:
        """Live money minus what PostgreSQL (and the records in flight) explain."""
        return (self.live or 0) - self.ledger - self.in_flight

    @property
    def problem(self) -> str | None:
        if self.live is None:
            return "not in the live store"
        if not self.in_database:
            return "not in the accounts table"
        if self.drift:
            return "live money differs from the ledger"
        return None


@dataclass(frozen=True, slots=True)
class Report:
    checked: int
    drifts: list[AccountCheck]


async def reconcile(
    conn: asyncpg.Connection,
    streams: ChargeStreams,
    *,
    only: Collection[str] | None = None,
    registered: bool = True,
) -> Report:
    """Every account of the database and the live store, or ``only`` these. ``registered=False`` checks
    the money alone (accounts a benchmark put straight into the live store have no accounts row)."""
    if only is not None:
        accounts = sorted(set(only))
        known = (
            set(accounts)
            if not registered
            else {
                str(r[0])
                for r in await conn.fetch(
                    "select account_id from accounts where account_id = any($1)", accounts
                )
            }
        )
    else:
        known = {str(r[0]) for r in await conn.fetch("select account_id from accounts")}
        charged = {str(r[0]) for r in await conn.fetch("select distinct account_id from ledger_entries")}
        accounts = sorted(known | charged | await streams.account_ids())

    by_partition: dict[int, list[str]] = defaultdict(list)
    for account_id in accounts:
        by_partition[streams.keys.partition(account_id)].append(account_id)
    money: dict[str, tuple[int, int] | None] = {}
    cutoff: dict[str, tuple[int, int]] = {}
    records: list[ChargeRecord] = []
    for partition, members in sorted(by_partition.items()):
        newest = (0, 0)
        for start in range(0, len(members), _CHUNK):
            chunk = members[start : start + _CHUNK]
            last, found = await streams.snapshot(partition, chunk)
            position = _position(last)
            newest = max(newest, position)
            money.update(found)
            cutoff.update((a, position) for a in chunk)
        if newest > (0, 0):
            records += await streams.entries_up_to(partition, f"{newest[0]}-{newest[1]}")

    # One PostgreSQL snapshot, taken after the streams were read, for both the sums and the question
    # which of the records read are stored: a record the sink committed meanwhile is either in that
    # snapshot (and counted from it) or was still in the stream when it was read.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        in_flight: dict[str, int] = defaultdict(int)
        for record in await _not_stored(conn, records):
            if (record.stream_ms, record.stream_seq) <= cutoff.get(record.account_id, (0, 0)):
                in_flight[record.account_id] += record.amount
        rows = await conn.fetch(
            "select c.account_id, coalesce(sum(l.amount), 0)::bigint as total"
            " from unnest($1::text[], $2::bigint[], $3::bigint[]) as c (account_id, ms, seq)"
            " left join ledger_entries l on l.account_id = c.account_id"
            "  and (l.stream_ms is null or (l.stream_ms, l.stream_seq) <= (c.ms, c.seq))"
            " group by c.account_id",
            accounts,
            [cutoff[a][0] for a in accounts],
            [cutoff[a][1] for a in accounts],
        )
    ledger = {str(r["account_id"]): int(r["total"]) for r in rows}
    checks = []
    for a in accounts:
        live = money.get(a)
        checks.append(
            AccountCheck(
                account_id=a,
                balance=live[0] if live else None,
                reserved=live[1] if live else None,
                ledger=ledger.get(a, 0),
                in_flight=in_flight.get(a, 0),
                in_database=a in known,
            )
        )
    return Report(checked=len(checks), drifts=[c for c in checks if c.problem is not None])


def _position(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def _not_stored(conn: asyncpg.Connection, records: Iterable[ChargeRecord]) -> list[ChargeRecord]:
    """The records the ledger does not hold yet (by its key: entry id and time)."""
    records = list(records)
    stored: set[tuple[str, object]] = set()
    for start in range(0, len(records), 10_000):
        ids = [r.entry_id for r in records[start : start + 10_000]]
        rows = await conn.fetch(
            "select entry_id, occurred_at from ledger_entries where entry_id = any($1)", ids
        )
        stored.update((str(r[0]), r[1]) for r in rows)
    return [r for r in records if (r.entry_id, r.occurred_at) not in stored]
