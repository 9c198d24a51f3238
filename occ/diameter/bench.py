"""``occ bench diameter``: open-loop credit-control load, a same-run baseline, and a money conservation check.

Load shape. Sessions start at ``rate`` per second for ``duration`` seconds (at most ``sessions`` of them)
whether or not earlier ones were answered: the schedule is fixed in advance, so a slow server shows as
latency, not as a lower offered rate. Each session is CCR-INITIAL, ``updates`` × CCR-UPDATE (each reporting
the octets granted by the previous answer as used and asking for ``grant`` more) and CCR-TERMINATION
(reporting part of the last grant, not aligned to the 1 KiB charging increment, so rounding is exercised),
one request after the other, on Rating-Group 10 (data, 0.01 per MiB in the demo plan). Sessions are spread
round-robin over ``connections`` Diameter connections and ``accounts`` prepaid bench accounts. A session
whose start finds ``max_open`` sessions still running is skipped and counted: it bounds the backlog when the
offered rate is above capacity (the peak phase) and never triggers below it.

Peak and 80 %. The peak phase offers more than the server can take; its answers/s within the sending window
is the capacity. A target that kept up with it (answered about all it was offered) was not at its peak: the
phase runs again at twice the rate, at most twice more (``search_peak``), for the daemon and the baseline
alike. A last phase offers 80 % of the peak, and its latencies are the ones that matter.

Money. Bench accounts are provisioned straight into the live store the daemon uses (same Redis, same key
prefix: ``bench-<run>-<i>``, msisdn ``999<run><i>``, no unit buckets, a large opening balance). After every
session ended, for each account ``opening − balance − reserved`` must equal the tariff price of what its
sessions reported and had acknowledged with 2001 — each session priced piece by piece as a continuation with
:func:`rating_core.rating.price_of`, exactly as rated — and ``reserved`` must be 0. A request left without an
answer makes the check "unverified" (a failure): whether it charged cannot be known.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from balance.store import BalanceStore
from occ.bench_common import (
    MIB,
    Progress,
    cpu_lines,
    exit_lines,
    head_lines,
    latency_summary,
    peak_and_share,
    peak_lines,
    percentile,
    phases_at_most,
    plan_catalog,
    reconcile_bench,
    reconcile_lines,
    run_facts,
    search_peak,
    verdict_lines,
    watched_processes,
)
from occ.bench_spawn import ProcessError, Spawned, to_toml
from occ.diameter.bench_accounts import (
    accounts_needed,
    bench_subscribers,
    check_conservation,
    expected_charges,
    provision,
    remove,
    session_price,
)
from occ.diameter.bench_load import RATING_GROUP, CcrTemplate, LoadSpec, PhaseResult, run_phase, summarize
from occ.diameter.bench_processes import raw_redis_evalsha, spawn_baseline, spawn_daemon

# re-exported: the tests use the benchmark through this module
__all__ = [
    "BenchOptions",
    "CcrTemplate",
    "LoadSpec",
    "PhaseResult",
    "ProcessError",
    "accounts_needed",
    "bench_subscribers",
    "check_conservation",
    "expected_charges",
    "format_report",
    "percentile",
    "provision",
    "remove",
    "run_benchmark",
    "run_phase",
    "session_price",
    "summarize",
    "to_toml",
]

# ---- the whole benchmark ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchOptions:
    sessions: int = 50_000
    rate: float = 2000.0
    duration: float = 10.0
    updates: int = 3
    connections: int = 4
    accounts: int = 100
    grant: int = MIB
    max_open: int = 512
    timeout: float = 30.0
    find_peak: bool = True
    load_share: float = 0.8
    spawn: bool = True
    baseline: bool = True
    redis_baseline: bool = True
    keep_accounts: bool = False
    plan: str = "demo"


async def run_target_phases(
    name: str,
    host: str,
    port: int,
    options: BenchOptions,
    subscribers: Sequence[str],
    run_id: str,
    progress: Progress,
    watch: Mapping[str, int],
) -> list[PhaseResult]:
    """The peak search from ``options.rate`` (:func:`occ.bench_common.search_peak`) and the phase at
    ``load_share`` of the peak, in the order they ran; or the one fixed phase."""

    def spec(rate: float) -> LoadSpec:
        return LoadSpec(
            rate=rate,
            duration=options.duration,
            sessions=options.sessions,
            updates=options.updates,
            grant=options.grant,
            max_open=options.max_open,
            timeout=options.timeout,
        )

    async def run(rate: float, label: str) -> PhaseResult:
        progress(f"{name}: {label} phase, {rate:,.1f} sessions/s for {options.duration:g} s")
        phase = await run_phase(
            host, port, options.connections, subscribers, spec(rate), f"{name}-{label}", run_id, watch=watch
        )
        progress(f"{name}: {label}: {phase.answers_per_s():,.0f} answers/s")
        return phase

    if not options.find_peak:
        return [await run(options.rate, "fixed")]
    phases = await search_peak(run, options.rate, PhaseResult.kept_up, progress, name)
    pct = f"{options.load_share * 100:g}%"
    per_session = options.updates + 2
    phases.append(await run(options.load_share * phases[-1].answers_per_s() / per_session, pct))
    return phases


async def run_benchmark(
    options: BenchOptions,
    config: Path,
    settings: Any,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Everything ``occ bench diameter`` does; returns the report (``conservation.status`` says pass/fail)."""
    run_id = secrets.token_hex(3)
    started_at = datetime.now(UTC)
    catalog = await plan_catalog(settings, options.plan, progress)
    store = await BalanceStore.connect(settings.redis, settings.balance)
    report: dict[str, Any] = {"benchmark": "diameter", **run_facts(options, run_id, started_at)}
    workdir = Path(tempfile.mkdtemp(prefix="occ-bench-"))
    daemon: Spawned | None = None
    count = accounts_needed(
        options.accounts, options.sessions * phases_at_most(options.find_peak), options.updates, options.grant
    )
    subscribers = bench_subscribers(run_id, count)
    msisdns = [s.msisdn for s in subscribers]
    try:
        watch = await watched_processes(store)
        if options.spawn:
            progress("starting occ serve")
            daemon = await spawn_daemon(config, workdir)
            host, port = "127.0.0.1", daemon.port
            if daemon.process.pid:
                watch["occ serve"] = daemon.process.pid
        else:
            listen = settings.diameter.listen
            host = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen
            port = settings.diameter.port
        report["target"] = {"host": host, "port": port, "spawned": options.spawn}
        progress(f"provisioning {count} bench accounts (bench-{run_id}-*)")
        await provision(store, subscribers, options.plan)
        ours = await run_target_phases("occ", host, port, options, msisdns, run_id, progress, watch)
        report["occ"] = {p.name: summarize(p) for p in ours}
        unanswered = sum(p.unanswered for p in ours)
        expected = expected_charges(catalog, options.plan, subscribers, ours, started_at)
        conservation = await check_conservation(store, expected, unanswered=unanswered)
        report["conservation"] = conservation.as_dict()
        progress(f"conservation: {conservation.status}")
        report["reconcile"] = await reconcile_bench(settings, store, [s.account_id for s in subscribers])
        progress(f"reconcile (live money vs PostgreSQL ledger): {report['reconcile']['status']}")
        if daemon is not None:
            report["target"].update(await daemon.stopped())
            daemon = None
        theirs: list[PhaseResult] = []
        baseline: Spawned | None = None
        if options.baseline:
            try:
                baseline = await spawn_baseline(workdir, options.connections, options.grant)
            except ProcessError as exc:
                report["baseline_error"] = str(exc)
                progress(f"baseline not measured: {exc}")
        if baseline is not None:
            try:
                watch_baseline = {k: v for k, v in watch.items() if k != "occ serve"}
                if baseline.process.pid:
                    watch_baseline["baseline node"] = baseline.process.pid
                theirs = await run_target_phases(
                    "baseline", "127.0.0.1", baseline.port, options, msisdns, run_id, progress, watch_baseline
                )
            finally:
                await baseline.stop(5.0)
            report["baseline"] = {p.name: summarize(p) for p in theirs}
        raw: float | None = None
        if options.redis_baseline:
            progress("raw redis-benchmark EVALSHA of the session script")
            raw, source = await raw_redis_evalsha(store, settings.redis.url, min(options.duration, 5.0))
            report["raw_redis_evalsha_source"] = source
        report["raw_redis_evalsha_per_s"] = raw
        report["ratios"], report["goals"] = _ratios(ours, theirs, raw, options)
    finally:
        if daemon is not None:
            await daemon.stop()
        if not options.keep_accounts:
            with contextlib.suppress(Exception):
                report["bench_keys_removed"] = await remove(store, subscribers, run_id)
        await store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _ratios(
    ours: Sequence[PhaseResult], theirs: Sequence[PhaseResult], raw: float | None, options: BenchOptions
) -> tuple[dict[str, float | None], dict[str, Any]]:
    peak, share = peak_and_share(ours)
    their_peak = peak_and_share(theirs)[0] if theirs else None
    ours_u = peak.answers_per_s("CCR-U")
    theirs_u = their_peak.answers_per_s("CCR-U") if their_peak else 0.0
    ratios: dict[str, float | None] = {
        "occ / baseline, CCR-U answers/s at peak": ours_u / theirs_u if theirs_u else None,
        "occ / baseline, all answers/s at peak": (
            peak.answers_per_s() / their_peak.answers_per_s()
            if their_peak and their_peak.answers_per_s()
            else None
        ),
        "occ CCR-U answers/s at peak / raw EVALSHA calls/s": ours_u / raw if raw else None,
        "occ all answers/s at peak / raw EVALSHA calls/s": peak.answers_per_s() / raw if raw else None,
    }
    goals: dict[str, Any] = {}
    vs_baseline = ratios["occ / baseline, CCR-U answers/s at peak"]
    goals["CCR-U throughput >= 3x baseline"] = {
        "value": vs_baseline,
        "met": vs_baseline is not None and vs_baseline >= 3.0,
    }
    if share is not None:
        p99 = latency_summary(share.stats["CCR-U"].latencies)["p99_ms"]
        goals[f"CCR-U p99 <= 5 ms at {options.load_share * 100:g}% of peak"] = {
            "value": p99,
            "met": p99 <= 5.0,
        }
    return ratios, goals


