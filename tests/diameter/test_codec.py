"""The Diameter codec, value by value: hex -> value -> hex for every AVP type, padding, grouped and vendor
AVPs, header flags; every malformed case with its Result-Code and Failed-AVP; the stream framer; purity."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from occ.diameter import dictionary as d
from occ.diameter.codec import (
    AVP_MANDATORY,
    AVP_PROTECTED,
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
    HEADER_LENGTH,
    Avp,
    AvpError,
    DecodeError,
    Framer,
    FramingError,
    Message,
    avp_address,
    avp_f32,
    avp_f64,
    avp_grouped,
    avp_i32,
    avp_i64,
    avp_octets,
    avp_raw,
    avp_time,
    avp_u32,
    avp_u64,
    avp_utf8,
    decode_message,
    encode_message,
    find,
    find_all,
)

REPO = Path(__file__).resolve().parents[2]
HBH, E2E = 0x01020304, 0x0A0B0C0D


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def message_of(avps: bytes, flags: int = FLAG_REQUEST, code: int = 272, app: int = 4) -> bytes:
    return encode_message(flags, code, app, HBH, E2E, avps)


def one_avp(wire: bytes) -> Avp:
    (avp,) = decode_message(message_of(wire)).avps
    return avp


def raw_message(avps: bytes, flags: int = FLAG_REQUEST, code: int = 272, length: int | None = None) -> bytes:
    """A message built by hand, so that it can be wrong in ways ``encode_message`` refuses."""
    size = HEADER_LENGTH + len(avps) if length is None else length
    return (
        bytes([1])
        + size.to_bytes(3)
        + bytes([flags])
        + code.to_bytes(3)
        + (4).to_bytes(4)
        + HBH.to_bytes(4)
        + E2E.to_bytes(4)
        + avps
    )


# --- hex -> value -> hex, per type

V3 = d.VENDOR_3GPP
TYPED: list[tuple[str, str, str, object, Callable[[], bytes]]] = [
    # (case, wire hex, accessor, value, our encoder)
    ("u32", "0000010c 4000000c 000007d1", "u32", 2001, lambda: avp_u32(d.AVP_RESULT_CODE, 2001)),
    (
        "u32 max, M clear",
        "0000010a 0000000c ffffffff",
        "u32",
        0xFFFFFFFF,
        lambda: avp_u32(d.AVP_VENDOR_ID, 0xFFFFFFFF, mandatory=False),
    ),
    (
        "u64 above 2^32",
        "000001a5 40000010 00000001 2a05f200",
        "u64",
        5_000_000_000,
        lambda: avp_u64(d.AVP_CC_TOTAL_OCTETS, 5_000_000_000),
    ),
    ("i32 negative", "000001ad 4000000c fffffffd", "i32", -3, lambda: avp_i32(d.AVP_EXPONENT, -3)),
    (
        "i64 negative",
        "000001bf 40000010 fffffee0 8e04fb35",
        "i64",
        -1234567890123,
        lambda: avp_i64(d.AVP_VALUE_DIGITS, -1234567890123),
    ),
    ("f32", "0000fde8 4000000c 3fc00000", "f32", 1.5, lambda: avp_f32(65000, 1.5)),
    ("f64", "0000fde8 40000010 c0020000 00000000", "f64", -2.25, lambda: avp_f64(65000, -2.25)),
    (
        "utf8 multi-byte, padded",
        "00000107 4000000d 61c3a93b 62000000",
        "utf8",
        "aé;b",
        lambda: avp_utf8(d.AVP_SESSION_ID, "aé;b"),
    ),
    ("utf8 empty", "00000107 40000008", "utf8", "", lambda: avp_utf8(d.AVP_SESSION_ID, "")),
    (
        "octets",
        "00000108 4000000b 6f2e7400",
        "octets",
        b"o.t",
        lambda: avp_octets(d.AVP_ORIGIN_HOST, b"o.t"),
    ),
    (
        "address IPv4",
        "00000101 4000000e 0001c000 020a0000",
        "address",
        "192.0.2.10",
        lambda: avp_address(d.AVP_HOST_IP_ADDRESS, "192.0.2.10"),
    ),
    (
        "address IPv6",
        "00000101 4000001a 00022001 0db80000 00000000 00000000 00100000",
        "address",
        "2001:db8::10",
        lambda: avp_address(d.AVP_HOST_IP_ADDRESS, "2001:db8::10"),
    ),
    (
        "time era 0",
        "00000037 4000000c e8fe6f80",
        "time",
        1_700_000_000,
        lambda: avp_time(d.AVP_EVENT_TIMESTAMP, 1_700_000_000),
    ),
    (
        "time first second of era 0 (1968-01-20)",
        "00000037 4000000c 80000000",
        "time",
        -61_505_152,
        lambda: avp_time(d.AVP_EVENT_TIMESTAMP, -61_505_152),
    ),
    (
        "time first second of era 1 (2036-02-07)",
        "00000037 4000000c 00000000",
        "time",
        2_085_978_496,
        lambda: avp_time(d.AVP_EVENT_TIMESTAMP, 2_085_978_496),
    ),
    (
        "time last second of era 1 (2104-02-26)",
        "00000037 4000000c 7fffffff",
        "time",
        4_233_462_143,
        lambda: avp_time(d.AVP_EVENT_TIMESTAMP, 4_233_462_143),
    ),
    (
        "vendor u32",
        "00000365 c0000010 000028af 00100000",
        "u32",
        1_048_576,
        lambda: avp_u32(d.AVP_VOLUME_QUOTA_THRESHOLD, 1_048_576, vendor=V3),
    ),
    (
        "vendor u32, M clear",
        "00000367 80000010 000028af 0000012c",
        "u32",
        300,
        lambda: avp_u32(d.AVP_QUOTA_HOLDING_TIME, 300, vendor=V3, mandatory=False),
    ),
    (
        "vendor u64",
        "0000fde8 c0000014 000028af 00000001 00000000",
        "u64",
        1 << 32,
        lambda: avp_u64(65000, 1 << 32, vendor=V3),
    ),
    ("vendor i32", "00000368 c0000010 000028af ffffffff", "i32", -1, lambda: avp_i32(872, -1, vendor=V3)),
    (
        "vendor i64",
        "0000fde8 c0000014 000028af ffffffff fffffffe",
        "i64",
        -2,
        lambda: avp_i64(65000, -2, vendor=V3),
    ),
    (
        "vendor utf8",
        "00000340 c0000015 000028af 7369703a 6140622e 63000000",
        "utf8",
        "sip:a@b.c",
        lambda: avp_utf8(d.AVP_CALLED_PARTY_ADDRESS, "sip:a@b.c", vendor=V3),
    ),
    (
        "vendor address",
        "000004cc c0000012 000028af 00010a2d 00070000",
        "address",
        "10.45.0.7",
        lambda: avp_address(d.AVP_SGSN_ADDRESS, "10.45.0.7", vendor=V3),
    ),
    (
        "vendor f32",
        "0000fde8 c0000010 000028af 3fc00000",
        "f32",
        1.5,
        lambda: avp_f32(65000, 1.5, vendor=V3),
    ),
    (
        "vendor f64",
        "0000fde8 c0000014 000028af c0020000 00000000",
        "f64",
        -2.25,
        lambda: avp_f64(65000, -2.25, vendor=V3),
    ),
]


@pytest.mark.parametrize(
    ("wire", "accessor", "value", "encode"), [c[1:] for c in TYPED], ids=[c[0] for c in TYPED]
)
def test_avp_hex_value_hex(wire: str, accessor: str, value: object, encode: Callable[[], bytes]) -> None:
    data = h(wire)
    avp = one_avp(data)
    assert getattr(avp, accessor)() == value
    assert encode() == data
    assert avp.encoded() == data


@pytest.mark.parametrize("size", range(9))
def test_padding_of_every_payload_length(size: int) -> None:
    payload = bytes(range(1, size + 1))
    wire = avp_octets(d.AVP_ORIGIN_HOST, payload)
    assert len(wire) == 8 + size + (-size % 4)
    assert wire[4:8] == (0x40000000 | (8 + size)).to_bytes(4)  # length excludes the padding
    assert wire[8 + size :] == bytes(-size % 4)
    vendor_wire = avp_octets(d.AVP_3GPP_RAT_TYPE, payload, vendor=V3)
    assert len(vendor_wire) == 12 + size + (-size % 4)
    # two in a row: the second starts after the first one's padding
    avps = decode_message(message_of(wire + vendor_wire + avp_u32(d.AVP_RESULT_CODE, 7))).avps
    assert [(a.code, a.vendor, a.data) for a in avps] == [
        (d.AVP_ORIGIN_HOST, 0, payload),
        (d.AVP_3GPP_RAT_TYPE, V3, payload),
        (d.AVP_RESULT_CODE, 0, (7).to_bytes(4)),
    ]
    assert [a.encoded() for a in avps] == [wire, vendor_wire, avp_u32(d.AVP_RESULT_CODE, 7)]


def test_grouped_nested_hex_value_hex() -> None:
    """MSCC { USU { CC-Time 60, 3GPP Reporting-Reason FINAL }, Rating-Group 10, RSU {} }."""
    wire = h(
        "000001c8 40000040"  # MSCC, 64
        "  000001be 40000024"  # USU, 36
        "    000001a4 4000000c 0000003c"  # CC-Time 60
        "    00000368 c0000010 000028af 00000002"  # Reporting-Reason FINAL (vendor 10415)
        "  000001b0 4000000c 0000000a"  # Rating-Group 10
        "  000001b5 40000008"  # RSU, empty
    )
    ours = avp_grouped(
        d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
        avp_grouped(
            d.AVP_USED_SERVICE_UNIT,
            avp_u32(d.AVP_CC_TIME, 60),
            avp_i32(d.AVP_REPORTING_REASON, d.REPORTING_REASON_FINAL, vendor=V3),
        ),
        avp_u32(d.AVP_RATING_GROUP, 10),
        avp_grouped(d.AVP_REQUESTED_SERVICE_UNIT),
    )
    assert ours == wire
    mscc = one_avp(wire)
    children = mscc.grouped()
    assert [(c.code, c.vendor) for c in children] == [
        (d.AVP_USED_SERVICE_UNIT, 0),
        (d.AVP_RATING_GROUP, 0),
        (d.AVP_REQUESTED_SERVICE_UNIT, 0),
    ]
    usu = find(children, d.AVP_USED_SERVICE_UNIT)
    assert usu is not None
    assert find(usu.grouped(), d.AVP_CC_TIME).u32() == 60  # type: ignore[union-attr]
    reason = find(usu.grouped(), d.AVP_REPORTING_REASON, V3)
    assert reason is not None and reason.i32() == d.REPORTING_REASON_FINAL and reason.flags == 0xC0
    assert find(usu.grouped(), d.AVP_REPORTING_REASON) is None  # vendor 0 is another AVP
    assert find(children, d.AVP_REQUESTED_SERVICE_UNIT).grouped() == ()  # type: ignore[union-attr]
    assert mscc.encoded() == wire
    assert b"".join(c.encoded() for c in children) == mscc.data


def test_vendor_grouped_in_vendor_grouped() -> None:
    """Service-Information (3GPP) { PS-Information (3GPP) { 3GPP-Charging-Id, Called-Station-Id (base) } }."""
    wire = h(
        "00000369 c0000030 000028af"  # Service-Information, 48
        "  0000036a c0000024 000028af"  # PS-Information, 36
        "    00000002 c0000010 000028af 00003039"  # 3GPP-Charging-Id 12345
        "    0000001e 40000008"  # Called-Station-Id ""
    )
    ours = avp_grouped(
        d.AVP_SERVICE_INFORMATION,
        avp_grouped(
            d.AVP_PS_INFORMATION,
            avp_u32(d.AVP_3GPP_CHARGING_ID, 12345, vendor=V3),
            avp_utf8(d.AVP_CALLED_STATION_ID, ""),
            vendor=V3,
        ),
        vendor=V3,
    )
    assert ours == wire
    (ps,) = one_avp(wire).grouped()
    assert (ps.code, ps.vendor, ps.mandatory) == (d.AVP_PS_INFORMATION, V3, True)
    charging_id, station = ps.grouped()
    assert (charging_id.u32(), station.utf8()) == (12345, "")


@pytest.mark.parametrize(
    ("flags", "is_request", "proxiable", "error", "retransmission"),
    [
        (0x00, False, False, False, False),
        (FLAG_REQUEST, True, False, False, False),
        (FLAG_REQUEST | FLAG_PROXIABLE, True, True, False, False),
        (FLAG_REQUEST | FLAG_PROXIABLE | FLAG_RETRANSMIT, True, True, False, True),
        (FLAG_PROXIABLE | FLAG_ERROR, False, True, True, False),
        (FLAG_ERROR, False, False, True, False),
    ],
)
def test_header_hex_value_hex(
    flags: int, is_request: bool, proxiable: bool, error: bool, retransmission: bool
) -> None:
    wire = h(f"01000020 {flags:02x}000110 00000004 01020304 0a0b0c0d 0000010c 4000000c 000007d1")
    message = decode_message(wire)
    assert (message.flags, message.code, message.application_id) == (flags, 272, 4)
    assert (message.hop_by_hop, message.end_to_end) == (HBH, E2E)
    assert (message.is_request, message.is_proxiable, message.is_error, message.is_retransmission) == (
        is_request,
        proxiable,
        error,
        retransmission,
    )
    assert message.header == (flags, 272, 4, HBH, E2E)
    assert encode_message(flags, 272, 4, HBH, E2E, avp_u32(d.AVP_RESULT_CODE, 2001)) == wire


def test_header_only_message_and_big_fields() -> None:
    wire = h("01000014 80ffffff ffffffff ffffffff ffffffff")
    assert encode_message(FLAG_REQUEST, 0xFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, b"") == wire
    message = decode_message(wire)
    assert message == Message(0x80, 0xFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, ())


def test_p_bit_is_accepted_and_ignored() -> None:
    wire = h("0000010c 6000000c 000007d1")  # M + P
    avp = one_avp(wire)
    assert avp.flags == AVP_MANDATORY | AVP_PROTECTED and avp.mandatory and avp.u32() == 2001
    assert avp.encoded() == wire


def test_find_and_find_all_match_code_and_vendor() -> None:
    avps = (
        avp_u32(d.AVP_RESULT_CODE, 1)
        + avp_u32(d.AVP_RESULT_CODE, 2, vendor=V3)
        + avp_u32(d.AVP_RESULT_CODE, 3)
        + avp_utf8(d.AVP_SESSION_ID, "s")
    )
    message = decode_message(message_of(avps))
    assert message.find(d.AVP_RESULT_CODE).u32() == 1  # type: ignore[union-attr]
    assert message.find(d.AVP_RESULT_CODE, V3).u32() == 2  # type: ignore[union-attr]
    assert [a.u32() for a in message.find_all(d.AVP_RESULT_CODE)] == [1, 3]
    assert message.find(d.AVP_ORIGIN_HOST) is None and message.find_all(d.AVP_ORIGIN_HOST) == []
    assert find(message.avps, d.AVP_SESSION_ID) == message.find(d.AVP_SESSION_ID)
    assert find_all(message.avps, d.AVP_RESULT_CODE, V3) == message.find_all(d.AVP_RESULT_CODE, V3)


def test_values_are_immutable_and_hashable() -> None:
    avp = Avp(d.AVP_RESULT_CODE, AVP_MANDATORY, 0, b"\0\0\x07\xd1")
    with pytest.raises(AttributeError):
        avp.code = 1  # type: ignore[misc]
    message = decode_message(message_of(avp.encoded()))
    with pytest.raises(AttributeError):
        message.avps = ()  # type: ignore[misc]
    assert message.avps == (avp,) and hash(message) == hash(decode_message(message_of(avp.encoded())))
    assert not hasattr(avp, "__dict__") and not hasattr(message, "__dict__")


def test_encoded_of_a_hand_made_avp_sets_the_v_bit_for_a_vendor() -> None:
    assert Avp(869, AVP_MANDATORY, V3, b"\0\0\0\1").encoded() == avp_u32(869, 1, vendor=V3)
    # a received V bit with Vendor-ID 0 is kept as it was on the wire
    wire = h("00000001 c000000c 00000000")
    avp = one_avp(wire)
    assert (avp.vendor, avp.flags, avp.data, avp.encoded()) == (0, 0xC0, b"", wire)


# --- what the accessors refuse


@pytest.mark.parametrize(
    ("data", "accessor", "result_code"),
    [
        (b"\0\0\0", "u32", 5014),
        (b"\0\0\0\0\0", "u32", 5014),
        (b"\0\0\0\0", "u64", 5014),
        (b"", "i32", 5014),
        (b"\0" * 9, "i64", 5014),
        (b"\0\0", "f32", 5014),
        (b"\0" * 4, "f64", 5014),
        (b"\0\0\0", "time", 5014),
        (b"\xff\xfe", "utf8", 5004),
        (b"a\xc3", "utf8", 5004),
        (b"\0", "address", 5014),
        (b"\0\x01\x0a\0\0", "address", 5014),
        (b"\0\x02" + bytes(4), "address", 5014),
        (b"\0\x08" + b"441234", "address", 5004),
        (b"\0\0", "grouped", 5014),
        (h("00000001 40000004"), "grouped", 5014),
        (h("00000001 4800000c 00000000"), "grouped", 3009),
    ],
)
def test_accessor_errors_carry_result_code_and_the_avp(data: bytes, accessor: str, result_code: int) -> None:
    avp = Avp(999, AVP_MANDATORY, 0, data)
    with pytest.raises(AvpError) as caught:
        getattr(avp, accessor)()
    error = caught.value
    assert isinstance(error, DecodeError)
    assert error.result_code == result_code and error.avp is avp and error.header is None
    if accessor != "grouped":
        assert error.failed_avp == avp.encoded()


def test_malformed_child_of_grouped_gives_the_grouped_wrapping_only_the_offender() -> None:
    """RFC 6733 §7.5: the Failed-AVP of an error inside a Grouped AVP may be the Grouped AVP holding only
    the offending child; a child whose length is unusable is rebuilt with a zero payload of its type."""
    good = avp_u32(d.AVP_RATING_GROUP, 10)
    bad = h("000001b0 40000010 0000000a")  # Rating-Group claiming 16 bytes, 12 there
    mscc = one_avp(avp_raw(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, good + bad))
    with pytest.raises(AvpError) as caught:
        mscc.grouped()
    assert caught.value.result_code == 5014
    assert caught.value.avp == mscc
    assert caught.value.failed_avp == avp_grouped(
        d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, h("000001b0 4000000c 00000000")
    )
    # reserved bits on a child: 3009, the child exactly as received
    flagged = h("000001b0 4400000c 0000000a")
    mscc = one_avp(avp_raw(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, good + flagged))
    with pytest.raises(AvpError) as caught:
        mscc.grouped()
    assert caught.value.result_code == 3009
    assert caught.value.failed_avp == avp_grouped(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, flagged)


# --- what decode_message refuses

HEADER = (FLAG_REQUEST, 272, 4, HBH, E2E)
MALFORMED: list[tuple[str, bytes, int, tuple[int, int, int, int, int] | None, bytes | None]] = [
    # (case, message, Result-Code, header carried, Failed-AVP)
    ("shorter than a header", h("01000014 80000110 00000004"), 5015, None, None),
    ("empty", b"", 5015, None, None),
    ("version 2", h("02000014 80000110 00000004 01020304 0a0b0c0d"), 5011, None, None),
    ("length above the data", raw_message(b"", length=24), 5015, HEADER, None),
    ("length below the data", raw_message(avp_u32(268, 1), length=20), 5015, HEADER, None),
    ("length not a multiple of 4", raw_message(b"\0\0", length=22), 5015, HEADER, None),
    ("reserved command flag bit", raw_message(b"", flags=0x81), 3008, (0x81, 272, 4, HBH, E2E), None),
    ("reserved command flag bits", raw_message(b"", flags=0x8F), 3008, (0x8F, 272, 4, HBH, E2E), None),
    ("E bit on a request", raw_message(b"", flags=0xA0), 3008, (0xA0, 272, 4, HBH, E2E), None),
    (
        "AVP length below 8",
        raw_message(h("00000108 40000004")),
        5014,
        HEADER,
        h("00000108 40000008"),
    ),
    (
        "AVP length 0",
        raw_message(avp_u32(268, 1) + h("00000108 40000000")),
        5014,
        HEADER,
        h("00000108 40000008"),
    ),
    (
        "vendor AVP length below 12",
        raw_message(h("00000365 c000000a 000028af 00000000")),
        5014,
        HEADER,
        h("00000365 c0000010 000028af 00000000"),  # Unsigned32: rebuilt with 4 zero bytes
    ),
    (
        "AVP running past the end",
        raw_message(h("0000010c 40000020 000007d1")),
        5014,
        HEADER,
        h("0000010c 4000000c 00000000"),
    ),
    (
        "vendor AVP running past the end",
        raw_message(h("000001a5 c0000018 000028af 00000000")),
        5014,
        HEADER,
        h("000001a5 c000000c 000028af"),  # unknown to the dictionary with this vendor: empty payload
    ),
    (
        "4 bytes left after the last AVP",
        raw_message(avp_u32(268, 1) + h("0000010c")),
        5014,
        HEADER,
        h("0000010c 0000000c 00000000"),
    ),
    (
        "reserved AVP flag bit",
        raw_message(h("0000010c 4100000c 000007d1")),
        3009,
        HEADER,
        h("0000010c 4100000c 000007d1"),
    ),
    (
        "reserved AVP flag bits after good AVPs, padded",
        raw_message(avp_u32(268, 1) + h("00000108 5f000009 61000000")),
        3009,
        HEADER,
        h("00000108 5f000009 61000000"),
    ),
]


@pytest.mark.parametrize(
    ("data", "result_code", "header", "failed_avp"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_message_carries_result_code_header_and_failed_avp(
    data: bytes, result_code: int, header: tuple[int, int, int, int, int] | None, failed_avp: bytes | None
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_message(data)
    error = caught.value
    assert type(error) is DecodeError
    assert (error.result_code, error.header, error.failed_avp) == (result_code, header, failed_avp)
    if result_code == 5014:  # the rebuilt Failed-AVP is itself a well-formed AVP
        assert failed_avp is not None and one_avp(failed_avp).encoded() == failed_avp


def test_decode_accepts_bytes_like() -> None:
    wire = message_of(avp_u32(d.AVP_RESULT_CODE, 2001))
    for variant in (bytearray(wire), memoryview(wire)):
        message = decode_message(variant)
        assert type(message.avps[0].data) is bytes and message == decode_message(wire)


# --- what the encoders refuse (our mistakes: ValueError)


@pytest.mark.parametrize(
    "call",
    [
        lambda: avp_u32(1, -1),
        lambda: avp_u32(1, 1 << 32),
        lambda: avp_u32(1, 1, vendor=1 << 32),
        lambda: avp_u32(1 << 32, 1),
        lambda: avp_u64(1, 1 << 64),
        lambda: avp_u64(1, -1, vendor=V3),
        lambda: avp_i32(1, 1 << 31),
        lambda: avp_i64(1, -(1 << 63) - 1),
        lambda: avp_f32(1, 1e39),
        lambda: avp_u32(1, 1.0),  # type: ignore[arg-type]
        lambda: avp_address(1, "pgw.example.net"),
        lambda: avp_address(1, "192.0.2.300"),
        lambda: avp_time(1, -61_505_153),
        lambda: avp_time(1, 4_233_462_144),
        lambda: avp_raw(1, bytes(0xFFFFFF - 7)),
        lambda: avp_utf8(1, "\udc80"),
        lambda: encode_message(0x08, 272, 4, 1, 1, b""),
        lambda: encode_message(FLAG_REQUEST | FLAG_ERROR, 272, 4, 1, 1, b""),
        lambda: encode_message(0x100, 272, 4, 1, 1, b""),
        lambda: encode_message(FLAG_REQUEST, 1 << 24, 4, 1, 1, b""),
        lambda: encode_message(FLAG_REQUEST, 272, 1 << 32, 1, 1, b""),
        lambda: encode_message(FLAG_REQUEST, 272, 4, -1, 1, b""),
        lambda: encode_message(FLAG_REQUEST, 272, 4, 1, 1, b"\0\0"),
    ],
)
def test_encoder_misuse_raises_value_error(call: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError):
        call()


def test_largest_avp_and_message_encode() -> None:
    assert len(avp_raw(1, bytes(0xFFFFFF - 8))) == 0xFFFFFF + 1  # length field 2^24 - 1, then 1 byte padding
    wire = encode_message(FLAG_REQUEST, 272, 4, 1, 1, bytes(0xFFFFFF - 23))
    assert int.from_bytes(wire[1:4]) == 0xFFFFFF - 3


# --- framing

STREAM_MESSAGES = [
    message_of(b""),
    message_of(avp_utf8(d.AVP_SESSION_ID, "x" * 37)),
    message_of(
        avp_grouped(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, avp_u32(d.AVP_RATING_GROUP, 1)), flags=0x40
    ),
]
STREAM = b"".join(STREAM_MESSAGES)


def test_framer_byte_by_byte() -> None:
    framer = Framer()
    out: list[bytes] = []
    for i in range(len(STREAM)):
        out += framer.feed(STREAM[i : i + 1])
    assert out == STREAM_MESSAGES and framer.buffered == 0


def test_framer_many_messages_per_read_and_split_inside_the_header() -> None:
    framer = Framer()
    assert framer.feed(STREAM + STREAM[:2]) == STREAM_MESSAGES
    assert framer.buffered == 2
    assert framer.feed(STREAM[2:19]) == []
    assert framer.buffered == 19
    assert framer.feed(STREAM[19:] + STREAM) == STREAM_MESSAGES + STREAM_MESSAGES
    assert framer.feed(b"") == [] and framer.buffered == 0
    assert all(type(m) is bytes for m in framer.feed(bytearray(STREAM)))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00", "version 0"),
        (b"\x02\x00\x00\x14", "version 2"),
        (h("01000013"), "length 19"),
        (h("01000000"), "length 0"),
        (h("01000104"), "length 260"),
        (STREAM_MESSAGES[0] + b"\x45", "version 69"),  # "E" of a stray text protocol after a good message
    ],
)
def test_framer_refuses_a_stream_it_cannot_trust(data: bytes, reason: str) -> None:
    framer = Framer(max_length=256)
    with pytest.raises(FramingError, match=reason.split()[0]):
        framer.feed(data)
    with pytest.raises(FramingError):  # and stays refused: nothing after that point can be framed
        framer.feed(STREAM)


def test_framer_passes_on_what_decode_answers() -> None:
    """Framing judges only version and length bounds; a misaligned length reaches decode_message (5015)."""
    odd = raw_message(b"\0\0", length=22)
    (message,) = Framer().feed(odd)
    with pytest.raises(DecodeError) as caught:
        decode_message(message)
    assert caught.value.result_code == 5015 and caught.value.header is not None


def test_framer_limits() -> None:
    with pytest.raises(ValueError):
        Framer(max_length=19)
    assert Framer(max_length=20).feed(STREAM_MESSAGES[0]) == [STREAM_MESSAGES[0]]


# --- purity

PURE = [REPO / "occ" / "diameter" / "codec.py", REPO / "occ" / "diameter" / "dictionary.py"]
IO_LIBRARIES = {
    "asyncio",
    "redis",
    "asyncpg",
    "uvloop",
    "hiredis",
    "socket",
    "selectors",
    "subprocess",
    "ssl",
}
FORBIDDEN = IO_LIBRARIES | {"subprocess", "time", "datetime"}  # the clock is passed in, never read


def test_codec_imports_no_io_library() -> None:
    offenders = []
    for path in PURE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_the_codec_loads_no_io_library() -> None:
    code = (
        "import sys, occ.diameter.codec; "
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {IO_LIBRARIES!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
