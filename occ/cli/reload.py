"""``occ reload``: check the configuration file, then ask the running daemon to reload it (SIGHUP)."""

from __future__ import annotations

import argparse
import os
import signal

from occ.cli import common
from occ.settings import config_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = common.add_command(
        sub,
        "reload",
        "Validate the configuration file and make the running daemon reload it and the tariff catalog. "
        "The daemon logs whether it applied the reload.",
        json_output=False,
    )
    parser.set_defaults(handler=reload)


def reload(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    settings = common.settings(args)  # an invalid file is reported and never sent: exit 2
    from occ.daemon import NoDaemon, pid_file_path, running_daemon_pid

    pid_file = pid_file_path(settings)
    try:
        pid = running_daemon_pid(pid_file)
    except NoDaemon as exc:
        raise common.CommandError(str(exc)) from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise common.CommandError(f"the occ daemon (pid {pid}) in {pid_file} has just exited") from None
    except PermissionError:
        raise common.CommandError(f"not permitted to signal the occ daemon (pid {pid})") from None
    print(f"{path}: valid; sent SIGHUP to the occ daemon (pid {pid}); its log shows the outcome")
    return 0
