"""``occ rate``: what a usage would cost under a plan — a dry run that touches no balance."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from billing import db
from billing.db import DatabaseUnavailable
from billing.tariff_store import load_catalog
from occ.cli import common
from occ.cli.account import postgres_failures
from occ.cli.tariff import read_text
from rating_core.money import format_money
from rating_core.rating import Rated, Usage, price_of
from rating_core.tariff import Catalog, NoRate, Plan, TariffError, Unit, UnknownPlan
from rating_core.tariff_file import parse_tariff

_UNIT_NAMES = {Unit.SECOND: "s", Unit.BYTE: "B", Unit.EVENT: "event"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = common.add_command(
        sub, "rate", "price a usage under a plan without touching any balance (dry run)", json_output=True
    )
    parser.add_argument("--plan", required=True, help="plan name")
    parser.add_argument("--service", required=True, help="service name, e.g. voice, data, sms")
    parser.add_argument("--destination", default="", help="destination digits (longest prefix match)")
    parser.add_argument(
        "--start",
        required=True,
        metavar="ISO8601",
        help="when it started, with UTC offset: 2025-03-03T19:59:00Z",
    )
    parser.add_argument("--quantity", required=True, type=_count, help="units used: seconds, bytes or events")
    parser.add_argument("--offset", default=0, type=_count, help="units of the session already rated before")
    parser.add_argument("--prior", default=0, type=_count, metavar="MICRO", help="raw amount rated before")
    parser.add_argument(
        "--cycle-used", default=0, type=_count, metavar="UNITS", help="charged units used this cycle (tiers)"
    )
    parser.add_argument(
        "--tariff",
        metavar="FILE",
        action="append",
        help="rate with this tariff file (repeatable) instead of the catalog in PostgreSQL",
    )
    parser.set_defaults(handler=_rate)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _start(text: str) -> datetime:
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise common.UsageError(f"--start: expected an ISO 8601 date-time, got {text!r}") from None
    if start.tzinfo is None:
        raise common.UsageError(f"--start: {text!r} has no UTC offset (add Z or +01:00)")
    return start


def _catalog(args: argparse.Namespace) -> Catalog:
    if args.tariff:
        try:
            return Catalog(*(parse_tariff(read_text(path), path) for path in args.tariff))
        except TariffError as exc:
            raise common.UsageError(str(exc)) from None
    s = common.settings(args)

    async def load() -> Catalog:
        conn = await db.connect(s.database.url, s.database.connect_timeout_s)
        try:
            return await load_catalog(conn)
        finally:
            await conn.close()

    with postgres_failures():
        try:
            return common.run(load())
        except DatabaseUnavailable as exc:
            raise common.CommandError(str(exc)) from None
        except TariffError as exc:
            raise common.CommandError(f"the installed tariffs are invalid: {exc}") from None


def _money(value: int) -> str:
    return format_money(value)


def rated_json(plan: Plan, usage: Usage, rated: Rated) -> dict[str, Any]:
    def money(key: str, value: int) -> dict[str, Any]:
        return {key: value, f"{key}_formatted": format_money(value)}

    return {
        "plan": plan.name,
        "version_from": plan.effective_from.isoformat(),
        "currency": plan.currency,
        "service": usage.service,
        "unit": plan.unit_of(usage.service).value,
        "destination": usage.destination,
        "rate": rated.rate,
        "prefix": rated.prefix,
        "start": usage.start.isoformat(),
        "quantity": usage.quantity,
        "offset": usage.offset,
        "charged_units": rated.charged_units,
        **money("amount", rated.amount),
        **money("raw", rated.raw),
        **money("setup_fee", rated.setup_fee),
        **money("minimum_adjustment", rated.minimum_adjustment),
        "segments": [
            {
                "band": s.band,
                "tier": s.tier,
                "units": s.units,
                **money("price", s.price),
                "block": s.block,
                **money("amount", s.amount),
                "start": s.start.isoformat() if s.start is not None else None,
            }
            for s in rated.segments
        ],
    }


def _print(plan: Plan, usage: Usage, rated: Rated) -> None:
    unit = _UNIT_NAMES[plan.unit_of(usage.service)]
    prefix = f"prefix {rated.prefix}" if rated.prefix else "default prefix"
    print(f"plan {plan.name} (version from {plan.effective_from.isoformat()}), {plan.currency}")
    print(
        f"{usage.service} {usage.destination or '-'}: rate {rated.rate!r} ({prefix}); "
        f"{usage.quantity} {unit} used, {rated.charged_units} {unit} charged"
    )
    if rated.segments:
        rows = [("band", "tier", "units", "price", "amount", "start")]
        for s in rated.segments:
            rows.append(
                (
                    s.band,
                    str(s.tier),
                    str(s.units),
                    f"{_money(s.price)}/{s.block} {unit}",
                    _money(s.amount),
                    s.start.isoformat() if s.start is not None else "",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    print(f"setup fee {_money(rated.setup_fee)}, minimum adjustment {_money(rated.minimum_adjustment)}")
    print(f"total {_money(rated.amount)} {plan.currency}")


def _rate(args: argparse.Namespace) -> int:
    start = _start(args.start)
    catalog = _catalog(args)
    usage = Usage(
        service=args.service,
        quantity=args.quantity,
        start=start,
        destination=args.destination,
        offset=args.offset,
        prior=args.prior,
        cycle_used=args.cycle_used,
    )
    try:
        plan = catalog.plan(args.plan, start)
        rated = price_of(plan, usage)
    except (UnknownPlan, NoRate) as exc:
        raise common.UsageError(str(exc)) from None
    if args.json:
        common.print_json(rated_json(plan, usage, rated))
    else:
        _print(plan, usage, rated)
    return 0
