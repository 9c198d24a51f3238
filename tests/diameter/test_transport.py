"""The Diameter server over real TCP (and TLS): base protocol, error answers, framing, watchdog,
disconnect, server-initiated requests, and python-diameter as an independent peer.

A stub application stands in for credit control; every message the server sends is also decoded by
python-diameter. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from diameter.message import Message as PdMessage

from occ.diameter import dictionary as d
from occ.diameter.application import PeerHandle
from occ.diameter.codec import (
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    Framer,
    Message,
    avp_address,
    avp_grouped,
    avp_u32,
    avp_utf8,
    decode_message,
    encode_message,
)
from occ.diameter.handoff import Dealer, bind_listener
from occ.diameter.server import DiameterServer
from occ.diameter.settings import AllowedPeer, DiameterSettings, TlsSettings

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0
CC = d.APP_CREDIT_CONTROL
CCR = d.CMD_CREDIT_CONTROL
RAR = d.CMD_RE_AUTH


def settings(**changes: Any) -> DiameterSettings:
    base: dict[str, Any] = {
        "listen": "127.0.0.1",
        "port": 0,
        "origin_host": "occ.test",
        "origin_realm": "test",
        "allowed_peers": [AllowedPeer(host="client*.test", realm="test")],
        "watchdog_s": 30.0,
        "max_message_length": 4096,
    }
    base.update(changes)
    return DiameterSettings(**base)


class StubApplication:
    """Answers CCRs with 2001 after the delay its User-Name asks for (in milliseconds)."""

    application_id = CC
    commands = frozenset({CCR})

    def __init__(self) -> None:
        self.opened: list[PeerHandle] = []
        self.closed: list[PeerHandle] = []
        self.fail = False

    async def handle(self, request: Message, peer: PeerHandle) -> bytes:
        user = request.find(d.AVP_USER_NAME)
        if user is not None:
            await asyncio.sleep(int(user.utf8()) / 1000)
        if self.fail:
            raise RuntimeError("boom")
        session = request.find(d.AVP_SESSION_ID)
        avps = (session.encoded() if session else b"") + avp_u32(d.AVP_RESULT_CODE, d.DIAMETER_SUCCESS)
        avps += avp_utf8(d.AVP_ORIGIN_HOST, peer.origin_host) + avp_utf8(
            d.AVP_ORIGIN_REALM, peer.origin_realm
        )
        avps += avp_u32(d.AVP_AUTH_APPLICATION_ID, CC)
        flags = request.flags & FLAG_PROXIABLE
        return encode_message(flags, CCR, CC, request.hop_by_hop, request.end_to_end, avps)

    def peer_opened(self, peer: PeerHandle) -> None:
        self.opened.append(peer)

    def peer_closed(self, peer: PeerHandle) -> None:
        self.closed.append(peer)


# ---- a raw test client --------------------------------------------------------------------------------


def identity(host: str = "client1.test", realm: str = "test") -> bytes:
    return avp_utf8(d.AVP_ORIGIN_HOST, host) + avp_utf8(d.AVP_ORIGIN_REALM, realm)


def cer(host: str | None = "client1.test", realm: str = "test", app: int = CC, hbh: int = 1) -> bytes:
    avps = (avp_utf8(d.AVP_ORIGIN_HOST, host) if host is not None else b"") + avp_utf8(
        d.AVP_ORIGIN_REALM, realm
    )
    avps += avp_address(d.AVP_HOST_IP_ADDRESS, "127.0.0.1") + avp_u32(d.AVP_VENDOR_ID, 0)
    avps += avp_utf8(d.AVP_PRODUCT_NAME, "raw-client", mandatory=False)
    avps += avp_u32(d.AVP_AUTH_APPLICATION_ID, app)
    return encode_message(FLAG_REQUEST, d.CMD_CAPABILITIES_EXCHANGE, 0, hbh, hbh, avps)


SESSION = avp_utf8(d.AVP_SESSION_ID, "client1.test;42;1")
PROXY_1 = avp_grouped(
    d.AVP_PROXY_INFO, avp_utf8(d.AVP_PROXY_HOST, "p1.test"), avp_utf8(d.AVP_PROXY_STATE, "a")
)
PROXY_2 = avp_grouped(
    d.AVP_PROXY_INFO, avp_utf8(d.AVP_PROXY_HOST, "p2.test"), avp_utf8(d.AVP_PROXY_STATE, "b")
)


def ccr(
    hbh: int, delay_ms: int | None = None, app: int = CC, code: int = CCR, flags: int = FLAG_REQUEST
) -> bytes:
    avps = SESSION + identity() + avp_u32(d.AVP_AUTH_APPLICATION_ID, app)
    if delay_ms is not None:
        avps += avp_utf8(d.AVP_USER_NAME, str(delay_ms))
    return encode_message(flags, code, app, hbh, hbh + 7, avps + PROXY_1 + PROXY_2)


def base_request(code: int, hbh: int, extra: bytes = b"") -> bytes:
    return encode_message(FLAG_REQUEST, code, 0, hbh, hbh, identity() + extra)


def base_answer(code: int, hbh: int, e2e: int) -> bytes:
    return encode_message(0, code, 0, hbh, e2e, avp_u32(d.AVP_RESULT_CODE, 2001) + identity())


def python_diameter_decodes(data: bytes) -> PdMessage:
    """Our output must decode cleanly in the independent implementation too."""
    msg = PdMessage.from_bytes(data)
    assert msg.header.length == len(data)
    msg.avps  # noqa: B018 - decoding every AVP must not raise
    return msg


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = Framer(1 << 20)
        self.queue: list[bytes] = []

    @classmethod
    async def connect(cls, port: int, ssl_context: ssl.SSLContext | None = None) -> Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=ssl_context, server_hostname=None if not ssl_context else "occ.test"
            ),
            WAIT,
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), WAIT)

    async def raw(self, timeout: float = WAIT) -> bytes:
        while not self.queue:
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.queue += self.framer.feed(chunk)
        return self.queue.pop(0)

    async def receive(self, timeout: float = WAIT) -> Message:
        data = await self.raw(timeout)
        python_diameter_decodes(data)
        return decode_message(data)

    async def closed_by_server(self, timeout: float = WAIT) -> bool:
        """True when the server closes (EOF) within the timeout, nothing more being sent first."""
        try:
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return True
        return chunk == b""

    async def handshake(self, host: str = "client1.test") -> Message:
        await self.send(cer(host))
        cea = await self.receive()
        assert cea.find(d.AVP_RESULT_CODE).u32() == 2001  # type: ignore[union-attr]
        return cea

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), WAIT)


@contextlib.asynccontextmanager
async def running(
    s: DiameterSettings | None = None, app: StubApplication | None = None
) -> AsyncIterator[tuple[DiameterServer, StubApplication]]:
    app = app or StubApplication()
    server = DiameterServer(s or settings(), [app], origin_state_id=777)
    await server.start()
    try:
        yield server, app
    finally:
        await asyncio.wait_for(server.stop(1.0), WAIT)


@contextlib.asynccontextmanager
async def connected(
    s: DiameterSettings | None = None,
) -> AsyncIterator[tuple[DiameterServer, StubApplication, Client]]:
    async with running(s) as (server, app):
        client = await Client.connect(server.port)
        try:
            await client.handshake()
            yield server, app, client
        finally:
            await client.close()


def result(msg: Message) -> int:
    avp = msg.find(d.AVP_RESULT_CODE)
    assert avp is not None
    return avp.u32()


# ---- capabilities exchange ----------------------------------------------------------------------------


async def test_cea_over_tcp_carries_our_capabilities() -> None:
    async with running() as (server, app):
        client = await Client.connect(server.port)
        await client.send(cer(hbh=99))
        data = await client.raw()
        cea = decode_message(data)
        assert (cea.code, cea.hop_by_hop, cea.is_request, cea.is_error) == (257, 99, False, False)
        assert result(cea) == 2001
        pd = python_diameter_decodes(data)
        assert pd.result_code == 2001
        assert pd.origin_host == b"occ.test" and pd.origin_realm == b"test"
        assert pd.host_ip_address == [(1, "127.0.0.1")]
        assert pd.vendor_id == 0
        assert pd.product_name == "occ"
        assert pd.firmware_revision == 1
        assert pd.origin_state_id == 777
        assert pd.auth_application_id == [CC]
        [vsai] = pd.vendor_specific_application_id
        assert (vsai.vendor_id, vsai.auth_application_id) == (d.VENDOR_3GPP, CC)
        await asyncio.sleep(0.05)
        assert [p.peer_host for p in app.opened] == ["client1.test"]
        handle = server.peer("CLIENT1.test")
        assert handle is not None and handle.is_open and handle.peer_realm == "test"
        await client.close()
        await wait_for(lambda: app.closed != [])
        assert server.peer("client1.test") is None


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (cer(host="intruder.evil"), d.DIAMETER_UNKNOWN_PEER),
        (cer(app=16777238), d.DIAMETER_NO_COMMON_APPLICATION),
        (cer(host=None), d.DIAMETER_MISSING_AVP),
    ],
    ids=["3010", "5010", "5005"],
)
async def test_rejected_cer_is_answered_then_closed(message: bytes, code: int) -> None:
    async with running() as (server, app):
        client = await Client.connect(server.port)
        await client.send(message)
        cea = await client.receive()
        assert result(cea) == code
        assert cea.is_error is (code == d.DIAMETER_UNKNOWN_PEER)
        if code == d.DIAMETER_MISSING_AVP:
            failed = cea.find(d.AVP_FAILED_AVP)
            assert failed is not None and failed.grouped()[0].code == d.AVP_ORIGIN_HOST
        assert await client.closed_by_server()
        assert app.opened == []


async def test_request_before_cer_closes_the_connection() -> None:
    async with running() as (server, _):
        client = await Client.connect(server.port)
        await client.send(ccr(1))
        assert await client.closed_by_server()


async def test_relay_peers_are_accepted() -> None:
    async with running() as (server, _):
        client = await Client.connect(server.port)
        await client.send(cer(app=d.APP_RELAY))
        assert result(await client.receive()) == 2001
        await client.close()


# ---- requests, answers, errors ------------------------------------------------------------------------


async def test_requests_run_concurrently_and_answers_keep_ids() -> None:
    async with connected() as (_, _, client):
        await client.send(ccr(1, delay_ms=300) + ccr(2, delay_ms=0))
        first = await client.receive()
        second = await client.receive()
        assert [(m.hop_by_hop, m.end_to_end) for m in (first, second)] == [(2, 9), (1, 8)]
        assert all(result(m) == 2001 and m.avps[0].utf8() == "client1.test;42;1" for m in (first, second))


def bad_avp_length(hbh: int) -> bytes:
    bad = (416).to_bytes(4, "big") + bytes([0x40]) + (300).to_bytes(3, "big") + b"\0\0\0\1"
    return encode_message(FLAG_REQUEST, CCR, CC, hbh, hbh + 7, SESSION + identity() + PROXY_1 + PROXY_2 + bad)


def bad_avp_bits(hbh: int) -> bytes:
    bad = (416).to_bytes(4, "big") + bytes([0x48]) + (12).to_bytes(3, "big") + b"\0\0\0\1"
    return encode_message(FLAG_REQUEST, CCR, CC, hbh, hbh + 7, SESSION + identity() + bad + PROXY_1 + PROXY_2)


def bad_header_bits(hbh: int) -> bytes:
    data = bytearray(ccr(hbh))
    data[4] |= 0x02
    return bytes(data)


@pytest.mark.parametrize(
    ("message", "code", "command", "failed_avp"),
    [
        (ccr(11, code=999), d.DIAMETER_COMMAND_UNSUPPORTED, 999, False),
        (ccr(12, app=16777238), d.DIAMETER_APPLICATION_UNSUPPORTED, CCR, False),
        (bad_header_bits(13), d.DIAMETER_INVALID_HDR_BITS, CCR, False),
        (bad_avp_bits(14), d.DIAMETER_INVALID_AVP_BITS, CCR, True),
        (bad_avp_length(15), d.DIAMETER_INVALID_AVP_LENGTH, CCR, True),
    ],
    ids=["3001", "3007", "3008", "3009", "5014"],
)
async def test_errors_are_answered_with_echoes(
    message: bytes, code: int, command: int, failed_avp: bool
) -> None:
    async with connected() as (_, _, client):
        await client.send(message)
        data = await client.raw()
        answer = decode_message(data)
        hbh = int.from_bytes(message[12:16], "big")
        assert (answer.code, answer.hop_by_hop, answer.end_to_end) == (command, hbh, hbh + 7)
        assert not answer.is_request
        assert answer.is_error is (code < 4000)
        assert result(answer) == code
        assert [a.code for a in answer.avps[:4]] == [
            d.AVP_SESSION_ID,
            d.AVP_ORIGIN_HOST,
            d.AVP_ORIGIN_REALM,
            d.AVP_RESULT_CODE,
        ]
        assert answer.avps[0].utf8() == "client1.test;42;1"
        assert [p.encoded() for p in answer.find_all(d.AVP_PROXY_INFO)] == [PROXY_1, PROXY_2]
        assert (answer.find(d.AVP_FAILED_AVP) is not None) is failed_avp
        pd = python_diameter_decodes(data)
        assert pd.header.is_error is (code < 4000)
        # the connection lives on
        await client.send(ccr(50))
        assert result(await client.receive()) == 2001


async def test_application_failure_is_answered_5012() -> None:
    async with connected() as (_, app, client):
        app.fail = True
        await client.send(ccr(5))
        answer = await client.receive()
        assert result(answer) == d.DIAMETER_UNABLE_TO_COMPLY and answer.hop_by_hop == 5


# ---- framing ------------------------------------------------------------------------------------------


async def test_byte_by_byte() -> None:
    async with running() as (server, _):
        client = await Client.connect(server.port)
        stream = cer() + ccr(1) + base_request(d.CMD_DEVICE_WATCHDOG, 2) + ccr(3)
        for i in range(len(stream)):
            await client.send(stream[i : i + 1])
        got = [await client.receive() for _ in range(4)]
        assert sorted((m.code, m.hop_by_hop) for m in got) == [(257, 1), (272, 1), (272, 3), (280, 2)]
        await client.close()


async def test_many_messages_per_write() -> None:
    async with running() as (server, _):
        client = await Client.connect(server.port)
        await client.send(cer() + b"".join(ccr(i) for i in range(100, 300)))
        assert (await client.receive()).code == 257
        answers = [await client.receive() for _ in range(200)]
        assert sorted(m.hop_by_hop for m in answers) == list(range(100, 300))
        await client.close()


async def test_oversize_message_closes_the_connection() -> None:
    async with connected(settings(max_message_length=1024)) as (_, _, client):
        big = ccr(7)[:20] + avp_utf8(d.AVP_USER_NAME, "x" * 2000)
        big = big[:1] + len(big).to_bytes(3, "big") + big[4:]
        await client.send(big[:64])
        assert await client.closed_by_server()


async def test_garbage_header_closes_the_connection() -> None:
    async with connected() as (_, _, client):
        await client.send(b"\x07" + bytes(19))
        assert await client.closed_by_server()


# ---- watchdog -----------------------------------------------------------------------------------------


async def test_dwr_from_the_peer_is_answered() -> None:
    async with connected() as (_, _, client):
        await client.send(base_request(d.CMD_DEVICE_WATCHDOG, 77))
        dwa = await client.receive()
        assert (dwa.code, dwa.hop_by_hop, result(dwa)) == (280, 77, 2001)
        assert dwa.find(d.AVP_ORIGIN_STATE_ID).u32() == 777  # type: ignore[union-attr]


async def test_watchdog_dwr_answered_keeps_the_connection() -> None:
    async with connected(settings(watchdog_s=0.4)) as (server, _, client):
        for _ in range(3):
            started = time.monotonic()
            dwr = await client.receive(timeout=2.0)
            assert dwr.is_request and dwr.code == d.CMD_DEVICE_WATCHDOG
            assert time.monotonic() - started < 0.4 + 0.1 + 0.6  # Tw + jitter + scheduling slack
            await client.send(base_answer(280, dwr.hop_by_hop, dwr.end_to_end))
        assert server.peer("client1.test") is not None


async def test_watchdog_unanswered_closes_the_connection() -> None:
    async with connected(settings(watchdog_s=0.3)) as (server, app, client):
        dwr = await client.receive(timeout=2.0)
        assert dwr.code == d.CMD_DEVICE_WATCHDOG
        started = time.monotonic()
        assert await client.closed_by_server(timeout=2.0)
        assert time.monotonic() - started < 0.3 + 0.075 + 0.6  # Tw + jitter + slack
        await wait_for(lambda: app.closed != [])
        assert server.peer("client1.test") is None


# ---- disconnect ---------------------------------------------------------------------------------------


async def test_dpr_from_the_peer() -> None:
    async with connected() as (_, app, client):
        await client.send(base_request(d.CMD_DISCONNECT_PEER, 5, avp_u32(d.AVP_DISCONNECT_CAUSE, 2)))
        dpa = await client.receive()
        assert (dpa.code, dpa.hop_by_hop, result(dpa)) == (282, 5, 2001)
        assert await client.closed_by_server()
        await wait_for(lambda: app.closed != [])


async def test_stop_sends_dpr_and_waits_for_dpa_and_answers_in_flight() -> None:
    app = StubApplication()
    server = DiameterServer(settings(), [app])
    await server.start()
    client = await Client.connect(server.port)
    try:
        await client.handshake()
        await client.send(ccr(1, delay_ms=200))
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(server.stop(3.0))
        dpr = await client.receive()
        assert dpr.is_request and dpr.code == d.CMD_DISCONNECT_PEER
        assert dpr.find(d.AVP_DISCONNECT_CAUSE).u32() == d.DISCONNECT_CAUSE_REBOOTING  # type: ignore[union-attr]
        # a new request now is turned away (3004: try another server)
        await client.send(ccr(2))
        busy = await client.receive()
        assert (busy.hop_by_hop, result(busy), busy.is_error) == (2, d.DIAMETER_TOO_BUSY, True)
        await client.send(base_answer(282, dpr.hop_by_hop, dpr.end_to_end))
        answer = await client.receive()
        assert (answer.hop_by_hop, result(answer)) == (1, 2001)  # the request in flight was answered
        assert await client.closed_by_server()
        started = time.monotonic()
        await asyncio.wait_for(stopping, WAIT)
        assert time.monotonic() - started < 1.0
        # nothing listens any more
        with pytest.raises(OSError):
            await Client.connect(server.port)
    finally:
        await client.close()


async def test_stop_cuts_a_peer_that_never_answers_dpr() -> None:
    async with running() as (server, _):
        client = await Client.connect(server.port)
        await client.handshake()
        started = time.monotonic()
        await asyncio.wait_for(server.stop(0.5), WAIT)
        assert time.monotonic() - started < 1.5
        dpr = await client.receive()
        assert dpr.code == d.CMD_DISCONNECT_PEER
        assert await client.closed_by_server()
        await client.close()


# ---- server-initiated requests ------------------------------------------------------------------------


def rar_builder(session: bytes) -> Callable[[int, int], bytes]:
    def build(hbh: int, e2e: int) -> bytes:
        avps = session + avp_utf8(d.AVP_ORIGIN_HOST, "occ.test") + avp_utf8(d.AVP_ORIGIN_REALM, "test")
        avps += avp_utf8(d.AVP_DESTINATION_REALM, "test") + avp_utf8(d.AVP_DESTINATION_HOST, "client1.test")
        avps += avp_u32(d.AVP_AUTH_APPLICATION_ID, CC) + avp_u32(d.AVP_RE_AUTH_REQUEST_TYPE, 0)
        return encode_message(FLAG_REQUEST | FLAG_PROXIABLE, RAR, CC, hbh, e2e, avps)

    return build


async def test_send_request_matches_the_answer() -> None:
    async with connected() as (server, _, client):
        peer = server.peer("client1.test")
        assert peer is not None
        sending = asyncio.ensure_future(peer.send_request(rar_builder(SESSION), timeout=WAIT))
        rar = await client.receive()
        assert rar.is_request and rar.code == RAR
        # an answer nobody waits for is dropped; the right one completes the request
        await client.send(
            encode_message(0, RAR, CC, rar.hop_by_hop + 1000, 1, avp_u32(d.AVP_RESULT_CODE, 2001))
        )
        await client.send(
            encode_message(
                0, RAR, CC, rar.hop_by_hop, rar.end_to_end, SESSION + avp_u32(d.AVP_RESULT_CODE, 2001)
            )
        )
        raa = await asyncio.wait_for(sending, WAIT)
        assert raa.hop_by_hop == rar.hop_by_hop and result(raa) == 2001


async def test_send_request_times_out_and_fails_on_close() -> None:
    async with connected() as (server, _, client):
        peer = server.peer("client1.test")
        assert peer is not None
        with pytest.raises(TimeoutError):
            await peer.send_request(rar_builder(SESSION), timeout=0.2)
        sending = asyncio.ensure_future(peer.send_request(rar_builder(SESSION), timeout=WAIT))
        await client.receive()  # the timed-out RAR
        await client.receive()  # this one
        await client.close()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(sending, WAIT)
        with pytest.raises(ConnectionError):
            await peer.send_request(rar_builder(SESSION), timeout=0.2)


# ---- reload, ports, TLS -------------------------------------------------------------------------------


async def test_reload_changes_allowed_peers_without_dropping_connections() -> None:
    async with connected() as (server, _, client):
        server.reload(settings(allowed_peers=[AllowedPeer(host="other.test", realm="test")]))
        second = await Client.connect(server.port)
        await second.send(cer())
        assert result(await second.receive()) == d.DIAMETER_UNKNOWN_PEER
        await second.close()
        await client.send(ccr(9))
        assert result(await client.receive()) == 2001


async def test_start_fails_when_the_port_is_taken() -> None:
    async with running() as (server, _):
        other = DiameterServer(settings(port=server.port), [StubApplication()])
        with pytest.raises(OSError):
            await other.start()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=occ.test",
                "-addext",
                "subjectAltName=DNS:occ.test",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"openssl unavailable: {exc}")
    return cert, key


async def test_tls_on_the_listen_port(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    tls = TlsSettings(cert_file=str(cert), key_file=str(key))
    async with running(settings(tls=tls)) as (server, _):
        context = ssl.create_default_context(cafile=str(cert))
        client = await Client.connect(server.port, context)
        await client.handshake()
        await client.send(ccr(3))
        assert result(await client.receive()) == 2001
        await client.close()
        plain = await Client.connect(server.port)
        await plain.send(cer())
        with pytest.raises((ConnectionError, TimeoutError, asyncio.IncompleteReadError)):
            await plain.receive(timeout=2.0)
        await plain.close()


# ---- python-diameter as the client --------------------------------------------------------------------


def python_diameter_session(port: int) -> tuple[int, int, bool]:
    """CER, one CCR and DPR (at stop) from a python-diameter Node; returns (CCA Result-Code, Auth-App, ok)."""
    from diameter.message.commands import CreditControlRequest
    from diameter.message.constants import (
        APP_DIAMETER_CREDIT_CONTROL_APPLICATION,
        E_CC_REQUEST_TYPE_INITIAL_REQUEST,
    )
    from diameter.node import Node
    from diameter.node.application import SimpleThreadingApplication

    node = Node("client9.test", "test", vendor_ids=[d.VENDOR_3GPP])
    node.idle_timeout = 30
    peer = node.add_peer(
        f"aaa://occ.test:{port};transport=tcp",
        "test",
        ip_addresses=["127.0.0.1"],
        is_persistent=True,
        is_default=True,
    )
    app = SimpleThreadingApplication(APP_DIAMETER_CREDIT_CONTROL_APPLICATION, is_auth_application=True)
    node.add_application(app, [peer])
    node.start()
    try:
        app.wait_for_ready(timeout=5)
        ccr = CreditControlRequest()
        ccr.session_id = node.session_generator.next_id()
        ccr.origin_host = b"client9.test"
        ccr.origin_realm = b"test"
        ccr.destination_realm = b"test"
        ccr.auth_application_id = APP_DIAMETER_CREDIT_CONTROL_APPLICATION
        ccr.service_context_id = "32251@3gpp.org"
        ccr.cc_request_type = E_CC_REQUEST_TYPE_INITIAL_REQUEST
        ccr.cc_request_number = 0
        cca = app.send_request(ccr, timeout=5)
        return cca.result_code, cca.auth_application_id, True
    finally:
        node.stop(wait_timeout=5)


async def test_python_diameter_node_as_client() -> None:
    async with running(settings(allowed_peers=[AllowedPeer()])) as (server, app):
        code, auth_app, _ = await asyncio.wait_for(
            asyncio.to_thread(python_diameter_session, server.port), 30
        )
        assert (code, auth_app) == (2001, CC)
        await wait_for(lambda: len(app.closed) == 1)
        assert [p.peer_host for p in app.opened] == ["client9.test"]
        assert server.connections == frozenset()


async def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


def test_under_uvloop() -> None:
    """The daemon runs on uvloop (whose transports are not asyncio.Transport subclasses)."""
    import uvloop

    async def scenario() -> None:
        async with connected() as (server, _, client):
            await client.send(ccr(1) + ccr(2, delay_ms=20) + base_request(d.CMD_DEVICE_WATCHDOG, 3))
            got = sorted((m.code, m.hop_by_hop) for m in [await client.receive() for _ in range(3)])
            assert got == [(272, 1), (272, 2), (280, 3)]
            peer = server.peer("client1.test")
            assert peer is not None
            sending = asyncio.ensure_future(peer.send_request(rar_builder(SESSION), timeout=WAIT))
            rar = await client.receive()
            await client.send(
                encode_message(0, RAR, CC, rar.hop_by_hop, rar.end_to_end, avp_u32(d.AVP_RESULT_CODE, 2001))
            )
            assert result(await asyncio.wait_for(sending, WAIT)) == 2001
            await client.send(base_request(d.CMD_DISCONNECT_PEER, 4))
            assert (await client.receive()).code == d.CMD_DISCONNECT_PEER
            assert await client.closed_by_server()

    uvloop.run(scenario())


async def test_metrics_count_requests_answers_and_peers() -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_ccr = sample("occ_diameter_requests_total", command="CCR", direction="in")
    before_cca = sample("occ_diameter_answers_total", command="CCA", result_code="2001", direction="out")
    before_3001 = sample("occ_diameter_answers_total", command="other", result_code="3001", direction="out")
    before_open = sample("occ_diameter_peers", state="open")
    before_watchdog = sample("occ_diameter_connections_closed_total", reason="peer_dpr")
    async with connected() as (_, _, client):
        assert sample("occ_diameter_peers", state="open") == before_open + 1
        await client.send(ccr(1) + ccr(2, code=999))
        await client.receive()
        await client.receive()
        assert sample("occ_diameter_requests_total", command="CCR", direction="in") == before_ccr + 1
        assert (
            sample("occ_diameter_answers_total", command="CCA", result_code="2001", direction="out")
            == before_cca + 1
        )
        assert (
            sample("occ_diameter_answers_total", command="other", result_code="3001", direction="out")
            == before_3001 + 1
        )
        assert sample("occ_diameter_request_seconds_count", command="CCR") >= 1
        await client.send(base_request(d.CMD_DISCONNECT_PEER, 3))
        await client.receive()
        assert await client.closed_by_server()
        await wait_for(lambda: sample("occ_diameter_peers", state="open") == before_open)
        assert sample("occ_diameter_connections_closed_total", reason="peer_dpr") == before_watchdog + 1


# ---- connections handed over by a supervisor (occ.diameter.handoff) ----------------------------------


async def test_handed_connections_are_dealt_evenly_served_with_tls_and_counted_back(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    tls = TlsSettings(cert_file=str(cert), key_file=str(key))
    dealer = Dealer(bind_listener("127.0.0.1", 0))
    port = dealer.listener.getsockname()[1]
    workers = []
    for n in (1, 2):
        server = DiameterServer(settings(tls=tls), [StubApplication()], origin_state_id=777)
        await server.start(handoff=dealer.attach(n))
        workers.append(server)
    dealer.start()
    context = ssl.create_default_context(cafile=str(cert))
    clients = []
    try:
        for n in range(4):
            client = await Client.connect(port, context)
            await client.handshake(f"client{n}.test")
            await client.send(ccr(3))
            assert result(await client.receive()) == 2001
            clients.append(client)
        assert [len(w.open_peers()) for w in workers] == [2, 2]
        assert dealer.held == {1: 2, 2: 2}
        for client in clients[:2]:
            await client.close()
        async with asyncio.timeout(WAIT):
            while sum(dealer.held.values()) != 2:  # each worker wrote a byte back per closed connection
                await asyncio.sleep(0.01)
        # a plain connection to the TLS port fails its handshake in the worker: counted back as well
        plain = await Client.connect(port)
        await plain.send(cer())
        with pytest.raises((ConnectionError, TimeoutError, asyncio.IncompleteReadError)):
            await plain.receive(timeout=2.0)
        await plain.close()
        async with asyncio.timeout(WAIT):
            while sum(dealer.held.values()) != 2:
                await asyncio.sleep(0.01)
    finally:
        for client in clients[2:]:
            await client.close()
        await dealer.close()
        for server in workers:
            await asyncio.wait_for(server.stop(1.0), WAIT)