# ---- text --------------------------------------------------------------------------------------------


def format_report(report: Mapping[str, Any]) -> str:
    lines = head_lines(f"diameter benchmark — {report['when']}", report)
    o = report["options"]
    lines.append(
        f"load: open loop, session = CCR-I + {o['updates']} x CCR-U + CCR-T (data, RG {RATING_GROUP}, "
        f"{o['grant']} octets per grant), {o['connections']} connections, max {o['max_open']} sessions open"
    )
    for target in ("occ", "baseline"):
        for name, phase in report.get(target, {}).items():
            lines.append("")
            lines.append(
                f"{name}: offered {phase['offered_sessions_per_s']:,.1f} sessions/s for "
                f"{phase['duration_s']:g} s; started {phase['sessions_started']}, skipped (max open) "
                f"{phase['sessions_skipped_max_open']}; {phase['answers_per_s']:,.0f} answers/s; "
                f"unanswered {phase['unanswered']}"
                + ("; kept up with the offered rate" if phase.get("kept_up") else "")
            )
            lines.append(
                f"  {'':6} {'answers':>8} {'per s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
                f"{'max ms':>8}  result codes"
            )
            for kind, t in [*phase["types"].items(), ("all", phase["all"])]:
                codes = ", ".join(f"{c}: {n}" for c, n in t.get("result_codes", {}).items())
                items = t.get("item_result_codes", {})
                if items:
                    codes += " (MSCC " + ", ".join(f"{c}: {n}" for c, n in items.items()) + ")"
                rate = f"{t['answers_per_s']:>9,.0f}" if "answers_per_s" in t else f"{'':>9}"
                lines.append(
                    f"  {kind:<6} {t['answers']:>8} {rate} {t['p50_ms']:>8.2f} {t['p95_ms']:>8.2f} "
                    f"{t['p99_ms']:>8.2f} {t['max_ms']:>8.1f}  {codes}"
                )
            lines.extend(cpu_lines(phase))
    c = report.get("conservation")
    lines.append("")
    lines.extend(exit_lines(report))
    if c:
        lines.append(
            f"money conservation: {c['status'].upper()} — {c['accounts']} bench accounts, expected "
            f"{c['expected_micros']} µ, charged {c['charged_micros']} µ, reserved {c['reserved_micros']} µ, "
            f"unanswered requests {c['unanswered_requests']}"
        )
        for mismatch in c["mismatches"][:5]:
            lines.append(f"  mismatch: {mismatch}")
    lines.extend(reconcile_lines(report))
    raw = report.get("raw_redis_evalsha_per_s")
    if raw:
        lines.append(f"raw redis-benchmark EVALSHA of the session script, 32 conn: {raw:,.0f} calls/s")
    if report.get("raw_redis_evalsha_source"):
        lines.append(f"  measured by {report['raw_redis_evalsha_source']}")
    lines.extend(peak_lines(report, ("occ", "baseline")))
    lines.extend(verdict_lines(report))
    return "\n".join(lines)
