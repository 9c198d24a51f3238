"""The whole of ``occ bench radius``: accounts, the daemon, the phases, the check, the FreeRADIUS baseline."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aaa import codec
from aaa.attributes import Attrs, resolve
from aaa.clients import ClientTable
from aaa.dictionary import load
from balance.store import BalanceStore
from occ.bench_common import (
    MIB,
    Progress,
    phases_at_most,
    plan_catalog,
    reconcile_bench,
    run_facts,
    search_peak,
    watched_processes,
)
from occ.bench_spawn import ProcessError
from occ.diameter.bench_accounts import accounts_needed
from occ.radius_bench import accounts, freeradius
from occ.radius_bench.load import ACCT, AUTH, LoadSpec, PhaseResult, run_phase, summarize
from occ.radius_bench.packets import Identity, PacketBuilder, acct_packets, auth_packets
from occ.radius_bench.processes import Server, spawn_occ
from occ.radius_bench.report import goals_and_ratios, replies_check

PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class BenchOptions:
    mode: str = AUTH
    rate: float = 40_000.0  # requests per second offered in the peak (or only) phase: above both servers
    duration: float = 10.0
    requests: int = 400_000  # at most this many requests per phase
    interims: int = 3
    step: int = MIB
    sockets: int = 8
    accounts: int = 100
    timeout: float = 5.0
    find_peak: bool = True
    load_share: float = 0.8
    spawn: bool = True
    baseline: bool = True
    install: bool = True
    keep_accounts: bool = False
    plan: str = "demo"


def spec_for(options: BenchOptions, rate: float) -> LoadSpec:
    return LoadSpec(
        mode=options.mode,
        rate=rate,
        duration=options.duration,
        requests=options.requests,
        sockets=options.sockets,
        interims=options.interims,
        step=options.step,
        timeout=options.timeout,
    )


def build_packets(
    spec: LoadSpec, builder: PacketBuilder, identities: Sequence[Identity], tag: str
) -> list[bytes]:
    if spec.mode == AUTH:
        return auth_packets(builder, identities, spec.templates(), spec.sockets)
    return acct_packets(builder, identities, spec.templates(), spec.interims, spec.step, spec.sockets, tag)


class _Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.put_nowait(data)


async def probe(
    server: Server, builder: PacketBuilder, who: Identity, timeout: float = PROBE_TIMEOUT_S
) -> None:
    """Wait until ``server`` answers a bench subscriber's Access-Request with Access-Accept."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Probe, local_addr=("127.0.0.1", 0))
    deadline = time.monotonic() + timeout
    try:
        for attempt in range(int(timeout / 0.25) + 1):
            process = server.spawned.process if server.spawned else None
            if process is not None and process.returncode is not None:
                raise ProcessError(f"{server.name} exited with status {process.returncode}")
            if time.monotonic() > deadline:
                break
            request = builder.access_request(attempt % 256, who.user)
            transport.sendto(request, (server.host, server.auth_port))
            try:
                reply = await asyncio.wait_for(protocol.replies.get(), 0.25)
            except TimeoutError:
                continue
            if codec.response_ok(reply, request[4:20], builder.secret):
                if reply[0] == codec.ACCESS_ACCEPT:
                    return
                name = codec.packet_name(reply[0])
                raise ProcessError(f"{server.name} answered a bench subscriber's Access-Request with {name}")
        raise ProcessError(f"{server.name} did not answer an Access-Request within {timeout:g} s")
    finally:
        transport.close()


