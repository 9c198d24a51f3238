"""``occ bench diameter``: open-loop credit-control load, a same-run baseline, and a money conservation check.

Load shape. Sessions start at ``rate`` per second for ``duration`` seconds (at most ``sessions`` of them)
whether or not earlier ones were answered: the schedule is fixed in advance, so a slow server shows as
latency, not as a lower offered rate. Each session is CCR-INITIAL, ``updates`` × CCR-UPDATE (each reporting
the octets granted by the previous answer as used and asking for ``grant`` more) and CCR-TERMINATION
(reporting part of the last grant, not aligned to the 1 KiB charging increment, so rounding is exercised),
one request after the other, on Rating-Group 10 (data, 0.01 per MiB in the demo plan). Sessions are spread
round-robin over ``connections`` Diameter connections and ``accounts`` prepaid bench accounts. A session
whose start finds ``max_open`` sessions still running is skipped and counted: it bounds the backlog when the
offered rate is above capacity (the peak phase) and never triggers below it.

Peak and 80 %. The peak phase offers more than the server can take; its answers/s within the sending window
is the capacity. A second phase offers 80 % of that, and its latencies are the ones that matter.

Money. Bench accounts are provisioned straight into the live store the daemon uses (same Redis, same key
prefix: ``bench-<run>-<i>``, msisdn ``999<run><i>``, no unit buckets, a large opening balance). After every
session ended, for each account ``opening − balance − reserved`` must equal the tariff price of what its
sessions reported and had acknowledged with 2001 — each session priced piece by piece as a continuation with
:func:`rating_core.rating.price_of`, exactly as rated — and ``reserved`` must be 0. A request left without an
answer makes the check "unverified" (a failure): whether it charged cannot be known.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import json
import math
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from balance.records import AccountKind, AccountRecord
from balance.store import BalanceStore, UnknownAccount
from occ.diameter import dictionary as d
from occ.diameter.client import DiameterClient, MsccSpec, UnitsSpec
from occ.diameter.codec import (
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    avp_grouped,
    avp_u32,
    avp_utf8,
    encode_message,
    find,
)
from rating_core.rating import Usage, price_of
from rating_core.tariff import Catalog

ROOT = Path(__file__).resolve().parents[2]
RATING_GROUP = 10
SERVICE = "data"
MIB = 1_048_576
EUR = 1_000_000
OPENING = 1_000_000 * EUR  # per bench account: far more than any run spends, far below MAX_MONEY
# Octets charged per account and month stay below this, so the 10 GiB volume tier is never reached and a
# session's price does not depend on the order its account's sessions were rated in.
ACCOUNT_OCTETS_LIMIT = 4 << 30
TYPES = ("CCR-I", "CCR-U", "CCR-T")
KINDS = (
    d.CC_REQUEST_TYPE_INITIAL_REQUEST,
    d.CC_REQUEST_TYPE_UPDATE_REQUEST,
    d.CC_REQUEST_TYPE_TERMINATION_REQUEST,
)
E164 = d.SUBSCRIPTION_ID_TYPE_END_USER_E164
ORIGIN_REALM = "test"
TICK_S = 0.001  # the scheduler's shortest sleep


def origin_host(connection: int) -> str:
    """The Origin-Host of the load generator's n-th connection (the baseline node knows these)."""
    return f"bench{connection}.test"


# ---- load ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadSpec:
    rate: float  # sessions started per second
    duration: float  # seconds of starting sessions
    sessions: int  # at most this many sessions in the phase
    updates: int = 3
    grant: int = MIB
    max_open: int = 512
    timeout: float = 30.0


@dataclass(slots=True)
class TypeStats:
    latencies: list[float] = field(default_factory=list)  # seconds, every answered request
    in_window: int = 0  # answers received while sessions were being started
    results: collections.Counter[str] = field(default_factory=collections.Counter)
    item_results: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass(slots=True)
class SessionRecord:
    subscriber: int
    pieces: list[int] = field(default_factory=list)  # octets committed (answered 2001), in order
    unanswered: int = 0  # requests without an answer: their effect is unknown


@dataclass(slots=True)
class PhaseResult:
    name: str
    spec: LoadSpec
    started: int = 0
    skipped: int = 0
    max_open_seen: int = 0
    window_s: float = 0.0
    elapsed_s: float = 0.0  # first start to last answer
    late_start_max_s: float = 0.0  # how far the generator fell behind its schedule
    stats: dict[str, TypeStats] = field(default_factory=lambda: {t: TypeStats() for t in TYPES})
    sessions: list[SessionRecord] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # process -> share of one core during the window

    def answers_per_s(self, kind: str | None = None) -> float:
        if self.window_s <= 0:
            return 0.0
        kinds = TYPES if kind is None else (kind,)
        return sum(self.stats[k].in_window for k in kinds) / self.window_s

    @property
    def unanswered(self) -> int:
        return sum(s.unanswered for s in self.sessions)


@dataclass(frozen=True, slots=True)
class _Answer:
    code: int | None  # None: no answer (timeout, connection lost)
    granted: int


