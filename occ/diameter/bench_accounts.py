"""Bench accounts of ``occ bench diameter`` and the money conservation check after a run.

Opening an account (:func:`provision_accounts`), pricing a session (:func:`session_price`) and the check
(:func:`check_conservation`) serve ``occ bench radius`` too.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from balance.records import AccountKind, AccountRecord
from balance.store import BalanceStore, UnknownAccount
from occ.bench_common import remove_bench_keys
from occ.diameter.bench_load import ACCOUNT_OCTETS_LIMIT, SERVICE, PhaseResult
from rating_core.rating import Usage, price_of
from rating_core.tariff import Catalog

EUR = 1_000_000
OPENING = 1_000_000 * EUR  # per bench account: far more than any run spends, far below MAX_MONEY

# ---- bench accounts and the conservation check -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscriber:
    account_id: str
    msisdn: str


def bench_subscribers(run_id: str, count: int) -> list[Subscriber]:
    digits = str(int(run_id, 16) % 1_000_000).zfill(6)
    return [Subscriber(f"bench-{run_id}-{i}", f"999{digits}{i:06d}") for i in range(count)]


async def provision_accounts(
    store: BalanceStore, plan: str, identities: Iterable[tuple[str, str, str]], password: str | None = None
) -> None:
    """Per (account, identity kind, identity): a prepaid EUR account on ``plan`` with ``OPENING`` money
    and that identity (with ``password``), straight into the live store."""
    now = datetime.now(UTC)

    async def one(account_id: str, kind: str, identity: str) -> None:
        await store.put_account(
            AccountRecord(account_id=account_id, kind=AccountKind.PREPAID, currency="EUR", plan=plan)
        )
        await store.credit(account_id, OPENING, key=f"{account_id}-opening", reason="topup", now=now)
        await store.put_identity(kind, identity, account_id, password)

    await asyncio.gather(*(one(*who) for who in identities))


async def provision(store: BalanceStore, subscribers: Sequence[Subscriber], plan: str) -> None:
    """Prepaid accounts with ``OPENING`` money and an msisdn identity each, straight into the live store."""
    await provision_accounts(store, plan, [(s.account_id, "msisdn", s.msisdn) for s in subscribers])


async def remove(store: BalanceStore, subscribers: Sequence[Subscriber], run_id: str) -> int:
    """Delete the bench accounts' keys: account hashes, identities, stored answers, session owners.

    Their charge records stay in the partitions' charge streams (appended atomically with the money moves;
    they name the ``bench-<run>-`` accounts).
    """
    identities = [store.keys.identity("msisdn", s.msisdn) for s in subscribers]
    owners = f"{store.keys.prefix}:so:bench*.test;{run_id};*"
    return await remove_bench_keys(
        store, f"bench-{run_id}-", [s.account_id for s in subscribers], identities, owners
    )


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
