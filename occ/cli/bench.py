"""``occ bench diameter``: open-loop Diameter credit-control load against the daemon, a python-diameter
baseline and raw Redis in the same run, and a money conservation check. The work is in
:mod:`occ.diameter.bench`; results go to ``benchmarks/results/``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

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
    p.add_argument(
        "--accounts",
        type=int,
        default=defaults.accounts,
        metavar="M",
        help=f"bench accounts, at least (default {defaults.accounts})",
    )
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
    p.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        metavar="S",
        help=f"seconds to wait for an answer (default {defaults.timeout:g})",
    )
    p.add_argument(
        "--find-peak",
        action=argparse.BooleanOptionalAction,
        default=defaults.find_peak,
        help="run at --rate (above capacity) to find the peak, then at --load-share of it (default on)",
    )
    p.add_argument(
        "--load-share",
        type=float,
        default=defaults.load_share,
        metavar="F",
        help="with --find-peak, the second phase offers this share of the peak "
        f"(default {defaults.load_share:g})",
    )
    p.add_argument(
        "--spawn",
        action=argparse.BooleanOptionalAction,
        default=defaults.spawn,
        help="start occ serve on free ports with a copy of the config, stop it after "
        "(default on); --no-spawn targets the daemon at [diameter] listen/port",
    )
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
    p.add_argument("--keep-accounts", action="store_true", help="leave the bench accounts in Redis")
    p.add_argument(
        "--plan", default=defaults.plan, help=f"tariff plan of the bench accounts ({defaults.plan})"
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), metavar="DIR",
                   help="where the JSON and diameter-latest.txt go")  # fmt: skip
    p.set_defaults(handler=_diameter)


def _diameter(args: argparse.Namespace) -> int:
    from balance.store import StoreUnavailable
    from billing.db import DatabaseUnavailable
    from occ.cli.account import postgres_failures
    from occ.diameter import bench

    for name in ("sessions", "updates", "connections", "accounts", "grant", "max_open"):
        if getattr(args, name) < (0 if name == "updates" else 1):
            raise common.UsageError(f"--{name.replace('_', '-')} must be positive")
    if args.rate <= 0 or args.duration <= 0 or args.timeout <= 0:
        raise common.UsageError("--rate, --duration and --timeout must be positive")
    if not 0 < args.load_share <= 1:
        raise common.UsageError("--load-share must be in (0, 1]")
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

    def progress(line: str) -> None:
        print(f"-- {line}", file=sys.stderr, flush=True)

    try:
        with postgres_failures():
            report = common.run(bench.run_benchmark(options, config_path(args.config), settings, progress))
    except (StoreUnavailable, DatabaseUnavailable, bench.ProcessError, ConnectionError, OSError) as exc:
        raise common.CommandError(f"bench diameter: {exc}") from None
    report["command"] = "occ " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "occ"
    text = bench.format_report(report)
    path = bench.write_results(report, text, Path(args.out))
    if args.json:
        common.print_json(report)
    else:
        print(text)
        print(f"written: {os.path.relpath(path)} and diameter-latest.txt")
    return 0 if report.get("conservation", {}).get("status") == "ok" else 1
