"""``occ bench diameter``: open-loop Diameter credit-control load against the daemon, a python-diameter
baseline and raw Redis in the same run, and a money conservation check. The work is in
:mod:`occ.diameter.bench`; results go to ``benchmarks/results/``.

``occ bench radius``: open-loop RADIUS load (PAP auth, or accounting sessions) against the daemon and a
FreeRADIUS baseline in the same run, and a money conservation check; the work is in
:mod:`occ.radius_bench`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shlex
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from occ.cli import common
from occ.settings import config_path

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from occ.diameter.bench import BenchOptions as DiameterOptions
    from occ.radius_bench.run import BenchOptions as RadiusOptions

Options = TypeVar("Options", bound="DataclassInstance")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("bench", help="load benchmarks", description="load benchmarks")
    commands = group.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)
    from occ.diameter.bench import BenchOptions

    defaults = BenchOptions()
    p = common.add_command(
        commands,
        "diameter",
        "Open-loop CCR-I / k x CCR-U / CCR-T sessions against occ serve: throughput, latency "
        "percentiles and Result-Codes per message type, the peak and 80 percent of it, a python-diameter "
        "baseline and raw Redis EVALSHA in the same run, and a money conservation check (exit 1 when it "
        "fails).",
        json_output=True,
    )
    _add_count(p, "--sessions", defaults.sessions, "N", "at most N sessions per phase")
    per_second = "sessions started per second"
    _add_rate_and_duration(p, defaults.rate, defaults.duration, per_second, "starting sessions")
    _add_count(p, "--updates", defaults.updates, "K", "CCR-U per session")
    _add_count(p, "--connections", defaults.connections, "C", "Diameter connections")
    _add_count(p, "--accounts", defaults.accounts, "M", "bench accounts, at least")
    _add_count(p, "--grant", defaults.grant, "OCTETS", "octets requested per grant")
    _add_count(
        p, "--max-open", defaults.max_open, "N", "sessions running at once before new starts are skipped"
    )
    baseline = "the same load against a python-diameter node answering fixed CCAs (default on)"
    _add_run_options(p, defaults, "[diameter] listen/port", baseline)
    redis = "raw redis-benchmark EVALSHA of the session script (default on)"
    _add_switch(p, "--redis-baseline", defaults.redis_baseline, redis)
    _add_output_options(p, defaults.plan, "diameter")
    p.set_defaults(handler=_diameter)
    _register_radius(commands)


# ---- options both benchmarks take ------------------------------------------------------------------------


def _add_count(p: argparse.ArgumentParser, flag: str, default: int, metavar: str, what: str) -> None:
    """A whole-number option whose help is ``what`` and its default."""
    p.add_argument(flag, type=int, default=default, metavar=metavar, help=f"{what} (default {default})")


def _add_switch(p: argparse.ArgumentParser, flag: str, default: bool, what: str) -> None:
    """An on/off option (``--x`` / ``--no-x``)."""
    p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=what)


def _add_rate_and_duration(
    p: argparse.ArgumentParser, rate: float, duration: float, per_second: str, sending: str
) -> None:
    p.add_argument(
        "--rate",
        type=float,
        default=rate,
        metavar="R",
        help=f"{per_second}; with --find-peak, the peak phase's rate, which should exceed capacity "
        f"(default {rate:g})",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=duration,
        metavar="S",
        help=f"seconds of {sending} per phase (default {duration:g})",
    )


def _add_run_options(
    p: argparse.ArgumentParser, defaults: DiameterOptions | RadiusOptions, target: str, baseline: str
) -> None:
    """--timeout, the phases (--find-peak, --load-share), --spawn (else the daemon at ``target``) and
    --baseline (helped by ``baseline``)."""
    p.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        metavar="S",
        help=f"seconds to wait for an answer (default {defaults.timeout:g})",
    )
    peak = (
        "run at --rate (above capacity; twice that, at most twice more, while the target keeps up) to "
        "find the peak, then at --load-share of it (default on)"
    )
    _add_switch(p, "--find-peak", defaults.find_peak, peak)
    p.add_argument(
        "--load-share",
        type=float,
        default=defaults.load_share,
        metavar="F",
        help="with --find-peak, the last phase offers this share of the peak "
        f"(default {defaults.load_share:g})",
    )
    spawn = (
        "start occ serve on free ports with a copy of the config, stop it after "
        f"(default on); --no-spawn targets the daemon at {target}"
    )
    _add_switch(p, "--spawn", defaults.spawn, spawn)
    _add_switch(p, "--baseline", defaults.baseline, baseline)


def _add_output_options(p: argparse.ArgumentParser, plan: str, name: str) -> None:
    from occ.bench_common import ROOT

    out, latest = ROOT / "benchmarks" / "results", f"{name}-latest.txt"
    p.add_argument("--keep-accounts", action="store_true", help="leave the bench accounts in Redis")
    p.add_argument("--plan", default=plan, help=f"tariff plan of the bench accounts ({plan})")
    p.add_argument("--out", default=str(out), metavar="DIR", help=f"where the JSON and {latest} go")


def _check_phase_options(args: argparse.Namespace) -> None:
    if args.rate <= 0 or args.duration <= 0 or args.timeout <= 0:
        raise common.UsageError("--rate, --duration and --timeout must be positive")
    if not 0 < args.load_share <= 1:
        raise common.UsageError("--load-share must be in (0, 1]")


def _progress(line: str) -> None:
    print(f"-- {line}", file=sys.stderr, flush=True)


def _command_line() -> str:
    return "occ " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "occ"


def _options_from(args: argparse.Namespace, options: type[Options], **renamed: str) -> Options:
    """A benchmark's options (a dataclass) from the arguments of the same names, or the ones ``renamed``
    names."""
    fields = dataclasses.fields(options)
    return options(**{f.name: getattr(args, renamed.get(f.name, f.name)) for f in fields})


def _finish(args: argparse.Namespace, name: str, report: Mapping[str, Any], text: str, ok: bool) -> int:
    """Write the results (``<name>-<time>.json``, ``<name>-latest.txt``), print them; the exit status."""
    from occ.bench_common import write_results

    path = write_results(report, text, Path(args.out), name)
    if args.json:
        common.print_json(report)
    else:
        print(text)
        print(f"written: {os.path.relpath(path)} and {name}-latest.txt")
    return 0 if ok else 1


# ---- diameter --------------------------------------------------------------------------------------------


def _diameter(args: argparse.Namespace) -> int:
    from occ.bench_common import target_healthy
    from occ.diameter import bench

    for name in ("sessions", "updates", "connections", "accounts", "grant", "max_open"):
        if getattr(args, name) < (0 if name == "updates" else 1):
            raise common.UsageError(f"--{name.replace('_', '-')} must be positive")
    _check_phase_options(args)
    settings = common.settings(args)
    options = _options_from(args, bench.BenchOptions)
    report = _run(
        "diameter", lambda: bench.run_benchmark(options, config_path(args.config), settings, _progress)
    )
    ok = report.get("conservation", {}).get("status") == "ok" and target_healthy(report)
    return _finish(args, "diameter", report, bench.format_report(report), ok)


def _run(name: str, benchmark: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """Run a benchmark coroutine; unreachable services and failed helper processes are command errors."""
    from balance.store import StoreUnavailable
    from billing.db import DatabaseUnavailable
    from occ.bench_spawn import ProcessError
    from occ.cli.account import postgres_failures

    try:
        with postgres_failures():
            report = common.run(benchmark())
    except (StoreUnavailable, DatabaseUnavailable, ProcessError, ConnectionError, OSError) as exc:
        raise common.CommandError(f"bench {name}: {exc}") from None
    except asyncio.CancelledError:  # SIGTERM (the radius bench): cleaned up, stop like Ctrl-C
        raise KeyboardInterrupt from None
    report["command"] = _command_line()
    return report


# ---- radius ----------------------------------------------------------------------------------------------


def _register_radius(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from occ.radius_bench.run import BenchOptions

    defaults = BenchOptions()
    p = common.add_command(
        commands,
        "radius",
        "Open-loop RADIUS load from precomputed packets against occ serve: PAP Access-Requests (--mode auth) "
        "or Start / k x Interim-Update / Stop accounting sessions (--mode acct); throughput, latency "
        "percentiles and reply types, the peak and 80 percent of it, FreeRADIUS on its stock configuration "
        "as the baseline in the same run, and a money conservation check (exit 1 when it fails).",
        json_output=True,
    )
    p.add_argument("--mode", choices=("auth", "acct"), default=defaults.mode,
                   help=f"what to send (default {defaults.mode})")  # fmt: skip
    per_second = "requests sent per second (acct: sessions start at R / (K + 2) per second)"
    _add_rate_and_duration(p, defaults.rate, defaults.duration, per_second, "sending")
    _add_count(p, "--requests", defaults.requests, "N", "at most N requests per phase, all built before it")
    _add_count(p, "--interims", defaults.interims, "K", "acct: Interim-Updates per session")
    _add_count(
        p, "--step", defaults.step, "OCTETS", "acct: octets the running total grows by per Interim-Update"
    )
    _add_count(
        p, "--sockets", defaults.sockets, "C", "UDP source sockets, each at most 256 requests outstanding"
    )
    _add_count(p, "--accounts", defaults.accounts, "M", "bench accounts, at least")
    baseline = (
        "the same phases against FreeRADIUS 3.2 on a private copy of its stock configuration (default on)"
    )
    _add_run_options(p, defaults, "[radius] auth_port/acct_port on 127.0.0.1", baseline)
    install = (
        "apt-get install freeradius when it is missing (as root; default on); --no-install-freeradius "
        "prints the command and skips the baseline"
    )
    _add_switch(p, "--install-freeradius", defaults.install, install)
    _add_output_options(p, defaults.plan, "radius")
    p.set_defaults(handler=_radius)


def _radius(args: argparse.Namespace) -> int:
    from occ.radius_bench import report as text_report
    from occ.radius_bench.run import BenchOptions, run_benchmark

    for name in ("requests", "sockets", "accounts", "step"):
        if getattr(args, name) < 1:
            raise common.UsageError(f"--{name} must be positive")
    if args.interims < 0:
        raise common.UsageError("--interims must be 0 or more")
    _check_phase_options(args)
    if args.requests < (1 if args.mode == "auth" else args.interims + 2):
        raise common.UsageError("--requests must hold at least one session")
    settings = common.settings(args)
    options = _options_from(args, BenchOptions, install="install_freeradius")
    report = _run("radius", lambda: run_benchmark(options, config_path(args.config), settings, _progress))
    text = text_report.format_report(report)
    return _finish(args, f"radius-{args.mode}", report, text, text_report.passed(report))
