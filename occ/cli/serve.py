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
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    settings = common.settings(args)  # an invalid file stops here: exit 2
    from occ.daemon import Daemon

    return common.run(Daemon(config_path(args.config), settings).run())
