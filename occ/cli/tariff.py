"""``occ tariff check|load FILE``: validate a tariff file; install its plan versions in PostgreSQL."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from billing import db
from billing.db import DatabaseUnavailable
from billing.tariff_store import install_tariff
from occ.cli import common
from occ.cli.account import postgres_failures
from rating_core.tariff import Problem, TariffError
from rating_core.tariff_file import TariffSet, parse_tariff


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("tariff", help="check and install tariff files", description="tariff files")
    commands = group.add_subparsers(dest="tariff_command", metavar="COMMAND", required=True)

    check = common.add_command(
        commands, "check", "validate a tariff file; list every problem (exit 2 if any)", json_output=True
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=_check)

    load = common.add_command(
        commands,
        "load",
        "validate a tariff file and install its plan versions in PostgreSQL",
        json_output=False,
    )
    load.add_argument("file", metavar="FILE")
    load.set_defaults(handler=_load)


def read_text(path: str) -> str:
    """A tariff file's text; UsageError (exit 2) naming the file when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise common.UsageError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise common.UsageError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise common.UsageError(f"{path}: cannot read: {exc.strerror}") from None


def parse(path: str, text: str) -> tuple[TariffSet | None, list[str]]:
    """The parsed set (None if the text is not a well-formed tariff file) and every problem, as lines."""
    try:
        tariff = parse_tariff(text, path)
    except TariffError as exc:
        return None, [str(exc)]
    return tariff, [str(p) for p in tariff.problems]


def plan_summary(tariff: TariffSet) -> str:
    names = {name for name, _ in tariff.declared}
    text = f"{len(names)} plan{'s' if len(names) != 1 else ''}"
    if len(tariff.declared) != len(names):
        text += f" ({len(tariff.declared)} versions)"
    return text


def _problem_json(p: Problem) -> dict[str, Any]:
    return {"plan": p.plan, "version": p.version or None, "rate": p.rate, "key": p.key, "message": p.message}


def _check(args: argparse.Namespace) -> int:
    text = read_text(args.file)
    tariff, problems = parse(args.file, text)
    if args.json:
        out: dict[str, Any] = {"file": args.file, "ok": not problems, "problems": problems}
        if tariff is not None:
            out["plans"] = sorted({name for name, _ in tariff.declared})
            out["versions"] = [{"plan": n, "effective_from": e.isoformat()} for n, e in tariff.declared]
            out["problem_details"] = [_problem_json(p) for p in tariff.problems]
        common.print_json(out)
    elif problems:
        for line in problems:
            print(line)
    elif tariff is not None:
        print(f"ok: {plan_summary(tariff)}")
    return 2 if problems else 0


def _load(args: argparse.Namespace) -> int:
    text = read_text(args.file)
    tariff, problems = parse(args.file, text)
    if problems or tariff is None:
        for line in problems:
            print(line)
        raise common.UsageError(f"{args.file}: not installed: {len(problems)} problem(s), see above")
    s = common.settings(args)
    name = Path(args.file).name

    async def install() -> list[tuple[str, datetime]]:
        conn = await db.connect(s.database.url, s.database.connect_timeout_s)
        try:
            return await install_tariff(conn, text, name)
        finally:
            await conn.close()

    with postgres_failures():
        try:
            installed = common.run(install())
        except DatabaseUnavailable as exc:
            raise common.CommandError(str(exc)) from None
        except TariffError as exc:
            # problems together with the versions already installed, or a changed installed version
            for p in exc.problems[1:]:
                print(p)
            raise common.UsageError(str(exc.problems[0]) if exc.problems else str(exc)) from None
    if not installed:
        print(f"{args.file}: nothing new: its {plan_summary(tariff)} are installed already")
    for plan, effective_from in installed:
        print(f"installed {plan} effective from {effective_from.isoformat()}")
    return 0
