"""What ``occ bench diameter`` (:mod:`occ.diameter.bench`) and ``occ bench radius`` (:mod:`occ.radius_bench`)
both use: CPU accounting, latency figures, the search for the peak, the machine, report text and result
files, the tariff catalog, and the removal of a run's keys from the live store (``occ serve`` on a private
copy of the config is :mod:`occ.bench_spawn`).
The money side of the bench accounts (opening them, what a session costs, the conservation check) is the
Diameter bench's :mod:`occ.diameter.bench_accounts`, which the RADIUS bench uses too.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from balance.store import BalanceStore
from occ.log import redact

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from rating_core.tariff import Catalog

ROOT = Path(__file__).resolve().parents[1]
MIB = 1_048_576
SCAN_ROUNDS = 100_000  # far more than any prefix needs: a loop over a live SCAN cursor stays bounded

Progress = Callable[[str], None]

# ---- CPU and figures -------------------------------------------------------------------------------------


def _cpu_seconds(pid: int, children: bool = True) -> float | None:
    """CPU seconds of a process and, with ``children``, its live children (the workers of a supervised
    ``occ serve``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if not children:
        return seconds
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for kid in kids:
        seconds += _cpu_seconds(int(kid)) or 0.0
    return seconds


def _machine_cpu() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    steal = values[7] if len(values) > 7 else 0
    busy = sum(values[:8]) - idle - steal  # guest time is already in user
    return busy / tick, steal / tick


def cpu_snapshot(watch: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each watched process (name -> pid) and of the machine (busy, steal)."""
    # the load generator's children are the processes it measures: counted under their own names
    snapshot = {
        name: seconds
        for name, pid in watch.items()
        if (seconds := _cpu_seconds(pid, children=pid != os.getpid())) is not None
    }
    machine = _machine_cpu()
    if machine is not None:
        snapshot["machine busy"], snapshot["steal"] = machine
    return snapshot


def cpu_share(before: Mapping[str, float], after: Mapping[str, float], wall: float) -> dict[str, float]:
    """CPU seconds per wall second of each watched process, of everything else, of steal, and in total."""
    if wall <= 0:
        return {}
    shares = {name: (after[name] - before[name]) / wall for name in before if name in after}
    if "machine busy" in shares:
        total = shares.pop("machine busy")
        watched = sum(v for k, v in shares.items() if k != "steal")
        shares["other processes"] = max(0.0, total - watched)
        shares[f"all (of {os.cpu_count() or 1} cores)"] = total
    return shares


async def watched_processes(store: BalanceStore) -> dict[str, int]:
    """What every phase's CPU shares name: the load generator, and the redis-server when it runs here."""
    watch = {"load generator": os.getpid()}
    try:
        info = await store.link.execute("INFO", "server")
    except Exception:
        return watch
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("process_id:"):
            pid = int(line.split(":", 1)[1])
            if Path(f"/proc/{pid}/stat").exists():
                watch["redis-server"] = pid
            break
    return watch


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies: Iterable[float]) -> dict[str, float]:
    """``p50_ms``, ``p95_ms``, ``p99_ms`` and ``max_ms`` of latencies given in seconds."""
    ordered = sorted(latencies)
    return {
        "p50_ms": percentile(ordered, 50) * 1000,
        "p95_ms": percentile(ordered, 95) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": (ordered[-1] if ordered else 0.0) * 1000,
    }


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The load generator's own collector pauses would show up as server latency: a phase is bounded and
    makes next to no cyclic garbage, so the collector is off while it runs and catches up after."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


# ---- the peak ------------------------------------------------------------------------------------------

PEAK_RAISES = 2  # a peak phase whose target kept up runs again at twice the rate, at most this many times
KEPT_UP_SHARE = 0.97  # answered at least this share of the offered rate...
KEPT_UP_MISSED = 0.001  # ...and skipped or lost at most this share of what was due (a few datagrams)
BELOW_PEAK = "-below-peak-"  # in the name of a peak phase's attempt the target kept up with


class Phase(Protocol):
    name: str


PhaseT = TypeVar("PhaseT", bound=Phase)


def kept_up(offered_per_s: float, answered_per_s: float, missed: int, due: int) -> bool:
    """Whether a target answered about everything a phase offered it (``missed`` of the ``due`` requests or
    sessions skipped or left without an answer): its answers/s then measure the offered rate, not its
    capacity."""
    return missed <= KEPT_UP_MISSED * due and answered_per_s >= KEPT_UP_SHARE * offered_per_s


async def search_peak(
    run: Callable[[float, str], Awaitable[PhaseT]],
    rate: float,
    below_capacity: Callable[[PhaseT], bool],
    progress: Progress,
    name: str,
) -> list[PhaseT]:
    """The peak phase, ``run(rate, label)``, and while its target kept up (``below_capacity``: the phase
    found no peak), the phase again at twice the rate, at most ``PEAK_RAISES`` times; every attempt in
    order, the last one the peak phase. Both targets of a bench get the same search, so neither's peak is
    the generator's offered rate while the other's is its capacity. Each attempt runs under its own label
    (``peak``, ``peak-2``, ...: the load's session ids must not repeat), and is then named
    ``<name>-below-peak-<n>``, the last one ``<name>-peak``."""
    attempts = [await run(rate, "peak")]
    while len(attempts) <= PEAK_RAISES and below_capacity(attempts[-1]):
        rate *= 2
        progress(f"{name}: kept up with the offered rate (no peak yet): again at {rate:,.0f}/s")
        attempts.append(await run(rate, f"peak-{len(attempts) + 1}"))
    for n, attempt in enumerate(attempts[:-1], 1):
        attempt.name = f"{name}{BELOW_PEAK}{n}"
    attempts[-1].name = f"{name}-peak"
    return attempts


def phases_at_most(find_peak: bool) -> int:
    """How many phases a target can run: the peak search and the share of the peak, or one fixed phase."""
    return PEAK_RAISES + 2 if find_peak else 1


def peak_and_share(phases: Sequence[PhaseT]) -> tuple[PhaseT, PhaseT | None]:
    """The peak phase (or the one fixed phase) of ``[*below peak, peak, share]`` and the phase at a share of
    it, None when there was none."""
    measured = [p for p in phases if BELOW_PEAK not in p.name]
    return measured[0], measured[1] if len(measured) > 1 else None


def peak_lines(report: Mapping[str, Any], targets: Sequence[str]) -> list[str]:
    """A note for each target whose last peak phase still kept up: its peak figure is a lower bound."""
    lines = []
    for target in targets:
        peak = (report.get(target) or {}).get(f"{target}-peak") or {}
        if peak.get("kept_up"):
            lines.append(
                f"NOTE: {target} kept up even at the last peak phase's rate: its peak figure is a lower "
                "bound (raise --rate)"
            )
    return lines


# ---- the report ------------------------------------------------------------------------------------------


def money_core_module() -> ModuleType | None:
    """benchmarks/bench_money_core.py (its machine() and redis_benchmark()), when in a source checkout."""
    path = ROOT / "benchmarks" / "bench_money_core.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_money_core", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> dict[str, str]:
    """CPU, cores, Python and Redis of this machine (``bench_money_core.machine()``), or what Python knows."""
    module = money_core_module()
    if module is not None:
        found: dict[str, str] = module.machine()
        return found
    import platform

    return {"host": platform.node(), "cores": str(os.cpu_count()), "python": platform.python_version()}


def run_facts(options: DataclassInstance, run_id: str, started_at: datetime) -> dict[str, Any]:
    """The report's ``when``, ``machine``, ``options`` and ``run_id``."""
    when = started_at.isoformat(timespec="seconds")
    return {"when": when, "machine": machine(), "options": asdict(options), "run_id": run_id}


def head_lines(title: str, report: Mapping[str, Any]) -> list[str]:
    """The title, the command line (when the report has it) and the machine."""
    lines = [title]
    if "command" in report:
        lines.append(f"command: {report['command']}")
    m = report.get("machine", {})
    lines.append(
        f"machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, Python {m.get('python', '?')}, "
        f"{m.get('redis', '')}".rstrip(", ")
    )
    return lines


def exit_lines(report: Mapping[str, Any]) -> list[str]:
    """When the spawned ``occ serve`` did not exit 0 at the end of the run: its status and its log's end
    (the run then fails: its figures are not those of a healthy server)."""
    if target_healthy(report):
        return []
    target = report["target"]
    lines = [f"occ serve exited with status {target['exit_status']}; the end of its log:"]
    lines.extend(f"  | {line}" for line in str(target.get("log_tail", "")).splitlines())
    return lines


def target_healthy(report: Mapping[str, Any]) -> bool:
    """Whether the spawned ``occ serve`` exited 0 (or the target was not spawned by the bench)."""
    return (report.get("target") or {}).get("exit_status") in (0, None)


def cpu_lines(phase: Mapping[str, Any], busy: float = 0.25) -> list[str]:
    """A phase's CPU shares, after a note when processes outside the benchmark used more than ``busy``."""
    cpu = phase.get("cpu_share_of_one_core") or {}
    lines = []
    if cpu.get("other processes", 0.0) > busy:
        lines.append(
            f"  NOTE: the machine was not quiet: processes outside this benchmark used "
            f"{cpu['other processes']:.2f} of a core during this phase"
        )
    if cpu:
        lines.append("  CPU (share of one core): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    return lines


def verdict_lines(report: Mapping[str, Any]) -> list[str]:
    """The ratios, then a line per goal: its value and met / NOT met, or why it was not measured."""
    ratios = report.get("ratios") or {}
    lines = ["ratios:"] if ratios else []
    for name, value in ratios.items():
        lines.append(f"  {name:<55} {'n/a' if value is None else f'{value:.2f}'}")
    for name, goal in (report.get("goals") or {}).items():
        value = goal["value"]
        shown = "n/a" if value is None else f"{value:.2f}"
        verdict = ("met" if goal["met"] else "NOT met") if value is not None else goal.get("why")
        lines.append(f"goal {name}: {shown} — {verdict or 'not measured'}")
    return lines


@contextlib.asynccontextmanager
async def scratch_database(admin_dsn: str, name: str) -> AsyncIterator[str]:
    """A new PostgreSQL database ``<name>_<random>`` with every migration applied, dropped afterwards;
    yields its DSN. ``admin_dsn`` connects to a database the user may create others from."""
    import uuid

    import asyncpg

    from billing.migrate import apply_migrations

    base, _, _ = admin_dsn.rpartition("/")
    database = f"{name}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'create database "{database}"')
    finally:
        await admin.close()
    try:
        await apply_migrations(f"{base}/{database}")
        yield f"{base}/{database}"
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'drop database if exists "{database}" with (force)')
        finally:
            await admin.close()


def add_script_options(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark script on a scratch database: the admin DSN, and where results go."""
    parser.add_argument(
        "--database", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-save", action="store_true", help="print only")


def script_facts(name: str, options: argparse.Namespace) -> dict[str, Any]:
    """A benchmark script's report head: ``benchmark``, ``command``, ``when``, ``machine`` and ``options``,
    the admin DSN left out (it may hold a password)."""
    return {
        "benchmark": name,
        "command": f"python benchmarks/bench_{name}.py " + redact(shlex.join(sys.argv[1:])),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "options": vars(options) | {"database": "(admin DSN)"},
    }


def finish(report: Mapping[str, Any], text: str, out_dir: Path, name: str, *, save: bool, ok: bool) -> int:
    """A benchmark script's end: print the text, write the results unless told not to; the exit status."""
    print(text)
    if save:
        print(f"written: {write_results(report, text, out_dir, name)}")
    return 0 if ok else 1


def write_results(report: Mapping[str, Any], text: str, out_dir: Path, name: str) -> Path:
    """``<name>-<UTC time>.json`` (the report) and ``<name>-latest.txt`` (the text) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{name}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / f"{name}-latest.txt").write_text(text + "\n")
    return path


# ---- the catalog and the run's keys ----------------------------------------------------------------------


async def plan_catalog(settings: Any, plan: str, progress: Progress) -> Catalog:
    """The installed tariffs, with ``config/tariffs/demo.toml`` installed first when ``plan`` is missing."""
    from billing import db
    from billing.tariff_store import install_tariff, load_catalog

    conn = await db.connect(settings.database.url, settings.database.connect_timeout_s)
    try:
        catalog = await load_catalog(conn)
        if plan not in catalog.names():
            demo = ROOT / "config" / "tariffs" / "demo.toml"
            progress(f"plan {plan!r} not installed: installing {demo}")
            await install_tariff(conn, demo.read_text(encoding="utf-8"), demo.name)
            catalog = await load_catalog(conn)
    finally:
        await conn.close()
    return catalog


async def reconcile_bench(settings: Any, store: BalanceStore, accounts: list[str]) -> dict[str, Any]:
    """``occ reconcile`` for the bench's accounts at the end of a run: their live money against the
    PostgreSQL ledger (plus the records the charge sink has not stored yet)."""
    import asyncpg

    from balance.charges import ChargeStreams
    from billing import db
    from billing.reconcile import reconcile

    try:
        conn = await db.connect(settings.database.url, settings.database.connect_timeout_s)
    except db.DatabaseUnavailable as exc:
        return {"status": "not run", "reason": str(exc)}
    try:
        streams = ChargeStreams(store.link, store.keys, settings.sink.group, "bench")
        found = await reconcile(conn, streams, only=accounts, registered=False)
    except asyncpg.PostgresError as exc:
        return {
            "status": "not run",
            "reason": f"PostgreSQL: {str(exc).strip().splitlines()[0]} (occ db migrate?)",
        }
    finally:
        await conn.close()
    drifts = [
        {
            "account": d.account_id,
            "problem": d.problem,
            "live": d.live,
            "ledger": d.ledger,
            "in_flight": d.in_flight,
        }
        for d in found.drifts[:20]
    ]
    return {"status": "failed" if found.drifts else "ok", "accounts": found.checked, "drifts": drifts}


def reconcile_lines(report: Mapping[str, Any]) -> list[str]:
    r = report.get("reconcile")
    if not r:
        return []
    if r["status"] == "not run":
        return [f"reconcile: not run — {r['reason']}"]
    lines = [
        f"reconcile (live money vs PostgreSQL ledger): {r['status'].upper()} — {r['accounts']} bench accounts"
    ]
    lines.extend(f"  drift: {d}" for d in r["drifts"][:5])
    return lines


async def _scan(store: BalanceStore, pattern: str) -> list[str]:
    found: list[str] = []
    cursor: Any = b"0"
    for _ in range(SCAN_ROUNDS):
        cursor, keys = await store.link.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 5000)
        found.extend(k.decode() if isinstance(k, bytes) else str(k) for k in keys)
        if cursor in (b"0", 0, "0"):
            break
    return found


async def remove_bench_keys(
    store: BalanceStore, account_prefix: str, account_ids: Iterable[str], keys: Iterable[str], *patterns: str
) -> int:
    """Delete the bench accounts (ids starting with ``account_prefix``): their hashes, ``keys``, their
    stored answers and every key matching one of ``patterns``, and their reaper entries; how many went.
    Their charge records stay in the partitions' charge streams (appended atomically with the money)."""
    accounts = [store.keys.account(account_id) for account_id in account_ids]
    doomed = [a.account for a in accounts] + list(keys)
    for pattern in (f"{store.keys.prefix}:*:i:{account_prefix}*", *patterns):
        doomed += await _scan(store, pattern)
    removed = 0
    for i in range(0, len(doomed), 500):
        removed += int(await store.link.execute("UNLINK", *doomed[i : i + 500]))
    # the reaper indexes hold "<account>|<session>" of open sessions: none after a clean run
    for index in sorted({a.reaper for a in accounts}):
        cursor: Any = b"0"
        for _ in range(SCAN_ROUNDS):
            cursor, flat = await store.link.execute(
                "ZSCAN", index, cursor, "MATCH", f"{account_prefix}*", "COUNT", 1000
            )
            members = flat[0::2]
            if members:
                removed += int(await store.link.execute("ZREM", index, *members))
            if cursor in (b"0", 0, "0"):
                break
    return removed
