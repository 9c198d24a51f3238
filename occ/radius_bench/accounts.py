"""Bench accounts of ``occ bench radius``, what their sessions should have cost, and their removal.

Opening the accounts, pricing a session and the money conservation check itself are the Diameter bench's
(:mod:`occ.diameter.bench_accounts`): ``opening − balance − reserved`` of every bench account must equal the
expected charge, and ``reserved`` must be 0. Removing the keys is :func:`occ.bench_common.remove_bench_keys`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from aaa.context import IDENTITY_KIND
from balance.store import BalanceStore
from occ.bench_common import remove_bench_keys
from occ.diameter.bench_accounts import Conservation, check_conservation, provision_accounts, session_price
from occ.radius_bench.load import PhaseResult
from occ.radius_bench.packets import Identity
from rating_core.tariff import Catalog


def account_prefix(run_id: str) -> str:
    return f"bench-r-{run_id}-"


def nas_identifier(run_id: str) -> str:
    """The NAS-Identifier of the bench's packets: occ keeps the run's open sessions under it."""
    return f"benchr{run_id}"


def bench_identities(run_id: str, count: int) -> list[Identity]:
    return [Identity(f"{account_prefix(run_id)}{i}", f"benchr{run_id}{i}") for i in range(count)]


async def provision(store: BalanceStore, identities: Sequence[Identity], plan: str, password: str) -> None:
    """Prepaid accounts with ``OPENING`` money and a RADIUS identity each, straight into the live store."""
    who = [(i.account_id, IDENTITY_KIND, i.user) for i in identities]
    await provision_accounts(store, plan, who, password)


async def remove(store: BalanceStore, identities: Sequence[Identity], run_id: str) -> int:
    """Delete what the run created: account hashes, RADIUS identities, stored session-step answers, the
    NAS's open-session index and any session owner, and the accounts' reaper entries. Their charge records
    stay in the partitions' charge streams (appended atomically with the money moves)."""
    keys = [store.keys.identity(IDENTITY_KIND, who.user) for who in identities]
    keys.append(store.keys.nas_sessions(nas_identifier(run_id)))
    owners = store.keys.session_owner(f"radius:{nas_identifier(run_id)}:*")
    accounts = [who.account_id for who in identities]
    return await remove_bench_keys(store, account_prefix(run_id), accounts, keys, owners)


def expected_charges(
    catalog: Catalog, plan: str, identities: Sequence[Identity], phases: Iterable[PhaseResult], at: datetime
) -> dict[str, int]:
    """Per account, the price of the final running total of each of its sessions that an
    Accounting-Response acknowledged (the service rates the running total as one continuation);
    Access-Requests charge nothing."""
    expected = {who.account_id: 0 for who in identities}
    for phase in phases:
        for session, total in enumerate(phase.answered_totals):
            if total > 0:
                account = identities[session % len(identities)].account_id
                expected[account] += session_price(catalog, plan, [total], at)
    return expected


def unsettled(identities: Sequence[Identity], phases: Iterable[PhaseResult]) -> dict[str, int]:
    """Per account, its sessions whose charge cannot be known: their Stop never got an answer. (A Start or
    Interim-Update without an answer changes nothing once a later report was answered: each report carries
    the running total.)"""
    found: dict[str, int] = {}
    for phase in phases:
        for session in phase.stops_lost:
            account = identities[session % len(identities)].account_id
            found[account] = found.get(account, 0) + 1
    return found


async def check(
    store: BalanceStore, expected: Mapping[str, int], unsettled: Mapping[str, int]
) -> Conservation:
    """The conservation check, strict for every account whose sessions all had their Stop answered; the
    others (a session there still holds its reservation and may or may not have been charged its last
    report) can only make the result "unverified", unless a strict account fails."""
    strict = await check_conservation(store, {a: v for a, v in expected.items() if a not in unsettled})
    if not unsettled:
        return strict
    loose = await check_conservation(
        store, {a: v for a, v in expected.items() if a in unsettled}, unanswered=sum(unsettled.values())
    )
    return Conservation(
        status="failed" if strict.status == "failed" else "unverified",
        accounts=strict.accounts + loose.accounts,
        expected_micros=strict.expected_micros + loose.expected_micros,
        charged_micros=strict.charged_micros + loose.charged_micros,
        reserved_micros=strict.reserved_micros + loose.reserved_micros,
        unanswered=loose.unanswered,
        mismatches=(strict.mismatches + loose.mismatches)[:20],
    )
