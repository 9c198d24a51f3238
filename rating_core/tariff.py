"""The resolved tariff model: plans, services, rates, tiers, allowances, fees, and the catalog of plans.

Everything here is built once when a tariff file is loaded (inheritance flattened, defaults applied, prices
expanded to every band, prefix lookup tables precomputed) so that rating does only dictionary lookups.
The file format and its checks live in :mod:`rating_core.tariff_file`.
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from rating_core.bands import TimeBands
from rating_core.money import Money, Rounding

if TYPE_CHECKING:
    from rating_core.tariff_file import TariffSet


class Unit(enum.StrEnum):
    """What a service's quantities count."""

    SECOND = "second"  # time; rated along the session's timeline, split at band changes
    BYTE = "byte"  # volume
    EVENT = "event"  # one per message / request


class Period(enum.StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"
    ONCE = "once"  # fees only


class TariffError(ValueError):
    """A tariff file (or set of files) is invalid. The message names the source, the plan and the key;
    ``problems`` holds every problem when there were several (the message then names the first)."""

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[Problem, ...] = tuple(problems)

    @classmethod
    def of(cls, problems: Iterable[Problem]) -> TariffError:
        found = tuple(problems)
        more = len(found) - 1
        return cls(str(found[0]) + (f" (and {more} more problems)" if more > 0 else ""), found)


class UnknownPlan(LookupError):
    """No version of the named plan is in force at the requested time."""


class NoRate(LookupError):
    """The plan has no rate for the service (or for the destination within it)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a tariff file, located as precisely as the file allows."""

    source: str
    plan: str | None  # plan name
    rate: str | None  # rate label, "voice/44 UK"
    key: str  # the offending key, "price" or "bands.peak.windows[1]"; "" when the message says it all
    message: str
    version: str = ""  # the plan's effective_from as written, when the file has several versions of it

    def __str__(self) -> str:
        where = [self.source]
        if self.plan is not None:
            where.append(f'plan "{self.plan}"' + (f" (from {self.version})" if self.version else ""))
        if self.rate is not None:
            where[-1] += f' rate "{self.rate}"'
        if self.key:
            where.append(self.key)
        return ": ".join([*where, self.message])


@dataclass(frozen=True, slots=True)
class Tier:
    """From ``start`` charged units of the cycle onwards, these prices (per block, by band) apply."""

    start: int
    prices: Mapping[str, Money]  # every band of the plan -> price per block


@dataclass(frozen=True, slots=True)
class Rate:
    service: str
    name: str
    prefix: str
    block: int  # the price is per this many units
    first: int  # charging increments: the first increment, then every subsequent one
    subsequent: int
    setup_fee: Money
    minimum: Money  # minimum charge of a session (setup fee excluded)
    rounding: Rounding
    tiers: tuple[Tier, ...]  # tiers[0].start == 0, starts strictly increasing
    tier_starts: tuple[int, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier_starts", tuple(t.start for t in self.tiers))

    @property
    def label(self) -> str:
        """``voice/44 UK`` — how messages name the rate (``*`` is the default prefix)."""
        return f"{self.service}/{self.prefix or '*'} {self.name}"

    def price(self, band: str, tier: int = 0) -> Money:
        return self.tiers[tier].prices[band]

    def charged(self, x: int) -> int:
        """F(x): the units charged for a session that used ``x`` units, after increments."""
        if x <= 0:
            return 0
        if x <= self.first:
            return self.first
        return self.first - (-(x - self.first) // self.subsequent) * self.subsequent


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    unit: Unit
    rates: tuple[Rate, ...]
    _by_prefix: dict[str, Rate] = field(init=False, repr=False, compare=False, default_factory=dict)
    _lengths: tuple[int, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        for rate in self.rates:
            self._by_prefix.setdefault(rate.prefix, rate)
        object.__setattr__(self, "_lengths", tuple(sorted({len(p) for p in self._by_prefix}, reverse=True)))

    def rate_for(self, destination: str) -> Rate:
        """The rate with the longest prefix of ``destination`` (a digit string; a leading "+" is ignored)."""
        if destination.startswith("+"):
            destination = destination[1:]
        by_prefix = self._by_prefix
        size = len(destination)
        for length in self._lengths:
            if length <= size:
                rate = by_prefix.get(destination[:length])
                if rate is not None:
                    return rate
        raise NoRate(f'service "{self.name}" has no rate for destination "{destination}"')


@dataclass(frozen=True, slots=True)
class Allowance:
    """``units`` of ``service`` included free per ``period`` (daily or monthly)."""

    service: str
    units: int
    period: Period


@dataclass(frozen=True, slots=True)
class Fee:
    name: str
    amount: Money
    period: Period  # daily, monthly or once


@dataclass(frozen=True, slots=True)
class Plan:
    """One version of a plan, inheritance resolved."""

    name: str
    effective_from: datetime  # this version is in force from here until the next version's effective_from
    declared_from: (
        datetime  # the effective_from written in the file (earlier when derived from a parent change)
    )
    currency: str
    timezone: str
    bands: TimeBands
    services: Mapping[str, Service]
    allowances: tuple[Allowance, ...]
    fees: tuple[Fee, ...]
    parent: str | None = None
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def tz(self) -> ZoneInfo:
        return self.bands.tz

    def service(self, service: str) -> Service:
        try:
            return self.services[service]
        except KeyError:
            raise NoRate(f'plan "{self.name}" has no service "{service}"') from None

    def rate_for(self, service: str, destination: str = "") -> Rate:
        """The rate of ``service`` with the longest prefix of ``destination``; :class:`NoRate` if none."""
        try:
            return self.services[service].rate_for(destination)
        except KeyError:
            raise NoRate(f'plan "{self.name}" has no service "{service}"') from None
        except NoRate as exc:
            raise NoRate(f'plan "{self.name}": {exc}') from None

    def unit_of(self, service: str) -> Unit:
        return self.service(service).unit

    def allowance(self, service: str) -> Allowance | None:
        for a in self.allowances:
            if a.service == service:
                return a
        return None


class Catalog:
    """Plan versions from one or more tariff sets (or resolved plans), indexed by name and effective_from.

    Several sets are resolved together (:func:`combine_sets`), so a child follows its parent's versions
    from every file. Problems are refused with a :class:`TariffError` naming the first one; so are two
    different definitions of the same (plan, effective_from).
    """

    __slots__ = ("_starts", "_units", "_versions")

    def __init__(self, *sets: TariffSet, plans: Iterable[Plan] = ()) -> None:
        chosen: dict[tuple[str, datetime], Plan] = {}

        def add(plan: Plan) -> None:
            key = (plan.name, plan.effective_from)
            other = chosen.setdefault(key, plan)
            if other is not plan and other != plan:
                raise TariffError(
                    f'{other.source} and {plan.source} define plan "{plan.name}" effective from '
                    f"{plan.effective_from.isoformat()} differently"
                )

        if len(sets) > 1:
            from rating_core.tariff_file import combine_sets  # the file format builds on this module

            sets = (combine_sets((s, None) for s in sets),)
        for tariff_set in sets:
            if tariff_set.problems:
                raise TariffError.of(tariff_set.problems)
            for plan in tariff_set.plans:
                add(plan)
        for plan in plans:
            add(plan)
        self._versions: dict[str, list[Plan]] = {}
        for (name, _), plan in sorted(chosen.items()):
            self._versions.setdefault(name, []).append(plan)
        self._starts = {name: [p.effective_from for p in vs] for name, vs in self._versions.items()}
        # A service means one kind of unit everywhere: protocol fronts read and grant units by it.
        self._units: dict[str, tuple[Unit, Plan]] = {}
        for versions in self._versions.values():
            for plan in versions:
                for service in plan.services.values():
                    seen = self._units.setdefault(service.name, (service.unit, plan))
                    if seen[0] is not service.unit:
                        raise TariffError(
                            f'service "{service.name}" is counted in {seen[0]}s by plan "{seen[1].name}" '
                            f'but in {service.unit}s by plan "{plan.name}": one service, one unit'
                        )

    def unit_of(self, service: str) -> Unit | None:
        """The unit every plan counts ``service`` in, or None when no plan has the service."""
        found = self._units.get(service)
        return None if found is None else found[0]

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._versions))

    def versions(self, name: str) -> tuple[Plan, ...]:
        """Every version of ``name``, oldest first (empty if unknown)."""
        return tuple(self._versions.get(name, ()))

    def plan(self, name: str, at: datetime) -> Plan:
        """The version of ``name`` in force at the aware instant ``at``; :class:`UnknownPlan` if none."""
        if at.tzinfo is None:
            raise ValueError(f"Catalog.plan: {at.isoformat()} is a naive datetime; pass an aware one")
        starts = self._starts.get(name)
        if starts is None:
            raise UnknownPlan(f'unknown plan "{name}"')
        i = bisect_right(starts, at) - 1
        if i < 0:
            raise UnknownPlan(
                f'plan "{name}" is not in force at {at.isoformat()} '
                f"(its first version is from {starts[0].isoformat()})"
            )
        return self._versions[name][i]

    def __len__(self) -> int:
        return sum(len(v) for v in self._versions.values())

    def __repr__(self) -> str:
        return f"Catalog({len(self)} versions of {len(self._versions)} plans)"
