"""What the RADIUS server really sends dissects cleanly in Wireshark's RADIUS dissector (tshark).

The in-process server of ``test_server`` (real UDP on 127.0.0.1, real Redis) answers an Access-Request with
PAP (Access-Accept with the MikroTik attributes), a wrong password (Access-Reject), MS-CHAPv2 (Access-Accept
with MS-CHAP2-Success and the MS-MPPE keys), CHAP, a Status-Server and an accounting Start / Interim-Update
/ Stop; a Disconnect-Request signed with the codec (``codec.sign_request``, as the server's dynamic
authorization client does) is acknowledged by the test NAS's Disconnect port. Each request and reply pair is
written, byte for byte as it crossed the socket, into a pcap of Ethernet/IPv4/UDP frames on the well-known
ports (1812, 1813, 3799), and tshark must decode every frame as RADIUS with nothing malformed, no expert
warning or error (IP and UDP checksums checked), every Response Authenticator it can pair with its request
correct with the shared secret, and the vendor attributes named from its own dictionary. pyrad checks what
tshark does not: Message-Authenticators and digest Request Authenticators.

tshark comes from Debian's ``tshark`` package (``apt-get install -y tshark``); without it the tests skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyrad.dictionary
import pyrad.packet
import pytest

from aaa import codec, mschap
from aaa.attributes import resolve
from aaa.dictionary import load
from balance.store import BalanceStore
from tests.radius.test_server import (  # noqa: F401  (store is a fixture)
    EUR,
    MIB,
    SECRET,
    Nas,
    octets,
    serving,
    store,
    subscriber,
)

TSHARK = shutil.which("tshark")
NAS_IP, SERVER_IP = bytes([192, 0, 2, 10]), bytes([198, 51, 100, 7])
AUTH_PORT, ACCT_PORT, COA_PORT = 1812, 1813, 3799
TSHARK_TIMEOUT_S = 120
ATTRS = resolve(load("config/dictionaries/dictionary"))


@dataclass(frozen=True)
class Exchange:
    name: str
    request: bytes
    reply: bytes
    port: int  # the server side's well-known port: 1812, 1813, or the NAS's 3799 for dynamic authorization

    @property
    def from_nas(self) -> bool:
        return self.port != COA_PORT


# ---- capturing the server's real packets -------------------------------------------------------------


async def udp_exchange(data: bytes, port: int, timeout: float = 2.0) -> bytes:
    """Send ``data`` to 127.0.0.1:``port`` and return the first datagram that comes back."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, reply: bytes, addr: tuple[str, int]) -> None:
            if not answer.done():
                answer.set_result(reply)

    transport, _ = await loop.create_datagram_endpoint(
        Protocol, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", port)
    )
    try:
        transport.sendto(data)
        return await asyncio.wait_for(answer, timeout)
    finally:
        transport.close()


async def exchange(nas: Nas, name: str, request: bytes, kind: str) -> Exchange:
    reply = await nas.exchange(request, kind)
    assert reply is not None, f"no reply to the {name}"
    assert codec.response_ok(reply, request[4:20], SECRET), name
    return Exchange(name, request, reply, AUTH_PORT if kind == "auth" else ACCT_PORT)


