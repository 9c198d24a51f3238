"""The ``occ`` command line: one sub-command module per area, each with ``register(subparsers)``.

Every command takes ``--config PATH``; commands that print data take ``--json``. A command fails with one
line on stderr and a non-zero exit: 2 for bad input (arguments, config, files), 1 for a failure at run time
(unreachable Redis or PostgreSQL, a refused operation).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from occ.cli import common

# Sub-command modules, in the order they appear in --help.
_MODULES = (
    "serve",
    "sink",
    "reload",
    "tariff",
    "rate",
    "db",
    "account",
    "identity",
    "bucket",
    "topup",
    "balance_cmd",
    "redis_cmd",
    "reconcile",
    "bill",
    "invoice",
    "recurring",
    "payments",
    "dunning",
    "gl",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = common.ArgumentParser(prog="occ", description="Real-time AAA and online charging server.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _MODULES:
        try:
            module = importlib.import_module(f"occ.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"occ.cli.{name}":
                continue  # area not built yet
            raise
        register: Callable[[argparse._SubParsersAction[Any]], None] = module.register
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except common.UsageError as exc:
        print(f"occ: {exc}", file=sys.stderr)
        return 2
    except common.CommandError as exc:
        print(f"occ: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader left (occ balance alice | head): stop quietly, and keep Python's exit-time flush of
        # stdout from failing again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