class CcrTemplate:
    """Builds the CCRs of one connection byte for byte as :func:`build_ccr` does, from cached parts: only
    the Session-Id, CC-Request-Number and the MSCC change from one request to the next, and the generator's
    CPU is CPU the server under test does not get."""

    def __init__(self, client: DiameterClient) -> None:
        self.client = client
        self.head = b"".join(
            (
                avp_utf8(d.AVP_ORIGIN_HOST, client.origin_host),
                avp_utf8(d.AVP_ORIGIN_REALM, client.origin_realm),
                avp_utf8(d.AVP_DESTINATION_REALM, client.destination_realm),
                avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL),
                avp_utf8(d.AVP_SERVICE_CONTEXT_ID, "32251@3gpp.org"),
            )
        )
        self.kinds = {kind: avp_u32(d.AVP_CC_REQUEST_TYPE, kind) for kind in KINDS}
        self.indicator = avp_u32(d.AVP_MULTIPLE_SERVICES_INDICATOR, 1)
        self._subscriptions: dict[str, bytes] = {}

    def subscription(self, msisdn: str) -> bytes:
        found = self._subscriptions.get(msisdn)
        if found is None:
            found = avp_grouped(
                d.AVP_SUBSCRIPTION_ID,
                avp_u32(d.AVP_SUBSCRIPTION_ID_TYPE, E164),
                avp_utf8(d.AVP_SUBSCRIPTION_ID_DATA, msisdn),
            )
            self._subscriptions[msisdn] = found
        return found

    def ccr(
        self, session_avp: bytes, kind: int, number: int, msisdn: str, mscc: bytes, hop_by_hop: int, e2e: int
    ) -> bytes:
        body = b"".join(
            (
                session_avp,
                self.head,
                self.kinds[kind],
                avp_u32(d.AVP_CC_REQUEST_NUMBER, number),
                self.subscription(msisdn),
                self.indicator,
                mscc,
            )
        )
        return encode_message(
            FLAG_REQUEST | FLAG_PROXIABLE, d.CMD_CREDIT_CONTROL, d.APP_CREDIT_CONTROL, hop_by_hop, e2e, body
        )