async def capture_exchanges(store: BalanceStore) -> list[Exchange]:  # noqa: F811
    await subscriber(store, "alice", 10 * EUR)
    out: list[Exchange] = []
    async with serving(store) as (nas, listener):
        a = nas.a
        request = nas.access_request(
            "alice", password="alice-secret", extra=[(a.nas_ip_address, bytes((127, 0, 0, 1)))]
        )
        out.append(await exchange(nas, "PAP Access-Accept", request, "auth"))
        assert out[-1].reply[0] == codec.ACCESS_ACCEPT
        request = nas.access_request("alice", password="wrong")
        out.append(await exchange(nas, "Access-Reject", request, "auth"))
        assert out[-1].reply[0] == codec.ACCESS_REJECT

        auth_challenge, peer_challenge = os.urandom(16), os.urandom(16)
        nt = mschap.generate_nt_response(auth_challenge, peer_challenge, "alice", "alice-secret")
        response = b"\x01\x00" + peer_challenge + bytes(8) + nt
        request = nas.access_request(
            "alice", extra=[(a.ms_chap_challenge, auth_challenge), (a.ms_chap2_response, response)]
        )
        out.append(await exchange(nas, "MS-CHAPv2 Access-Accept", request, "auth"))
        assert out[-1].reply[0] == codec.ACCESS_ACCEPT

        challenge = os.urandom(16)
        chap = b"\x07" + hashlib.md5(b"\x07alice-secret" + challenge).digest()
        request = nas.access_request("alice", extra=[(a.chap_password, chap), (a.chap_challenge, challenge)])
        out.append(await exchange(nas, "CHAP Access-Accept", request, "auth"))
        assert out[-1].reply[0] == codec.ACCESS_ACCEPT

        request = codec.sign_request(codec.STATUS_SERVER, nas.next_id(), [], SECRET, a.framing)
        out.append(await exchange(nas, "Status-Server", request, "auth"))
        assert out[-1].reply[0] == codec.ACCESS_ACCEPT

        for name, status, values in (
            ("Accounting Start", a.status_start, {}),
            ("Accounting Interim-Update", a.status_interim, {**octets(20 * MIB), "acct_session_time": 60}),
            ("Accounting Stop", a.status_stop, {**octets(20 * MIB), "acct_session_time": 65}),
        ):
            request = nas.accounting_request(status, "s1", "alice", **values)
            out.append(await exchange(nas, name, request, "acct"))
            assert out[-1].reply[0] == codec.ACCOUNTING_RESPONSE

        # the NAS's Disconnect port: a Disconnect-Request signed with the codec, answered by the listener
        attributes = [
            (a.acct_session_id, b"s1"),
            (a.user_name, b"alice"),
            (a.framed_ip_address, bytes((10, 0, 0, 7))),
        ]
        request = codec.sign_request(codec.DISCONNECT_REQUEST, nas.next_id(), attributes, SECRET, a.framing)
        assert listener.transport is not None
        reply = await udp_exchange(request, listener.transport.get_extra_info("sockname")[1])
        assert reply[0] == codec.DISCONNECT_ACK and codec.response_ok(reply, request[4:20], SECRET)
        out.append(Exchange("Disconnect-Request", request, reply, COA_PORT))
    return out


# ---- a pcap of UDP datagrams ---------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ident: int) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
    udp_sum = _checksum(pseudo + udp) or 0xFFFF  # 0 means "no checksum" in UDP (RFC 768)
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return bytes.fromhex("020000000002 020000000001 0800") + ip + udp


def write_pcap(path: Path, exchanges: list[Exchange]) -> None:
    """Each exchange from its own ephemeral port: request, then reply. Requests from the NAS go to the
    server's port; the Disconnect-Request goes from the server to the NAS's port 3799."""
    frames: list[bytes] = []
    for i, ex in enumerate(exchanges):
        ephemeral = 40000 + i
        if ex.from_nas:
            requester, responder = NAS_IP, SERVER_IP
        else:
            requester, responder = SERVER_IP, NAS_IP
        frames.append(udp_frame(requester, responder, ephemeral, ex.port, ex.request, 2 * i + 1))
        frames.append(udp_frame(responder, requester, ex.port, ephemeral, ex.reply, 2 * i + 2))
    records = b"".join(
        struct.pack("<IIII", 1_700_000_000, i * 1000, len(frame), len(frame)) + frame
        for i, frame in enumerate(frames)
    )
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + records)


