"""``occ bench diameter`` in small: a few open-loop sessions against an in-process server on real Redis, the
report's shape, the money conservation check (passing, and failing on a wrong expected charge), cleanup.
No timing is asserted."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from balance.service import ChargingService
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from occ.bench_common import PEAK_RAISES
from occ.diameter import bench
from occ.diameter.cc_settings import CreditControlSettings
from occ.diameter.credit_control import CreditControlApplication
from occ.diameter.server import DiameterServer
from occ.diameter.settings import AllowedPeer, DiameterSettings
from rating_core.tariff import Catalog
from rating_core.tariff_file import load_tariff_file

PEAK = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    s = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    yield s
    await s.close()


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(load_tariff_file(ROOT / "config" / "tariffs" / "demo.toml"))


@pytest.fixture
async def server(store: BalanceStore, catalog: Catalog) -> AsyncIterator[DiameterServer]:
    charging = ChargingService(store, catalog, BalanceSettings(), clock=lambda: PEAK)
    app = CreditControlApplication(charging, CreditControlSettings(), clock=lambda: PEAK)
    settings = DiameterSettings(
        listen="127.0.0.1",
        port=0,
        origin_host="occ.test",
        origin_realm="localdomain",
        allowed_peers=[AllowedPeer(host="*", realm="*")],
    )
    running = DiameterServer(settings, [app])
    await running.start()
    try:
        yield running
    finally:
        await asyncio.wait_for(running.stop(1.0), 5)
        await app.stop()


async def test_a_short_run_reports_every_message_type_and_conserves_money(
    store: BalanceStore, catalog: Catalog, server: DiameterServer
) -> None:
    run_id = "a1b2c3"
    subscribers = bench.bench_subscribers(run_id, 3)
    await bench.provision(store, subscribers, "demo")
    spec = bench.LoadSpec(rate=40.0, duration=0.25, sessions=8, updates=2, timeout=5.0)
    phase = await bench.run_phase(
        "127.0.0.1", server.port, 2, [s.msisdn for s in subscribers], spec, "smoke", run_id
    )

    assert phase.started == 8 and phase.skipped == 0 and phase.unanswered == 0
    figures = bench.summarize(phase)
    assert set(figures["types"]) == {"CCR-I", "CCR-U", "CCR-T"}
    counts = {kind: t["answers"] for kind, t in figures["types"].items()}
    assert counts == {"CCR-I": 8, "CCR-U": 16, "CCR-T": 8}
    for t in figures["types"].values():
        assert t["result_codes"] == {"2001": t["answers"]}
        assert t["item_result_codes"] == {}
        assert 0 < t["p50_ms"] <= t["p95_ms"] <= t["p99_ms"] <= t["max_ms"]
    assert figures["all"]["answers"] == 32
    # every session committed its two updates (whole grants) and part of the last grant
    assert all(len(s.pieces) == 3 and s.pieces[0] == s.pieces[1] == spec.grant for s in phase.sessions)

    expected = bench.expected_charges(catalog, "demo", subscribers, [phase], PEAK)
    assert sum(expected.values()) > 0
    conservation = await bench.check_conservation(store, expected)
    assert conservation.ok, conservation
    assert conservation.reserved_micros == 0
    assert conservation.charged_micros == conservation.expected_micros == sum(expected.values())

    wrong = dict(expected)
    wrong[subscribers[0].account_id] += 1  # one micro-unit off
    failed = await bench.check_conservation(store, wrong)
    assert failed.status == "failed" and not failed.ok
    assert [m["account"] for m in failed.mismatches] == [subscribers[0].account_id]

    report = {
        "when": "now",
        "options": {"updates": 2, "grant": spec.grant, "connections": 2, "max_open": spec.max_open},
        "occ": {"smoke": figures},
        "conservation": conservation.as_dict(),
    }
    text = bench.format_report(report)
    assert "money conservation: OK" in text and "CCR-U" in text

    await bench.remove(store, subscribers, run_id)
    for s in subscribers:
        assert not await store.has_account(s.account_id)
        assert await store.resolve_identity("msisdn", s.msisdn) is None


async def test_every_attempt_of_the_peak_search_is_new_load_and_all_of_it_is_charged(
    store: BalanceStore, catalog: Catalog, server: DiameterServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a target that keeps up with every attempt: the peak phase runs PEAK_RAISES more times, then 80 %
    monkeypatch.setattr(bench.PhaseResult, "kept_up", lambda self: True)
    run_id = "d4e5f6"
    subscribers = bench.bench_subscribers(run_id, 3)
    await bench.provision(store, subscribers, "demo")
    options = bench.BenchOptions(rate=20.0, duration=0.2, sessions=4, updates=1, connections=2, timeout=5.0)
    said: list[str] = []
    phases = await bench.run_target_phases(
        "occ", "127.0.0.1", server.port, options, [s.msisdn for s in subscribers], run_id, said.append, {}
    )
    names = [p.name for p in phases]
    assert names == [f"occ-below-peak-{n}" for n in range(1, PEAK_RAISES + 1)] + ["occ-peak", "occ-80%"]
    assert [p.spec.rate for p in phases[:-1]] == [20.0 * 2**n for n in range(PEAK_RAISES + 1)]
    # the attempts reused no Session-Id: had they, the repeats would be replays, answered and not charged
    expected = bench.expected_charges(catalog, "demo", subscribers, phases, PEAK)
    conservation = await bench.check_conservation(store, expected)
    assert conservation.ok and conservation.charged_micros == sum(expected.values()) > 0, conservation
    await bench.remove(store, subscribers, run_id)


async def test_an_unanswered_request_leaves_conservation_unverified(
    store: BalanceStore, catalog: Catalog
) -> None:
    subscribers = bench.bench_subscribers("0000ff", 1)
    await bench.provision(store, subscribers, "demo")
    result = await bench.check_conservation(store, {subscribers[0].account_id: 0}, unanswered=1)
    assert result.status == "unverified" and not result.ok


def test_a_session_is_priced_piece_by_piece_like_the_service(catalog: Catalog) -> None:
    # 0.01 per MiB charged per started KiB, each piece rounded up on its own
    assert bench.session_price(catalog, "demo", [1_048_576], PEAK) == 10_000
    assert bench.session_price(catalog, "demo", [1_048_576, 1_048_576, 1], PEAK) == 20_010
    assert bench.session_price(catalog, "demo", [], PEAK) == 0


def test_the_config_copy_of_a_spawned_daemon_is_the_same_toml() -> None:
    raw = tomllib.loads((ROOT / "config" / "occ.toml").read_text())
    raw["diameter"]["credit_control"] = {"rating_groups": {"10": {"service": "data"}}}
    assert tomllib.loads(bench.to_toml(raw)) == raw


def test_percentiles_and_account_count() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (bench.percentile(values, 50), bench.percentile(values, 99), bench.percentile([], 99)) == (
        50.0,
        99.0,
        0.0,
    )
    assert bench.accounts_needed(100, 1000, 3, 1 << 20) == 100
    assert bench.accounts_needed(1, 100_000, 3, 1 << 20) == 98  # no account past 4 GiB


def test_the_generator_builds_the_same_bytes_as_build_ccr() -> None:
    from occ.diameter import dictionary as d
    from occ.diameter.client import DiameterClient, MsccSpec, UnitsSpec, build_ccr
    from occ.diameter.codec import avp_utf8

    client = DiameterClient("bench0.test", "test", "localdomain")
    template = bench.CcrTemplate(client)
    mscc = MsccSpec(
        rating_group=10,
        requested=UnitsSpec(total=1 << 20),
        used=UnitsSpec(total=12345),
        reporting_reason=d.REPORTING_REASON_QUOTA_EXHAUSTED,
    )
    session = "bench0.test;r;p;7"
    built = template.ccr(
        avp_utf8(d.AVP_SESSION_ID, session),
        d.CC_REQUEST_TYPE_UPDATE_REQUEST,
        3,
        "447700900001",
        mscc.encode(),
        11,
        22,
    )
    assert built == build_ccr(
        session,
        d.CC_REQUEST_TYPE_UPDATE_REQUEST,
        3,
        origin_host="bench0.test",
        origin_realm="test",
        destination_realm="localdomain",
        hop_by_hop=11,
        end_to_end=22,
        subscription=(d.SUBSCRIPTION_ID_TYPE_END_USER_E164, "447700900001"),
        msccs=(mscc,),
    )
