"""Time bands: which named band (peak, off-peak, ...) is in force at an instant.

A band is defined on the plan's local wall clock: weekly windows (weekdays + time of day) and holiday dates
(a holiday is in its band all day); where neither applies the default band is in force. The band of an
instant is the band of its local wall-clock time, so DST changes move the boundaries with the clock.

Rating a call needs more than "the band now": it needs the instants where the band changes. Those are
computed once per local day (and cached): the UTC instants of every wall-clock change point (both readings
of an ambiguous time) and of the day's DST transition, then the band of each stretch read off the wall clock.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SECONDS = 86_400

_ONE_US = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_ONE_DAY = timedelta(days=1)
_NEVER = datetime.max.replace(tzinfo=UTC)
_CACHE_DAYS = 2048  # cached day schedules per plan; cleared when full


@dataclass(frozen=True, slots=True)
class Window:
    """Band ``band`` is in force on ``days`` (0 = Monday) from ``start`` to ``end``, in seconds after local
    midnight (``end`` may be 86400, i.e. "24:00"). Windows never cross midnight: split 22:00-06:00 in two."""

    band: str
    days: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Day:
    starts: list[datetime]  # UTC instants where a band stretch begins; starts[0] is the day's first instant
    bands: list[str]
    end: datetime  # first instant of the next local day


def _time_text(seconds: int) -> str:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}" + (f":{s:02d}" if s else "")


def days_text(days: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 4, 6) -> "mon-fri,sun"."""
    parts: list[str] = []
    i = 0
    while i < len(days):
        j = i
        while j + 1 < len(days) and days[j + 1] == days[j] + 1:
            j += 1
        first, last = WEEKDAYS[days[i]], WEEKDAYS[days[j]]
        parts.append(first if i == j else f"{first}-{last}" if j > i + 1 else f"{first},{last}")
        i = j + 1
    return ",".join(parts)


def window_text(w: Window) -> str:
    return f"{days_text(w.days)} {_time_text(w.start)}-{_time_text(w.end)}"