class LoadGenerator:
    """Runs one phase over already connected clients."""

    def __init__(
        self,
        clients: Sequence[DiameterClient],
        subscribers: Sequence[str],
        spec: LoadSpec,
        name: str,
        run_id: str,
        *,
        watch: Mapping[str, int] | None = None,
    ) -> None:
        if not clients or not subscribers:
            raise ValueError("a load needs at least one connection and one subscriber")
        self.clients = clients
        self.subscribers = subscribers
        self.spec = spec
        self.run_id = run_id
        self.result = PhaseResult(name=name, spec=spec)
        self.watch = dict(watch or {})
        self.templates = {id(c): CcrTemplate(c) for c in clients}
        self._msccs: dict[tuple[int, int], bytes] = {}
        self._open = 0
        self._window_end = math.inf

    async def run(self) -> PhaseResult:
        spec, result = self.spec, self.result
        total = min(spec.sessions, math.ceil(spec.rate * spec.duration)) if spec.rate > 0 else 0
        tasks: set[asyncio.Task[None]] = set()
        cpu_before = _cpu_snapshot(self.watch)
        wall_before = time.perf_counter()
        t0 = time.perf_counter()
        self._window_end = t0 + spec.duration
        started = 0
        while started < total:
            now = time.perf_counter()
            if now >= self._window_end:
                break
            due = min(total, int((now - t0) * spec.rate) + 1)
            while started < due:
                result.late_start_max_s = max(result.late_start_max_s, now - (t0 + started / spec.rate))
                if self._open >= spec.max_open:
                    result.skipped += 1
                else:
                    self._open += 1
                    result.max_open_seen = max(result.max_open_seen, self._open)
                    task = asyncio.get_running_loop().create_task(self._session(started))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                started += 1
            # at least a millisecond per tick: starts due meanwhile go out together on the next one
            next_due = t0 + started / spec.rate
            await asyncio.sleep(max(TICK_S, next_due - time.perf_counter()))
        result.started = started - result.skipped
        # the window is the sending time, however short the schedule ended up
        remaining = self._window_end - time.perf_counter()
        if remaining > 0:
            await asyncio.sleep(remaining)
        result.window_s = spec.duration
        result.cpu = _cpu_share(cpu_before, _cpu_snapshot(self.watch), time.perf_counter() - wall_before)
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
        result.elapsed_s = time.perf_counter() - t0
        return result

    async def _session(self, i: int) -> None:
        spec = self.spec
        client = self.clients[i % len(self.clients)]
        record = SessionRecord(subscriber=i % len(self.subscribers))
        self.result.sessions.append(record)
        msisdn = self.subscribers[record.subscriber]
        session_id = avp_utf8(d.AVP_SESSION_ID, f"{client.origin_host};{self.run_id};{self.result.name};{i}")
        try:
            answer = await self._ask(client, 0, session_id, 0, msisdn, self._mscc(0, 0))
            if answer.code is None:
                record.unanswered += 1
                granted = 0
            elif answer.code != d.DIAMETER_SUCCESS:
                return  # refused outright: there is no session to end
            else:
                granted = answer.granted
            number = 1
            if answer.code == d.DIAMETER_SUCCESS:
                for _ in range(spec.updates):
                    answer = await self._ask(client, 1, session_id, number, msisdn, self._mscc(1, granted))
                    number += 1
                    if answer.code == d.DIAMETER_SUCCESS:
                        if granted:
                            record.pieces.append(granted)
                        granted = answer.granted
                    elif answer.code is None:
                        record.unanswered += 1
                        granted = 0
                        break
                    else:
                        break  # refused: the server still holds the last grant; TERMINATION reports it
            # a part of the last grant, off the 1 KiB increment so that rounding is exercised
            used = max(0, granted - granted // 3 - (i % 997)) if granted else 0
            answer = await self._ask(client, 2, session_id, number, msisdn, self._mscc(2, used))
            if answer.code == d.DIAMETER_SUCCESS:
                if used:
                    record.pieces.append(used)
            elif answer.code is None:
                record.unanswered += 1
        finally:
            self._open -= 1

    def _mscc(self, kind: int, units: int) -> bytes:
        """The MSCC of a request: INITIAL asks for a grant; UPDATE reports ``units`` used and asks for
        more; TERMINATION reports ``units`` used. Cached (the same few values repeat)."""
        cached = self._msccs.get((kind, units))
        if cached is not None:
            return cached
        grant = UnitsSpec(total=self.spec.grant)
        if kind == 0:
            spec = MsccSpec(rating_group=RATING_GROUP, requested=grant)
        elif kind == 1:
            spec = MsccSpec(
                rating_group=RATING_GROUP,
                requested=grant,
                used=UnitsSpec(total=units),
                reporting_reason=d.REPORTING_REASON_QUOTA_EXHAUSTED,
            )
        else:
            spec = MsccSpec(
                rating_group=RATING_GROUP,
                used=UnitsSpec(total=units),
                reporting_reason=d.REPORTING_REASON_FINAL,
            )
        encoded = spec.encode()
        if len(self._msccs) < 10_000:
            self._msccs[(kind, units)] = encoded
        return encoded

    async def _ask(
        self, client: DiameterClient, kind: int, session_avp: bytes, number: int, msisdn: str, mscc: bytes
    ) -> _Answer:
        stats = self.result.stats[TYPES[kind]]
        hop_by_hop, end_to_end = client.next_ids()
        started = time.perf_counter()
        data = self.templates[id(client)].ccr(
            session_avp, KINDS[kind], number, msisdn, mscc, hop_by_hop, end_to_end
        )
        try:
            message = await client.send(data, hop_by_hop, self.spec.timeout)
        except TimeoutError:
            stats.results["timeout"] += 1
            return _Answer(None, 0)
        except ConnectionError:
            stats.results["connection lost"] += 1
            return _Answer(None, 0)
        now = time.perf_counter()
        stats.latencies.append(now - started)
        if now <= self._window_end:
            stats.in_window += 1
        top = message.find(d.AVP_RESULT_CODE)
        code = top.u32() if top is not None else 0
        stats.results[str(code)] += 1
        granted = 0
        mscc_avp = message.find(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
        if mscc_avp is not None:
            children = mscc_avp.grouped()
            item = find(children, d.AVP_RESULT_CODE)
            if item is not None and item.u32() != d.DIAMETER_SUCCESS:
                stats.item_results[str(item.u32())] += 1
            gsu = find(children, d.AVP_GRANTED_SERVICE_UNIT)
            if gsu is not None:
                octets = find(gsu.grouped(), d.AVP_CC_TOTAL_OCTETS)
                granted = octets.u64() if octets is not None else 0
        return _Answer(code, granted)


@contextlib.asynccontextmanager
async def connected(host: str, port: int, connections: int) -> AsyncIterator[list[DiameterClient]]:
    """``connections`` clients (CER/CEA done), closed with DPR afterwards."""
    clients: list[DiameterClient] = []
    try:
        for n in range(connections):
            clients.append(
                await DiameterClient.connect(
                    host, port, origin_host=origin_host(n), origin_realm=ORIGIN_REALM, timeout=10.0
                )
            )
        yield clients
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def run_phase(
    host: str,
    port: int,
    connections: int,
    subscribers: Sequence[str],
    spec: LoadSpec,
    name: str,
    run_id: str,
    *,
    watch: Mapping[str, int] | None = None,
) -> PhaseResult:
    async with connected(host, port, connections) as clients:
        return await LoadGenerator(clients, subscribers, spec, name, run_id, watch=watch).run()


# ---- figures -----------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _latency_summary(latencies: Iterable[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": percentile(ordered, 50) * 1000,
        "p95_ms": percentile(ordered, 95) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": (ordered[-1] if ordered else 0.0) * 1000,
    }


def summarize(phase: PhaseResult) -> dict[str, Any]:
    """The JSON figures of a phase."""
    types: dict[str, Any] = {}
    for kind in TYPES:
        stats = phase.stats[kind]
        types[kind] = {
            "answers": len(stats.latencies),
            "answers_per_s": phase.answers_per_s(kind),
            **_latency_summary(stats.latencies),
            "result_codes": dict(sorted(stats.results.items())),
            "item_result_codes": dict(sorted(stats.item_results.items())),
        }
    every = [x for kind in TYPES for x in phase.stats[kind].latencies]
    return {
        "offered_sessions_per_s": phase.spec.rate,
        "duration_s": phase.spec.duration,
        "updates": phase.spec.updates,
        "max_open": phase.spec.max_open,
        "sessions_started": phase.started,
        "sessions_skipped_max_open": phase.skipped,
        "max_open_seen": phase.max_open_seen,
        "generator_late_start_max_ms": phase.late_start_max_s * 1000,
        "elapsed_s": phase.elapsed_s,
        "answers_per_s": phase.answers_per_s(),
        "unanswered": phase.unanswered,
        "all": {"answers": len(every), **_latency_summary(every)},
        "types": types,
        "cpu_share_of_one_core": phase.cpu,
    }


# ---- bench accounts and the conservation check -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscriber:
    account_id: str
    msisdn: str


def bench_subscribers(run_id: str, count: int) -> list[Subscriber]:
    digits = str(int(run_id, 16) % 1_000_000).zfill(6)
    return [Subscriber(f"bench-{run_id}-{i}", f"999{digits}{i:06d}") for i in range(count)]


async def provision(store: BalanceStore, subscribers: Sequence[Subscriber], plan: str) -> None:
    """Prepaid accounts with ``OPENING`` money and an msisdn identity each, straight into the live store."""
    now = datetime.now(UTC)

    async def one(s: Subscriber) -> None:
        await store.put_account(
            AccountRecord(account_id=s.account_id, kind=AccountKind.PREPAID, currency="EUR", plan=plan)
        )
        await store.credit(s.account_id, OPENING, key=f"{s.account_id}-opening", reason="topup", now=now)
        await store.put_identity("msisdn", s.msisdn, s.account_id)

    await asyncio.gather(*(one(s) for s in subscribers))


async def remove(store: BalanceStore, subscribers: Sequence[Subscriber], run_id: str) -> int:
    """Delete the bench accounts' keys: account hashes, identities, stored answers, session owners.

    Their charge records stay in the partitions' charge streams (appended atomically with the money moves;
    they name the ``bench-<run>-`` accounts).
    """
    keys = [store.keys.account(s.account_id).account for s in subscribers]
    keys += [store.keys.identity("msisdn", s.msisdn) for s in subscribers]
    prefix = store.keys.prefix
    for pattern in (f"{prefix}:*:i:bench-{run_id}-*", f"{prefix}:so:bench*.test;{run_id};*"):
        cursor: Any = b"0"
        while True:
            cursor, found = await store.link.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 5000)
            keys.extend(k.decode() if isinstance(k, bytes) else str(k) for k in found)
            if cursor in (b"0", 0, "0"):
                break
    removed = 0
    for i in range(0, len(keys), 500):
        removed += int(await store.link.execute("UNLINK", *keys[i : i + 500]))
    # the reaper indexes hold "<account>|<session>" of open sessions: none after a clean run
    for index in sorted({store.keys.account(s.account_id).reaper for s in subscribers}):
        cursor = b"0"
        while True:
            cursor, flat = await store.link.execute(
                "ZSCAN", index, cursor, "MATCH", f"bench-{run_id}-*", "COUNT", 1000
            )
            members = flat[0::2]
            if members:
                removed += int(await store.link.execute("ZREM", index, *members))
            if cursor in (b"0", 0, "0"):
                break
    return removed


