"""Everything our encoders write dissects cleanly in Wireshark's Diameter dissector (tshark): no malformed
packet, no expert warning or error. The messages travel in a synthetic Ethernet/IPv4/TCP stream on port 3868,
written as a pcap by this test (handshake, then each message in its own segment with consistent sequence
numbers, requests client -> server, answers back).

tshark comes from Debian's ``tshark`` package (``apt-get install -y tshark``); without it the test is skipped.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from occ.diameter import dictionary as d
from occ.diameter.codec import (
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    Avp,
    DecodeError,
    avp_address,
    avp_grouped,
    avp_i32,
    avp_i64,
    avp_octets,
    avp_time,
    avp_u32,
    avp_u64,
    avp_utf8,
    decode_message,
    encode_message,
)
from tests.diameter.test_codec_vectors import OURS, OURS_FREEDIAMETER

TSHARK = shutil.which("tshark")
V3 = d.VENDOR_3GPP
CLIENT, SERVER = bytes([192, 0, 2, 10]), bytes([198, 51, 100, 7])
CLIENT_PORT, DIAMETER_PORT = 40000, 3868


# --- messages

SESSION = avp_utf8(d.AVP_SESSION_ID, "pgw.example.net;1700000000;42")
SERVER_ID = avp_octets(d.AVP_ORIGIN_HOST, b"ocs.example.net") + avp_octets(d.AVP_ORIGIN_REALM, b"example.net")
CLIENT_ID = avp_octets(d.AVP_ORIGIN_HOST, b"pgw.example.net") + avp_octets(d.AVP_ORIGIN_REALM, b"example.net")
TO_CLIENT = avp_octets(d.AVP_DESTINATION_HOST, b"pgw.example.net") + avp_octets(
    d.AVP_DESTINATION_REALM, b"example.net"
)
CC_APP = avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL)


def cc_answer(hop: int, request_type: int, number: int, *avps: bytes, result: int = 2001) -> bytes:
    head = SESSION + avp_u32(d.AVP_RESULT_CODE, result) + SERVER_ID + CC_APP
    head += avp_i32(d.AVP_CC_REQUEST_TYPE, request_type) + avp_u32(d.AVP_CC_REQUEST_NUMBER, number)
    return encode_message(FLAG_PROXIABLE, d.CMD_CREDIT_CONTROL, 4, hop, hop, head + b"".join(avps))


def extra_messages() -> list[bytes]:
    """Message shapes the vectors do not cover: every grant unit, the three Final-Unit-Actions, Cost-
    Information, error answers with Failed-AVP, Proxy-Info echo, DPR/DPA, RAR/RAA, ASR/ASA, IMS voice."""
    out: list[bytes] = []
    ims_ccr = (
        SESSION
        + CLIENT_ID
        + avp_octets(d.AVP_DESTINATION_REALM, b"ocs.example.net")
        + CC_APP
        + avp_utf8(d.AVP_SERVICE_CONTEXT_ID, "32260@3gpp.org")
        + avp_i32(d.AVP_CC_REQUEST_TYPE, d.CC_REQUEST_TYPE_INITIAL_REQUEST)
        + avp_u32(d.AVP_CC_REQUEST_NUMBER, 0)
        + avp_utf8(d.AVP_USER_NAME, "alice@example.net")
        + avp_u32(d.AVP_ORIGIN_STATE_ID, 7)
        + avp_time(d.AVP_EVENT_TIMESTAMP, 1_700_000_000)
        + avp_grouped(
            d.AVP_SUBSCRIPTION_ID,
            avp_i32(d.AVP_SUBSCRIPTION_ID_TYPE, d.SUBSCRIPTION_ID_TYPE_END_USER_SIP_URI),
            avp_utf8(d.AVP_SUBSCRIPTION_ID_DATA, "sip:alice@example.net"),
        )
        + avp_grouped(
            d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
            avp_grouped(d.AVP_REQUESTED_SERVICE_UNIT, avp_u32(d.AVP_CC_TIME, 300)),
            avp_u32(d.AVP_SERVICE_IDENTIFIER, 1000),
            avp_u32(d.AVP_RATING_GROUP, 100),
        )
        + avp_grouped(
            d.AVP_SERVICE_INFORMATION,
            avp_grouped(
                d.AVP_IMS_INFORMATION,
                avp_grouped(d.AVP_EVENT_TYPE, avp_utf8(d.AVP_SIP_METHOD, "INVITE"), vendor=V3),
                avp_i32(d.AVP_ROLE_OF_NODE, 0, vendor=V3),
                avp_i32(d.AVP_NODE_FUNCTIONALITY, 6, vendor=V3),
                avp_utf8(d.AVP_CALLING_PARTY_ADDRESS, "tel:+447700900123", vendor=V3),
                avp_utf8(d.AVP_CALLED_PARTY_ADDRESS, "tel:+33612345678", vendor=V3),
                vendor=V3,
            ),
            vendor=V3,
        )
        + avp_grouped(
            d.AVP_PROXY_INFO, avp_octets(d.AVP_PROXY_HOST, b"dra.example.net"), avp_octets(33, b"\x01st")
        )
    )
    out.append(encode_message(FLAG_REQUEST | FLAG_PROXIABLE, d.CMD_CREDIT_CONTROL, 4, 0x100, 0x100, ims_ccr))
    grant = avp_grouped(
        d.AVP_GRANTED_SERVICE_UNIT,
        avp_u32(d.AVP_CC_TIME, 300),
        avp_u64(d.AVP_CC_TOTAL_OCTETS, 1 << 40),
        avp_u64(d.AVP_CC_INPUT_OCTETS, 1 << 33),
        avp_u64(d.AVP_CC_OUTPUT_OCTETS, 0),
        avp_u64(d.AVP_CC_SERVICE_SPECIFIC_UNITS, 10),
    )
    out.append(
        cc_answer(
            0x100,
            d.CC_REQUEST_TYPE_INITIAL_REQUEST,
            0,
            avp_grouped(
                d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
                grant,
                avp_u32(d.AVP_SERVICE_IDENTIFIER, 1000),
                avp_u32(d.AVP_RATING_GROUP, 100),
                avp_u32(d.AVP_VALIDITY_TIME, 600),
                avp_u32(d.AVP_RESULT_CODE, d.DIAMETER_SUCCESS),
                avp_u32(d.AVP_TIME_QUOTA_THRESHOLD, 30, vendor=V3),
                avp_u32(d.AVP_VOLUME_QUOTA_THRESHOLD, 1 << 20, vendor=V3),
                avp_u32(d.AVP_QUOTA_HOLDING_TIME, 120, vendor=V3),
                avp_grouped(d.AVP_TRIGGER, avp_i32(d.AVP_TRIGGER_TYPE, 1, vendor=V3), vendor=V3),
            ),
            avp_grouped(
                d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
                avp_grouped(d.AVP_GRANTED_SERVICE_UNIT, avp_u64(d.AVP_CC_TOTAL_OCTETS, 4096)),
                avp_u32(d.AVP_RATING_GROUP, 20),
                avp_u32(d.AVP_RESULT_CODE, d.DIAMETER_SUCCESS),
                avp_grouped(
                    d.AVP_FINAL_UNIT_INDICATION,
                    avp_i32(d.AVP_FINAL_UNIT_ACTION, d.FINAL_UNIT_ACTION_REDIRECT),
                    avp_grouped(
                        d.AVP_REDIRECT_SERVER,
                        avp_i32(d.AVP_REDIRECT_ADDRESS_TYPE, d.REDIRECT_ADDRESS_TYPE_URL),
                        avp_utf8(d.AVP_REDIRECT_SERVER_ADDRESS, "https://topup.example.net/"),
                    ),
                ),
            ),
            avp_grouped(
                d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
                avp_u32(d.AVP_RATING_GROUP, 30),
                avp_u32(d.AVP_RESULT_CODE, d.DIAMETER_CREDIT_LIMIT_REACHED),
                avp_grouped(
                    d.AVP_FINAL_UNIT_INDICATION,
                    avp_i32(d.AVP_FINAL_UNIT_ACTION, d.FINAL_UNIT_ACTION_RESTRICT_ACCESS),
                    avp_octets(d.AVP_RESTRICTION_FILTER_RULE, b"permit out ip from any to 198.51.100.0/24"),
                    avp_utf8(d.AVP_FILTER_ID, "topup-only"),
                ),
            ),
            avp_grouped(
                d.AVP_PROXY_INFO, avp_octets(d.AVP_PROXY_HOST, b"dra.example.net"), avp_octets(33, b"\x01st")
            ),
        )
    )
    out.append(
        cc_answer(
            0x101,
            d.CC_REQUEST_TYPE_EVENT_REQUEST,
            0,
            avp_grouped(
                d.AVP_COST_INFORMATION,
                avp_grouped(
                    d.AVP_UNIT_VALUE, avp_i64(d.AVP_VALUE_DIGITS, 1234567), avp_i32(d.AVP_EXPONENT, -6)
                ),
                avp_u32(d.AVP_CURRENCY_CODE, 978),
                avp_utf8(d.AVP_COST_UNIT, "SMS"),
            ),
            avp_i32(d.AVP_CHECK_BALANCE_RESULT, d.CHECK_BALANCE_RESULT_ENOUGH_CREDIT),
            avp_i32(d.AVP_CREDIT_CONTROL_FAILURE_HANDLING, d.CREDIT_CONTROL_FAILURE_HANDLING_CONTINUE),
        )
    )
    # protocol error (3xxx, E bit) and permanent failure (5xxx) answers with Failed-AVP
    try:
        decode_message(
            encode_message(FLAG_REQUEST, 272, 4, 1, 1, bytes.fromhex("000001c8 40000010 000001b0"))
        )
    except DecodeError as error:
        rebuilt = error.failed_avp
    assert rebuilt is not None
    error_avps = SESSION + avp_u32(d.AVP_RESULT_CODE, d.DIAMETER_INVALID_HDR_BITS) + SERVER_ID
    error_avps += avp_utf8(d.AVP_ERROR_MESSAGE, "reserved command flag bits") + avp_octets(
        d.AVP_ERROR_REPORTING_HOST, b"ocs.example.net"
    )
    out.append(encode_message(FLAG_PROXIABLE | FLAG_ERROR, d.CMD_CREDIT_CONTROL, 4, 0x102, 0x102, error_avps))
    out.append(
        cc_answer(
            0x103,
            d.CC_REQUEST_TYPE_UPDATE_REQUEST,
            1,
            avp_grouped(d.AVP_FAILED_AVP, rebuilt),
            avp_utf8(d.AVP_ERROR_MESSAGE, "AVP length"),
            result=d.DIAMETER_INVALID_AVP_LENGTH,
        )
    )
    # base protocol: CER with relay + accounting, DPR/DPA, RAR/RAA, ASR/ASA
    cer = CLIENT_ID + avp_address(d.AVP_HOST_IP_ADDRESS, "2001:db8::10") + avp_u32(d.AVP_VENDOR_ID, 0)
    cer += avp_utf8(d.AVP_PRODUCT_NAME, "pgw", mandatory=False) + avp_u32(
        d.AVP_AUTH_APPLICATION_ID, d.APP_RELAY
    )
    cer += avp_u32(d.AVP_ACCT_APPLICATION_ID, 3) + avp_u32(d.AVP_INBAND_SECURITY_ID, 0)
    out.append(encode_message(FLAG_REQUEST, d.CMD_CAPABILITIES_EXCHANGE, 0, 0x104, 0x104, cer))
    dpr = CLIENT_ID + avp_i32(d.AVP_DISCONNECT_CAUSE, d.DISCONNECT_CAUSE_REBOOTING)
    out.append(encode_message(FLAG_REQUEST, d.CMD_DISCONNECT_PEER, 0, 0x105, 0x105, dpr))
    out.append(
        encode_message(
            0, d.CMD_DISCONNECT_PEER, 0, 0x105, 0x105, avp_u32(d.AVP_RESULT_CODE, 2001) + SERVER_ID
        )
    )
    rar = SESSION + SERVER_ID + TO_CLIENT + CC_APP
    rar += avp_i32(d.AVP_RE_AUTH_REQUEST_TYPE, d.RE_AUTH_REQUEST_TYPE_AUTHORIZE_ONLY)
    out.append(encode_message(FLAG_REQUEST | FLAG_PROXIABLE, d.CMD_RE_AUTH, 4, 0x106, 0x106, rar))
    answer = SESSION + avp_u32(d.AVP_RESULT_CODE, 2001) + CLIENT_ID
    out.append(encode_message(FLAG_PROXIABLE, d.CMD_RE_AUTH, 4, 0x106, 0x106, answer))
    out.append(
        encode_message(
            FLAG_REQUEST | FLAG_PROXIABLE,
            d.CMD_ABORT_SESSION,
            4,
            0x107,
            0x107,
            SESSION + SERVER_ID + TO_CLIENT + CC_APP,
        )
    )
    out.append(encode_message(FLAG_PROXIABLE, d.CMD_ABORT_SESSION, 4, 0x107, 0x107, answer))
    return out


def all_messages() -> list[bytes]:
    return [build() for build in (OURS | OURS_FREEDIAMETER).values()] + extra_messages()


# --- a pcap of one TCP connection


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(
    src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes
) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    ethernet = bytes.fromhex("020000000002 020000000001 0800")
    return ethernet + ip + tcp


def write_pcap(path: Path, messages: list[bytes]) -> None:
    """One TCP connection: handshake, then every message in its own segment (requests from the client,
    answers from the server), each acknowledged, then FIN both ways."""
    syn, ack_flag, psh, fin = 0x02, 0x10, 0x08, 0x01
    seq = {CLIENT: 1000, SERVER: 5000}
    frames: list[bytes] = []

    def send(src: bytes, flags: int, payload: bytes = b"") -> None:
        dst = SERVER if src == CLIENT else CLIENT
        sport, dport = (CLIENT_PORT, DIAMETER_PORT) if src == CLIENT else (DIAMETER_PORT, CLIENT_PORT)
        ack = seq[dst] if flags & ack_flag else 0
        frames.append(_frame(src, dst, sport, dport, seq[src], ack, flags, payload))
        seq[src] += len(payload) + (1 if flags & (syn | fin) else 0)

    send(CLIENT, syn)
    send(SERVER, syn | ack_flag)
    send(CLIENT, ack_flag)
    for message in messages:
        request = bool(message[4] & FLAG_REQUEST)
        server_initiated = int.from_bytes(message[5:8]) in (d.CMD_RE_AUTH, d.CMD_ABORT_SESSION)
        sender = CLIENT if request != server_initiated else SERVER
        send(sender, psh | ack_flag, message)
        send(SERVER if sender == CLIENT else CLIENT, ack_flag)
    send(CLIENT, fin | ack_flag)
    send(SERVER, fin | ack_flag)
    send(CLIENT, ack_flag)
    records = b"".join(
        struct.pack("<IIII", 1_700_000_000, i * 1000, len(frame), len(frame)) + frame
        for i, frame in enumerate(frames)
    )
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + records)


def tshark(*args: str) -> str:
    assert TSHARK is not None
    result = subprocess.run([TSHARK, *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if TSHARK is None:
        pytest.skip("tshark is not installed (Debian: apt-get install -y tshark)")
    path = tmp_path_factory.mktemp("tshark") / "ours.pcap"
    write_pcap(path, all_messages())
    return path


def test_tshark_sees_every_message_as_diameter(capture: Path) -> None:
    messages = all_messages()
    fields = tshark(
        "-r", str(capture), "-d", "tcp.port==3868,diameter", "-Y", "diameter",
        "-T", "fields", "-e", "diameter.cmd.code", "-e", "diameter.hopbyhopid", "-e", "diameter.length",
    )  # fmt: skip
    seen = [line.split("\t") for line in fields.splitlines()]
    expected = [
        [str(int.from_bytes(m[5:8])), f"0x{int.from_bytes(m[12:16]):08x}", str(len(m))] for m in messages
    ]
    assert seen == expected


def _empty_avps(avps: tuple[Avp, ...]) -> list[d.AvpDef]:
    """The AVPs with an empty payload, at any depth."""
    found = []
    for avp in avps:
        kind = d.AVPS[(avp.code, avp.vendor)]
        if not avp.data:
            found.append(kind)
        elif kind.type == "Grouped":
            found += _empty_avps(avp.grouped())
    return found


def test_tshark_finds_nothing_malformed_and_no_expert_error(capture: Path) -> None:
    verbose = tshark("-r", str(capture), "-d", "tcp.port==3868,diameter", "-V")
    assert "Malformed" not in verbose
    assert "Diameter Protocol" in verbose and "Unknown" not in verbose.split("Diameter Protocol", 1)[1]
    expert = tshark(
        "-r", str(capture), "-d", "tcp.port==3868,diameter", "-Y", "_ws.expert.severity >= 6291456",
        "-T", "fields", "-e", "frame.number", "-e", "_ws.expert.severity", "-e", "_ws.expert.message",
    )  # fmt: skip
    # severity warn = 6291456, error = 8388608. Wireshark warns "Data is empty" for every AVP of length 8/12;
    # that is allowed only where the message really has an empty AVP, and every such AVP is Grouped.
    found = {int(f[0]): (f[1], f[2]) for f in (line.split("\t") for line in expert.splitlines())}
    expected = {}
    for i, message in enumerate(all_messages()):
        empty = _empty_avps(decode_message(message).avps)
        if empty:
            # Requested-Service-Unit {} (all its children are optional) and the rebuilt Failed-AVP of a
            # Grouped AVP whose length was unusable (RFC 6733 §7.5: "header with an empty payload")
            assert {kind.type for kind in empty} == {"Grouped"}, empty
            expected[4 + 2 * i] = ("6291456", "Data is empty")
    assert found == expected


def test_the_checks_see_a_malformed_message(tmp_path: Path) -> None:
    """Guards the guard: a message whose AVP runs past its end, and one with an unknown AVP, are flagged."""
    if TSHARK is None:
        pytest.skip("tshark is not installed (Debian: apt-get install -y tshark)")
    good = encode_message(FLAG_REQUEST, d.CMD_DEVICE_WATCHDOG, 0, 1, 1, CLIENT_ID)
    bad = bytearray(good)
    bad[25:28] = (0xFF).to_bytes(3)  # Origin-Host claims 255 bytes
    unknown = encode_message(FLAG_REQUEST, d.CMD_DEVICE_WATCHDOG, 0, 2, 2, CLIENT_ID + avp_u32(65000, 1))
    path = tmp_path / "bad.pcap"
    write_pcap(path, [bytes(bad), unknown])
    verbose = tshark("-r", str(path), "-d", "tcp.port==3868,diameter", "-V")
    expert = tshark(
        "-r", str(path), "-d", "tcp.port==3868,diameter", "-Y", "_ws.expert.severity >= 6291456",
        "-T", "fields", "-e", "frame.number", "-e", "_ws.expert.severity",
    )  # fmt: skip
    assert "Malformed" in verbose
    assert "Unknown" in verbose.split("Diameter Protocol")[-1]
    assert expert.splitlines() == ["4\t8388608", "6\t6291456"]  # error on the first, warning on the second