def tshark(path: Path, *args: str) -> str:
    assert TSHARK is not None
    result = subprocess.run(
        [TSHARK, "-n", "-r", str(path), *CHECKS, *args],
        capture_output=True,
        text=True,
        timeout=TSHARK_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# IP and UDP checksums verified; the RADIUS shared secret given, so tshark reveals User-Password and checks
# each reply's Response Authenticator against the request it answers (radius.validate_authenticator).
CHECKS = (
    "-o", "ip.check_checksum:TRUE",
    "-o", "udp.check_checksum:TRUE",
    "-o", f"radius.shared_secret:{SECRET.decode()}",
    "-o", "radius.validate_authenticator:TRUE",
)  # fmt: skip


def fields(path: Path, *names: str) -> list[dict[str, str]]:
    args = [arg for name in names for arg in ("-e", name)]
    out = tshark(path, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", *args)
    return [dict(zip(names, line.split("\t"), strict=True)) for line in out.splitlines()]


def radius_sections(verbose: str) -> list[str]:
    """The RADIUS part of each frame of tshark -V output."""
    return [frame.partition("RADIUS Protocol")[2] for frame in verbose.split("\nFrame ")]


def expert_findings(path: Path) -> list[str]:
    """The severity groups tshark's expert summary lists: "Errors", "Warns", "Notes", "Chats"."""
    summary = tshark(path, "-q", "-z", "expert")
    return re.findall(r"^(\w+) \(\d+\)$", summary, re.M)


@pytest.fixture
async def exchanges(store: BalanceStore) -> list[Exchange]:  # noqa: F811
    return await capture_exchanges(store)


@pytest.fixture
def capture(exchanges: list[Exchange], tmp_path: Path) -> tuple[Path, list[Exchange]]:
    if TSHARK is None:
        pytest.skip("tshark is not installed (Debian: apt-get install -y tshark)")
    path = tmp_path / "radius.pcap"
    write_pcap(path, exchanges)
    return path, exchanges


# ---- what tshark says ----------------------------------------------------------------------------------


def test_every_frame_is_radius_with_what_was_sent(capture: tuple[Path, list[Exchange]]) -> None:
    path, exchanges = capture
    seen = fields(
        path, "frame.number", "_ws.col.Protocol", "ip.src", "udp.srcport", "ip.dst", "udp.dstport",
        "radius.code", "radius.id", "radius.length", "ip.checksum.status", "udp.checksum.status",
    )  # fmt: skip
    nas, server = ".".join(map(str, NAS_IP)), ".".join(map(str, SERVER_IP))
    expected = []
    for i, ex in enumerate(exchanges):
        requester, responder = (nas, server) if ex.from_nas else (server, nas)
        ephemeral, port = str(40000 + i), str(ex.port)
        for n, data, src, dst in (
            (2 * i + 1, ex.request, (requester, ephemeral), (responder, port)),
            (2 * i + 2, ex.reply, (responder, port), (requester, ephemeral)),
        ):
            expected.append(
                {
                    "frame.number": str(n),
                    "_ws.col.Protocol": "RADIUS",
                    "ip.src": src[0],
                    "udp.srcport": src[1],
                    "ip.dst": dst[0],
                    "udp.dstport": dst[1],
                    "radius.code": str(data[0]),
                    "radius.id": str(data[1]),
                    "radius.length": str(len(data)),
                    "ip.checksum.status": "1",  # 1: good
                    "udp.checksum.status": "1",
                }
            )
    assert seen == expected


def test_nothing_is_malformed_and_no_expert_warning_or_error(capture: tuple[Path, list[Exchange]]) -> None:
    path, exchanges = capture
    verbose = tshark(path, "-V")
    assert "Malformed" not in verbose
    sections = radius_sections(verbose)
    assert len(sections) == 2 * len(exchanges) and all(sections)
    for section in sections:
        assert "Unknown" not in section and "Expert Info" not in section, section
    findings = expert_findings(path)
    assert "Errors" not in findings and "Warns" not in findings, findings


def test_tshark_finds_every_response_authenticator_correct(capture: tuple[Path, list[Exchange]]) -> None:
    path, exchanges = capture
    rows = fields(path, "frame.number", "radius.code", "radius.reqframe", "radius.authenticator.valid")
    checked = 0
    for i, ex in enumerate(exchanges):
        request, reply = rows[2 * i], rows[2 * i + 1]
        assert request["radius.authenticator.valid"] == "" and request["radius.reqframe"] == ""
        if ex.request[0] == codec.STATUS_SERVER:
            # tshark 4.0 does not pair a Status-Server with its reply, so it checks no authenticator
            # there (pyrad does, below)
            assert reply["radius.reqframe"] == "", reply
            continue
        assert reply["radius.reqframe"] == request["frame.number"], (ex.name, reply)
        assert reply["radius.authenticator.valid"] == "1", (ex.name, reply)
        checked += 1
    assert checked == len(exchanges) - 1
    verbose = tshark(path, "-V")
    assert len(re.findall(r"^    Authenticator: [0-9a-f]{32} \[correct\]$", verbose, re.M)) == checked
    assert "[incorrect]" not in verbose and "[Invalid Authenticator: True]" not in verbose
    assert verbose.count("[Valid Authenticator: True]") == checked


def test_tshark_names_the_attributes_from_its_own_dictionary(capture: tuple[Path, list[Exchange]]) -> None:
    path, exchanges = capture
    verbose = tshark(path, "-V")
    for line in (
        "Mikrotik-Rate-Limit: 10M/10M",
        f"Mikrotik-Total-Limit: {1000 * MIB}",  # 10.00 EUR at 0.01 per MiB
        "Class: " + b"occ:alice".hex(),
        "Idle-Timeout: 600",
        "Acct-Interim-Interval: 60",
        "Reply-Message: wrong password",
        "User-Password: alice-secret",  # revealed with the shared secret
        "MS-MPPE-Encryption-Policy: Encryption-Allowed (1)",
        "MS-MPPE-Encryption-Types: RC4-40-128 (6)",
        "Acct-Status-Type: Interim-Update (3)",
        f"Acct-Input-Octets: {20 * MIB}",
        "Framed-IP-Address: 10.0.0.7",
    ):
        assert line in verbose, line
    for name in ("MS-CHAP2-Success", "MS-MPPE-Send-Key", "MS-MPPE-Recv-Key"):
        assert f"VSA: t={name}(" in verbose, name
    (mschap_accept,) = [ex for ex in exchanges if ex.name == "MS-CHAPv2 Access-Accept"]
    rows = fields(path, "frame.number", "radius.MS_CHAP2_Success")
    shown = {row["radius.MS_CHAP2_Success"] for row in rows} - {""}
    success = codec.decode(mschap_accept.reply, ATTRS.framing).get(ATTRS.ms_chap2_success)
    assert success is not None and shown == {success.hex()}


def test_pyrad_agrees_with_every_captured_authenticator(exchanges: list[Exchange]) -> None:
    """What tshark does not check (Message-Authenticators, the Request Authenticators of Accounting- and
    Disconnect-Requests, the reply to Status-Server), a second implementation does."""
    dictionary = pyrad.dictionary.Dictionary("config/dictionaries/dictionary")
    kinds = {
        AUTH_PORT: pyrad.packet.AuthPacket,
        ACCT_PORT: pyrad.packet.AcctPacket,
        COA_PORT: pyrad.packet.CoAPacket,
    }
    for ex in exchanges:
        request = kinds[ex.port](packet=ex.request, secret=SECRET, dict=dictionary)
        if ex.request[0] == codec.ACCOUNTING_REQUEST:
            assert request.VerifyAcctRequest(), ex.name
        if ex.request[0] == codec.DISCONNECT_REQUEST:
            assert request.VerifyCoARequest(), ex.name
        if request.message_authenticator:
            assert request.verify_message_authenticator(), ex.name
        reply = request.CreateReply(packet=ex.reply)
        assert request.VerifyReply(reply, ex.reply, enforce_ma=True), ex.name
        if ex.from_nas and ex.reply[0] != codec.ACCOUNTING_RESPONSE:
            assert ex.reply[20] == 80, f"{ex.name}: the server's Message-Authenticator is not first"


def test_the_checks_see_a_wrong_authenticator_and_a_malformed_attribute(tmp_path: Path) -> None:
    """Guards the guard: one altered octet of a reply (its Response Authenticator no longer matches), and a
    Reply-Message claiming more octets than the packet holds, are flagged by the same checks."""
    if TSHARK is None:
        pytest.skip("tshark is not installed (Debian: apt-get install -y tshark)")
    a = ATTRS

    def reject(identifier: int) -> tuple[bytes, bytes]:
        request = codec.sign_request(
            codec.ACCESS_REQUEST, identifier, [(a.user_name, b"alice")], SECRET, a.framing
        )
        packet = codec.decode(request, a.framing)
        return request, codec.sign_response(
            codec.ACCESS_REJECT, packet, [(a.reply_message, b"no")], SECRET, a.framing
        )

    request, reply = reject(1)
    altered = reply[:-1] + b"x"  # "no" -> "nx"
    exchanges = [Exchange("altered", request, altered, AUTH_PORT)]
    request, reply = reject(2)
    overrun = bytearray(reply)
    overrun[-3] = 40  # the Reply-Message's length octet: 40, with 4 octets left
    exchanges.append(Exchange("overrun", request, bytes(overrun), AUTH_PORT))
    path = tmp_path / "bad.pcap"
    write_pcap(path, exchanges)
    rows = fields(path, "frame.number", "radius.reqframe", "radius.authenticator.valid")
    assert rows[1]["radius.reqframe"] == "1" and rows[1]["radius.authenticator.valid"] == "0"
    verbose = tshark(path, "-V")
    assert "[incorrect]" in verbose and "Malformed" in verbose
    assert "Errors" in expert_findings(path)