def session_price(catalog: Catalog, plan: str, pieces: Sequence[int], at: datetime) -> int:
    """What one data session's committed pieces cost, each rated as the continuation of the ones before."""
    rated_plan = catalog.plan(plan, at)
    amount = offset = prior = 0
    for quantity in pieces:
        rated = price_of(
            rated_plan, Usage(service=SERVICE, quantity=quantity, start=at, offset=offset, prior=prior)
        )
        amount += rated.amount
        offset += quantity
        prior += rated.raw
    return amount


def expected_charges(
    catalog: Catalog,
    plan: str,
    subscribers: Sequence[Subscriber],
    phases: Iterable[PhaseResult],
    at: datetime,
) -> dict[str, int]:
    expected = {s.account_id: 0 for s in subscribers}
    for phase in phases:
        for session in phase.sessions:
            account = subscribers[session.subscriber].account_id
            expected[account] += session_price(catalog, plan, session.pieces, at)
    return expected


@dataclass(frozen=True, slots=True)
class Conservation:
    status: str  # "ok" | "failed" | "unverified"
    accounts: int
    expected_micros: int
    charged_micros: int  # opening − balance − reserved, summed
    reserved_micros: int
    unanswered: int
    mismatches: tuple[dict[str, Any], ...]

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "accounts": self.accounts,
            "expected_micros": self.expected_micros,
            "charged_micros": self.charged_micros,
            "reserved_micros": self.reserved_micros,
            "unanswered_requests": self.unanswered,
            "mismatches": list(self.mismatches),
        }


async def check_conservation(
    store: BalanceStore, expected: Mapping[str, int], *, opening: int = OPENING, unanswered: int = 0
) -> Conservation:
    """For every account: opening − balance − reserved == expected, and reserved == 0."""
    mismatches: list[dict[str, Any]] = []
    charged_total = reserved_total = 0
    for account_id, want in expected.items():
        try:
            view = await store.query(account_id)
        except UnknownAccount:
            mismatches.append({"account": account_id, "problem": "missing"})
            continue
        charged = opening - view.balance - view.reserved
        charged_total += charged
        reserved_total += view.reserved
        if charged != want or view.reserved != 0:
            mismatches.append(
                {"account": account_id, "expected": want, "charged": charged, "reserved": view.reserved}
            )
    status = "failed" if mismatches else "unverified" if unanswered else "ok"
    return Conservation(
        status=status,
        accounts=len(expected),
        expected_micros=sum(expected.values()),
        charged_micros=charged_total,
        reserved_micros=reserved_total,
        unanswered=unanswered,
        mismatches=tuple(mismatches[:20]),
    )


