"""``occ serve``: run the charging server in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse

from occ.cli import common
from occ.settings import config_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = common.add_command(
        sub,
        "serve",
        "Run the server in the foreground: /metrics and /health, protocol listeners, background tasks. "
        "SIGHUP reloads the configuration, SIGTERM stops gracefully.",
        json_output=False,
    )
    # a worker process of a supervised `occ serve` (server.workers > 1); not for people to type
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    # its end of the Unix socket pair on which the supervisor hands over Diameter connections
    parser.add_argument("--handoff-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    settings = common.settings(args)  # an invalid file stops here: exit 2
    from occ.daemon import Daemon

    path = config_path(args.config)
    if args.worker is not None:
        import functools
        import socket

        from occ.components import build_components

        if not 1 <= args.worker <= settings.server.workers:
            raise common.UsageError(f"--worker {args.worker}: server.workers is {settings.server.workers}")
        daemon = Daemon(
            path,
            settings,
            functools.partial(
                build_components,
                worker=args.worker,
                diameter_handoff=None if args.handoff_fd is None else socket.socket(fileno=args.handoff_fd),
            ),
            pid_name=f"occ-worker-{args.worker}.pid",
            metrics_port=settings.metrics.port + args.worker - 1,
        )
        return common.run(daemon.run())
    if settings.server.workers > 1:
        from occ.supervisor import Supervisor

        return common.run(Supervisor(path, settings).run())
    return common.run(Daemon(path, settings).run())
