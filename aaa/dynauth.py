"""Dynamic authorization (RFC 5176): Disconnect-Request and CoA-Request to a NAS, retransmitted with
backoff until an ACK or NAK arrives or the retries run out; every outcome is counted and logged (a NAK with
its Error-Cause).

Requests leave from the server's own listen address (one socket per address family, ephemeral port) to the
NAS's address on its client entry's ``coa_port``. Each carries a Message-Authenticator; a reply counts only
when its Response Authenticator and Message-Authenticator verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aaa import codec, metrics
from aaa.clients import NasClient
from aaa.context import RadiusContext
from aaa.values import read_u32

log = logging.getLogger("occ.radius.dynauth")

KINDS = {codec.DISCONNECT_REQUEST: "disconnect", codec.COA_REQUEST: "coa"}
ACKS = frozenset({codec.DISCONNECT_ACK, codec.COA_ACK})


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str  # ack | nak | timeout | not_sent
    error_cause: int | None = None


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, owner: DynAuthClient) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner.reply_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dynamic authorization socket error: %s", exc)


class DynAuthClient:
    def __init__(self, context: Callable[[], RadiusContext]) -> None:
        self._context = context
        self._sockets: dict[int, _Socket] = {}
        self._pending: dict[tuple[str, int], tuple[bytes, asyncio.Future[codec.Packet]]] = {}
        self._ids = itertools.count()
        self._tasks: set[asyncio.Task[Outcome]] = set()

    async def start(self, addresses: Sequence[str]) -> None:
        """One socket per address family, on the first of ``addresses`` (the server's own) of each."""
        loop = asyncio.get_running_loop()
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family in self._sockets:
                continue
            _, protocol = await loop.create_datagram_endpoint(
                lambda: _Socket(self), local_addr=(address, 0), family=family
            )
            self._sockets[family] = protocol

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for protocol in self._sockets.values():
            if protocol.transport is not None:
                protocol.transport.close()
        self._sockets.clear()

    # -- requests --------------------------------------------------------------------------------------
    def context(self) -> RadiusContext:
        return self._context()

    def disconnect(
        self,
        client: NasClient,
        nas_host: str,
        acct_session: str,
        user: str,
        framed_ip: bytes | None,
        reason: str,
    ) -> asyncio.Task[Outcome]:
        """Disconnect-Request for a session, in the background: Acct-Session-Id, User-Name and
        Framed-IP-Address identify it (RFC 5176 §3)."""
        a = self._context().attrs
        attributes: list[tuple[int, bytes]] = [(a.acct_session_id, acct_session.encode())]
        if user:
            attributes.append((a.user_name, user.encode()))
        if framed_ip:
            attributes.append((a.framed_ip_address, framed_ip))
        log.info("disconnecting session=%s nas=%s reason=%s", acct_session, nas_host, reason)
        return self.send(codec.DISCONNECT_REQUEST, client, nas_host, attributes)

    def send(
        self, code: int, client: NasClient, host: str, attributes: Sequence[tuple[int, bytes]]
    ) -> asyncio.Task[Outcome]:
        task = asyncio.get_running_loop().create_task(self._exchange(code, client, host, attributes))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _exchange(
        self, code: int, client: NasClient, host: str, attributes: Sequence[tuple[int, bytes]]
    ) -> Outcome:
        ctx = self._context()
        kind = KINDS[code]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        protocol = self._sockets.get(family)
        if client.coa_port == 0 or protocol is None or protocol.transport is None:
            metrics.dynauth(kind, "not_sent").inc()
            return Outcome("not_sent")
        identifier = await self._identifier(host, ctx.settings.coa_timeout_s * 2**ctx.settings.coa_retries)
        if identifier is None:
            metrics.dynauth(kind, "not_sent").inc()
            return Outcome("not_sent")
        packet = codec.sign_request(code, identifier, attributes, client.secret, ctx.attrs.framing)
        future: asyncio.Future[codec.Packet] = asyncio.get_running_loop().create_future()
        self._pending[(host, identifier)] = (packet[4:20], future)
        timeout = ctx.settings.coa_timeout_s
        try:
            for attempt in range(ctx.settings.coa_retries + 1):
                protocol.transport.sendto(packet, (host, client.coa_port))
                metrics.dynauth(kind, "sent").inc()
                try:
                    reply = await asyncio.wait_for(asyncio.shield(future), timeout * 2**attempt)
                except TimeoutError:
                    continue
                return self._settle(kind, reply, host)
        finally:
            self._pending.pop((host, identifier), None)
        metrics.dynauth(kind, "timeout").inc()
        log.warning("%s to %s: no answer after %d tries", kind, client.name, ctx.settings.coa_retries + 1)
        return Outcome("timeout")

    def _settle(self, kind: str, packet: codec.Packet, host: str) -> Outcome:
        ctx = self._context()
        if packet.code in ACKS:
            metrics.dynauth(kind, "ack").inc()
            return Outcome("ack")
        cause = read_u32(packet.get(ctx.attrs.error_cause))
        metrics.dynauth(kind, "nak").inc()
        log.info("%s to %s refused: Error-Cause %s", kind, host, cause)
        return Outcome("nak", cause)

    async def _identifier(self, host: str, wait_s: float) -> int | None:
        """A free Identifier towards ``host``; with all 256 in flight, wait (bounded) for one to free."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            identifier = self._free_identifier(host)
            if identifier is not None or asyncio.get_running_loop().time() >= deadline:
                return identifier
            await asyncio.sleep(0.05)

    def _free_identifier(self, host: str) -> int | None:
        for _ in range(256):
            identifier = next(self._ids) & 0xFF
            if (host, identifier) not in self._pending:
                return identifier
        return None

    def reply_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < codec.HEADER:
            return
        host = addr[0]
        waiting = self._pending.get((host, data[1]))
        if waiting is None:
            metrics.dropped("unmatched_reply").inc()
            return
        request_authenticator, future = waiting
        ctx = self._context()
        client = ctx.clients.lookup(host)
        if client is None or future.done():
            return
        framing = ctx.attrs.framing
        try:
            packet = codec.decode(data, framing)
        except codec.DecodeError:
            metrics.dropped("malformed").inc()
            return
        signed = codec.message_authenticator_ok(data, client.secret, framing, request_authenticator)
        if not codec.response_ok(data, request_authenticator, client.secret) or signed is False:
            metrics.dropped("bad_authenticator").inc()
            return
        future.set_result(packet)
