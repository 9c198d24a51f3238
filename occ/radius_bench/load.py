"""Load of ``occ bench radius``: open-loop UDP from several sockets, and the figures of a phase.

Requests (``auth``: Access-Requests; ``acct``: session starts, each Start then Interim-Updates then Stop,
one after the other) are due at a fixed schedule whatever the answers, taken by the sockets in turn. Each
socket keeps track of its free Identifiers (a RADIUS client may have at most 256 requests outstanding per
source port); a due send whose socket has none free is skipped and counted, which bounds the backlog at
``sockets × 256`` above capacity. The packets are built before the phase (:mod:`occ.radius_bench.packets`),
the ``q``-th of a socket with Identifier ``q % 256``; when that one is still outstanding the packet takes
the Identifier free the longest and is signed again for it (counted). Replies are matched by socket and
Identifier and must carry the right Response Authenticator (and Message-Authenticator, when present);
anything else is counted as unmatched. A request unanswered after ``timeout`` seconds frees its
Identifier; an accounting session then goes on with its next report, and frees its Identifier after its
Stop. Stops still unanswered when the phase is over are sent again, byte for byte, as a NAS would.
"""

from __future__ import annotations

import asyncio
import collections
import math
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aaa import codec
from occ.bench_common import collector_paused, cpu_share, cpu_snapshot, kept_up, latency_summary
from occ.radius_bench.packets import IDENTIFIERS, number, session_total, with_identifier

AUTH, ACCT = "auth", "acct"
TYPES = {AUTH: ("Access",), ACCT: ("Start", "Interim", "Stop")}
TICK_S = 0.001  # the scheduler's shortest sleep
SWEEP_S = 0.01  # timeouts are noticed within this after the window
SOCKET_BUFFER = 4 << 20  # capped by net.core.rmem_max / wmem_max
FREE = -1
STOP_RETRIES = 3  # acct: an unanswered Stop is sent again this often after the phase, as a NAS would
STOP_RETRY_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class LoadSpec:
    mode: str  # AUTH | ACCT
    rate: float  # requests per second offered (acct: sessions start at rate / (interims + 2))
    duration: float  # seconds of starting requests / sessions
    requests: int  # at most this many requests in the phase
    sockets: int = 8
    interims: int = 3
    step: int = 1 << 20  # octets added to the running total per Interim-Update
    timeout: float = 5.0

    @property
    def per_session(self) -> int:
        return 1 if self.mode == AUTH else self.interims + 2

    @property
    def unit_rate(self) -> float:
        """Requests (auth) or sessions (acct) started per second."""
        return self.rate / self.per_session

    def units(self) -> int:
        """How many requests (auth) or sessions (acct) the schedule holds."""
        if self.rate <= 0:
            return 0
        return min(self.requests // self.per_session, math.ceil(self.unit_rate * self.duration))

    def templates(self) -> int:
        """Requests or sessions to build: every socket may have to send its whole share."""
        return math.ceil(self.units() / self.sockets) * self.sockets


@dataclass(slots=True)
class TypeStats:
    latencies: list[float] = field(default_factory=list)  # seconds, every matched reply
    in_window: int = 0  # replies received while requests were being started
    replies: collections.Counter[str] = field(default_factory=collections.Counter)  # reply type or "timeout"


@dataclass(slots=True)
class PhaseResult:
    name: str
    spec: LoadSpec
    started: int = 0  # requests (auth) / sessions (acct) sent
    skipped: int = 0  # due, but their Identifier was still outstanding
    requests_sent: int = 0
    max_outstanding: int = 0
    unmatched: int = 0  # replies to no outstanding request, or with a wrong authenticator
    resigned: int = 0  # packets signed again for another Identifier than the one they were built with
    stops_lost: list[int] = field(default_factory=list)  # acct: sessions whose Stop got no answer, even again
    stops_retransmitted: int = 0  # acct: Stops without an answer in the phase, sent again after it
    stops_answered_again: int = 0
    server_drops: int | None = None  # datagrams the kernel dropped at the server's socket (/proc/net/udp)
    send_errors: int = 0
    window_s: float = 0.0
    elapsed_s: float = 0.0  # first send to the last reply or timeout
    late_start_max_s: float = 0.0
    stats: dict[str, TypeStats] = field(default_factory=dict)
    # acct, per session number: the largest running total an Accounting-Response acknowledged (-1: none),
    # and how many of its reports got no answer; sessions never started stay -1 / 0
    answered_totals: list[int] = field(default_factory=list)
    unanswered: list[int] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    udp_errors: dict[str, int] = field(default_factory=dict)

    def answers_per_s(self, kind: str | None = None) -> float:
        if self.window_s <= 0:
            return 0.0
        kinds = list(self.stats) if kind is None else [kind]
        return sum(self.stats[k].in_window for k in kinds) / self.window_s

    @property
    def timeouts(self) -> int:
        return sum(s.replies["timeout"] for s in self.stats.values())

    def kept_up(self) -> bool:
        """The target answered about all the phase offered: the rate was below its capacity."""
        per = self.spec.per_session  # requests, like the answers and the timeouts
        missed = self.skipped * per + self.timeouts
        return kept_up(self.spec.rate, self.answers_per_s(), missed, (self.started + self.skipped) * per)


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, generator: LoadGenerator, index: int) -> None:
        self.generator = generator
        self.index = index

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.generator.on_reply(self.index, data)

    def error_received(self, exc: Exception) -> None:
        self.generator.result.send_errors += 1


