"""Shared plumbing of the sub-commands: errors, --config/--json, output, running coroutines."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from datetime import UTC, date, datetime
from typing import Any, NoReturn, TypeVar

import msgspec

from occ.settings import ConfigError, Settings, load_settings

T = TypeVar("T")


class UsageError(Exception):
    """Bad input from the user: arguments, config file, data file. Exit status 2."""


class CommandError(Exception):
    """The command could not do its work (service unreachable, operation refused). Exit status 1."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports errors as one line on stderr (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str, *, json_output: bool
) -> argparse.ArgumentParser:
    """A sub-command parser with the options every command shares."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    add_common_options(parser, json_output=json_output)
    return parser


def add_common_options(parser: argparse.ArgumentParser, *, json_output: bool) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="configuration file (default $OCC_CONFIG or config/occ.toml)",
    )
    if json_output:
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def day(value: str | None, option: str) -> date:
    """A YYYY-MM-DD option's value; today (UTC) when it was not given. Bad input is a UsageError."""
    if value is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"invalid {option} {value!r}: expected YYYY-MM-DD") from None


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on uvloop."""
    import uvloop

    return uvloop.run(coro)