async def run_target(
    server: Server,
    options: BenchOptions,
    builder: PacketBuilder,
    identities: Sequence[Identity],
    run_id: str,
    progress: Progress,
    watch: dict[str, int],
) -> list[PhaseResult]:
    """The peak search from ``options.rate`` (:func:`occ.bench_common.search_peak`) and the phase at
    ``load_share`` of the peak, in the order they ran; or the one fixed phase."""
    short = "occ" if server.name == "occ serve" else server.name
    built = 0

    async def run(rate: float, label: str) -> PhaseResult:
        nonlocal built
        spec = spec_for(options, rate)
        started = time.perf_counter()
        packets = build_packets(spec, builder, identities, f"{run_id}-{short}-p{built}")
        built += 1
        progress(
            f"{short}: {label} phase, {rate:,.0f} requests/s for {options.duration:g} s "
            f"({len(packets)} packets built in {time.perf_counter() - started:.1f} s)"
        )
        address = (server.host, server.port(options.mode))
        phase = await run_phase(
            packets, spec, f"{short}-{label}", address, builder.secret, builder.attrs.framing, watch=watch
        )
        del packets
        progress(f"{short}: {label}: {phase.answers_per_s():,.0f} answers/s, {phase.timeouts} timeouts")
        return phase

    if not options.find_peak:
        return [await run(options.rate, "fixed")]
    phases = await search_peak(run, options.rate, PhaseResult.kept_up, progress, short)
    peak = phases[-1].answers_per_s()
    if peak <= 0:
        progress(f"{short}: no answers at peak, no {options.load_share * 100:g}% phase")
        return phases
    phases.append(await run(options.load_share * peak, f"{options.load_share * 100:g}%"))
    return phases


def configured_server(settings: Any) -> Server:
    """``--no-spawn``: the daemon at ``[radius]`` of the config, over 127.0.0.1, with its secret for it."""
    radius = settings.radius
    if not radius.enabled:
        raise ProcessError("[radius] enabled = false in the config: nothing to load")
    if not {"127.0.0.1", "0.0.0.0"} & set(radius.listen):
        raise ProcessError("[radius] listen has neither 127.0.0.1 nor 0.0.0.0 (the bench loads 127.0.0.1)")
    client = ClientTable(radius.clients).lookup("127.0.0.1")
    if client is None:
        raise ProcessError("no [[radius.clients]] entry covers 127.0.0.1")
    return Server("occ serve", "127.0.0.1", radius.auth_port, radius.acct_port, client.secret)


async def _baseline(
    options: BenchOptions,
    report: dict[str, Any],
    workdir: Path,
    identities: Sequence[Identity],
    password: str,
    *,
    attrs: Attrs,
    run_id: str,
    progress: Progress,
    watch: dict[str, int],
) -> list[PhaseResult]:
    """The same phases against FreeRADIUS; [] (with ``baseline_error``) when it cannot run."""
    try:
        path = await freeradius.ensure_installed(options.install, progress)
    except freeradius.BaselineUnavailable as exc:
        report["baseline_error"] = str(exc)
        progress(f"FreeRADIUS baseline skipped: {exc}")
        return []
    report["freeradius_version"] = await freeradius.version(path)
    progress(f"starting {report['freeradius_version']} (-f, private copy of {freeradius.STOCK_CONFIG})")
    server: Server | None = None
    try:
        server = await freeradius.start(path, workdir, identities, password)
        builder = PacketBuilder(attrs, server.secret, accounts.nas_identifier(run_id), password.encode())
        try:
            await probe(server, builder, identities[0])
        except ProcessError as exc:
            raise ProcessError(f"{exc}:\n{freeradius.log_tail(workdir)}") from None
        report["freeradius_target"] = server.where()
        phases = await run_target(
            server, options, builder, identities, run_id, progress, server.watched(watch)
        )
    except (ProcessError, freeradius.BaselineUnavailable, OSError) as exc:
        report["baseline_error"] = str(exc)
        progress(f"FreeRADIUS baseline failed: {exc}")
        return []
    finally:
        if server is not None:
            report.setdefault("freeradius_target", {}).update(await server.stop(5.0))
            report["freeradius_target"]["dropped_in_log"] = freeradius.dropped_requests(workdir)
    return phases


