"""Reading the charge streams: the records the money scripts append, as a consumer group sees them.

Every money script appends its charge records to its partition's stream in the same atomic call that
moves the money (lib.lua ``add_record``). A reader (the charge sink) joins a consumer group, reads
batches, stores them, and only then acknowledges them; ``stream_ack.lua`` trims what every group has
acknowledged. Entries a reader took but never acknowledged (it crashed) stay pending: the same consumer
gets them again with :meth:`ChargeStreams.read_pending`, any other one with :meth:`ChargeStreams.claim`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from balance import scripts
from balance.keys import KeySpace
from balance.link import RedisLink, ResponseError

STREAM_ACK = scripts.load("stream_ack.lua")
SNAPSHOT = scripts.load("snapshot.lua")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ChargeRecord(NamedTuple):
    """One charge record, its fields in lib.lua add_record's order: also the order of the ledger columns
    a COPY writes (``LINE_COLUMNS``)."""

    entry_id: str
    account_id: str
    kind: str
    service: str | None
    item: str | None
    session_id: str | None
    units: int | None
    bucket_units: int | None
    amount: int  # signed micro-units: credits positive, debits negative
    released: int | None  # reserved money returned (expiry records)
    reference: str | None
    occurred_at: datetime
    flags: str | None
    balance_after: int | None
    reserved_after: int | None
    stream_partition: int
    stream_ms: int
    stream_seq: int

    @property
    def stream_id(self) -> str:
        return f"{self.stream_ms}-{self.stream_seq}"


# The columns of a ledger line (COPY text format: tab-separated, "" for NULL) and of a record.
LINE_COLUMNS: tuple[str, ...] = ChargeRecord._fields


@dataclass(slots=True)
class Batch:
    """What one read got from one partition: its records as ledger lines, and every entry id to
    acknowledge once they are stored (including entries trimmed while pending, which carry no record)."""

    partition: int
    lines: list[bytes] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    # months (UTC) the records fall in: the ledger partitions they need
    months: set[date] = field(default_factory=set)
    # entries that are not charge records (id, fields as text, reason): kept aside, never dropped
    rejects: list[tuple[str, str, str]] = field(default_factory=list)


class Lag(NamedTuple):
    entries: int  # entries still in the stream: not yet acknowledged by every group
    oldest_ms: int | None  # time of the oldest of them


def _text(value: bytes | None) -> str | None:
    return value.decode() if value else None


def _int(value: bytes | None) -> int | None:
    return int(value) if value is not None and value != b"" else None


# The fields of a record in the order lib.lua's add_record writes them.
_LAYOUT = [
    b"id",
    b"a",
    b"k",
    b"s",
    b"i",
    b"sess",
    b"u",
    b"bu",
    b"m",
    b"rel",
    b"ref",
    b"t",
    b"f",
    b"bal",
    b"rsv",
]
_REQUIRED = (b"id", b"a", b"k", b"m", b"t")


def parse_entry(partition: int, entry_id: bytes, values: Sequence[bytes]) -> ChargeRecord:
    """A stream entry (id, [field, value, ...]) as a record; raises ValueError on a malformed one.

    Entries in add_record's layout are taken by position; any other order of fields is accepted too."""
    if values[::2] != _LAYOUT:
        if len(values) % 2:
            raise ValueError(f"charge record {entry_id.decode()} has an odd number of fields")
        f = dict(zip(values[::2], values[1::2], strict=True))
        for name in _REQUIRED:
            if name not in f:
                raise ValueError(f"charge record {entry_id.decode()} lacks field {name.decode()!r}")
        values = [x for name in _LAYOUT for x in (name, f.get(name, b""))]
    eid, a, k, s, i, sess, u, bu, m, rel, ref, t, fl, bal, rsv = values[1::2]
    ms, _, seq = entry_id.partition(b"-")
    try:
        return ChargeRecord(
            eid.decode(),
            a.decode(),
            k.decode(),
            _text(s),
            _text(i),
            _text(sess),
            _int(u),
            _int(bu),
            int(m),
            _int(rel),
            _text(ref),
            _EPOCH + timedelta(milliseconds=int(t)),
            _text(fl),
            _int(bal),
            _int(rsv),
            partition,
            int(ms),
            int(seq),
        )
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"charge record {entry_id.decode()} has a bad value: {exc}") from None