def accounts_needed(requested: int, sessions: int, updates: int, grant: int) -> int:
    """Enough accounts that none is charged past ``ACCOUNT_OCTETS_LIMIT`` (the tier threshold stays far)."""
    octets = sessions * (updates + 1) * grant
    return max(1, requested, math.ceil(octets / ACCOUNT_OCTETS_LIMIT))


# ---- processes: the spawned daemon, the baseline node, CPU accounting ---------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else json.dumps(key)


def to_toml(data: Mapping[str, Any], path: tuple[str, ...] = ()) -> str:
    """A TOML document for what :func:`tomllib.loads` gave (tables, arrays of tables, plain values)."""
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        ):
            nested.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in nested:
        sub = (*path, key)
        name = ".".join(_toml_key(k) for k in sub)
        if isinstance(value, dict):
            out += f"\n[{name}]\n" + to_toml(value, sub)
        else:
            for element in value:
                out += f"\n[[{name}]]\n" + to_toml(element, sub)
    return out


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    steal = values[7] if len(values) > 7 else 0
    busy = sum(values[:8]) - idle - steal  # guest time is already in user
    return busy / tick, steal / tick


def _cpu_snapshot(watch: Mapping[str, int]) -> dict[str, float]:
    snapshot = {}
    for name, pid in watch.items():
        seconds = _cpu_seconds(pid)
        if seconds is not None:
            snapshot[name] = seconds
    machine = _machine_cpu()
    if machine is not None:
        snapshot["machine busy"], snapshot["steal"] = machine
    return snapshot


def _cpu_share(before: Mapping[str, float], after: Mapping[str, float], wall: float) -> dict[str, float]:
    """CPU seconds per wall second of each watched process, of everything else, of steal, and in total."""
    if wall <= 0:
        return {}
    shares = {name: (after[name] - before[name]) / wall for name in before if name in after}
    if "machine busy" in shares:
        total = shares.pop("machine busy")
        watched = sum(v for k, v in shares.items() if k != "steal")
        shares["other processes"] = max(0.0, total - watched)
        shares[f"all (of {os.cpu_count() or 1} cores)"] = total
    return shares


class ProcessError(Exception):
    """A helper process (daemon, baseline node) did not start; the message is one line plus its log tail."""


@dataclass
class Spawned:
    process: asyncio.subprocess.Process
    port: int
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, grace: float = 15.0) -> int | None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        return self.process.returncode


async def _http_status(port: int, path: str) -> int | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 3.0)
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # the temp config sets these; an inherited override would defeat it
    env.pop("OCC_METRICS_PORT", None)
    env.pop("OCC_RUN_DIR", None)
    env.pop("OCC_CONFIG", None)
    return env


async def spawn_daemon(config: Path, workdir: Path, startup_timeout: float = 60.0) -> Spawned:
    """``python -m occ serve`` on a copy of ``config`` with free ports and a private run directory."""
    raw = tomllib.loads(config.read_text(encoding="utf-8"))
    diameter_port, metrics_port = free_port(), free_port()
    raw.setdefault("diameter", {})["port"] = diameter_port
    raw["diameter"]["listen"] = "127.0.0.1"
    raw.setdefault("metrics", {})["port"] = metrics_port
    raw["metrics"]["listen"] = "127.0.0.1"
    server = raw.setdefault("server", {})
    server["run_dir"] = str(workdir / "run")
    server["log_level"] = "warning"
    copy = workdir / "occ.toml"
    copy.write_text(to_toml(raw), encoding="utf-8")
    log = workdir / "daemon.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "occ", "serve", "--config", str(copy),
            stdout=sink, stderr=asyncio.subprocess.STDOUT, env=_child_env(),
        )  # fmt: skip
    spawned = Spawned(process, diameter_port, log)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise ProcessError(f"occ serve exited with status {process.returncode}:\n{spawned.tail()}")
        if await _http_status(metrics_port, "/health") == 200:
            return spawned
        await asyncio.sleep(0.2)
    await spawned.stop()
    raise ProcessError(f"occ serve not healthy within {startup_timeout:.0f} s:\n{spawned.tail()}")


BASELINE_SCRIPT = ROOT / "benchmarks" / "baseline_diameter_node.py"


async def spawn_baseline(workdir: Path, peers: int, grant: int, startup_timeout: float = 30.0) -> Spawned:
    """The python-diameter node of ``benchmarks/baseline_diameter_node.py`` on a free port."""
    if not BASELINE_SCRIPT.exists():
        raise ProcessError(f"{BASELINE_SCRIPT} not found (a source checkout is needed for the baseline)")
    port = free_port()
    log = workdir / "baseline.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(BASELINE_SCRIPT), "--port", str(port), "--peers", str(peers),
            "--grant", str(grant), stdout=asyncio.subprocess.PIPE, stderr=sink, env=_child_env(),
        )  # fmt: skip
    spawned = Spawned(process, port, log)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), startup_timeout)
    except TimeoutError:
        line = b""
    if not line.startswith(b"ready"):
        await spawned.stop()
        raise ProcessError(f"baseline node did not start:\n{spawned.tail()}")
    return spawned


def _money_core_module() -> ModuleType | None:
    """benchmarks/bench_money_core.py (its machine() and redis_benchmark()), when in a source checkout."""
    path = ROOT / "benchmarks" / "bench_money_core.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_money_core", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLACEHOLDER = "__rand_int__"  # replaced in place by redis-benchmark