async def run_benchmark(
    options: BenchOptions, config: Path, settings: Any, progress: Progress = lambda _: None
) -> dict[str, Any]:
    """Everything ``occ bench radius`` does; returns the report (``conservation`` and ``replies`` say
    pass or fail)."""
    with _cancelled_by_sigterm():
        return await _run_benchmark(options, config, settings, progress)


@contextlib.contextmanager
def _cancelled_by_sigterm() -> Iterator[None]:
    """SIGTERM cancels the benchmark like Ctrl-C does, so that its ``finally`` blocks stop FreeRADIUS and
    the daemon and remove the bench accounts (SIGKILL leaves the children to ``die_with_parent``)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    try:
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError, ValueError):
        task = None  # not the main thread, or no signals here
    try:
        yield
    finally:
        if task is not None:
            loop.remove_signal_handler(signal.SIGTERM)


async def _run_benchmark(
    options: BenchOptions, config: Path, settings: Any, progress: Progress
) -> dict[str, Any]:
    run_id = secrets.token_hex(3)
    password = secrets.token_hex(8)  # the bench subscribers' (never printed)
    started_at = datetime.now(UTC)
    catalog = await plan_catalog(settings, options.plan, progress)
    attrs = resolve(load(settings.radius.dictionary))
    store = await BalanceStore.connect(settings.redis, settings.balance)
    report: dict[str, Any] = {
        "benchmark": "radius",
        "mode": options.mode,
        **run_facts(options, run_id, started_at),
    }
    count = options.accounts
    if options.mode == ACCT:  # enough accounts that none gets near the data volume tier
        sessions = options.requests // (options.interims + 2) * phases_at_most(options.find_peak)
        count = accounts_needed(options.accounts, sessions, options.interims, options.step)
    identities = accounts.bench_identities(run_id, count)
    workdir = Path(tempfile.mkdtemp(prefix="occ-bench-radius-"))
    server: Server | None = None
    try:
        watch = await watched_processes(store)
        progress(f"provisioning {count} bench accounts ({accounts.account_prefix(run_id)}*)")
        await accounts.provision(store, identities, options.plan, password)
        if options.spawn:
            progress("starting occ serve")
            server = await spawn_occ(config, workdir)
        else:
            server = configured_server(settings)
        report["target"] = {**server.where(), "spawned": options.spawn}
        builder = PacketBuilder(attrs, server.secret, accounts.nas_identifier(run_id), password.encode())
        await probe(server, builder, identities[0])
        ours = await run_target(server, options, builder, identities, run_id, progress, server.watched(watch))
        report["occ"] = {p.name: summarize(p) for p in ours}
        report["replies"] = replies_check(options.mode, ours)
        expected = accounts.expected_charges(catalog, options.plan, identities, ours, started_at)
        unsettled = accounts.unsettled(identities, ours)
        conservation = await accounts.check(store, expected, unsettled)
        report["conservation"] = {**conservation.as_dict(), "timeouts": sum(p.timeouts for p in ours)}
        progress(f"conservation: {conservation.status}")
        report["reconcile"] = await reconcile_bench(settings, store, [who.account_id for who in identities])
        progress(f"reconcile (live money vs PostgreSQL ledger): {report['reconcile']['status']}")
        report["target"].update(await server.stop())
        theirs: list[PhaseResult] = []
        if options.baseline:
            theirs = await _baseline(
                options,
                report,
                workdir,
                identities,
                password,
                attrs=attrs,
                run_id=run_id,
                progress=progress,
                watch=watch,
            )
            if theirs:
                report["freeradius"] = {p.name: summarize(p) for p in theirs}
        report["ratios"], report["goals"] = goals_and_ratios(options.mode, ours, theirs, options.load_share)
    finally:
        if server is not None:
            await server.stop()
        if not options.keep_accounts:
            with contextlib.suppress(Exception):
                report["bench_keys_removed"] = await accounts.remove(store, identities, run_id)
        await store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return report
