"""Accounting edge cases a real NAS produces, each charged to the micro-unit (real UDP, real Redis): reports
after the session ended, Acct-Session-Ids reused after a restart, octet counters wrapping without
Gigawords, sessions whose Start was lost, and clients naming each other's NAS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from aaa.settings import ClientSettings
from balance.service import ChargingService, SessionAnswer, SessionRequest, added_by
from balance.store import BalanceStore, StoreUnavailable
from tests.radius.test_server import (
    EUR,
    GRANT,
    MIB,
    PER_MIB,
    SECRET,
    Nas,
    connected_store,
    octets,
    serving,
    spent,
    subscriber,
)

OPENING = 10 * EUR


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    async with connected_store(redis_url, key_prefix) as s:
        yield s


async def test_reports_after_the_session_ended_charge_only_what_they_add(store: BalanceStore) -> None:
    await subscriber(store, "alice", OPENING)
    async with serving(store) as (nas, _):
        a = nas.a
        assert await nas.account(a.status_start, "s1")
        assert await nas.account(a.status_interim, "s1", **octets(10 * MIB), acct_session_time=60)
        reordered = nas.accounting_request(a.status_interim, "s1", **octets(20 * MIB), acct_session_time=120)
        assert await nas.account(a.status_stop, "s1", **octets(30 * MIB), acct_session_time=150)
        assert await nas.exchange(reordered, "acct") is not None  # answered, charges nothing, holds nothing
        assert await spent(store, "alice", OPENING) == (30 * PER_MIB, 0)

        # the NAS restarts (Accounting-On) and then sends a Stop it had buffered: only its extra 5 MiB count
        # (the clock is fixed: Acct-Delay-Time places the packets of a session 70 s long)
        assert await nas.account(a.status_start, "s2", acct_delay_time=300)
        assert await nas.account(
            a.status_interim, "s2", **octets(100 * MIB), acct_session_time=60, acct_delay_time=240
        )
        assert await nas.account(a.status_accounting_on, "")
        assert await spent(store, "alice", OPENING) == (130 * PER_MIB, 0)
        assert await nas.account(
            a.status_stop, "s2", **octets(105 * MIB), acct_session_time=70, acct_delay_time=230
        )
        # retransmitted with a new Acct-Delay-Time, and a Start retransmitted after the end: nothing more
        assert await nas.account(
            a.status_stop, "s2", **octets(105 * MIB), acct_session_time=70, acct_delay_time=233
        )
        assert await nas.account(a.status_start, "s2", acct_delay_time=298)
        assert await spent(store, "alice", OPENING) == (135 * PER_MIB, 0)


async def test_a_reused_acct_session_id_is_a_new_session(store: BalanceStore) -> None:
    await subscriber(store, "alice", OPENING)
    async with serving(store) as (nas, _):
        a = nas.a
        for round_ in (1, 2):  # the same id twice, both ended by a Stop: each session charged in full
            ago = (2 - round_) * 600  # the first session ran ten minutes earlier (the clock is fixed)
            assert await nas.account(a.status_start, "1", acct_delay_time=ago + 90)
            assert await nas.account(
                a.status_interim, "1", **octets(10 * MIB), acct_session_time=60, acct_delay_time=ago + 30
            )
            assert await nas.account(
                a.status_stop, "1", **octets(40 * MIB), acct_session_time=90, acct_delay_time=ago
            )
            assert await spent(store, "alice", OPENING) == (round_ * 40 * PER_MIB, 0)
        # the old session never stopped (its Stop and the NAS's Accounting-On were lost): a Start ends it
        assert await nas.account(a.status_start, "2", acct_delay_time=600)
        assert await nas.account(
            a.status_interim, "2", **octets(50 * MIB), acct_session_time=60, acct_delay_time=540
        )
        assert await nas.account(a.status_start, "2", acct_delay_time=595)  # retransmitted: nothing ends
        assert await nas.account(
            a.status_interim, "2", **octets(60 * MIB), acct_session_time=120, acct_delay_time=480
        )
        assert await nas.account(a.status_start, "2")  # the id reused 10 minutes later: a new session
        assert await nas.account(a.status_stop, "2", **octets(20 * MIB), acct_session_time=30)
        assert await spent(store, "alice", OPENING) == ((80 + 60 + 20) * PER_MIB, 0)


async def test_a_reused_id_whose_start_was_lost_is_still_a_new_session(store: BalanceStore) -> None:
    await subscriber(store, "alice", OPENING)
    async with serving(store) as (nas, _):
        a = nas.a
        assert await nas.account(a.status_start, "r", acct_delay_time=900)
        assert await nas.account(
            a.status_stop, "r", **octets(30 * MIB), acct_session_time=60, acct_delay_time=840
        )
        # fourteen minutes later the id comes back, its Start lost: the reports are a new session's
        assert await nas.account(a.status_interim, "r", **octets(5 * MIB), acct_session_time=60)
        assert await nas.account(a.status_stop, "r", **octets(10 * MIB), acct_session_time=70)
        assert await spent(store, "alice", OPENING) == (40 * PER_MIB, 0)


async def test_a_stop_overtaking_its_interim_charges_once_and_holds_nothing(store: BalanceStore) -> None:
    await subscriber(store, "alice", OPENING)
    async with serving(store) as (nas, _):
        a = nas.a
        sessions = [f"race{n}" for n in range(10)]
        for sid in sessions:
            assert await nas.account(a.status_start, sid, acct_delay_time=120)
        interims = [
            nas.account(a.status_interim, sid, **octets(10 * MIB), acct_session_time=60, acct_delay_time=60)
            for sid in sessions
        ]
        stops = [
            nas.account(a.status_stop, sid, **octets(20 * MIB), acct_session_time=120) for sid in sessions
        ]
        assert all(await asyncio.gather(*stops, *interims))
        assert await spent(store, "alice", OPENING) == (10 * 20 * PER_MIB, 0)


async def test_octet_counters_wrapping_without_gigawords_are_followed(store: BalanceStore) -> None:
    await subscriber(store, "alice", 100 * EUR)
    async with serving(store) as (nas, _):
        a = nas.a
        assert await nas.account(a.status_start, "w")
        assert await nas.account(a.status_interim, "w", acct_input_octets=2000 * MIB, acct_session_time=150)
        assert await nas.account(a.status_interim, "w", acct_input_octets=4000 * MIB, acct_session_time=300)
        # past 2^32 the 32-bit counter starts again: 4000 MiB -> 100 MiB is 196 MiB more, not a late report
        assert await nas.account(a.status_interim, "w", acct_input_octets=100 * MIB, acct_session_time=600)
        # ... and a report from before the wrap, overtaken, is late (not 3950 MiB more)
        assert await nas.account(a.status_interim, "w", acct_input_octets=4050 * MIB, acct_session_time=450)
        assert await nas.account(a.status_stop, "w", acct_input_octets=2000 * MIB, acct_session_time=900)
        assert await spent(store, "alice", 100 * EUR) == ((4096 + 2000) * PER_MIB, 0)


async def test_accounting_on_closes_sessions_started_by_an_interim_and_only_of_its_own_client(
    store: BalanceStore,
) -> None:
    await subscriber(store, "alice", OPENING)
    clients = [
        ClientSettings(address="127.0.0.1", secret=SECRET.decode(), profile="mikrotik"),
        ClientSettings(address="127.0.0.2", secret="other-secret", name="other"),
    ]
    async with serving(store, clients=clients) as (nas, _):
        a = nas.a
        assert await nas.account(a.status_interim, "lost-start", **octets(3 * MIB), acct_session_time=60)
        assert await spent(store, "alice", OPENING) == (3 * PER_MIB, GRANT // MIB * PER_MIB)
        # another client names this NAS's NAS-IP-Address in its Accounting-On: nothing of ours closes
        intruder = Nas(nas.server, a, secret=b"other-secret", source="127.0.0.2")
        assert await intruder.account(a.status_accounting_on, "")
        assert await spent(store, "alice", OPENING) == (3 * PER_MIB, GRANT // MIB * PER_MIB)
        assert await nas.account(a.status_accounting_on, "")
        assert await spent(store, "alice", OPENING) == (3 * PER_MIB, 0)


@pytest.mark.parametrize(
    ("total", "counted", "bits", "added"),
    [
        (30, 10, None, 20),
        (5, 10, None, 0),  # a late report
        (100, 4000, 12, 196),  # a 12-bit counter wrapped (4096 + 100 - 4000)
        (3990, 4000, 12, 0),  # 10 behind: late, not a wrap
        (4050, 4096 + 100, 12, 0),  # from before the wrap: late, not 3950 more
        (4000, 4000 + (1 << 32), 32, 0),  # counted past a wrap, the counter did not move since
        ((1 << 31) + 10, 10, 32, 1 << 31),  # half the range forward is still forward
    ],
)
def test_what_a_running_total_adds(total: int, counted: int, bits: int | None, added: int) -> None:
    assert added_by(total, counted, bits) == added


async def test_a_stop_whose_charge_failed_is_completed_by_its_retransmission(
    store: BalanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis fails between the Stop's closed-session mark and its charge: no Accounting-Response, the NAS
    # retransmits, and the retransmission must end the session and charge the rest (it is no late report)
    await subscriber(store, "alice", OPENING)
    async with serving(store) as (nas, _):
        a = nas.a
        assert await nas.account(a.status_start, "f", acct_delay_time=60)
        assert await nas.account(
            a.status_interim, "f", **octets(10 * MIB), acct_session_time=30, acct_delay_time=30
        )
        real_terminate = ChargingService.terminate
        failures = [StoreUnavailable("Redis went away")]

        def terminate(self: ChargingService, request: SessionRequest) -> Coroutine[Any, Any, SessionAnswer]:
            if failures:
                raise failures.pop()
            return real_terminate(self, request)

        monkeypatch.setattr(ChargingService, "terminate", terminate)
        stop = nas.accounting_request(a.status_stop, "f", **octets(30 * MIB), acct_session_time=60)
        assert await nas.exchange(stop, "acct", timeout=0.5) is None  # nothing recorded, nothing answered
        assert await nas.exchange(stop, "acct") is not None
        assert await spent(store, "alice", OPENING) == (30 * PER_MIB, 0)
        assert await nas.exchange(stop, "acct") is not None  # once more: a duplicate, nothing moves
        assert await spent(store, "alice", OPENING) == (30 * PER_MIB, 0)
