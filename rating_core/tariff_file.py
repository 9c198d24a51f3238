"""The TOML tariff file: parse, resolve inheritance and versions, check. See ``docs/tariffs.md``.

Three stages:

1. **parse** — TOML into per-declaration specs. A value of the wrong type or form (a price that is not a
   decimal string, an unknown key, "25:00") raises :class:`TariffError` at once, naming file, plan, rate, key.
2. **resolve** — each declared plan version is flattened over the version of its parent in force (parents
   first, any depth). When the parent gets a new version while a child version is in force, the child gets
   a derived version from that instant too, so a child always follows its parent.
3. **check** — everything that is well-formed but wrong (overlapping band windows, unreachable prefixes,
   negative prices, unknown parent, a band without a price, ...) becomes a :class:`Problem`. Problems
   are collected, not raised, so ``occ tariff check`` lists them all; a :class:`Catalog` refuses a set
   that has any.

The only file I/O in ``rating_core`` is :func:`load_tariff_file`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rating_core.bands import DAY_SECONDS, WEEKDAYS, TimeBands, Window, window_text
from rating_core.money import Money, Rounding, format_money, parse_money
from rating_core.tariff import (
    Allowance,
    Fee,
    Period,
    Plan,
    Problem,
    Rate,
    Service,
    TariffError,
    Tier,
    Unit,
)

T = TypeVar("T")

DEFAULT_BAND = "default"
DEFAULT_ROUNDING = Rounding.UP
# Service defaults by unit when neither the service nor the rate says: (block, (first, subsequent)).
UNIT_DEFAULTS: Mapping[Unit, tuple[int, tuple[int, int]]] = {
    Unit.SECOND: (60, (1, 1)),
    Unit.BYTE: (1_048_576, (1, 1)),
    Unit.EVENT: (1, (1, 1)),
}

_CURRENCY = re.compile(r"[A-Z]{3}")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")


# --------------------------------------------------------------------------------------------------- specs
# What one [[plan]] table says, before inheritance and defaults. ``None`` means "not written here".


@dataclass(frozen=True, slots=True)
class _Price:
    single: Money | None  # one price for every band
    by_band: Mapping[str, Money]  # or a price per band (empty when single)

    def items(self) -> Iterable[tuple[str, Money]]:
        if self.single is not None:
            return [("", self.single)]
        return self.by_band.items()


@dataclass(frozen=True, slots=True)
class _TierSpec:
    start: int
    price: _Price


@dataclass(frozen=True, slots=True)
class _RateSpec:
    service: str
    name: str
    prefix: str
    price: _Price
    tiers: tuple[_TierSpec, ...]
    block: int | None
    increments: tuple[int, int] | None
    setup_fee: Money
    minimum: Money
    rounding: Rounding | None

    @property
    def label(self) -> str:
        return f"{self.service}/{self.prefix or '*'} {self.name}"


@dataclass(frozen=True, slots=True)
class _ServiceSpec:
    name: str
    unit: Unit | None
    block: int | None
    increments: tuple[int, int] | None
    rounding: Rounding | None
    rates: tuple[_RateSpec, ...]


@dataclass(frozen=True, slots=True)
class _BandSpec:
    name: str
    windows: tuple[tuple[tuple[int, ...], int, int], ...]  # (days, start s, end s)
    holidays: tuple[date, ...]


@dataclass(frozen=True, slots=True)
class _PlanSpec:
    """One [[plan]] table. Equal specs define the same version (where and how it was written aside)."""

    name: str
    effective_from: date | datetime = field(compare=False)  # as written; (name, instant) is the identity
    effective_text: str = field(compare=False)
    parent: str | None
    timezone: str | None
    currency: str | None
    default_band: str | None
    description: str | None
    bands: Mapping[str, _BandSpec]
    services: Mapping[str, _ServiceSpec]
    allowances: Mapping[str, tuple[int, Period]]
    fees: Mapping[str, tuple[Money, Period]]
    # the file-level defaults of the file it was written in, used when neither it nor a parent says
    file_timezone: str | None = None
    file_currency: str | None = None
    source: str = field(default="", compare=False)
    # problems found while merging this spec over its parent (unit conflicts)
    merge_problems: tuple[tuple[str | None, str, str], ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class TariffSet:
    """What one tariff file (or a combination of files) defines: resolved plan versions and every problem.

    ``declared`` lists (plan, effective_from) as written, in file order; ``plans`` also holds the versions
    a child derives when its parent changes while the child's version is in force. A set with problems may
    lack the plans those problems made unresolvable; a :class:`~rating_core.catalog.Catalog` refuses it.
    """

    source: str
    plans: tuple[Plan, ...]
    declared: tuple[tuple[str, datetime], ...]
    problems: tuple[Problem, ...] = ()
    specs: tuple[_PlanSpec, ...] = field(default=(), repr=False, compare=False)

    def declares_same(self, other: TariffSet, name: str, effective_from: datetime) -> bool:
        """Whether both sets declare plan ``name`` effective from that instant, and identically (comments,
        layout, key order, the file's name and the spelling of effective_from aside)."""
        mine = [s for s in self.specs if s.name == name and _effective(s) == effective_from]
        theirs = [s for s in other.specs if s.name == name and _effective(s) == effective_from]
        return bool(mine) and mine == theirs


# ------------------------------------------------------------------------------------------------ parsing


def _show(value: object) -> str:
    """A TOML value as the file's author would recognise it in a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a parse error is: file, plan, rate; ``fail`` raises the TariffError."""

    source: str
    plan: str | None = None
    rate: str | None = None
    version: str = ""

    def fail(self, key: str, message: str) -> NoReturn:
        raise TariffError(str(Problem(self.source, self.plan, self.rate, key, message, self.version)))

    def table(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, got {_show(value)}")
        return value

    def keys(self, table: Mapping[str, Any], allowed: Iterable[str], prefix: str) -> None:
        allowed = set(allowed)
        for k in table:
            if k not in allowed:
                self.fail(f"{prefix}{k}", "unknown key (expected one of " + ", ".join(sorted(allowed)) + ")")

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_show(value)}")
        return value

    def integer(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {_show(value)}")
        return value

    def money(self, value: object, key: str) -> Money:
        if not isinstance(value, str):
            self.fail(key, f"expected a decimal string, got {_show(value)}")
        try:
            return parse_money(value)
        except ValueError as exc:
            self.fail(key, str(exc))

    def choice(self, value: object, key: str, kind: Callable[[str], T], options: Iterable[str]) -> T:
        text = self.string(value, key)
        try:
            return kind(text)
        except ValueError:
            self.fail(key, f"expected one of {', '.join(options)}, got {_show(text)}")

    def increments(self, value: object, key: str) -> tuple[int, int]:
        if not isinstance(value, list) or len(value) != 2:
            self.fail(key, f"expected [first, subsequent], got {_show(value)}")
        return self.integer(value[0], key), self.integer(value[1], key)

    def price(self, value: object, key: str) -> _Price:
        if isinstance(value, dict):
            return _Price(None, {band: self.money(v, f"{key}.{band}") for band, v in value.items()})
        return _Price(self.money(value, key), {})


def _parse_time(where: _Where, value: object, key: str, *, end: bool) -> int:
    text = where.string(value, key)
    match = _TIME.fullmatch(text)
    if match is None:
        where.fail(key, f'expected a time of day "HH:MM", got {_show(text)}')
    h, m, s = int(match[1]), int(match[2]), int(match[3] or 0)
    seconds = h * 3600 + m * 60 + s
    if m > 59 or s > 59 or seconds > DAY_SECONDS or (seconds == DAY_SECONDS and not end):
        allowed = "00:00-24:00" if end else "00:00-23:59"
        where.fail(key, f"expected a time of day {allowed}, got {_show(text)}")
    return seconds


def _parse_days(where: _Where, value: object, key: str) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    days: set[int] = set()
    for item in items:
        text = where.string(item, key)
        for part in text.replace(" ", "").lower().split(","):
            if part in ("all", "daily"):
                days.update(range(7))
                continue
            first, _, last = part.partition("-")
            if first not in WEEKDAYS or (last and last not in WEEKDAYS):
                where.fail(key, f'expected weekdays such as "mon-fri" or ["sat", "sun"], got {_show(text)}')
            a = WEEKDAYS.index(first)
            b = WEEKDAYS.index(last) if last else a
            day = a
            while True:  # ranges may wrap: "fri-mon"
                days.add(day)
                if day == b:
                    break
                day = (day + 1) % 7
    return tuple(sorted(days))


def _parse_date(where: _Where, value: object, key: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    where.fail(key, f"expected a date YYYY-MM-DD, got {_show(value)}")


def _parse_effective(where: _Where, value: object) -> tuple[date | datetime, str]:
    key = "effective_from"
    expected = "a date (YYYY-MM-DD) or a date-time with UTC offset"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            where.fail(key, f"expected {expected}; {value.isoformat()} has no UTC offset")
        return value, value.isoformat()
    if isinstance(value, date):
        return value, value.isoformat()
    if not isinstance(value, str):
        where.fail(key, f"expected {expected}, got {_show(value)}")
    try:
        return date.fromisoformat(value), value
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        where.fail(key, f"expected {expected}, got {_show(value)}")
    if parsed.tzinfo is None:
        where.fail(key, f"expected {expected}; {_show(value)} has no UTC offset")
    return parsed, value


_PLAN_KEYS = (
    "name",
    "effective_from",
    "parent",
    "timezone",
    "currency",
    "default_band",
    "description",
    "bands",
    "services",
    "allowances",
    "fees",
)
_SERVICE_KEYS = ("unit", "block", "increments", "rounding", "rates")
_RATE_KEYS = ("name", "prefix", "price", "tiers", "block", "increments", "setup_fee", "minimum", "rounding")
_ROUNDINGS = [r.value for r in Rounding]
_UNITS = [u.value for u in Unit]


def _parse_rate(where: _Where, service: str, raw: object, key: str) -> _RateSpec:
    table = where.table(raw, key)
    name = where.string(table.get("name"), f"{key}.name") if "name" in table else None
    prefix = where.string(table.get("prefix", ""), f"{key}.prefix")
    if name is None:
        where.fail(f"{key}.name", f'required key is missing (the rate with prefix "{prefix}")')
    w = replace(where, rate=f"{service}/{prefix or '*'} {name}")
    w.keys(table, _RATE_KEYS, "")
    if "price" not in table:
        w.fail("price", "required key is missing")
    tiers = []
    for i, tier_raw in enumerate(_array(w, table.get("tiers", []), "tiers")):
        tier = w.table(tier_raw, f"tiers[{i}]")
        w.keys(tier, ("from", "price"), f"tiers[{i}].")
        for required in ("from", "price"):
            if required not in tier:
                w.fail(f"tiers[{i}].{required}", "required key is missing")
        tiers.append(
            _TierSpec(
                w.integer(tier["from"], f"tiers[{i}].from"), w.price(tier["price"], f"tiers[{i}].price")
            )
        )
    return _RateSpec(
        service=service,
        name=name,
        prefix=prefix,
        price=w.price(table["price"], "price"),
        tiers=tuple(tiers),
        block=w.integer(table["block"], "block") if "block" in table else None,
        increments=w.increments(table["increments"], "increments") if "increments" in table else None,
        setup_fee=w.money(table["setup_fee"], "setup_fee") if "setup_fee" in table else Money(0),
        minimum=w.money(table["minimum"], "minimum") if "minimum" in table else Money(0),
        rounding=w.choice(table["rounding"], "rounding", Rounding, _ROUNDINGS)
        if "rounding" in table
        else None,
    )


def _array(where: _Where, value: object, key: str) -> list[Any]:
    if not isinstance(value, list):
        where.fail(key, f"expected an array, got {_show(value)}")
    return value


def _parse_plan(source: str, raw: object, index: int) -> _PlanSpec:
    where = _Where(source)
    table = where.table(raw, f"plan[{index}]")
    if "name" not in table:
        where.fail(f"plan[{index}].name", "required key is missing")
    name = where.string(table["name"], f"plan[{index}].name")
    if not name:
        where.fail(f"plan[{index}].name", "must not be empty")
    w = _Where(source, name)
    w.keys(table, _PLAN_KEYS, "")
    if "effective_from" not in table:
        w.fail("effective_from", "required key is missing (a date or date-time with UTC offset)")
    effective, effective_text = _parse_effective(w, table["effective_from"])

    def opt_str(key: str) -> str | None:
        return w.string(table[key], key) if key in table else None

    bands: dict[str, _BandSpec] = {}
    for band, band_raw in w.table(table.get("bands", {}), "bands").items():
        k = f"bands.{band}"
        bt = w.table(band_raw, k)
        w.keys(bt, ("windows", "holidays"), f"{k}.")
        windows = []
        for i, win_raw in enumerate(_array(w, bt.get("windows", []), f"{k}.windows")):
            wk = f"{k}.windows[{i}]"
            win = w.table(win_raw, wk)
            w.keys(win, ("days", "from", "to"), f"{wk}.")
            for required in ("days", "from", "to"):
                if required not in win:
                    w.fail(f"{wk}.{required}", "required key is missing")
            windows.append(
                (
                    _parse_days(w, win["days"], f"{wk}.days"),
                    _parse_time(w, win["from"], f"{wk}.from", end=False),
                    _parse_time(w, win["to"], f"{wk}.to", end=True),
                )
            )
        holidays = tuple(
            _parse_date(w, d, f"{k}.holidays[{i}]")
            for i, d in enumerate(_array(w, bt.get("holidays", []), f"{k}.holidays"))
        )
        bands[band] = _BandSpec(band, tuple(windows), holidays)

    services: dict[str, _ServiceSpec] = {}
    for service, svc_raw in w.table(table.get("services", {}), "services").items():
        k = f"services.{service}"
        st = w.table(svc_raw, k)
        w.keys(st, _SERVICE_KEYS, f"{k}.")
        services[service] = _ServiceSpec(
            name=service,
            unit=w.choice(st["unit"], f"{k}.unit", Unit, _UNITS) if "unit" in st else None,
            block=w.integer(st["block"], f"{k}.block") if "block" in st else None,
            increments=w.increments(st["increments"], f"{k}.increments") if "increments" in st else None,
            rounding=w.choice(st["rounding"], f"{k}.rounding", Rounding, _ROUNDINGS)
            if "rounding" in st
            else None,
            rates=tuple(
                _parse_rate(w, service, r, f"{k}.rates[{i}]")
                for i, r in enumerate(_array(w, st.get("rates", []), f"{k}.rates"))
            ),
        )

    allowances: dict[str, tuple[int, Period]] = {}
    for service, a_raw in w.table(table.get("allowances", {}), "allowances").items():
        k = f"allowances.{service}"
        at = w.table(a_raw, k)
        w.keys(at, ("units", "period"), f"{k}.")
        if "units" not in at:
            w.fail(f"{k}.units", "required key is missing")
        period = w.choice(at.get("period", "monthly"), f"{k}.period", Period, ["daily", "monthly"])
        if period is Period.ONCE:
            w.fail(f"{k}.period", 'expected one of daily, monthly, got "once"')
        allowances[service] = (w.integer(at["units"], f"{k}.units"), period)

    fees: dict[str, tuple[Money, Period]] = {}
    for fee, f_raw in w.table(table.get("fees", {}), "fees").items():
        k = f"fees.{fee}"
        ft = w.table(f_raw, k)
        w.keys(ft, ("amount", "period"), f"{k}.")
        for required in ("amount", "period"):
            if required not in ft:
                w.fail(f"{k}.{required}", "required key is missing")
        fees[fee] = (
            w.money(ft["amount"], f"{k}.amount"),
            w.choice(ft["period"], f"{k}.period", Period, [p.value for p in Period]),
        )

    return _PlanSpec(
        name=name,
        effective_from=effective,
        effective_text=effective_text,
        parent=opt_str("parent"),
        timezone=opt_str("timezone"),
        currency=opt_str("currency"),
        default_band=opt_str("default_band"),
        description=opt_str("description"),
        bands=bands,
        services=services,
        allowances=allowances,
        fees=fees,
    )


def _parse_file(text: str, source: str) -> list[_PlanSpec]:
    where = _Where(source)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TariffError(f"{source}: not valid TOML: {exc}") from None
    where.keys(raw, ("timezone", "currency", "plan"), "")
    plans = _array(where, raw.get("plan", []), "plan")
    if not plans:
        where.fail("plan", "no [[plan]] tables: the file defines no plans")
    timezone = where.string(raw["timezone"], "timezone") if "timezone" in raw else None
    currency = where.string(raw["currency"], "currency") if "currency" in raw else None
    return [
        replace(_parse_plan(source, p, i), file_timezone=timezone, file_currency=currency, source=source)
        for i, p in enumerate(plans)
    ]


# ------------------------------------------------------------------------------------- inheritance merge


def _merge(child: _PlanSpec, parent: _PlanSpec) -> _PlanSpec:
    """``child`` flattened over ``parent``: what the child writes wins, key by key; rates by prefix."""
    problems: list[tuple[str | None, str, str]] = []
    services: dict[str, _ServiceSpec] = dict(parent.services)
    for name, c in child.services.items():
        p = parent.services.get(name)
        if p is None:
            services[name] = c
            continue
        if c.unit is not None and p.unit is not None and c.unit != p.unit:
            problems.append(
                (None, f"services.{name}.unit", f'"{c.unit}" differs from the parent\'s unit "{p.unit}"')
            )
        rates = {r.prefix: r for r in p.rates}
        seen: set[str] = set()
        for r in c.rates:
            if r.prefix not in seen:  # a duplicate prefix is reported by the checks; the first one counts
                seen.add(r.prefix)
                rates[r.prefix] = r
        services[name] = _ServiceSpec(
            name=name,
            unit=c.unit or p.unit,
            block=c.block if c.block is not None else p.block,
            increments=c.increments or p.increments,
            rounding=c.rounding or p.rounding,
            rates=tuple(rates.values()),
        )
    return replace(
        child,
        timezone=child.timezone or parent.timezone,
        currency=child.currency or parent.currency,
        default_band=child.default_band or parent.default_band,
        description=child.description if child.description is not None else parent.description,
        bands={**parent.bands, **child.bands},
        services=services,
        allowances={**parent.allowances, **child.allowances},
        fees={**parent.fees, **child.fees},
        merge_problems=(*parent.merge_problems, *problems),
    )


# --------------------------------------------------------------------------------------- build and check


_Found = tuple[str | None, str, str]  # (rate label, key, message) of one problem of one plan


def _zone(key: str | None) -> ZoneInfo | None:
    if not key:
        return None
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _effective(spec: _PlanSpec) -> datetime:
    """The declared effective_from as an instant; a date is local midnight in the plan's own time zone."""
    value = spec.effective_from
    if isinstance(value, datetime):
        return value
    tz = _zone(spec.timezone or spec.file_timezone) or UTC
    return datetime(value.year, value.month, value.day, tzinfo=tz)


def _time_bands(spec: _PlanSpec, tz: ZoneInfo) -> tuple[TimeBands, list[_Found]]:
    found: list[_Found] = []
    windows: list[Window] = []
    holidays: dict[date, str] = {}
    for band in spec.bands.values():
        for i, (days, start, end) in enumerate(band.windows):
            key = f"bands.{band.name}.windows[{i}]"
            if not days:
                found.append((None, key, "no weekdays"))
            elif start >= end:
                found.append(
                    (
                        None,
                        key,
                        f"from must be before to (split windows that cross midnight in two), got "
                        f"{window_text(Window(band.name, days, start, end))}",
                    )
                )
            else:
                windows.append(Window(band.name, days, start, end))
        for d in band.holidays:
            other = holidays.setdefault(d, band.name)
            if other != band.name:
                found.append(
                    (None, f"bands.{band.name}.holidays", f'{d} is also a holiday of band "{other}"')
                )
    reported: set[tuple[Window, Window]] = set()
    for day in range(7):
        todays = sorted((w for w in windows if day in w.days), key=lambda w: (w.start, w.end))
        for i, a in enumerate(todays):
            for b in todays[i + 1 :]:
                if b.start < a.end and (a, b) not in reported:
                    reported.add((a, b))
                    found.append(
                        (
                            None,
                            "bands",
                            f'windows overlap on {WEEKDAYS[day]}: "{a.band}" {window_text(a)} '
                            f'and "{b.band}" {window_text(b)}',
                        )
                    )
    return TimeBands(tz, spec.default_band or DEFAULT_BAND, tuple(windows), holidays), found


def _check_price(
    price: _Price, key: str, names: frozenset[str], occurring: frozenset[str], label: str
) -> list[_Found]:
    found: list[_Found] = []
    for band, value in price.items():
        k = f"{key}.{band}" if band else key
        if value < 0:
            found.append((label, k, f"negative price {format_money(value)}"))
        if band and band not in names:
            found.append((label, k, f'band "{band}" is not defined (bands: {", ".join(sorted(names))})'))
    if price.single is None:
        for band in sorted(occurring - set(price.by_band)):
            found.append((label, key, f'no price for band "{band}", which can occur'))
    return found


def _positive(value: int, key: str, label: str | None, what: str) -> list[_Found]:
    return [] if value > 0 else [(label, key, f"must be a positive {what}, got {value}")]


def _build(spec: _PlanSpec, effective: datetime, declared: datetime) -> tuple[Plan | None, list[_Found]]:
    """The Plan for a merged spec (None when it cannot be built) and every problem of it."""
    found: list[_Found] = list(spec.merge_problems)
    fatal = False
    tz_key = spec.timezone or spec.file_timezone
    tz = _zone(tz_key)
    if tz_key is None:
        found.append((None, "timezone", "not set (set it on the plan or at the top of the file)"))
        fatal = True
    elif tz is None:
        found.append(
            (
                None,
                "timezone",
                f'unknown time zone "{tz_key}" (expected an IANA name such as "Europe/London")',
            )
        )
        fatal = True
    currency = spec.currency or spec.file_currency
    if currency is None:
        found.append((None, "currency", "not set (set it on the plan or at the top of the file)"))
        fatal = True
    elif not _CURRENCY.fullmatch(currency):
        found.append((None, "currency", f'expected an ISO 4217 code such as "EUR", got "{currency}"'))

    bands, band_found = _time_bands(spec, tz or ZoneInfo("UTC"))
    found += band_found
    names = bands.names() | set(spec.bands)
    occurring = bands.occurring()

    services: dict[str, Service] = {}
    for svc in spec.services.values():
        sk = f"services.{svc.name}"
        if svc.unit is None:
            found.append((None, f"{sk}.unit", "not set (second, byte or event)"))
            fatal = True
            continue
        default_block, default_increments = UNIT_DEFAULTS[svc.unit]
        if svc.block is not None:
            found += _positive(svc.block, f"{sk}.block", None, "number of units")
        for value in svc.increments or ():
            found += _positive(value, f"{sk}.increments", None, "number of units")
        rates = []
        seen: dict[str, str] = {}
        for r in svc.rates:
            label = r.label
            if not r.prefix.isdigit() and r.prefix != "":
                found.append(
                    (
                        label,
                        "prefix",
                        f'"{r.prefix}" is not a digit string: no destination matches it (unreachable)',
                    )
                )
            if r.prefix in seen:
                found.append((label, "prefix", f'same prefix as rate "{seen[r.prefix]}": unreachable'))
                continue
            seen[r.prefix] = label
            block = r.block if r.block is not None else svc.block if svc.block is not None else default_block
            first, subsequent = r.increments or svc.increments or default_increments
            if r.block is not None:
                found += _positive(block, "block", label, "number of units")
            if r.increments is not None:
                found += _positive(first, "increments", label, "number of units")
                found += _positive(subsequent, "increments", label, "number of units")
            for value, key in ((r.setup_fee, "setup_fee"), (r.minimum, "minimum")):
                if value < 0:
                    found.append((label, key, f"negative amount {format_money(value)}"))
            found += _check_price(r.price, "price", names, occurring, label)
            previous = 0
            for i, t in enumerate(r.tiers):
                if t.start <= previous:
                    what = (
                        "positive (the rate's price applies from 0)"
                        if i == 0
                        else (f"greater than the previous tier's from ({previous})")
                    )
                    found.append((label, f"tiers[{i}].from", f"must be {what}, got {t.start}"))
                previous = max(previous, t.start)
                found += _check_price(t.price, f"tiers[{i}].price", names, occurring, label)

            def expand(price: _Price) -> dict[str, Money]:
                if price.single is not None:
                    return {band: price.single for band in names}
                return dict(price.by_band)

            tiers = [Tier(0, expand(r.price))]
            for t in r.tiers:
                if t.start > tiers[-1].start:
                    tiers.append(Tier(t.start, expand(t.price)))
            rates.append(
                Rate(
                    service=svc.name,
                    name=r.name,
                    prefix=r.prefix,
                    block=block,
                    first=first,
                    subsequent=subsequent,
                    setup_fee=r.setup_fee,
                    minimum=r.minimum,
                    rounding=r.rounding or svc.rounding or DEFAULT_ROUNDING,
                    tiers=tuple(tiers),
                )
            )
        services[svc.name] = Service(svc.name, svc.unit, tuple(rates))

    allowances = []
    for service, (units, period) in spec.allowances.items():
        key = f"allowances.{service}"
        if service not in spec.services:
            found.append((None, key, f'no service "{service}" in the plan'))
        if units < 0:
            found.append((None, f"{key}.units", f"must not be negative, got {units}"))
        elif units > 0:  # 0 switches an inherited allowance off
            allowances.append(Allowance(service, units, period))
    fees = []
    for name, (amount, period) in spec.fees.items():
        if amount < 0:
            found.append((None, f"fees.{name}.amount", f"negative amount {format_money(amount)}"))
        elif amount > 0:  # 0 switches an inherited fee off
            fees.append(Fee(name, amount, period))

    if fatal or tz is None or currency is None:
        return None, found
    plan = Plan(
        name=spec.name,
        effective_from=effective,
        declared_from=declared,
        currency=currency,
        timezone=tz.key,
        bands=bands,
        services=services,
        allowances=tuple(sorted(allowances, key=lambda a: a.service)),
        fees=tuple(sorted(fees, key=lambda f: f.name)),
        parent=spec.parent,
        description=spec.description or "",
        source=spec.source,
    )
    return plan, found


# ------------------------------------------------------------------------------------------------ resolve


@dataclass(slots=True)
class _Version:
    effective: datetime  # when this resolved version starts
    declared: datetime  # the declared version it stems from
    spec: _PlanSpec  # merged
    all_found: list[_Found]  # every problem of the merged version
    found: list[_Found]  # ... less those its parent version has too (reported on the parent)
    plan: Plan | None


class _Resolver:
    """Flattens declared versions over their parents' versions; collects the problems met on the way."""

    def __init__(self, specs: Iterable[_PlanSpec]) -> None:
        self.problems: list[Problem] = []
        self.by_name: dict[str, list[tuple[datetime, _PlanSpec]]] = {}
        self.done: dict[str, list[_Version]] = {}
        self.visiting: list[str] = []
        self.failed: set[str] = set()
        for spec in specs:
            versions = self.by_name.setdefault(spec.name, [])
            effective = _effective(spec)
            clash = next((s for e, s in versions if e == effective), None)
            if clash is None:
                versions.append((effective, spec))
            elif clash != spec or clash.source == spec.source:
                where = "" if clash.source == spec.source else f" in {clash.source}"
                self.problem(
                    spec,
                    None,
                    "effective_from",
                    f"another version of the plan{where} is effective from {effective.isoformat()} too",
                )
        for versions in self.by_name.values():
            versions.sort(key=lambda v: v[0])

    def problem(self, spec: _PlanSpec, rate: str | None, key: str, message: str) -> None:
        version = spec.effective_text if len(self.by_name.get(spec.name, ())) > 1 else ""
        self.problems.append(Problem(spec.source, spec.name, rate, key, message, version))

    def run(self, source: str) -> TariffSet:
        plans: list[Plan] = []
        for name in self.by_name:
            for v in self.resolve(name) or ():
                for rate, key, message in v.found:
                    self.problem(v.spec, rate, key, message)
                if v.plan is not None:
                    plans.append(v.plan)
        plans.sort(key=lambda p: (p.name, p.effective_from))
        specs = tuple(spec for versions in self.by_name.values() for _, spec in versions)
        return TariffSet(
            source=source,
            plans=tuple(plans),
            declared=tuple((spec.name, _effective(spec)) for spec in specs),
            problems=tuple(dict.fromkeys(self.problems)),  # derived versions repeat their declared one's
            specs=specs,
        )

    def resolve(self, name: str) -> list[_Version] | None:
        if name in self.done:
            return self.done[name]
        if name in self.failed:
            return None
        if name in self.visiting:
            cycle = [*self.visiting[self.visiting.index(name) :], name]
            for member in cycle[:-1]:
                spec = self.by_name[member][0][1]
                self.problem(
                    spec, None, "parent", "inheritance cycle: " + " -> ".join(f'"{n}"' for n in cycle)
                )
                self.failed.add(member)
            return None
        self.visiting.append(name)
        try:
            result = self._resolve(name)
        finally:
            self.visiting.pop()
        if result is None:
            self.failed.add(name)
            return None
        self.done[name] = result
        return result

    def _resolve(self, name: str) -> list[_Version] | None:
        declared = self.by_name[name]
        out: list[_Version] = []
        for i, (effective, spec) in enumerate(declared):
            until = declared[i + 1][0] if i + 1 < len(declared) else None
            if spec.parent is None:
                out.append(self._version(effective, effective, spec, None))
                continue
            if spec.parent not in self.by_name:
                self.problem(spec, None, "parent", f'unknown plan "{spec.parent}"')
                return None
            parents = self.resolve(spec.parent)
            if parents is None:
                if name in self.failed:  # we are part of the cycle just reported
                    return None
                self.problem(spec, None, "parent", f'plan "{spec.parent}" could not be resolved')
                return None
            in_force = [p for p in parents if p.effective <= effective]
            if not in_force:
                self.problem(
                    spec,
                    None,
                    "parent",
                    f'plan "{spec.parent}" has no version in force at {effective.isoformat()}',
                )
                return None
            chain = [in_force[-1]] + [
                p for p in parents if effective < p.effective and (until is None or p.effective < until)
            ]
            for parent in chain:
                start = max(effective, parent.effective)
                out.append(self._version(start, effective, _merge(spec, parent.spec), parent))
        return out

    def _version(
        self, effective: datetime, declared: datetime, spec: _PlanSpec, parent: _Version | None
    ) -> _Version:
        plan, found = _build(spec, effective, declared)
        own = found
        if parent is not None:
            inherited = set(parent.all_found)
            own = [f for f in found if f not in inherited]
        return _Version(effective, declared, spec, found, own, plan)


def parse_tariff(text: str, source: str) -> TariffSet:
    """Parse, resolve and check a tariff file's text. ``source`` names it in messages (a file name).

    Raises :class:`TariffError` when the text is not a well-formed tariff file; everything else wrong is
    collected in the result's ``problems`` (see :func:`check_tariff`).
    """
    specs = _parse_file(text, source)
    resolver = _Resolver(specs)
    result = resolver.run(source)
    # keep the file's order of declarations (the resolver groups them by plan)
    return replace(result, declared=tuple((spec.name, _effective(spec)) for spec in specs))


def combine_sets(
    parts: Iterable[tuple[TariffSet, Collection[tuple[str, datetime]] | None]], source: str = "catalog"
) -> TariffSet:
    """One set resolving the chosen declared versions of several sets together (``None``: all of them).

    Inheritance and versions then work across the files: a child follows every version of its parent,
    whichever file defined it. The same (plan, effective_from) declared twice is a problem unless both
    declarations are equal. Used for the catalog stored in PostgreSQL, where each version row names the
    file it came from.
    """
    specs: list[_PlanSpec] = []
    for tariff_set, chosen in parts:
        keep = None if chosen is None else set(chosen)
        specs.extend(s for s in tariff_set.specs if keep is None or (s.name, _effective(s)) in keep)
    return _Resolver(specs).run(source)


def load_tariff_file(path: str | os.PathLike[str]) -> TariffSet:
    """Read and parse a tariff file; messages name it by the path given. The only file I/O of rating_core."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TariffError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TariffError(f"{path}: cannot read: {exc}") from None
    return parse_tariff(text, str(path))


def check_tariff(tariff_set: TariffSet) -> list[Problem]:
    """Every problem found in the set's file, in file order: empty when it can be used for rating."""
    return list(tariff_set.problems)