def evalsha_benchmark(url: str, store: BalanceStore, account: str, concurrency: int, requests: int) -> float:
    """redis-benchmark EVALSHA of the session script, as ``bench_money_core.redis_benchmark`` measures it,
    with the current key layout and step fields: a CCR-I-shaped step on a fresh session each call."""
    import re
    import subprocess
    from urllib.parse import urlsplit

    from balance import scripts, wire

    item = wire.ItemPlan(
        id="1", s="voice", u=125, cu=180, c=0, m=240_000, raw=240_000, r=300, rm=400_000, mn=80_000,
        nx=80_000, cy="", lo=-1, hi=-1,
    )  # fmt: skip
    now = int(datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp() * 1000)
    session, key = f"s{PLACEHOLDER}", f"k{PLACEHOLDER}"
    step = wire.SessionStep(
        k=key, now=now, ttl=600_000, ittl=600, sid=session, aid=account, op="I", v=0, plan="demo", st=now,
        it=[item],
    )  # fmt: skip
    k = store.keys.account(account)
    keys = [k.account, k.reaper, k.idempotency(f"s:{session}", key), k.stream]
    parts = urlsplit(url.split(",")[0])
    cmd = [
        "redis-benchmark", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379),
        "--dbnum", str(int(parts.path.lstrip("/") or 0)), "-c", str(concurrency), "-n", str(requests),
        "-r", "2000000000", "-q", "-x", "EVALSHA", scripts.SESSION.sha, str(len(keys)), *keys,
    ]  # fmt: skip
    done = subprocess.run(cmd, input=wire.encode_request(step), capture_output=True, timeout=600)
    text = done.stdout.decode(errors="replace")
    found = re.findall(r"([\d.]+) requests per second", text)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"redis-benchmark failed: {text} {done.stderr.decode(errors='replace')}")
    return float(found[-1])


async def raw_redis_evalsha(store: BalanceStore, url: str, seconds: float) -> tuple[float | None, str]:
    """Session-script EVALSHA calls/s by ``redis-benchmark`` (32 connections, unpipelined) under a throw-away
    key prefix, and where the measurement came from: ``bench_money_core.redis_benchmark`` itself, or
    :func:`evalsha_benchmark` when that no longer runs against the current store."""
    module = _money_core_module()
    if module is None or shutil.which("redis-benchmark") is None:
        return None, "not measured: benchmarks/bench_money_core.py or redis-benchmark missing"
    from balance.settings import RedisSettings

    prefix = "benchd" + secrets.token_hex(4)
    scratch = await BalanceStore.connect(
        RedisSettings(url=url.split(",")[0], key_prefix=prefix, partitions=store.keys.partitions),
        store.settings,
    )
    account: str = module.ACCOUNT
    try:
        measure: Callable[[int], float] = lambda n: module.redis_benchmark(url, scratch, 32, 1, n)  # noqa: E731
        source = "benchmarks/bench_money_core.py redis_benchmark()"
        await module.prepare(scratch)
        try:
            probe = await asyncio.to_thread(measure, 20_000)
        except (TypeError, AttributeError) as exc:
            source = (
                f"occ.diameter.bench.evalsha_benchmark (bench_money_core.redis_benchmark is out of date "
                f"with balance: {exc})"
            )
            measure = lambda n: evalsha_benchmark(url, scratch, account, 32, n)  # noqa: E731
            probe = await asyncio.to_thread(measure, 20_000)
        await module.cleanup(scratch, prefix)
        await module.prepare(scratch)
        n = max(20_000, int(probe * seconds))
        rate = await asyncio.to_thread(measure, n)
        # each call must have opened a session (a repeated random id would take the cheap replay path)
        opened = int(await module.sessions_opened(scratch))
        if opened < n * 0.99:
            return None, f"discarded: {opened} sessions opened by {n} calls, not the full step ({source})"
        return rate, source
    finally:
        await module.cleanup(scratch, prefix)
        await scratch.close()


def machine() -> dict[str, str]:
    module = _money_core_module()
    if module is not None:
        found: dict[str, str] = module.machine()
        return found
    import platform

    return {"host": platform.node(), "cores": str(os.cpu_count()), "python": platform.python_version()}


async def redis_pid(store: BalanceStore) -> int | None:
    """The redis-server's pid when it runs on this machine (for CPU accounting)."""
    try:
        info = await store.link.execute("INFO", "server")
    except Exception:
        return None
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("process_id:"):
            pid = int(line.split(":", 1)[1])
            return pid if Path(f"/proc/{pid}/stat").exists() else None
    return None


# ---- the whole benchmark ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchOptions:
    sessions: int = 50_000
    rate: float = 2000.0
    duration: float = 10.0
    updates: int = 3
    connections: int = 4
    accounts: int = 100
    grant: int = MIB
    max_open: int = 512
    timeout: float = 30.0
    find_peak: bool = True
    load_share: float = 0.8
    spawn: bool = True
    baseline: bool = True
    redis_baseline: bool = True
    keep_accounts: bool = False
    plan: str = "demo"


Progress = Callable[[str], None]


