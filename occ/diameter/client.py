"""A small Diameter credit-control client: the load generator of ``occ bench diameter`` and the gateway
of the tests. It connects, exchanges capabilities, sends CCRs (many in flight), answers server-initiated
requests (RAR/ASR) with 2001 and queues them for the caller, and disconnects with DPR."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from occ.diameter import dictionary as d
from occ.diameter.codec import (
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
    Framer,
    Message,
    avp_address,
    avp_grouped,
    avp_u32,
    avp_u64,
    avp_utf8,
    decode_message,
    encode_message,
)

TGPP = d.VENDOR_3GPP


@dataclass(frozen=True, slots=True)
class UnitsSpec:
    time: int | None = None
    total: int | None = None
    input: int | None = None
    output: int | None = None
    specific: int | None = None

    def encode(self, code: int) -> bytes:
        parts = []
        if self.time is not None:
            parts.append(avp_u32(d.AVP_CC_TIME, self.time))
        if self.total is not None:
            parts.append(avp_u64(d.AVP_CC_TOTAL_OCTETS, self.total))
        if self.input is not None:
            parts.append(avp_u64(d.AVP_CC_INPUT_OCTETS, self.input))
        if self.output is not None:
            parts.append(avp_u64(d.AVP_CC_OUTPUT_OCTETS, self.output))
        if self.specific is not None:
            parts.append(avp_u64(d.AVP_CC_SERVICE_SPECIFIC_UNITS, self.specific))
        return avp_grouped(code, *parts)


@dataclass(frozen=True, slots=True)
class MsccSpec:
    rating_group: int | None = None
    service_identifier: int | None = None
    requested: UnitsSpec | None = None  # UnitsSpec(): an empty Requested-Service-Unit
    used: UnitsSpec | None = None
    reporting_reason: int | None = None

    def encode(self) -> bytes:
        parts = []
        if self.requested is not None:
            parts.append(self.requested.encode(d.AVP_REQUESTED_SERVICE_UNIT))
        if self.used is not None:
            parts.append(self.used.encode(d.AVP_USED_SERVICE_UNIT))
        if self.service_identifier is not None:
            parts.append(avp_u32(d.AVP_SERVICE_IDENTIFIER, self.service_identifier))
        if self.rating_group is not None:
            parts.append(avp_u32(d.AVP_RATING_GROUP, self.rating_group))
        if self.reporting_reason is not None:
            parts.append(avp_u32(d.AVP_REPORTING_REASON, self.reporting_reason, vendor=TGPP))
        return avp_grouped(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, *parts)


def build_ccr(
    session_id: str,
    request_type: int,
    request_number: int,
    *,
    origin_host: str,
    origin_realm: str,
    destination_realm: str,
    hop_by_hop: int,
    end_to_end: int,
    subscription: tuple[int, str] | None = None,
    msccs: Sequence[MsccSpec] = (),
    requested: UnitsSpec | None = None,
    used: UnitsSpec | None = None,
    requested_action: int | None = None,
    called_party: str | None = None,
    service_context: str = "32251@3gpp.org",
    retransmit: bool = False,
    extra: bytes = b"",
) -> bytes:
    parts = [
        avp_utf8(d.AVP_SESSION_ID, session_id),
        avp_utf8(d.AVP_ORIGIN_HOST, origin_host),
        avp_utf8(d.AVP_ORIGIN_REALM, origin_realm),
        avp_utf8(d.AVP_DESTINATION_REALM, destination_realm),
        avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL),
        avp_utf8(d.AVP_SERVICE_CONTEXT_ID, service_context),
        avp_u32(d.AVP_CC_REQUEST_TYPE, request_type),
        avp_u32(d.AVP_CC_REQUEST_NUMBER, request_number),
    ]
    if requested_action is not None:
        parts.append(avp_u32(d.AVP_REQUESTED_ACTION, requested_action))
    if subscription is not None:
        parts.append(
            avp_grouped(
                d.AVP_SUBSCRIPTION_ID,
                avp_u32(d.AVP_SUBSCRIPTION_ID_TYPE, subscription[0]),
                avp_utf8(d.AVP_SUBSCRIPTION_ID_DATA, subscription[1]),
            )
        )
    if msccs:
        parts.append(avp_u32(d.AVP_MULTIPLE_SERVICES_INDICATOR, 1))
        parts.extend(m.encode() for m in msccs)
    if requested is not None:
        parts.append(requested.encode(d.AVP_REQUESTED_SERVICE_UNIT))
    if used is not None:
        parts.append(used.encode(d.AVP_USED_SERVICE_UNIT))
    if called_party is not None:
        ims = avp_grouped(
            d.AVP_IMS_INFORMATION,
            avp_utf8(d.AVP_CALLED_PARTY_ADDRESS, called_party, vendor=TGPP),
            vendor=TGPP,
        )
        parts.append(avp_grouped(d.AVP_SERVICE_INFORMATION, ims, vendor=TGPP))
    flags = FLAG_REQUEST | FLAG_PROXIABLE | (FLAG_RETRANSMIT if retransmit else 0)
    return encode_message(
        flags, d.CMD_CREDIT_CONTROL, d.APP_CREDIT_CONTROL, hop_by_hop, end_to_end, b"".join(parts) + extra
    )


class _Protocol(asyncio.Protocol):
    def __init__(self, client: DiameterClient) -> None:
        self.client = client
        self.framer = Framer(1 << 20)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for raw in self.framer.feed(data):
            self.client._received(decode_message(raw))

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost()


class DiameterClient:
    def __init__(self, origin_host: str, origin_realm: str, destination_realm: str) -> None:
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self.destination_realm = destination_realm
        self.server_requests: asyncio.Queue[Message] = asyncio.Queue()
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._hop = itertools.count(int.from_bytes(os.urandom(3), "big") << 8)
        self._e2e = itertools.count(int.from_bytes(os.urandom(2), "big") << 20)
        self.closed = asyncio.Event()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        origin_host: str = "gw.test",
        origin_realm: str = "test",
        destination_realm: str = "localdomain",
        timeout: float = 5.0,
    ) -> DiameterClient:
        client = cls(origin_host, origin_realm, destination_realm)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: _Protocol(client), host, port)
            cea = await client.request(client._cer, timeout)
        result = cea.find(d.AVP_RESULT_CODE)
        if result is None or result.u32() != d.DIAMETER_SUCCESS:
            client.abort()
            raise ConnectionError(
                f"capabilities exchange refused: {result.u32() if result else 'no Result-Code'}"
            )
        return client

    def _cer(self, hop_by_hop: int, end_to_end: int) -> bytes:
        body = b"".join(
            (
                avp_utf8(d.AVP_ORIGIN_HOST, self.origin_host),
                avp_utf8(d.AVP_ORIGIN_REALM, self.origin_realm),
                avp_address(d.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
                avp_u32(d.AVP_VENDOR_ID, 0),
                avp_utf8(d.AVP_PRODUCT_NAME, "occ-client", mandatory=False),
                avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL),
            )
        )
        return encode_message(
            FLAG_REQUEST, d.CMD_CAPABILITIES_EXCHANGE, d.APP_COMMON, hop_by_hop, end_to_end, body
        )

    def next_ids(self) -> tuple[int, int]:
        return next(self._hop) & 0xFFFFFFFF, next(self._e2e) & 0xFFFFFFFF

    async def request(self, build: Callable[[int, int], bytes], timeout: float = 5.0) -> Message:
        hop_by_hop, end_to_end = self.next_ids()
        return await self.send(build(hop_by_hop, end_to_end), hop_by_hop, timeout)

    async def send(self, data: bytes, hop_by_hop: int, timeout: float = 5.0) -> Message:
        """Send an encoded request whose Hop-by-Hop is ``hop_by_hop``; await its answer."""
        if self._transport is None or self.closed.is_set():
            raise ConnectionError("not connected")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[hop_by_hop] = future
        self._transport.write(data)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(hop_by_hop, None)

    def write(self, data: bytes) -> None:
        """Raw bytes onto the connection (for tests of malformed input)."""
        assert self._transport is not None
        self._transport.write(data)

    def _received(self, message: Message) -> None:
        if message.is_request:
            self._answer_server_request(message)
            self.server_requests.put_nowait(message)
            return
        future = self._pending.get(message.hop_by_hop)
        if future is not None and not future.done():
            future.set_result(message)

    def _answer_server_request(self, request: Message) -> None:
        assert self._transport is not None
        parts = []
        session = request.find(d.AVP_SESSION_ID)
        if session is not None:
            parts.append(session.encoded())
        parts += [
            avp_u32(d.AVP_RESULT_CODE, d.DIAMETER_SUCCESS),
            avp_utf8(d.AVP_ORIGIN_HOST, self.origin_host),
            avp_utf8(d.AVP_ORIGIN_REALM, self.origin_realm),
        ]
        self._transport.write(
            encode_message(
                request.flags & FLAG_PROXIABLE,
                request.code,
                request.application_id,
                request.hop_by_hop,
                request.end_to_end,
                b"".join(parts),
            )
        )

    def _lost(self) -> None:
        self.closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("connection closed"))

    async def close(self, timeout: float = 2.0) -> None:
        """DPR, wait for DPA (bounded), close."""
        if self._transport is None or self.closed.is_set():
            return

        def dpr(hop_by_hop: int, end_to_end: int) -> bytes:
            body = b"".join(
                (
                    avp_utf8(d.AVP_ORIGIN_HOST, self.origin_host),
                    avp_utf8(d.AVP_ORIGIN_REALM, self.origin_realm),
                    avp_u32(d.AVP_DISCONNECT_CAUSE, 0),
                )
            )
            return encode_message(
                FLAG_REQUEST, d.CMD_DISCONNECT_PEER, d.APP_COMMON, hop_by_hop, end_to_end, body
            )

        with contextlib.suppress(TimeoutError, ConnectionError):
            await self.request(dpr, timeout)
        self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()
