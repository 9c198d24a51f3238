"""The RADIUS server: UDP auth and accounting sockets, client check, duplicate cache, dispatch, replies.

Per datagram, in order: an unknown source address is dropped (``unknown_client``); a retransmission of an
answered request gets the stored reply again and nothing else happens, one of a request still being worked
on is dropped (RFC 5080 §2.2.2); the packet must decode (``malformed``); an Accounting-Request's
authenticator and any Message-Authenticator must verify (``bad_authenticator``); a client configured with
``require_message_authenticator`` must send one in every Access-Request. Only then is the request worked on,
in a task of its own, and answered from the socket it arrived on. Access-Accept, -Reject (and -Challenge)
always carry a Message-Authenticator, first. Dropped datagrams are counted by reason, never answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aaa import access, accounting, codec, metrics
from aaa.attributes import Attrs, resolve
from aaa.clients import ClientTable, NasClient
from aaa.context import RadiusContext
from aaa.control import LiveSession, SessionControl
from aaa.dedup import DuplicateCache, Key, Seen, request_key
from aaa.dictionary import Dictionary, load
from aaa.dynauth import DynAuthClient
from aaa.settings import RadiusSettings
from aaa.spread import spread_by_authenticator
from balance.service import ChargingService, InvalidRequest
from balance.store import StoreUnavailable

log = logging.getLogger("occ.radius")

AUTH, ACCT = "auth", "acct"
_EXPECTED = {
    AUTH: frozenset({codec.ACCESS_REQUEST, codec.STATUS_SERVER}),
    ACCT: frozenset({codec.ACCOUNTING_REQUEST, codec.STATUS_SERVER}),
}


def validate(settings: RadiusSettings) -> tuple[Dictionary, Attrs]:
    """Load the dictionaries and resolve every attribute name the settings use; DictionaryError or
    ValueError name the problem (the daemon then refuses to start, or to reload)."""
    dictionary = load(settings.dictionary)
    attrs = resolve(dictionary)
    for name, profile in settings.profiles.items():
        for attribute in (*profile.reply, profile.data_quota, profile.data_quota_gigawords):
            if attribute:
                dictionary.attribute(attribute)
        for template in profile.reply.values():
            try:
                template.format_map({"rate_limit": "", "plan": ""})
            except (KeyError, ValueError) as exc:
                raise ValueError(f"radius.profiles.{name}: template {template!r}: {exc}") from None
    for client in settings.clients:
        if client.profile not in settings.profiles:
            raise ValueError(f"radius.clients {client.address}: no profile {client.profile!r}")
    return dictionary, attrs


def build_context(
    settings: RadiusSettings, charging: ChargingService, clock: Callable[[], datetime] | None = None
) -> RadiusContext:
    dictionary, attrs = validate(settings)
    return RadiusContext(
        settings=settings,
        dictionary=dictionary,
        attrs=attrs,
        clients=ClientTable(settings.clients),
        charging=charging,
        clock=clock or (lambda: datetime.now(UTC)),
    )


def _ipv6_available(address: str) -> bool:
    """Whether an IPv6 socket can be bound to ``address`` at all (the address exists on this host)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError as exc:
        return exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
    return True


