"""``occ bench radius`` in small: open-loop auth and accounting phases against an in-process server on real
Redis (the figures' shape, the money conservation check passing and failing on a charge one micro-unit
off, cleanup), packets signed again for another Identifier byte for byte as built, the FreeRADIUS
configuration edits, a whole spawned run without the baseline, and one with it when FreeRADIUS is
installed. No timing is asserted."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aaa import codec
from aaa.server import RadiusServer, build_context
from aaa.settings import ClientSettings, PlanAccess, RadiusSettings
from balance.service import ChargingService
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from occ.bench_common import PEAK_RAISES
from occ.bench_spawn import to_toml
from occ.diameter.bench_accounts import check_conservation
from occ.radius_bench import accounts, freeradius
from occ.radius_bench.load import ACCT, AUTH, LoadSpec, run_phase, summarize
from occ.radius_bench.packets import PacketBuilder, acct_packets, auth_packets, slot, with_identifier
from occ.radius_bench.processes import BENCH_SECRET, daemon_config
from occ.radius_bench.report import format_report, goals_and_ratios, passed, replies_check
from occ.radius_bench.run import BenchOptions, configured_server, run_benchmark
from occ.settings import load_settings
from rating_core.tariff import Catalog
from rating_core.tariff_file import load_tariff_file

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SECRET = BENCH_SECRET.encode()
PASSWORD = "0123abcd"
KIB = 1024


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(load_tariff_file(ROOT / "config" / "tariffs" / "demo.toml"))


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    s = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    yield s
    await s.close()


@pytest.fixture
async def server(store: BalanceStore, catalog: Catalog) -> AsyncIterator[RadiusServer]:
    settings = RadiusSettings(
        listen=["127.0.0.1"],
        auth_port=0,
        acct_port=0,
        clients=[ClientSettings(address="127.0.0.1", secret=BENCH_SECRET, coa_port=0)],
        plans={"demo": PlanAccess(rate_limit="10M/10M")},
    )
    charging = ChargingService(store, catalog, store.settings, clock=lambda: NOW)
    running = RadiusServer(build_context(settings, charging, clock=lambda: NOW))
    await running.start()
    try:
        yield running
    finally:
        await running.stop(1.0)


def builder_for(server: RadiusServer, run_id: str) -> PacketBuilder:
    return PacketBuilder(server.ctx.attrs, SECRET, accounts.nas_identifier(run_id), PASSWORD.encode())


async def test_auth_and_accounting_phases_report_every_type_and_conserve_money(
    store: BalanceStore, catalog: Catalog, server: RadiusServer
) -> None:
    run_id = "a1b2c3"
    identities = accounts.bench_identities(run_id, 3)
    await accounts.provision(store, identities, "demo", PASSWORD)
    builder = builder_for(server, run_id)

    auth = LoadSpec(mode=AUTH, rate=200.0, duration=0.2, requests=1000, sockets=2, timeout=5.0)
    packets = auth_packets(builder, identities, auth.templates(), auth.sockets)
    address = ("127.0.0.1", server.ports[("auth", "127.0.0.1")])
    phase = await run_phase(packets, auth, "auth", address, SECRET, builder.attrs.framing)
    assert phase.started == 40 and phase.skipped == 0 and phase.timeouts == 0 and phase.unmatched == 0
    figures = summarize(phase)
    assert figures["types"]["Access"]["replies"] == {"Access-Accept": 40}
    assert 0 < figures["all"]["p50_ms"] <= figures["all"]["p99_ms"] <= figures["all"]["max_ms"]

    acct = LoadSpec(
        mode=ACCT, rate=200.0, duration=0.2, requests=1000, sockets=2, interims=2, step=KIB * 1000 + 1
    )
    packets = acct_packets(builder, identities, acct.templates(), acct.interims, acct.step, acct.sockets, "t")
    address = ("127.0.0.1", server.ports[("acct", "127.0.0.1")])
    sessions = await run_phase(packets, acct, "acct", address, SECRET, builder.attrs.framing)
    assert sessions.started == 10 and sessions.timeouts == 0 and sessions.stops_lost == []
    counts = {kind: t["answers"] for kind, t in summarize(sessions)["types"].items()}
    assert counts == {"Start": 10, "Interim": 20, "Stop": 10}
    # each session's Stop total: 2 steps and a few octets more, off the 1 KiB increment
    assert sorted(sessions.answered_totals)[0] == 2 * acct.step + 1
    assert replies_check(ACCT, [sessions])["status"] == "ok"

    expected = accounts.expected_charges(catalog, "demo", identities, [phase, sessions], NOW)
    assert sum(expected.values()) > 0
    conservation = await accounts.check(store, expected, accounts.unsettled(identities, [sessions]))
    assert conservation.ok, conservation
    assert conservation.reserved_micros == 0
    assert conservation.charged_micros == conservation.expected_micros == sum(expected.values())

    wrong = dict(expected)
    wrong[identities[1].account_id] += 1  # one micro-unit off
    failed = await accounts.check(store, wrong, {})
    assert failed.status == "failed" and not failed.ok
    assert [m["account"] for m in failed.mismatches] == [identities[1].account_id]
    # an account with a session whose Stop never got an answer can only be unverified, another can fail
    assert (await accounts.check(store, wrong, {identities[1].account_id: 1})).status == "unverified"
    assert (await accounts.check(store, wrong, {identities[0].account_id: 1})).status == "failed"

    ratios, goals = goals_and_ratios(ACCT, [sessions], [], 0.8)
    report = {
        "mode": ACCT,
        "when": "now",
        "options": {"interims": 2, "step": acct.step, "sockets": 2, "timeout": 5.0},
        "occ": {"acct": summarize(sessions)},
        "conservation": conservation.as_dict(),
        "replies": replies_check(ACCT, [sessions]),
        "ratios": ratios,
        "goals": goals,
    }
    text = format_report(report)
    assert "money conservation: OK" in text and "Interim" in text and "Accounting-Response: 20" in text
    assert "not measured: --mode auth" in text and passed(report)
    assert not passed({**report, "conservation": failed.as_dict()})
    # a daemon that gave up during the run fails it, and the report shows why
    crashed = {**report, "target": {"exit_status": 1, "log_tail": "worker keeps failing at start"}}
    assert not passed(crashed)
    assert "occ serve exited with status 1" in format_report(crashed)
    assert "  | worker keeps failing at start" in format_report(crashed)

    await accounts.remove(store, identities, run_id)
    for who in identities:
        assert not await store.has_account(who.account_id)
        assert await store.resolve_identity("radius_user", who.user) is None
    assert not [k async for k in _keys(store, f"{store.keys.prefix}:*bench-r-{run_id}-*")]


async def _keys(store: BalanceStore, pattern: str) -> AsyncIterator[str]:
    cursor: bytes | str | int = b"0"
    for _ in range(1000):
        cursor, found = await store.link.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        for key in found:
            yield key.decode()
        if cursor in (b"0", 0, "0"):
            return


async def test_an_unanswered_request_never_counts_as_charged(store: BalanceStore, catalog: Catalog) -> None:
    identities = accounts.bench_identities("0000ff", 1)
    await accounts.provision(store, identities, "demo", PASSWORD)
    # nothing listens there: every request times out, nothing is expected, the check still passes
    builder = PacketBuilder(
        build_context(RadiusSettings(), ChargingService(store, catalog, store.settings)).attrs,
        SECRET,
        "benchr0000ff",
        PASSWORD.encode(),
    )
    spec = LoadSpec(mode=ACCT, rate=50.0, duration=0.1, requests=100, sockets=1, interims=0, timeout=0.05)
    packets = acct_packets(builder, identities, spec.templates(), 0, KIB, 1, "lost")
    phase = await run_phase(packets, spec, "lost", ("127.0.0.1", 9), SECRET, builder.attrs.framing)
    assert phase.timeouts == 2 * phase.started and len(phase.stops_lost) == phase.started
    assert phase.stops_retransmitted == phase.started and phase.stops_answered_again == 0
    unsettled = accounts.unsettled(identities, [phase])
    assert unsettled == {identities[0].account_id: phase.started}
    expected = accounts.expected_charges(catalog, "demo", identities, [phase], NOW)
    assert expected == {identities[0].account_id: 0}
    result = await accounts.check(store, expected, unsettled)
    assert result.status == "unverified" and (await check_conservation(store, expected)).ok


def test_a_packet_signed_again_is_the_packet_built_with_that_identifier() -> None:
    from aaa.attributes import resolve
    from aaa.dictionary import load

    attrs = resolve(load(ROOT / "config" / "dictionaries" / "dictionary"))
    pap = [(attrs.user_name, b"u"), (attrs.user_password, codec.hide_password(b"pw", SECRET, bytes(16)))]
    built = codec.sign_request(codec.ACCESS_REQUEST, 7, pap, SECRET, attrs.framing, authenticator=bytes(16))
    again = codec.sign_request(codec.ACCESS_REQUEST, 200, pap, SECRET, attrs.framing, authenticator=bytes(16))
    assert with_identifier(built, 200, SECRET, attrs.framing) == again
    report = [(attrs.acct_status_type, (1).to_bytes(4)), (attrs.acct_session_id, b"s")]
    for ma in (False, True):
        built, again = (
            codec.sign_request(
                codec.ACCOUNTING_REQUEST, n, report, SECRET, attrs.framing, message_authenticator=ma
            )
            for n in (1, 9)
        )
        assert with_identifier(built, 9, SECRET, attrs.framing) == again
        assert codec.request_digest_ok(again, SECRET)
    assert [slot(n, 3) for n in (0, 1, 3, 768)] == [(0, 0), (1, 0), (0, 1), (0, 0)]


def test_the_freeradius_copy_listens_on_loopback_only_with_the_bench_users() -> None:
    stock_site = (
        "server default {\n"
        "listen {\n\ttype = auth\n\tipaddr = *\n\tport = 0\n\tlimit {\n\t\tmax_connections = 16\n\t}\n}\n"
        "#listen {\n#\tport = 1\n#}\n"
        "listen {\n\tipv6addr = ::\t# any.  ::1 == localhost\n\tport = 0\n\ttype = acct\n}\n"
        "authorize {\n\tfiles\n\tpap\n}\n}\n"
    )
    site = freeradius.default_site(stock_site, 41812, 41813)
    assert "ipaddr = *" not in site and "ipv6addr" not in site and "max_connections" not in site
    assert [line for line in site.splitlines() if line.startswith("listen")] == ["listen {", "listen {"]
    assert "port = 41812" in site and "port = 41813" in site and "#listen {" in site
    assert "ipaddr = 127.0.0.1" in site and "authorize {\n\tfiles\n\tpap\n}" in site
    conf = freeradius.radiusd_conf(
        "logdir = /var/log/freeradius\nraddbdir = /etc/freeradius/3.0\nrun_dir = ${localstatedir}/run\n"
        "security {\n\tuser = freerad\n\tgroup = freerad\n}\n",
        Path("/tmp/w"),
        Path("/tmp/w/raddb"),
    )
    assert "raddbdir = /tmp/w/raddb" in conf and "logdir = /tmp/w/log" in conf
    assert "run_dir = /tmp/w/run" in conf
    assert "\tuser = " not in conf and "\tgroup = " not in conf
    identities = accounts.bench_identities("abc123", 2)
    users = freeradius.users_file("DEFAULT Framed-Protocol == PPP\n", identities, "pw")
    assert users.splitlines()[1:3] == [
        'benchrabc1230 Cleartext-Password := "pw"',
        'benchrabc1231 Cleartext-Password := "pw"',
    ]
    assert "secret = testing123" in freeradius.clients_conf(BENCH_SECRET)


def test_the_spawned_daemon_listens_on_loopback_for_the_bench_client(tmp_path: Path) -> None:
    raw = tomllib.loads((ROOT / "config" / "occ.toml").read_text())
    copy = daemon_config(raw, tmp_path, 40001, 40002)
    radius = copy["radius"]
    assert radius["listen"] == ["127.0.0.1"] and (radius["auth_port"], radius["acct_port"]) == (40001, 40002)
    assert radius["clients"] == [
        {
            "address": "127.0.0.1",
            "secret": "testing123",
            "name": "bench",
            "coa_port": 0,
            "profile": "mikrotik",
            "require_message_authenticator": False,
        }
    ]
    assert copy["diameter"]["listen"] == copy["metrics"]["listen"] == "127.0.0.1"
    assert tomllib.loads(to_toml(copy)) == copy
    # --no-spawn: the configured daemon over 127.0.0.1, with the config's secret for it
    settings = load_settings(ROOT / "config" / "occ.toml")
    target = configured_server(settings)
    local = next(c for c in settings.radius.clients if c.address == "127.0.0.1")
    assert (target.host, target.port(AUTH), target.port(ACCT), target.secret) == (
        "127.0.0.1",
        settings.radius.auth_port,
        settings.radius.acct_port,
        local.secret.encode(),
    )


@pytest.fixture
def config(tmp_path: Path, redis_url: str, key_prefix: str, database_url: str) -> Path:
    """The project's config on the test's Redis prefix and throw-away database."""
    raw = tomllib.loads((ROOT / "config" / "occ.toml").read_text())
    raw["redis"].update(url=redis_url, key_prefix=key_prefix)
    raw["database"]["url"] = database_url
    path = tmp_path / "occ.toml"
    path.write_text(to_toml(raw))
    return path


SMALL = BenchOptions(rate=300.0, duration=0.3, requests=2000, sockets=2, accounts=3, timeout=5.0)


async def test_a_spawned_accounting_run_without_baseline(config: Path) -> None:
    options = dataclasses.replace(SMALL, mode=ACCT, interims=1, baseline=False)
    report = await run_benchmark(options, config, load_settings(config))
    assert report["conservation"]["status"] == "ok", report["conservation"]
    # and the end of every benchmark: the accounts' live money is what the PostgreSQL ledger explains
    assert report["reconcile"] == {"status": "ok", "accounts": 3, "drifts": []}, report["reconcile"]
    assert report["conservation"]["expected_micros"] > 0 and report["replies"]["status"] == "ok"
    # a rate this low is likely below capacity: the peak phase then ran again at twice the rate, and
    # those attempts are in the money checks above too
    below = {f"occ-below-peak-{n}" for n in range(1, PEAK_RAISES + 1)}
    assert {"occ-peak", "occ-80%"} <= set(report["occ"]) <= {"occ-peak", "occ-80%", *below}
    assert "freeradius" not in report
    assert set(report["occ"]["occ-peak"]["types"]) == {"Start", "Interim", "Stop"}
    assert report["target"]["exit_status"] == 0 and report["bench_keys_removed"] > 0
    assert passed(report)
    text = format_report(report)
    assert "occ-80%" in text and "goal acct answers/s at peak >= 1.0x FreeRADIUS" in text


@pytest.mark.skipif(
    freeradius.binary() is None, reason="FreeRADIUS not installed (apt-get install freeradius)"
)
async def test_a_spawned_auth_run_with_the_freeradius_baseline(config: Path) -> None:
    options = dataclasses.replace(SMALL, mode=AUTH, install=False)
    report = await run_benchmark(options, config, load_settings(config))
    assert "baseline_error" not in report, report.get("baseline_error")
    assert report["freeradius_version"].startswith("FreeRADIUS Version 3.")
    below = {f"freeradius-below-peak-{n}" for n in range(1, PEAK_RAISES + 1)}
    measured = {"freeradius-peak", "freeradius-80%"}
    assert measured <= set(report["freeradius"]) <= measured | below
    assert report["freeradius"]["freeradius-peak"]["types"]["Access"]["replies"] == {
        "Access-Accept": report["freeradius"]["freeradius-peak"]["types"]["Access"]["answers"]
    }
    assert report["freeradius_target"]["exit_status"] is not None
    assert report["ratios"]["occ / FreeRADIUS, auth answers/s at peak"] is not None
    assert report["conservation"]["status"] == "ok" and report["conservation"]["charged_micros"] == 0
    goal = report["goals"]["PAP auth answers/s at peak >= 0.5x FreeRADIUS users-file auth"]
    assert goal["value"] is not None
    assert "baseline: FreeRADIUS Version 3." in format_report(report)