class LoadGenerator:
    """One phase: ``packets`` (built by :mod:`occ.radius_bench.packets` for ``spec``) sent to ``address``."""

    def __init__(
        self,
        packets: Sequence[bytes],
        spec: LoadSpec,
        name: str,
        address: tuple[str, int],
        secret: bytes,
        framing: codec.Framing,
        *,
        watch: Mapping[str, int] | None = None,
    ) -> None:
        if spec.sockets < 1 or len(packets) < spec.templates() * spec.per_session:
            raise ValueError("a phase needs at least one socket and a packet for every scheduled request")
        self.packets = list(packets)  # a packet signed again for another Identifier replaces its original
        self.spec = spec
        self.address = address
        self.secret = secret
        self.framing = framing
        self.watch = dict(watch or {})
        self.acct = spec.mode == ACCT
        self.kinds = TYPES[spec.mode]
        self.result = PhaseResult(name=name, spec=spec, stats={k: TypeStats() for k in self.kinds})
        self.pending = [[FREE] * IDENTIFIERS for _ in range(spec.sockets)]
        # Identifiers freed, oldest first; may also hold ones taken since (skipped when met)
        self.free = [collections.deque(range(IDENTIFIERS)) for _ in range(spec.sockets)]
        self.free_count = [IDENTIFIERS] * spec.sockets
        self.taken = [0] * spec.sockets  # requests / sessions each socket started
        self.sent_at = [0.0] * len(self.packets)
        self.deadlines: collections.deque[tuple[float, int, int, int]] = collections.deque()
        self.transports: list[asyncio.DatagramTransport] = []
        self.outstanding = 0
        self.window_end = math.inf
        self.retransmitting = False
        self.lost_stops: list[tuple[int, int, int]] = []  # (socket, Identifier, index) of unanswered Stops
        if self.acct:
            self.result.answered_totals = [-1] * spec.templates()
            self.result.unanswered = [0] * spec.templates()

    async def run(self) -> PhaseResult:
        with collector_paused():
            try:
                await self._open()
                return await self._run()
            finally:
                for transport in self.transports:
                    transport.close()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        for n in range(self.spec.sockets):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
                transport, _ = await loop.create_datagram_endpoint(
                    lambda n=n: _Socket(self, n),  # type: ignore[misc]
                    sock=sock,
                )
            except BaseException:
                sock.close()
                raise
            self.transports.append(transport)

    async def _run(self) -> PhaseResult:
        spec, result = self.spec, self.result
        total, sockets, per = spec.units(), spec.sockets, spec.per_session
        rate = spec.unit_rate
        cpu_before, udp_before = cpu_snapshot(self.watch), udp_counters()
        drops_before = socket_drops(self.address[1])
        t0 = time.perf_counter()
        window = min(spec.duration, total / rate) if total else spec.duration  # --requests may cut it short
        self.window_end = t0 + window
        due_so_far = 0
        while due_so_far < total:
            now = time.perf_counter()
            # sends due before the window ended still go out, late (the figures say how late)
            due = min(total, int((min(now, self.window_end) - t0) * rate) + 1)
            if due_so_far < due:
                result.late_start_max_s = max(result.late_start_max_s, now - (t0 + due_so_far / rate))
            while due_so_far < due:
                sock = due_so_far % sockets
                if not self.free_count[sock]:
                    result.skipped += 1
                else:
                    result.started += 1
                    q = self.taken[sock]
                    self.taken[sock] = q + 1
                    self._send(sock, self._take(sock, q % IDENTIFIERS), number(sock, q, sockets) * per, now)
                due_so_far += 1
            self._sweep(now)
            if now >= self.window_end:
                break
            # at least a millisecond per tick: sends due meanwhile go out together on the next one
            await asyncio.sleep(max(TICK_S, t0 + due_so_far / rate - time.perf_counter()))
        remaining = self.window_end - time.perf_counter()
        if remaining > 0:  # the window is the sending time, however short the schedule ended up
            await asyncio.sleep(remaining)
        result.window_s = window
        result.cpu = cpu_share(cpu_before, cpu_snapshot(self.watch), time.perf_counter() - t0)
        # every session still running can take a timeout per report, and no more
        limit = time.perf_counter() + spec.timeout * per + 1.0
        while self.outstanding and time.perf_counter() < limit:
            await asyncio.sleep(SWEEP_S)
            self._sweep(time.perf_counter())
        result.elapsed_s = time.perf_counter() - t0
        result.udp_errors = {k: v - udp_before.get(k, 0) for k, v in udp_counters().items()}
        drops_after = socket_drops(self.address[1])
        if drops_before is not None and drops_after is not None:
            result.server_drops = drops_after - drops_before
        if self.lost_stops:
            await self._send_stops_again()
        return result

    async def _send_stops_again(self) -> None:
        """Send each unanswered Stop again, byte for byte from its socket (the server's duplicate cache
        answers one it did see; one it never got is worked on now), so that every session ends and the
        money can be checked. Outside the figures: only ``stops_answered_again`` counts them."""
        self.retransmitting = True
        self.result.stops_retransmitted = len(self.lost_stops)
        for _ in range(STOP_RETRIES):
            waiting, later = [], []
            for sock, identifier, index in self.lost_stops:
                if self.pending[sock][identifier] == FREE:
                    self.pending[sock][identifier] = index
                    waiting.append((sock, identifier, index))
                    self.transports[sock].sendto(self.packets[index], self.address)
                else:
                    later.append((sock, identifier, index))  # its Identifier is in use by another Stop
            deadline = time.perf_counter() + min(STOP_RETRY_WAIT_S, self.spec.timeout)
            while time.perf_counter() < deadline and any(self.pending[s][i] == x for s, i, x in waiting):
                await asyncio.sleep(SWEEP_S)
            for sock, identifier, index in waiting:
                if self.pending[sock][identifier] == index:
                    self.pending[sock][identifier] = FREE
                    later.append((sock, identifier, index))
            self.lost_stops = later
            if not later:
                break
        self.result.stops_lost = [index // self.spec.per_session for _, _, index in self.lost_stops]

    def _take(self, sock: int, built_with: int) -> int:
        """A free Identifier of ``sock`` (one is): the packet's own when free, else the one free longest."""
        self.free_count[sock] -= 1
        pending = self.pending[sock]
        if pending[built_with] == FREE:
            return built_with
        free = self.free[sock]
        for _ in range(len(free)):
            identifier = free.popleft()
            if pending[identifier] == FREE:
                return identifier
        raise AssertionError("a socket with free Identifiers has none in its free list")

    def _release(self, sock: int, identifier: int) -> None:
        free = self.free[sock]
        free.append(identifier)
        self.free_count[sock] += 1
        if len(free) > 4 * IDENTIFIERS:  # mostly Identifiers taken since: start afresh
            pending = self.pending[sock]
            self.free[sock] = collections.deque(dict.fromkeys(i for i in free if pending[i] == FREE))

    def _send(self, sock: int, identifier: int, index: int, now: float) -> None:
        packet = self.packets[index]
        if packet[1] != identifier:
            packet = with_identifier(packet, identifier, self.secret, self.framing)
            self.packets[index] = packet
            self.result.resigned += 1
        self.pending[sock][identifier] = index
        self.sent_at[index] = now
        self.deadlines.append((now + self.spec.timeout, sock, identifier, index))
        self.outstanding += 1
        self.result.requests_sent += 1
        if self.outstanding > self.result.max_outstanding:
            self.result.max_outstanding = self.outstanding
        self.transports[sock].sendto(packet, self.address)

    def _kind(self, index: int) -> str:
        if not self.acct:
            return self.kinds[0]
        step = index % self.spec.per_session
        return "Start" if step == 0 else "Stop" if step == self.spec.per_session - 1 else "Interim"

    def on_reply(self, sock: int, data: bytes) -> None:
        now = time.perf_counter()
        index = self.pending[sock][data[1]] if len(data) >= codec.HEADER else FREE
        if index == FREE:
            self.result.unmatched += 1
            return
        vector = self.packets[index][4:20]
        if not codec.response_ok(data, vector, self.secret) or (
            not self.acct and codec.message_authenticator_ok(data, self.secret, self.framing, vector) is False
        ):
            self.result.unmatched += 1  # a late reply to an earlier user of the Identifier, or forged
            return
        self.pending[sock][data[1]] = FREE
        if self.retransmitting:
            self._answered_again(index, data)
            return
        self.outstanding -= 1
        stats = self.result.stats[self._kind(index)]
        stats.latencies.append(now - self.sent_at[index])
        if now <= self.window_end:
            stats.in_window += 1
        stats.replies[codec.packet_name(data[0])] += 1
        if self.acct and data[0] == codec.ACCOUNTING_RESPONSE:
            session, step = divmod(index, self.spec.per_session)
            total = session_total(step, session, self.spec.interims, self.spec.step)
            self.result.answered_totals[session] = max(self.result.answered_totals[session], total)
        self._next(sock, data[1], index, now)

    def _answered_again(self, index: int, data: bytes) -> None:
        if data[0] == codec.ACCOUNTING_RESPONSE:
            session, step = divmod(index, self.spec.per_session)
            total = session_total(step, session, self.spec.interims, self.spec.step)
            self.result.answered_totals[session] = max(self.result.answered_totals[session], total)
            self.result.stops_answered_again += 1

    def _next(self, sock: int, identifier: int, index: int, now: float) -> None:
        """After an answer or a timeout: an accounting session's next report on the same Identifier, or
        the Identifier back to its socket."""
        if self.acct and (index + 1) % self.spec.per_session:
            self._send(sock, identifier, index + 1, now)
        else:
            self._release(sock, identifier)

    def _sweep(self, now: float) -> None:
        deadlines, pending = self.deadlines, self.pending
        while deadlines and deadlines[0][0] <= now:
            _, sock, identifier, index = deadlines.popleft()
            if pending[sock][identifier] != index:
                continue  # answered meanwhile
            pending[sock][identifier] = FREE
            self.outstanding -= 1
            self.result.stats[self._kind(index)].replies["timeout"] += 1
            if self.acct:
                session, step = divmod(index, self.spec.per_session)
                self.result.unanswered[session] += 1
                if step == self.spec.per_session - 1:
                    self.lost_stops.append((sock, identifier, index))
            self._next(sock, identifier, index, now)


async def run_phase(
    packets: Sequence[bytes],
    spec: LoadSpec,
    name: str,
    address: tuple[str, int],
    secret: bytes,
    framing: codec.Framing,
    *,
    watch: Mapping[str, int] | None = None,
) -> PhaseResult:
    return await LoadGenerator(packets, spec, name, address, secret, framing, watch=watch).run()


def udp_counters() -> dict[str, int]:
    """The machine's UDP receive/send buffer and memory error counters (``/proc/net/snmp``)."""
    try:
        text = Path("/proc/net/snmp").read_text()
        lines = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    values = dict(zip(lines[0][1:], lines[1][1:], strict=False))
    wanted = ("RcvbufErrors", "SndbufErrors", "MemErrors")
    return {k: int(values[k]) for k in wanted if k in values and values[k].isdigit()}


def socket_drops(port: int) -> int | None:
    """Datagrams the kernel dropped so far at the UDP socket(s) bound to ``port`` (``/proc/net/udp``, the
    last column), None when that cannot be read."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    found = None
    for line in lines:
        fields = line.split()
        if len(fields) > 12 and fields[1].rsplit(":", 1)[-1] == f"{port:04X}" and fields[-1].isdigit():
            found = (found or 0) + int(fields[-1])
    return found


# ---- figures -----------------------------------------------------------------------------------------


def summarize(phase: PhaseResult) -> dict[str, Any]:
    """The JSON figures of a phase."""
    spec = phase.spec
    types: dict[str, Any] = {}
    for kind, stats in phase.stats.items():
        types[kind] = {
            "answers": len(stats.latencies),
            "answers_per_s": phase.answers_per_s(kind),
            **latency_summary(stats.latencies),
            "replies": dict(sorted(stats.replies.items())),
        }
    every = [x for stats in phase.stats.values() for x in stats.latencies]
    figures: dict[str, Any] = {
        "mode": spec.mode,
        "offered_requests_per_s": spec.rate,
        "duration_s": spec.duration,
        "window_s": phase.window_s,
        "sockets": spec.sockets,
        "timeout_s": spec.timeout,
        "scheduled": spec.units(),
        "started": phase.started,
        "skipped_no_free_identifier": phase.skipped,
        "requests_sent": phase.requests_sent,
        "max_outstanding": phase.max_outstanding,
        "generator_late_start_max_ms": phase.late_start_max_s * 1000,
        "elapsed_s": phase.elapsed_s,
        "answers_per_s": phase.answers_per_s(),
        "kept_up": phase.kept_up(),
        "timeouts": phase.timeouts,
        "unmatched_replies": phase.unmatched,
        "packets_signed_again": phase.resigned,
        "send_errors": phase.send_errors,
        "all": {"answers": len(every), **latency_summary(every)},
        "types": types,
        "cpu_share_of_one_core": phase.cpu,
        "udp_errors_machine": phase.udp_errors,
        "server_socket_drops": phase.server_drops,
    }
    if spec.mode == ACCT:
        figures["offered_sessions_per_s"] = spec.unit_rate
        figures["interims"] = spec.interims
        figures["step_octets"] = spec.step
        figures["stops_unanswered"] = len(phase.stops_lost)
        figures["stops_sent_again"] = phase.stops_retransmitted
        figures["stops_answered_again"] = phase.stops_answered_again
    return figures
