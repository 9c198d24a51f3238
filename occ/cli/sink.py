"""``occ sink``: the charge sink alone, for deployments that scale it apart from ``occ serve``."""

from __future__ import annotations

import argparse

from occ.cli import common
from occ.settings import Settings, config_path

SINK_PID_FILE = "occ-sink.pid"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = common.add_command(
        sub,
        "sink",
        "Run the charge sink alone in the foreground: Redis charge streams -> PostgreSQL ledger, each"
        " record once; /metrics and /health on sink.metrics_port. Set sink.enabled = false for the"
        " `occ serve` daemons then. SIGHUP reloads, SIGTERM stops after the batch in hand.",
        json_output=False,
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="port of /metrics and /health (default sink.metrics_port)",
    )
    parser.set_defaults(handler=run_sink)


def sink_metrics_port(settings: Settings, metrics_port: int | None) -> int:
    """The /metrics port of a sink-only process: its own."""
    port = settings.sink.metrics_port if metrics_port is None else metrics_port
    if not 0 < port < 65536:
        raise common.UsageError(f"invalid --metrics-port {port}: expected a port number 1-65535")
    return port


def run_sink(args: argparse.Namespace) -> int:
    settings = common.settings(args)
    port = sink_metrics_port(settings, args.metrics_port)
    from occ.components import SinkComponent
    from occ.daemon import Daemon

    daemon = Daemon(
        config_path(args.config),
        settings,
        components=lambda _: [SinkComponent()],
        pid_name=SINK_PID_FILE,
        metrics_port=port,
    )
    return common.run(daemon.run())