async def run_target_phases(
    name: str,
    host: str,
    port: int,
    options: BenchOptions,
    subscribers: Sequence[str],
    run_id: str,
    progress: Progress,
    watch: Mapping[str, int],
) -> list[PhaseResult]:
    """The peak phase at ``options.rate`` and the phase at ``load_share`` of the peak (or one phase)."""

    def spec(rate: float) -> LoadSpec:
        return LoadSpec(
            rate=rate,
            duration=options.duration,
            sessions=options.sessions,
            updates=options.updates,
            grant=options.grant,
            max_open=options.max_open,
            timeout=options.timeout,
        )

    label = "peak" if options.find_peak else "fixed"
    progress(f"{name}: {label} phase, {options.rate:g} sessions/s for {options.duration:g} s")
    first = await run_phase(
        host,
        port,
        options.connections,
        subscribers,
        spec(options.rate),
        f"{name}-{label}",
        run_id,
        watch=watch,
    )
    progress(f"{name}: {label}: {first.answers_per_s():,.0f} answers/s")
    phases = [first]
    if options.find_peak:
        per_session = options.updates + 2
        rate = options.load_share * first.answers_per_s() / per_session
        pct = f"{options.load_share * 100:g}%"
        progress(f"{name}: {pct} phase, {rate:,.1f} sessions/s for {options.duration:g} s")
        second = await run_phase(
            host, port, options.connections, subscribers, spec(rate), f"{name}-{pct}", run_id, watch=watch
        )
        progress(f"{name}: {pct}: {second.answers_per_s():,.0f} answers/s")
        phases.append(second)
    return phases


