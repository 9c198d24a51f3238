"""Load of ``occ bench diameter``: open-loop Gy sessions over several connections, and latency figures."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from occ.bench_common import MIB, collector_paused, cpu_share, cpu_snapshot, kept_up, latency_summary
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

RATING_GROUP = 10
SERVICE = "data"
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

    def kept_up(self) -> bool:
        """The target answered about all the phase offered: the rate was below its capacity."""
        per_session = self.spec.updates + 2  # requests, like the answers and the unanswered
        missed = self.skipped * per_session + self.unanswered
        due = (self.started + self.skipped) * per_session
        return kept_up(self.spec.rate * per_session, self.answers_per_s(), missed, due)


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
        with collector_paused():
            return await self._run()

    async def _run(self) -> PhaseResult:
        spec, result = self.spec, self.result
        total = min(spec.sessions, math.ceil(spec.rate * spec.duration)) if spec.rate > 0 else 0
        tasks: set[asyncio.Task[None]] = set()
        cpu_before = cpu_snapshot(self.watch)
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
        result.cpu = cpu_share(cpu_before, cpu_snapshot(self.watch), time.perf_counter() - wall_before)
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


def summarize(phase: PhaseResult) -> dict[str, Any]:
    """The JSON figures of a phase."""
    types: dict[str, Any] = {}
    for kind in TYPES:
        stats = phase.stats[kind]
        types[kind] = {
            "answers": len(stats.latencies),
            "answers_per_s": phase.answers_per_s(kind),
            **latency_summary(stats.latencies),
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
        "kept_up": phase.kept_up(),
        "unanswered": phase.unanswered,
        "all": {"answers": len(every), **latency_summary(every)},
        "types": types,
        "cpu_share_of_one_core": phase.cpu,
    }