class ChargeStreams:
    """The charge streams of every partition, read as ``consumer`` of consumer group ``group``."""

    def __init__(self, link: RedisLink, keys: KeySpace, group: str, consumer: str) -> None:
        self.link = link
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.streams = [keys.stream(p) for p in range(keys.partitions)]

    async def ensure_groups(self) -> None:
        """Create the group on every stream (from the first entry, so nothing written before the first
        reader started is missed); an existing group is kept as it is."""
        for stream in self.streams:
            try:
                await self.link.execute("XGROUP", "CREATE", stream, self.group, "0", "MKSTREAM")
            except ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    async def read_new(self, count: int) -> list[Batch]:
        """Up to ``count`` entries per partition never delivered to the group; empty batches left out."""
        return await self._read(">", count)

    async def read_pending(self, count: int) -> list[Batch]:
        """Up to ``count`` entries per partition delivered to this consumer and not acknowledged."""
        return await self._read("0", count)

    async def _read(self, start: str, count: int) -> list[Batch]:
        return await self._batches(
            lambda s: ("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count, "STREAMS", s, start),
            lambda reply: reply[0][1] if reply else [],
        )

    async def claim(self, count: int, min_idle_ms: int) -> list[Batch]:
        """Take over up to ``count`` entries per partition that another consumer left pending for longer
        than ``min_idle_ms`` (a reader that died between reading and acknowledging)."""
        return await self._batches(
            lambda s: ("XAUTOCLAIM", s, self.group, self.consumer, min_idle_ms, "0", "COUNT", count),
            lambda reply: reply[1],
        )

    async def _batches(
        self, command: Callable[[str], tuple[str | int, ...]], entries: Callable[[Any], list[Any]]
    ) -> list[Batch]:
        """``command`` on every partition's stream at once; the non-empty batches of ``entries`` of
        each reply."""
        replies = await asyncio.gather(*(self.link.execute(*command(s)) for s in self.streams))
        batches = (_batch(partition, entries(reply)) for partition, reply in enumerate(replies))
        return [batch for batch in batches if batch.ids]

    async def ack(self, partition: int, ids: Sequence[str]) -> Lag:
        """Acknowledge stored entries, trim what every group has, and report what is left."""
        left, oldest = await self.link.run_script(STREAM_ACK, (self.streams[partition],), (self.group, *ids))
        return Lag(int(left), int(oldest.split(b"-")[0]) if oldest else None)

    async def lag(self) -> list[Lag]:
        """Every partition's lag (trimming on the way)."""
        return list(await asyncio.gather(*(self.ack(p, ()) for p in range(len(self.streams)))))

    async def snapshot(
        self, partition: int, account_ids: Sequence[str]
    ) -> tuple[str, dict[str, tuple[int, int] | None]]:
        """At one instant: the id of the newest record ever appended to a partition's stream ("0-0":
        none) and the available and reserved money of some of its accounts (None: not in Redis)."""
        keys = [self.keys.account(a).account for a in account_ids]
        last, money = await self.link.run_script(SNAPSHOT, (self.streams[partition], *keys), ())
        found: dict[str, tuple[int, int] | None] = {
            a: (int(m[0]), int(m[1])) if m else None for a, m in zip(account_ids, money, strict=True)
        }
        return last.decode(), found

    async def account_ids(self) -> set[str]:
        """Every account the live store holds (SCAN: accounts created meanwhile may be missed)."""
        found: set[str] = set()
        cursor: bytes | int = 0
        pattern = f"{self.keys.prefix}:{{*}}:a:*"
        while True:
            cursor, keys = await self.link.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            found.update(k.decode().rsplit(":a:", 1)[1] for k in keys)
            if int(cursor) == 0:
                return found

    async def entries_up_to(self, partition: int, last_id: str, page: int = 10_000) -> list[ChargeRecord]:
        """Every entry still in a partition's stream up to and including ``last_id``."""
        out: list[ChargeRecord] = []
        start = "-"
        while True:
            reply = await self.link.execute("XRANGE", self.streams[partition], start, last_id, "COUNT", page)
            out.extend(_records(partition, reply))
            if len(reply) < page:
                return out
            start = "(" + reply[-1][0].decode()


def _batch(partition: int, entries: Any) -> Batch:
    batch = Batch(partition)
    tail = b"\t%d\t" % partition
    for entry_id, values in entries:
        batch.ids.append(entry_id.decode())
        if not values:  # the entry was deleted while pending
            continue
        if values[::2] == _LAYOUT and values[23].isdigit() and 4 <= len(values[23]) <= 15:
            # the common case, at C speed: add_record's values in order, the time as text (anything
            # unusual, a time included, takes the careful path below)
            v = values[1::2]
            moment, month = _moment(v[11])
            v[11] = moment
            line = b"\t".join(v) + tail + entry_id.replace(b"-", b"\t") + b"\n"
            if line.count(b"\t") == _TABS and not _SPECIAL.search(line, 0, len(line) - 1):
                batch.lines.append(line)
                batch.months.add(month)
                continue
        try:
            record = parse_entry(partition, entry_id, values)
        except ValueError as exc:
            raw = " ".join(v.decode(errors="replace") for v in values)
            batch.rejects.append((entry_id.decode(), raw, str(exc)))
            continue
        batch.lines.append(record_line(record))
        batch.months.add(date(record.occurred_at.year, record.occurred_at.month, 1))
    return batch


def _records(partition: int, entries: Any) -> list[ChargeRecord]:
    """The well-formed records among stream entries (reconcile: the others are not money)."""
    out = []
    for entry_id, values in entries:
        with contextlib.suppress(ValueError):
            if values:
                out.append(parse_entry(partition, entry_id, values))
    return out


_TABS = len(LINE_COLUMNS) - 1
# what COPY's text format would read as more than a character (tabs are counted instead)
_SPECIAL = re.compile(rb"[\\\n\r]")
_MOMENTS: dict[bytes, tuple[bytes, date]] = {}


def _moment(ms: bytes) -> tuple[bytes, date]:
    """Milliseconds since the epoch as a timestamptz literal, and its month; cached per second."""
    seconds, millis = ms[:-3], ms[-3:]
    found = _MOMENTS.get(seconds)
    if found is None:
        if len(_MOMENTS) > 100_000:
            _MOMENTS.clear()
        at = _EPOCH + timedelta(seconds=int(seconds or b"0"))
        found = _MOMENTS[seconds] = (at.strftime("%Y-%m-%d %H:%M:%S").encode(), date(at.year, at.month, 1))
    return found[0] + b"." + millis.rjust(3, b"0") + b"+00", found[1]


def record_line(record: ChargeRecord) -> bytes:
    """A record as a ledger line, every value escaped for COPY's text format."""
    return b"\t".join(_escape(v) for v in record) + b"\n"


def _escape(value: str | int | datetime | None) -> bytes:
    if value is None or value == "":
        return b""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        text = text.replace(char, escaped)
    return text.encode()
