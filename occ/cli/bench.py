"""``occ bench diameter``: open-loop Diameter credit-control load against the daemon, a python-diameter
baseline and raw Redis in the same run, and a money conservation check. The work is in
:mod:`occ.diameter.bench`; results go to ``benchmarks/results/``.

``occ bench radius``: open-loop RADIUS load (PAP auth, or accounting sessions) against the daemon and a
FreeRADIUS baseline in the same run, and a money conservation check; the work is in
:mod:`occ.radius_bench`."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from occ.cli import common
from occ.settings import config_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("bench", help="load benchmarks", description="load benchmarks")
    commands = group.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)
    from occ.diameter.bench import ROOT, BenchOptions

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
    p.add_argument(
        "--sessions",
        type=int,
        default=defaults.sessions,
        metavar="N",
        help=f"at most N sessions per phase (default {defaults.sessions})",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=defaults.rate,
        metavar="R",
        help="sessions started per second; with --find-peak, the peak phase's rate, which should "
        f"exceed capacity (default {defaults.rate:g})",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=defaults.duration,
        metavar="S",
        help=f"seconds of starting sessions per phase (default {defaults.duration:g})",
    )
    p.add_argument(
        "--updates",
        type=int,
        default=defaults.updates,
        metavar="K",
        help=f"CCR-U per session (default {defaults.updates})",
    )
    p.add_argument(
        "--connections",
        type=int,
        default=defaults.connections,
        metavar="C",
        help=f"Diameter connections (default {defaults.connections})",
    )
    _add_accounts_option(p, defaults.accounts)
    p.add_argument(
        "--grant",
        type=int,
        default=defaults.grant,
        metavar="OCTETS",
        help=f"octets requested per grant (default {defaults.grant})",
    )
    p.add_argument(
        "--max-open",
        type=int,
        default=defaults.max_open,
        metavar="N",
        help=f"sessions running at once before new starts are skipped (default {defaults.max_open})",
    )
    _add_phase_options(p, defaults.timeout, defaults.find_peak, defaults.load_share)
    _add_spawn_option(p, defaults.spawn, "[diameter] listen/port")
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=defaults.baseline,
        help="the same load against a python-diameter node answering fixed CCAs (default on)",
    )
    p.add_argument(
        "--redis-baseline",
        action=argparse.BooleanOptionalAction,
        default=defaults.redis_baseline,
        help="raw redis-benchmark EVALSHA of the session script (default on)",
    )
    _add_output_options(p, defaults.plan, ROOT / "benchmarks" / "results", "diameter-latest.txt")
    p.set_defaults(handler=_diameter)
    _register_radius(commands)


# ---- options both benchmarks take ------------------------------------------------------------------------


def _add_accounts_option(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument(
        "--accounts",
        type=int,
        default=default,
        metavar="M",
        help=f"bench accounts, at least (default {default})",
    )


def _add_phase_options(
    p: argparse.ArgumentParser, timeout: float, find_peak: bool, load_share: float
) -> None:
    p.add_argument(
        "--timeout",
        type=float,
        default=timeout,
        metavar="S",
        help=f"seconds to wait for an answer (default {timeout:g})",
    )
    p.add_argument(
        "--find-peak",
        action=argparse.BooleanOptionalAction,
        default=find_peak,
        help="run at --rate (above capacity) to find the peak, then at --load-share of it (default on)",
    )
    p.add_argument(
        "--load-share",
        type=float,
        default=load_share,
        metavar="F",
        help=f"with --find-peak, the second phase offers this share of the peak (default {load_share:g})",
    )


def _add_spawn_option(p: argparse.ArgumentParser, default: bool, target: str) -> None:
    p.add_argument(
        "--spawn",
        action=argparse.BooleanOptionalAction,
        default=default,
        help="start occ serve on free ports with a copy of the config, stop it after "
        f"(default on); --no-spawn targets the daemon at {target}",
    )


def _add_output_options(p: argparse.ArgumentParser, plan: str, out: Path, latest: str) -> None:
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


def _print_report(
    args: argparse.Namespace, report: Mapping[str, Any], text: str, path: Path, latest: str
) -> None:
    if args.json:
        common.print_json(report)
    else:
        print(text)
        print(f"written: {os.path.relpath(path)} and {latest}")


# ---- diameter --------------------------------------------------------------------------------------------


def _diameter(args: argparse.Namespace) -> int:
    from occ.diameter import bench

    for name in ("sessions", "updates", "connections", "accounts", "grant", "max_open"):
        if getattr(args, name) < (0 if name == "updates" else 1):
            raise common.UsageError(f"--{name.replace('_', '-')} must be positive")
    _check_phase_options(args)
    settings = common.settings(args)
    options = bench.BenchOptions(
        sessions=args.sessions,
        rate=args.rate,
        duration=args.duration,
        updates=args.updates,
        connections=args.connections,
        accounts=args.accounts,
        grant=args.grant,
        max_open=args.max_open,
        timeout=args.timeout,
        find_peak=args.find_peak,
        load_share=args.load_share,
        spawn=args.spawn,
        baseline=args.baseline,
        redis_baseline=args.redis_baseline,
        keep_accounts=args.keep_accounts,
        plan=args.plan,
    )

    report = _run(
        "diameter", lambda: bench.run_benchmark(options, config_path(args.config), settings, _progress)
    )
    text = bench.format_report(report)
    path = bench.write_results(report, text, Path(args.out))
    _print_report(args, report, text, path, "diameter-latest.txt")
    return 0 if report.get("conservation", {}).get("status") == "ok" else 1


def _run(name: str, benchmark: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """Run a benchmark coroutine; unreachable services and failed helper processes are command errors."""
    from balance.store import StoreUnavailable
    from billing.db import DatabaseUnavailable
    from occ.cli.account import postgres_failures
    from occ.diameter.bench_processes import ProcessError

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
    from occ.diameter.bench_processes import ROOT
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
    p.add_argument(
        "--rate",
        type=float,
        default=defaults.rate,
        metavar="R",
        help="requests sent per second (acct: sessions start at R / (K + 2) per second); with --find-peak, "
        f"the peak phase's rate, which should exceed capacity (default {defaults.rate:g})",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=defaults.duration,
        metavar="S",
        help=f"seconds of sending per phase (default {defaults.duration:g})",
    )
    p.add_argument(
        "--requests",
        type=int,
        default=defaults.requests,
        metavar="N",
        help=f"at most N requests per phase, all built before it (default {defaults.requests})",
    )
    p.add_argument(
        "--interims",
        type=int,
        default=defaults.interims,
        metavar="K",
        help=f"acct: Interim-Updates per session (default {defaults.interims})",
    )
    p.add_argument(
        "--step",
        type=int,
        default=defaults.step,
        metavar="OCTETS",
        help=f"acct: octets the running total grows by per Interim-Update (default {defaults.step})",
    )
    p.add_argument(
        "--sockets",
        type=int,
        default=defaults.sockets,
        metavar="C",
        help=f"UDP source sockets, each at most 256 requests outstanding (default {defaults.sockets})",
    )
    _add_accounts_option(p, defaults.accounts)
    _add_phase_options(p, defaults.timeout, defaults.find_peak, defaults.load_share)
    _add_spawn_option(p, defaults.spawn, "[radius] auth_port/acct_port on 127.0.0.1")
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=defaults.baseline,
        help="the same phases against FreeRADIUS 3.2 on a private copy of its stock configuration "
        "(default on)",
    )
    p.add_argument(
        "--install-freeradius",
        action=argparse.BooleanOptionalAction,
        default=defaults.install,
        help="apt-get install freeradius when it is missing (as root; default on); --no-install-freeradius "
        "prints the command and skips the baseline",
    )
    _add_output_options(p, defaults.plan, ROOT / "benchmarks" / "results", "radius-latest.txt")
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
    options = BenchOptions(
        mode=args.mode,
        rate=args.rate,
        duration=args.duration,
        requests=args.requests,
        interims=args.interims,
        step=args.step,
        sockets=args.sockets,
        accounts=args.accounts,
        timeout=args.timeout,
        find_peak=args.find_peak,
        load_share=args.load_share,
        spawn=args.spawn,
        baseline=args.baseline,
        install=args.install_freeradius,
        keep_accounts=args.keep_accounts,
        plan=args.plan,
    )
    report = _run("radius", lambda: run_benchmark(options, config_path(args.config), settings, _progress))
    text = text_report.format_report(report)
    path = text_report.write_results(report, text, Path(args.out))
    _print_report(args, report, text, path, "radius-latest.txt")
    return 0 if text_report.passed(report) else 1
