"""asyncio adapter of the peer state machine: one :class:`DiameterConnection` per accepted TCP (or TLS)
connection.

Thin on purpose (the protocol lives in :mod:`occ.diameter.peer`): it feeds received bytes to the
machine, writes what the machine has to send, owns the one ``loop.call_at`` of the machine's timer, runs
every application request as its own task (several in flight per connection, answered in any order, on
the connection they arrived on) and matches the answers of server-initiated requests
(:meth:`DiameterConnection.send_request`, the :class:`~occ.diameter.application.PeerHandle` contract).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Protocol, cast

from occ import log
from occ.diameter import metrics
from occ.diameter.application import Application
from occ.diameter.codec import Message
from occ.diameter.dictionary import AVP_RESULT_CODE, DIAMETER_UNABLE_TO_COMPLY
from occ.diameter.peer import (
    Answered,
    AnswerReceived,
    Closed,
    Discarded,
    Event,
    LocalProtocolError,
    PeerConfig,
    PeerMachine,
    PeerOpened,
    RequestReceived,
    State,
    answer_error_to,
    result_code_of,
)
from occ.diameter.settings import TlsSettings

_log = log.get("occ.diameter")

# Bound on a TLS handshake of an accepted connection.
TLS_HANDSHAKE_TIMEOUT_S = 10.0


class ConnectionHub(Protocol):
    """What a connection needs from the server that accepted it."""

    @property
    def peer_config(self) -> PeerConfig:
        """The configuration in force (read at accept, and again when a reload swaps it)."""
        ...

    @property
    def max_in_flight(self) -> int: ...

    def application(self, application_id: int) -> Application | None: ...

    def connection_made(self, conn: DiameterConnection) -> None: ...

    def connection_opened(self, conn: DiameterConnection) -> None:
        """The capabilities exchange succeeded."""
        ...

    def connection_closed(self, conn: DiameterConnection) -> None: ...


class DiameterConnection(asyncio.Protocol):
    """One accepted connection; also the :class:`~occ.diameter.application.PeerHandle` applications see."""

    def __init__(self, hub: ConnectionHub) -> None:
        self._hub = hub
        self._loop = asyncio.get_running_loop()
        self.machine = PeerMachine(hub.peer_config, self._loop.time())
        self._transport: asyncio.Transport | None = None
        self.remote = ""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._paused = False
        self._flush_soon = False
        self._gauge_state: State | None = None
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # -- PeerHandle --------------------------------------------------------------------------------------

    @property
    def peer_host(self) -> str:
        return self.machine.peer_host

    @property
    def peer_realm(self) -> str:
        return self.machine.peer_realm

    @property
    def origin_host(self) -> str:
        return self.machine.config.origin_host

    @property
    def origin_realm(self) -> str:
        return self.machine.config.origin_realm

    @property
    def is_open(self) -> bool:
        return self.machine.is_open

    async def send_request(self, build: Callable[[int, int], bytes], timeout: float) -> Message:
        if not self.machine.is_open:
            raise ConnectionError(f"Diameter peer {self.peer_host or self.remote} is not open")
        hop_by_hop, end_to_end = self.machine.next_ids()
        data = build(hop_by_hop, end_to_end)
        command = metrics.request_name(int.from_bytes(data[5:8], "big"))
        future: asyncio.Future[Message] = self._loop.create_future()
        self._pending[hop_by_hop] = future
        try:
            try:
                self._handle(self.machine.send_request(data, self._loop.time()))
            except LocalProtocolError as exc:
                raise ConnectionError(str(exc)) from None
            metrics.REQUESTS.labels(command, "out").inc()
            self._flush()
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            metrics.SERVER_REQUEST_FAILURES.labels(command, "timeout").inc()
            raise
        except ConnectionError:
            metrics.SERVER_REQUEST_FAILURES.labels(command, "closed").inc()
            raise
        finally:
            self._pending.pop(hop_by_hop, None)

    # -- asyncio.Protocol --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's does not derive from asyncio.Transport, hence no isinstance check)
        self._transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        self.remote = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        self._hub.connection_made(self)
        self._track_state()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        self._handle(self.machine.receive_data(data, self._loop.time()))
        self._flush()

    def eof_received(self) -> bool | None:
        return None  # the peer half-closed: close our side too (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        self._handle(self.machine.connection_lost(self._loop.time()))
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"Diameter peer {self.peer_host} closed the connection"))
        if not self.closed.done():
            self.closed.set_result(None)
        self._hub.connection_closed(self)

    # -- what the server does with connections -------------------------------------------------------------

    async def disconnect(self, timeout: float) -> None:
        """DPR (Disconnect-Cause REBOOTING), wait for the DPA and the answers in flight, then close; the
        connection is cut when that takes longer than ``timeout`` seconds."""
        if self._transport is not None:
            self._handle(self.machine.disconnect(self._loop.time()))
            self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    @property
    def in_flight(self) -> set[asyncio.Task[None]]:
        return self._tasks

    # -- internals -------------------------------------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, RequestReceived):
                self._dispatch(event.message)
            elif isinstance(event, AnswerReceived):
                self._deliver(event.message)
            elif isinstance(event, Answered):
                metrics.request_in(event.command)
                metrics.answer(event.command, event.result_code, "out")
            elif isinstance(event, PeerOpened):
                _log.info(
                    "Diameter peer open",
                    peer=event.peer_host,
                    realm=event.peer_realm,
                    remote=self.remote,
                    applications=sorted(event.applications),
                )
                self._hub.connection_opened(self)
            elif isinstance(event, Discarded):
                metrics.DISCARDED.labels(event.reason).inc()
                _log.debug("Diameter message dropped", reason=event.reason, detail=event.detail)
            elif isinstance(event, Closed):
                metrics.CONNECTIONS_CLOSED.labels(event.reason).inc()
                _log.info(
                    "Diameter connection closed",
                    peer=self.peer_host or None,
                    remote=self.remote,
                    reason=event.reason,
                    detail=event.detail or None,
                )
        self._track_state()

    def _dispatch(self, request: Message) -> None:
        metrics.request_in(request.code)
        application = self._hub.application(request.application_id)
        assert application is not None, "the machine dispatches only requests of known applications"
        task = self._loop.create_task(self._answer(application, request, time.perf_counter()))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if len(self._tasks) >= self._hub.max_in_flight and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._paused and len(self._tasks) < self._hub.max_in_flight and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    async def _answer(self, application: Application, request: Message, started: float) -> None:
        try:
            answer = await application.handle(request, self)
        except Exception:
            _log.exception(
                "Diameter application failed; answering 5012",
                peer=self.peer_host,
                command=request.code,
                application=request.application_id,
            )
            answer = answer_error_to(self.machine.config, request, DIAMETER_UNABLE_TO_COMPLY)
        metrics.answer(request.code, result_code_of(answer), "out")
        self._handle(self.machine.send_answer(answer, self._loop.time()))
        # Answers finishing in the same loop iteration leave in one write (one syscall, not one each).
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)
        metrics.request_seconds(request.code, time.perf_counter() - started)

    def _deliver(self, answer: Message) -> None:
        future = self._pending.get(answer.hop_by_hop)
        if future is None or future.done():
            metrics.DISCARDED.labels("unmatched_answer").inc()
            _log.debug(
                "Diameter answer matches no request", peer=self.peer_host, hop_by_hop=answer.hop_by_hop
            )
            return
        metrics.answer(answer.code, result_code_of_message(answer), "in")
        future.set_result(answer)

    def _flush(self) -> None:
        self._flush_soon = False
        data = self.machine.data_to_send()
        transport = self._transport
        if transport is None:
            return
        if data:
            transport.write(data)
        if self.machine.state is State.CLOSED:
            transport.close()  # after the buffered data is written
        else:
            self._arm_timer()

    def _arm_timer(self) -> None:
        # A timer that moved later is left alone: it fires early, handle_timer does nothing, and it is
        # re-armed then. Received traffic moves Tw later all the time; this keeps it off the hot path.
        at = self.machine.next_timer()
        if at is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._timer_at = None
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._handle(self.machine.handle_timer(self._loop.time()))
        self._flush()
        if self._transport is not None and self.machine.state is not State.CLOSED:
            self._arm_timer()

    def _track_state(self) -> None:
        state = self.machine.state
        if state is self._gauge_state:
            return
        if self._gauge_state is not None:
            metrics.PEERS.labels(self._gauge_state.value).dec()
        if state is State.CLOSED:
            self._gauge_state = None
        else:
            metrics.PEERS.labels(state.value).inc()
            self._gauge_state = state


def result_code_of_message(message: Message) -> int | None:
    avp = message.find(AVP_RESULT_CODE)
    if avp is None:
        return None
    try:
        return avp.u32()
    except Exception:
        return None


def server_ssl_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """The TLS context of the listener (None: plain TCP). With a CA file, peers must present a
    certificate it signed (mutual TLS)."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file or None)
    if tls.ca_file:
        context.load_verify_locations(tls.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def listen(
    hub: ConnectionHub,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """Accept connections on ``host:port`` (OSError when the address is taken)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: DiameterConnection(hub),
        host,
        port,
        ssl=ssl_context,
        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if ssl_context is not None else None,
        reuse_address=True,
    )