def _bound_socket(
    address: str, port: int, receive_buffer: int, workers: int = 1, kind: str = AUTH
) -> socket.socket:
    """A UDP socket bound to ``address``: IPv6 ones only for IPv6 (``::`` next to ``0.0.0.0`` on the same
    port works), with the receive buffer asked for; with several ``workers``, shared with the other
    worker processes (SO_REUSEPORT): the kernel hashes each NAS's address and port to one of them, so a
    NAS's accounting (and retransmissions) meets one session control and duplicate cache, while
    Access-Requests are spread one by one (:mod:`aaa.spread`)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if workers > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _grow_receive_buffer(sock, receive_buffer)
        sock.bind((address, port))
        sock.setblocking(False)
        if workers > 1 and kind == AUTH:
            try:
                spread_by_authenticator(sock, workers)
            except OSError as exc:  # not Linux, or a kernel without it: the NAS hash it is
                log.warning("Access-Requests not spread over the workers: %s", exc)
    except OSError:
        sock.close()
        raise
    return sock


def _grow_receive_buffer(sock: socket.socket, size: int) -> None:
    """SO_RCVBUFFORCE when the process may (root, CAP_NET_ADMIN), else SO_RCVBUF up to rmem_max."""
    if size <= 0:
        return
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:
            pass
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class ReplyTooLarge(Exception):
    """A reply beyond 4096 octets (e.g. many echoed Proxy-State attributes): dropped, counted."""


def _signed(
    ctx: RadiusContext,
    code: int,
    request: codec.Packet,
    attributes: list[tuple[int, bytes]],
    client: NasClient,
    *,
    message_authenticator: bool = True,
) -> bytes:
    try:
        return codec.sign_response(
            code,
            request,
            attributes,
            client.secret,
            ctx.attrs.framing,
            message_authenticator=message_authenticator,
        )
    except ValueError as exc:
        raise ReplyTooLarge(f"{codec.packet_name(code)} not sent: {exc}") from None


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, server: RadiusServer, kind: str) -> None:
        self.server = server
        self.kind = kind
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.server.receive(data, addr, self.kind, self.transport)

    def error_received(self, exc: Exception) -> None:
        log.debug("RADIUS socket error: %s", exc)


class RadiusServer:
    def __init__(self, ctx: RadiusContext, *, workers: int = 1) -> None:
        # Session control (Disconnect/CoA on balance events) knows the sessions this process saw; with
        # several workers each has its own NASes' (SO_REUSEPORT keeps a NAS's accounting on one worker).
        self.ctx = ctx
        self._workers = workers
        self.dedup = DuplicateCache(ctx.settings.duplicate_window_s)
        self.dynauth = DynAuthClient(lambda: self.ctx)
        self.control = SessionControl(self.dynauth)
        self._transports: list[asyncio.DatagramTransport] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.ports: dict[tuple[str, str], int] = {}  # (kind, address) -> bound port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.ctx.settings
        try:
            for address in s.listen:
                if address in ("::1", "::") and not _ipv6_available(address):
                    # a host without IPv6 (a container, ipv6.disable=1) still serves its IPv4 addresses;
                    # any other address that cannot be bound stops the start
                    log.warning("RADIUS not listening on %s: this host has no IPv6", address)
                    continue
                for kind, port in ((AUTH, s.auth_port), (ACCT, s.acct_port)):
                    sock = _bound_socket(address, port, s.receive_buffer_bytes, self._workers, kind)
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda kind=kind: _Endpoint(self, kind),  # type: ignore[misc]
                        sock=sock,
                    )
                    self._transports.append(transport)
                    self.ports[(kind, address)] = sock.getsockname()[1]
            if not self._transports:
                raise OSError(errno.EADDRNOTAVAIL, "none of the listen addresses can be used")
            await self.dynauth.start([a for a in s.listen if (AUTH, a) in self.ports])
        except OSError:
            await self.stop(0)
            raise
        self.control.listen(self.ctx)  # balance notifications: Disconnect on suspension, CoA after credit

    def reload(self, ctx: RadiusContext) -> None:
        self.ctx = ctx
        self.dedup.window_s = ctx.settings.duplicate_window_s

    async def stop(self, grace_s: float) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=max(grace_s, 0.01))
            for task in pending:
                task.cancel()
        await self.control.stop()
        await self.dynauth.stop()

    # -- per datagram ----------------------------------------------------------------------------------
    def receive(
        self, data: bytes, addr: tuple[str, int], kind: str, transport: asyncio.DatagramTransport
    ) -> None:
        ctx = self.ctx
        host, port = addr[0], addr[1]
        client = ctx.clients.lookup(host)
        if client is None:
            metrics.dropped("unknown_client").inc()
            return
        if len(data) < codec.HEADER or data[0] not in _EXPECTED[kind]:
            metrics.dropped("malformed" if len(data) < codec.HEADER else "unexpected_code").inc()
            return
        key = request_key(data, host, port)
        seen, reply = self.dedup.check(key, time.monotonic())
        if seen is Seen.ANSWERED:
            transport.sendto(reply, addr)
            metrics.replies(codec.packet_name(reply[0]), "duplicate").inc()
            return
        if seen is Seen.IN_PROGRESS:
            metrics.dropped("duplicate").inc()
            return
        try:
            packet = codec.decode(data, ctx.attrs.framing)
        except codec.DecodeError:
            self.dedup.forget(key)
            metrics.dropped("malformed").inc()
            return
        reason = self._verify(data, client)
        if reason:
            self.dedup.forget(key)
            metrics.dropped(reason).inc()
            return
        name = codec.PACKET_NAMES[packet.code]
        metrics.requests(name).inc()
        task = asyncio.get_running_loop().create_task(
            self._serve(ctx, packet, name, client, addr, key, transport, kind)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _verify(self, data: bytes, client: NasClient) -> str:
        """Why a decoded datagram must be dropped, or "" when it may be served."""
        framing = self.ctx.attrs.framing
        if data[0] == codec.ACCOUNTING_REQUEST and not codec.request_digest_ok(data, client.secret):
            return "bad_authenticator"
        verified = codec.message_authenticator_ok(data, client.secret, framing)
        if verified is False:
            return "bad_authenticator"
        if verified is None and (
            data[0] == codec.STATUS_SERVER  # RFC 5997 §3: always signed
            or (data[0] == codec.ACCESS_REQUEST and client.require_message_authenticator)
        ):
            return "missing_message_authenticator"
        return ""

    async def _serve(
        self,
        ctx: RadiusContext,
        packet: codec.Packet,
        name: str,
        client: NasClient,
        addr: tuple[str, int],
        key: Key,
        transport: asyncio.DatagramTransport,
        kind: str,
    ) -> None:
        started = time.perf_counter()
        try:
            reply, outcome = await self._answer(ctx, packet, client, addr[0], kind)
        except StoreUnavailable as exc:
            # nothing recorded, nothing answered: the NAS retransmits, and the retransmission is served
            log.warning("RADIUS %s not served: store unavailable: %s", name, exc)
            self.dedup.forget(key)
            metrics.dropped("store_unavailable").inc()
            return
        except InvalidRequest as exc:
            # e.g. a running total beyond what the store counts exactly: nothing recorded, no reply
            log.warning("RADIUS %s from %s refused: %s", name, client.name, exc)
            self.dedup.forget(key)
            metrics.dropped("invalid_request").inc()
            return
        except ReplyTooLarge as exc:
            log.warning("RADIUS %s from %s: %s", name, client.name, exc)
            self.dedup.forget(key)
            metrics.dropped("reply_too_large").inc()
            return
        except Exception:
            log.exception("RADIUS %s from %s failed", name, client.name)
            self.dedup.forget(key)
            metrics.dropped("internal_error").inc()
            return
        self.dedup.answered(key, reply)
        transport.sendto(reply, addr)
        metrics.replies(codec.packet_name(reply[0]), outcome).inc()
        metrics.seconds(name).observe(time.perf_counter() - started)

    def _follow(self, recorded: accounting.Recorded, client: NasClient, host: str) -> None:
        """Keep the session table of balance-driven control current; disconnect a session that must go."""
        control = self.control
        if recorded.outcome in ("accounting_on", "accounting_off"):
            control.forget_nas(host)
        elif recorded.account_id:
            if recorded.closed or recorded.cut:
                control.gone(recorded.account_id, recorded.session_id)
            else:
                live = LiveSession(
                    client,
                    host,
                    recorded.acct_session,
                    recorded.user,
                    recorded.framed_ip,
                    so_far=recorded.total + recorded.granted,
                    seen_at=time.monotonic(),
                )
                control.seen(recorded.account_id, recorded.session_id, live, self.ctx.settings.stale_s)
        if recorded.cut:
            self.dynauth.disconnect(
                client, host, recorded.acct_session, recorded.user, recorded.framed_ip, recorded.cut
            )

    async def _answer(
        self, ctx: RadiusContext, packet: codec.Packet, client: NasClient, host: str, kind: str
    ) -> tuple[bytes, str]:
        if packet.code == codec.STATUS_SERVER:  # RFC 5997: alive, answered as the port's own reply
            code = codec.ACCESS_ACCEPT if kind == AUTH else codec.ACCOUNTING_RESPONSE
            return _signed(ctx, code, packet, [], client), "status"
        if packet.code == codec.ACCESS_REQUEST:
            decision = await access.decide(ctx, packet, client)
            return _signed(ctx, decision.code, packet, decision.attributes, client), decision.outcome
        recorded = await accounting.record(ctx, packet, client, host)
        self._follow(recorded, client, host)
        reply = _signed(ctx, codec.ACCOUNTING_RESPONSE, packet, [], client, message_authenticator=False)
        return reply, recorded.outcome