@dataclass(frozen=True, slots=True)
class TimeBands:
    tz: ZoneInfo
    default: str
    windows: tuple[Window, ...] = ()
    holidays: Mapping[date, str] = field(default_factory=dict)
    # Derived at construction: per weekday, the seconds where a stretch starts and its band.
    _week: tuple[tuple[tuple[int, ...], tuple[str, ...]], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    _days: dict[int, _Day] = field(init=False, repr=False, compare=False, default_factory=dict)
    _holidays: dict[int, str] = field(init=False, repr=False, compare=False, default_factory=dict)
    # The stretch (start, end, band) last looked up: consecutive requests mostly fall into the same one.
    _last: list[tuple[datetime, datetime, str]] = field(
        init=False, repr=False, compare=False, default_factory=lambda: [(_NEVER, _NEVER, "")]
    )

    def __post_init__(self) -> None:
        week = []
        for day in range(7):
            intervals = sorted((w.start, w.end, w.band) for w in self.windows if day in w.days)
            points: list[tuple[int, str]] = []
            cursor = 0
            for start, end, band in intervals:
                start = max(start, cursor)  # overlapping windows are a check problem; first one wins
                if start >= end:
                    continue
                if start > cursor:
                    points.append((cursor, self.default))
                points.append((start, band))
                cursor = end
            if cursor < DAY_SECONDS:
                points.append((cursor, self.default))
            starts: list[int] = []
            bands: list[str] = []
            for start, band in points:
                if not bands or bands[-1] != band:
                    starts.append(start)
                    bands.append(band)
            week.append((tuple(starts), tuple(bands)))
        object.__setattr__(self, "_week", tuple(week))
        self._holidays.update((d.toordinal(), band) for d, band in self.holidays.items())

    @property
    def constant(self) -> bool:
        """True when one band is in force at all times (no windows, no holidays)."""
        return not self.windows and not self.holidays

    def names(self) -> frozenset[str]:
        return frozenset({self.default, *(w.band for w in self.windows), *self.holidays.values()})

    def occurring(self) -> frozenset[str]:
        """The bands some instant can be in (the default only if the windows leave a gap in the week)."""
        found = set(self.holidays.values())
        for _starts, bands in self._week:
            found.update(bands)
        return frozenset(found)

    def wall_band(self, local: datetime) -> str:
        """The band at a local wall-clock time (``local`` in this plan's zone, or naive local time)."""
        ordinal = local.toordinal()
        if self.holidays:
            holiday = self._holidays.get(ordinal)
            if holiday is not None:
                return holiday
        starts, bands = self._week[(ordinal - 1) % 7]  # ordinal 1 (0001-01-01) was a Monday
        tod = local.hour * 3600 + local.minute * 60 + local.second
        return bands[bisect_right(starts, tod) - 1]

    def band_at(self, t: datetime) -> str:
        """The band in force at the aware instant ``t``."""
        if not self.windows and not self.holidays:
            return self.default
        low, high, band = self._last[0]
        if low <= t < high:
            return band
        return self.stretch(t)[0]

    def stretch(self, t: datetime) -> tuple[str, datetime]:
        """The band in force at the aware instant ``t`` and the UTC instant it (may) change next.

        The change may be to the same band (at the end of a local day). Remembers the stretch found, since
        the next question is most likely about the same stretch.
        """
        local = t.astimezone(self.tz)
        day = self._days.get(local.toordinal())
        if day is None:
            day = self._day(local.date())
        i = bisect_right(day.starts, t) - 1
        if i < 0 or t >= day.end:  # t outside its own local day's span: only around a DST fold at midnight
            return self.wall_band(local), t.astimezone(UTC) + _SECOND
        band = day.bands[i]
        change = day.starts[i + 1] if i + 1 < len(day.starts) else day.end
        self._last[0] = (day.starts[i], change, band)
        return band, change

    def runs(self, t0: datetime, n: int) -> list[tuple[str, int, datetime]]:
        """Split ``n`` consecutive seconds starting at ``t0`` into (band, seconds, first instant) runs.

        Second ``k`` (starting at ``t0 + k``) belongs to the band in force at its start. Adjacent runs always
        differ in band. ``t0`` is aware; the returned instants are in UTC.
        """
        t0 = t0.astimezone(UTC)
        if not self.windows and not self.holidays:
            return [(self.default, n, t0)]
        out: list[tuple[str, int, datetime]] = []
        pos = 0
        t = t0
        while pos < n:
            low, change, band = self._last[0]
            if not low <= t < change:
                band, change = self.stretch(t)
            # seconds whose start lies before the change: ceil((change - t) / 1 s), at least one
            take = max(1, -(-((change - t) // _ONE_US) // 1_000_000))
            take = min(take, n - pos)
            if out and out[-1][0] == band:
                last = out[-1]
                out[-1] = (band, last[1] + take, last[2])
            else:
                out.append((band, take, t))
            pos += take
            if pos < n:
                t = t0 + _SECOND * pos
        return out

    def _first_instant(self, d: date) -> datetime:
        """The earliest instant whose local date is ``d`` (local midnight, or the end of a DST gap there)."""
        candidates = []
        for fold in (0, 1):
            instant = datetime(d.year, d.month, d.day, tzinfo=self.tz, fold=fold).astimezone(UTC)
            if instant.astimezone(self.tz).date() == d:
                candidates.append(instant)
        if not candidates:  # midnight skipped and unreachable: fall back to the fold-0 reading
            return datetime(d.year, d.month, d.day, tzinfo=self.tz).astimezone(UTC)
        return min(candidates)

    def _day(self, d: date) -> _Day:
        start = self._first_instant(d)
        end = self._first_instant(d + _ONE_DAY)
        points = {start}
        if d not in self.holidays:
            for tod in self._week[d.weekday()][0][1:]:
                h, rem = divmod(tod, 3600)
                m, s = divmod(rem, 60)
                for fold in (0, 1):
                    p = datetime(d.year, d.month, d.day, h, m, s, tzinfo=self.tz, fold=fold).astimezone(UTC)
                    if start < p < end:
                        points.add(p)
        last = end - _ONE_US
        before = start.astimezone(self.tz).utcoffset()
        after = last.astimezone(self.tz).utcoffset()
        if before != after:  # one DST transition today: find its instant (whole seconds) by bisection
            lo, hi = 0, (last - start) // _SECOND + 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if (start + _SECOND * mid).astimezone(self.tz).utcoffset() == before:
                    lo = mid
                else:
                    hi = mid
            points.add(start + _SECOND * hi)
        starts: list[datetime] = []
        bands: list[str] = []
        for p in sorted(points):
            band = self.wall_band(p.astimezone(self.tz))
            if not bands or bands[-1] != band:
                starts.append(p)
                bands.append(band)
        result = _Day(starts, bands, end)
        if len(self._days) >= _CACHE_DAYS:
            self._days.clear()
        self._days[d.toordinal()] = result
        return result
