"""Bench accounts of ``occ bench diameter`` and the money conservation check after a run."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from balance.records import AccountKind, AccountRecord
from balance.store import BalanceStore, UnknownAccount
from occ.diameter.bench_load import ACCOUNT_OCTETS_LIMIT, OPENING, SERVICE, PhaseResult
from rating_core.rating import Usage, price_of
from rating_core.tariff import Catalog

# ---- bench accounts and the conservation check -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscriber:
    account_id: str
    msisdn: str


def bench_subscribers(run_id: str, count: int) -> list[Subscriber]:
    digits = str(int(run_id, 16) % 1_000_000).zfill(6)
    return [Subscriber(f"bench-{run_id}-{i}", f"999{digits}{i:06d}") for i in range(count)]


async def provision(store: BalanceStore, subscribers: Sequence[Subscriber], plan: str) -> None:
    """Prepaid accounts with ``OPENING`` money and an msisdn identity each, straight into the live store."""
    now = datetime.now(UTC)

    async def one(s: Subscriber) -> None:
        await store.put_account(
            AccountRecord(account_id=s.account_id, kind=AccountKind.PREPAID, currency="EUR", plan=plan)
        )
        await store.credit(s.account_id, OPENING, key=f"{s.account_id}-opening", reason="topup", now=now)
        await store.put_identity("msisdn", s.msisdn, s.account_id)

    await asyncio.gather(*(one(s) for s in subscribers))


async def remove(store: BalanceStore, subscribers: Sequence[Subscriber], run_id: str) -> int:
    """Delete the bench accounts' keys: account hashes, identities, stored answers, session owners.

    Their charge records stay in the partitions' charge streams (appended atomically with the money moves;
    they name the ``bench-<run>-`` accounts).
    """
    keys = [store.keys.account(s.account_id).account for s in subscribers]
    keys += [store.keys.identity("msisdn", s.msisdn) for s in subscribers]
    prefix = store.keys.prefix
    for pattern in (f"{prefix}:*:i:bench-{run_id}-*", f"{prefix}:so:bench*.test;{run_id};*"):
        cursor: Any = b"0"
        while True:
            cursor, found = await store.link.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 5000)
            keys.extend(k.decode() if isinstance(k, bytes) else str(k) for k in found)
            if cursor in (b"0", 0, "0"):
                break
    removed = 0
    for i in range(0, len(keys), 500):
        removed += int(await store.link.execute("UNLINK", *keys[i : i + 500]))
    # the reaper indexes hold "<account>|<session>" of open sessions: none after a clean run
    for index in sorted({store.keys.account(s.account_id).reaper for s in subscribers}):
        cursor = b"0"
        while True:
            cursor, flat = await store.link.execute(
                "ZSCAN", index, cursor, "MATCH", f"bench-{run_id}-*", "COUNT", 1000
            )
            members = flat[0::2]
            if members:
                removed += int(await store.link.execute("ZREM", index, *members))
            if cursor in (b"0", 0, "0"):
                break
    return removed


def session_price(catalog: Catalog, plan: str, pieces: Sequence[int], at: datetime) -> int:
    """What one data session's committed pieces cost, each rated as the continuation of the ones before."""
    rated_plan = catalog.plan(plan, at)
    amount = offset = prior = 0
    for quantity in pieces:
        rated = price_of(
            rated_plan, Usage(service=SERVICE, quantity=quantity, start=at, offset=offset, prior=prior)
        )
        amount += rated.amount
        offset += quantity
        prior += rated.raw
    return amount


def expected_charges(
    catalog: Catalog,
    plan: str,
    subscribers: Sequence[Subscriber],
    phases: Iterable[PhaseResult],
    at: datetime,
) -> dict[str, int]:
    expected = {s.account_id: 0 for s in subscribers}
    for phase in phases:
        for session in phase.sessions:
            account = subscribers[session.subscriber].account_id
            expected[account] += session_price(catalog, plan, session.pieces, at)
    return expected


@dataclass(frozen=True, slots=True)
class Conservation:
    status: str  # "ok" | "failed" | "unverified"
    accounts: int
    expected_micros: int
    charged_micros: int  # opening − balance − reserved, summed
    reserved_micros: int
    unanswered: int
    mismatches: tuple[dict[str, Any], ...]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "accounts": self.accounts,
            "expected_micros": self.expected_micros,
            "charged_micros": self.charged_micros,
            "reserved_micros": self.reserved_micros,
            "unanswered_requests": self.unanswered,
            "mismatches": list(self.mismatches),
        }


async def check_conservation(
    store: BalanceStore, expected: Mapping[str, int], *, opening: int = OPENING, unanswered: int = 0
) -> Conservation:
    """For every account: opening − balance − reserved == expected, and reserved == 0."""
    mismatches: list[dict[str, Any]] = []
    charged_total = reserved_total = 0
    for account_id, want in expected.items():
        try:
            view = await store.query(account_id)
        except UnknownAccount:
            mismatches.append({"account": account_id, "problem": "missing"})
            continue
        charged = opening - view.balance - view.reserved
        charged_total += charged
        reserved_total += view.reserved
        if charged != want or view.reserved != 0:
            mismatches.append(
                {"account": account_id, "expected": want, "charged": charged, "reserved": view.reserved}
            )
    status = "failed" if mismatches else "unverified" if unanswered else "ok"
    return Conservation(
        status=status,
        accounts=len(expected),
        expected_micros=sum(expected.values()),
        charged_micros=charged_total,
        reserved_micros=reserved_total,
        unanswered=unanswered,
        mismatches=tuple(mismatches[:20]),
    )


def accounts_needed(requested: int, sessions: int, updates: int, grant: int) -> int:
    """Enough accounts that none is charged past ``ACCOUNT_OCTETS_LIMIT`` (the tier threshold stays far)."""
    octets = sessions * (updates + 1) * grant
    return max(1, requested, math.ceil(octets / ACCOUNT_OCTETS_LIMIT))