async def run_benchmark(
    options: BenchOptions,
    config: Path,
    settings: Any,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Everything ``occ bench diameter`` does; returns the report (``conservation.status`` says pass/fail)."""
    from billing import db
    from billing.tariff_store import install_tariff, load_catalog

    run_id = secrets.token_hex(3)
    started_at = datetime.now(UTC)
    conn = await db.connect(settings.database.url, settings.database.connect_timeout_s)
    try:
        catalog = await load_catalog(conn)
        if options.plan not in catalog.names():
            demo = ROOT / "config" / "tariffs" / "demo.toml"
            progress(f"plan {options.plan!r} not installed: installing {demo}")
            await install_tariff(conn, demo.read_text(encoding="utf-8"), demo.name)
            catalog = await load_catalog(conn)
    finally:
        await conn.close()
    store = await BalanceStore.connect(settings.redis, settings.balance)
    report: dict[str, Any] = {
        "benchmark": "diameter",
        "when": started_at.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {k: getattr(options, k) for k in options.__dataclass_fields__},
        "run_id": run_id,
    }
    workdir = Path(tempfile.mkdtemp(prefix="occ-bench-"))
    daemon: Spawned | None = None
    count = accounts_needed(
        options.accounts, options.sessions * (2 if options.find_peak else 1), options.updates, options.grant
    )
    subscribers = bench_subscribers(run_id, count)
    msisdns = [s.msisdn for s in subscribers]
    try:
        watch: dict[str, int] = {"load generator": os.getpid()}
        pid = await redis_pid(store)
        if pid is not None:
            watch["redis-server"] = pid
        if options.spawn:
            progress("starting occ serve")
            daemon = await spawn_daemon(config, workdir)
            host, port = "127.0.0.1", daemon.port
            if daemon.process.pid:
                watch["occ serve"] = daemon.process.pid
        else:
            listen = settings.diameter.listen
            host = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen
            port = settings.diameter.port
        report["target"] = {"host": host, "port": port, "spawned": options.spawn}
        progress(f"provisioning {count} bench accounts (bench-{run_id}-*)")
        await provision(store, subscribers, options.plan)
        ours = await run_target_phases("occ", host, port, options, msisdns, run_id, progress, watch)
        report["occ"] = {p.name: summarize(p) for p in ours}
        unanswered = sum(p.unanswered for p in ours)
        expected = expected_charges(catalog, options.plan, subscribers, ours, started_at)
        conservation = await check_conservation(store, expected, unanswered=unanswered)
        report["conservation"] = conservation.as_dict()
        progress(f"conservation: {conservation.status}")
        if daemon is not None:
            code = await daemon.stop()
            report["target"]["exit_status"] = code
            daemon = None
        theirs: list[PhaseResult] = []
        baseline: Spawned | None = None
        if options.baseline:
            try:
                baseline = await spawn_baseline(workdir, options.connections, options.grant)
            except ProcessError as exc:
                report["baseline_error"] = str(exc)
                progress(f"baseline not measured: {exc}")
        if baseline is not None:
            try:
                watch_baseline = {k: v for k, v in watch.items() if k != "occ serve"}
                if baseline.process.pid:
                    watch_baseline["baseline node"] = baseline.process.pid
                theirs = await run_target_phases(
                    "baseline", "127.0.0.1", baseline.port, options, msisdns, run_id, progress, watch_baseline
                )
            finally:
                await baseline.stop(5.0)
            report["baseline"] = {p.name: summarize(p) for p in theirs}
        raw: float | None = None
        if options.redis_baseline:
            progress("raw redis-benchmark EVALSHA of the session script")
            raw, source = await raw_redis_evalsha(store, settings.redis.url, min(options.duration, 5.0))
            report["raw_redis_evalsha_source"] = source
        report["raw_redis_evalsha_per_s"] = raw
        report["ratios"], report["goals"] = _ratios(ours, theirs, raw, options)
    finally:
        if daemon is not None:
            await daemon.stop()
        if not options.keep_accounts:
            with contextlib.suppress(Exception):
                report["bench_keys_removed"] = await remove(store, subscribers, run_id)
        await store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _ratios(
    ours: Sequence[PhaseResult], theirs: Sequence[PhaseResult], raw: float | None, options: BenchOptions
) -> tuple[dict[str, float | None], dict[str, Any]]:
    ours_u = ours[0].answers_per_s("CCR-U")
    theirs_u = theirs[0].answers_per_s("CCR-U") if theirs else 0.0
    ratios: dict[str, float | None] = {
        "occ / baseline, CCR-U answers/s at peak": ours_u / theirs_u if theirs_u else None,
        "occ / baseline, all answers/s at peak": (
            ours[0].answers_per_s() / theirs[0].answers_per_s()
            if theirs and theirs[0].answers_per_s()
            else None
        ),
        "occ CCR-U answers/s at peak / raw EVALSHA calls/s": ours_u / raw if raw else None,
        "occ all answers/s at peak / raw EVALSHA calls/s": ours[0].answers_per_s() / raw if raw else None,
    }
    goals: dict[str, Any] = {}
    vs_baseline = ratios["occ / baseline, CCR-U answers/s at peak"]
    goals["CCR-U throughput >= 3x baseline"] = {
        "value": vs_baseline,
        "met": vs_baseline is not None and vs_baseline >= 3.0,
    }
    if options.find_peak and len(ours) > 1:
        p99 = _latency_summary(ours[1].stats["CCR-U"].latencies)["p99_ms"]
        goals[f"CCR-U p99 <= 5 ms at {options.load_share * 100:g}% of peak"] = {
            "value": p99,
            "met": p99 <= 5.0,
        }
    return ratios, goals


# ---- text --------------------------------------------------------------------------------------------


def format_report(report: Mapping[str, Any]) -> str:
    lines = [f"diameter benchmark — {report['when']}"]
    if "command" in report:
        lines.append(f"command: {report['command']}")
    m = report.get("machine", {})
    lines.append(
        f"machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, Python {m.get('python', '?')}, "
        f"{m.get('redis', '')}".rstrip(", ")
    )
    o = report["options"]
    lines.append(
        f"load: open loop, session = CCR-I + {o['updates']} x CCR-U + CCR-T (data, RG {RATING_GROUP}, "
        f"{o['grant']} octets per grant), {o['connections']} connections, max {o['max_open']} sessions open"
    )
    for target in ("occ", "baseline"):
        for name, phase in report.get(target, {}).items():
            lines.append("")
            lines.append(
                f"{name}: offered {phase['offered_sessions_per_s']:,.1f} sessions/s for "
                f"{phase['duration_s']:g} s; started {phase['sessions_started']}, skipped (max open) "
                f"{phase['sessions_skipped_max_open']}; {phase['answers_per_s']:,.0f} answers/s; "
                f"unanswered {phase['unanswered']}"
            )
            lines.append(
                f"  {'':6} {'answers':>8} {'per s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
                f"{'max ms':>8}  result codes"
            )
            for kind, t in [*phase["types"].items(), ("all", phase["all"])]:
                codes = ", ".join(f"{c}: {n}" for c, n in t.get("result_codes", {}).items())
                items = t.get("item_result_codes", {})
                if items:
                    codes += " (MSCC " + ", ".join(f"{c}: {n}" for c, n in items.items()) + ")"
                rate = f"{t['answers_per_s']:>9,.0f}" if "answers_per_s" in t else f"{'':>9}"
                lines.append(
                    f"  {kind:<6} {t['answers']:>8} {rate} {t['p50_ms']:>8.2f} {t['p95_ms']:>8.2f} "
                    f"{t['p99_ms']:>8.2f} {t['max_ms']:>8.1f}  {codes}"
                )
            cpu = phase.get("cpu_share_of_one_core") or {}
            if cpu.get("other processes", 0.0) > 0.25:
                lines.append(
                    f"  NOTE: the machine was not quiet: processes outside this benchmark used "
                    f"{cpu['other processes']:.2f} of a core during this phase"
                )
            if cpu:
                lines.append(
                    "  CPU (share of one core): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                )
    c = report.get("conservation")
    if c:
        lines.append("")
        lines.append(
            f"money conservation: {c['status'].upper()} — {c['accounts']} bench accounts, expected "
            f"{c['expected_micros']} µ, charged {c['charged_micros']} µ, reserved {c['reserved_micros']} µ, "
            f"unanswered requests {c['unanswered_requests']}"
        )
        for mismatch in c["mismatches"][:5]:
            lines.append(f"  mismatch: {mismatch}")
    raw = report.get("raw_redis_evalsha_per_s")
    if raw:
        lines.append(f"raw redis-benchmark EVALSHA of the session script, 32 conn: {raw:,.0f} calls/s")
    if report.get("raw_redis_evalsha_source"):
        lines.append(f"  measured by {report['raw_redis_evalsha_source']}")
    ratios = report.get("ratios") or {}
    if ratios:
        lines.append("ratios:")
        for name, value in ratios.items():
            lines.append(f"  {name:<55} {'n/a' if value is None else f'{value:.2f}'}")
    goals = report.get("goals") or {}
    for name, goal in goals.items():
        value = goal["value"]
        shown = "n/a" if value is None else f"{value:.2f}"
        verdict = "not measured" if value is None else "met" if goal["met"] else "NOT met"
        lines.append(f"goal {name}: {shown} — {verdict}")
    return "\n".join(lines)


def write_results(report: Mapping[str, Any], text: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"diameter-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "diameter-latest.txt").write_text(text + "\n")
    return path
