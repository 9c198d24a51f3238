"""Properties of the codec, with hypothesis: decoding is total (any bytes decode or raise DecodeError, and so
do the accessors on whatever decoded); what decodes re-encodes to itself; framing is independent of TCP
segmentation; random AVP trees encode byte-identically to python-diameter and decode back in both codecs.

Inputs that once broke a property are kept in vectors/fuzz_regressions.txt and replayed first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from diameter.message import Message as PdMessage
from diameter.message import MessageHeader as PdHeader
from diameter.message.avp import avp as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from occ.diameter import dictionary as d
from occ.diameter.codec import (
    AVP_MANDATORY,
    AVP_PROTECTED,
    AVP_VENDOR,
    FLAG_REQUEST,
    Avp,
    DecodeError,
    Framer,
    FramingError,
    Message,
    avp_grouped,
    avp_raw,
    decode_message,
    encode_message,
)
from tests.diameter.test_codec_tshark import all_messages
from tests.diameter.test_codec_vectors import ALL, load_vectors

# OCC_FUZZ_EXAMPLES=20000 for a long hunt; the default keeps the suite quick
EXAMPLES = int(os.environ.get("OCC_FUZZ_EXAMPLES", "400"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REGRESSIONS = load_vectors(Path(__file__).resolve().parent / "vectors" / "fuzz_regressions.txt")
VALID = [data for _, data in ALL.values()] + all_messages()
ACCESSORS = ("u32", "u64", "i32", "i64", "f32", "f64", "utf8", "octets", "address", "time")


def exercise(avps: tuple[Avp, ...], depth: int = 0) -> None:
    """Every accessor on every AVP, down every Grouped branch: each returns or raises DecodeError."""
    for avp in avps:
        assert decode_message(encode_message(0, 1, 0, 0, 0, avp.encoded())).avps == (avp,)
        for accessor in ACCESSORS:
            try:
                getattr(avp, accessor)()
            except DecodeError as error:
                assert error.result_code in (5004, 5014) and error.failed_avp == avp.encoded()
        try:
            children = avp.grouped()
        except DecodeError as error:
            assert error.result_code in (3009, 5014) and error.failed_avp is not None
            # the Failed-AVP is this AVP's header around the offending child, and is itself readable
            assert error.failed_avp[:4] == avp.code.to_bytes(4)
            assert decode_message(encode_message(0, 1, 0, 0, 0, error.failed_avp)).avps[0].code == avp.code
        else:
            if depth < 8:
                exercise(children, depth + 1)


def decode_totally(data: bytes) -> Message | None:
    """decode_message raises nothing but DecodeError; what decodes re-encodes to an equal message."""
    try:
        message = decode_message(data)
    except DecodeError as error:
        assert 3000 <= error.result_code < 6000
        if error.result_code in (3009, 5014):
            assert error.failed_avp is not None and error.header is not None
        return None
    again = encode_message(
        message.flags,
        message.code,
        message.application_id,
        message.hop_by_hop,
        message.end_to_end,
        b"".join(avp.encoded() for avp in message.avps),
    )
    assert decode_message(again) == message
    exercise(message.avps)
    return message


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_kept_regressions(name: str) -> None:
    decode_totally(REGRESSIONS[name][1])


@FAST
@given(st.binary(max_size=600))
def test_decode_of_any_bytes_is_total(data: bytes) -> None:
    decode_totally(data)


@st.composite
def framed_garbage(draw: st.DrawFn) -> bytes:
    """A header that passes the framing checks, then random AVP bytes: reaches the AVP walk every time."""
    body = draw(st.binary(max_size=400))
    body += bytes(-len(body) % 4) if draw(st.booleans()) else b""
    flags = draw(st.sampled_from([0x00, 0x40, 0x80, 0xC0, 0x90, 0x20, 0xA0, 0x0F]))
    header = bytes([1]) + (20 + len(body)).to_bytes(3) + bytes([flags]) + (272).to_bytes(3) + bytes(12)
    return header + body


@FAST
@given(framed_garbage())
def test_decode_of_garbage_after_a_good_header_is_total(data: bytes) -> None:
    decode_totally(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "length"]))
        at = draw(st.integers(0, len(data) - 1)) if data else 0
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "length" and len(data) >= 4:
            # make the header length agree with the new size, so the AVP walk sees the damage
            data[1:4] = len(data).to_bytes(3)
    return bytes(data)


@FAST
@given(mutated())
def test_decode_of_mutated_valid_messages_is_total(data: bytes) -> None:
    decode_totally(data)


@pytest.mark.parametrize("index", range(len(VALID)))
def test_every_valid_message_round_trips(index: int) -> None:
    assert decode_totally(VALID[index]) is not None


# --- framing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(VALID), min_size=1, max_size=6), st.data())
def test_framer_yields_the_same_messages_for_any_segmentation(
    messages: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    framer = Framer()
    out: list[bytes] = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += framer.feed(stream[start:stop])
    assert out == messages and framer.buffered == 0


@FAST
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_framer_over_any_bytes_raises_only_framing_error(chunks: list[bytes]) -> None:
    framer = Framer(max_length=256)
    try:
        for chunk in chunks:
            for message in framer.feed(chunk):
                assert message[0] == 1 and int.from_bytes(message[1:4]) == len(message)
                assert 20 <= len(message) <= 256
    except FramingError:
        pass


# --- random AVP trees against python-diameter

# codes python-diameter does not know (so it keeps them raw), and Grouped AVPs it does know
RAW_CODES = [(60001, 0), (60002, 0), (60003, d.VENDOR_3GPP), (60004, 28458)]
GROUPED_CODES = [
    (d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, 0),
    (d.AVP_USED_SERVICE_UNIT, 0),
    (d.AVP_SERVICE_INFORMATION, d.VENDOR_3GPP),
    (d.AVP_PS_INFORMATION, d.VENDOR_3GPP),
]
Spec = tuple[int, int, int, "bytes | list[Spec]"]  # code, vendor, M/P flags, payload or children


def specs() -> st.SearchStrategy[Spec]:
    flags = st.sampled_from([0, AVP_MANDATORY, AVP_MANDATORY | AVP_PROTECTED])
    leaf = st.tuples(st.sampled_from(RAW_CODES), flags, st.binary(max_size=23)).map(
        lambda t: (t[0][0], t[0][1], t[1], t[2])
    )
    return st.recursive(
        leaf,
        lambda children: st.tuples(st.sampled_from(GROUPED_CODES), flags, st.lists(children, max_size=4)).map(
            lambda t: (t[0][0], t[0][1], t[1], t[2])
        ),
        max_leaves=12,
    )


def ours(spec: Spec) -> bytes:
    code, vendor, flags, body = spec
    mandatory = bool(flags & AVP_MANDATORY)
    if isinstance(body, list):
        wire = avp_grouped(code, *(ours(child) for child in body), vendor=vendor, mandatory=mandatory)
    else:
        wire = avp_raw(code, body, vendor=vendor, mandatory=mandatory)
    if flags & AVP_PROTECTED:  # the P bit has no encoder argument (RFC 6733 deprecates it): set it by hand
        wire = wire[:4] + bytes([wire[4] | AVP_PROTECTED]) + wire[5:]
    return wire


def theirs(spec: Spec) -> pd.Avp:
    code, vendor, flags, body = spec
    wire_flags = flags | (AVP_VENDOR if vendor else 0)
    if isinstance(body, list):
        avp = pd.AvpGrouped(code, vendor, flags=wire_flags)
        avp.value = [theirs(child) for child in body]
        return avp
    return pd.Avp(code, vendor, body, wire_flags)


def as_tree(avps: tuple[Avp, ...] | list[pd.Avp]) -> list[Spec]:
    tree: list[Spec] = []
    for a in avps:
        if isinstance(a, Avp):
            grouped = (a.code, a.vendor) in GROUPED_CODES
            tree.append(
                (a.code, a.vendor, a.flags & ~AVP_VENDOR, as_tree(a.grouped()) if grouped else a.data)
            )
        else:
            body = as_tree(a.value) if isinstance(a, pd.AvpGrouped) else a.payload
            tree.append((a.code, a.vendor_id, a.flags & ~AVP_VENDOR, body))
    return tree


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(specs(), min_size=1, max_size=5), st.integers(0, 0xFFFFFFFF))
@example([(60003, d.VENDOR_3GPP, AVP_MANDATORY, b"\x01\x02\x03")], 1)
def test_random_trees_match_python_diameter_both_ways(tree: list[Spec], hop: int) -> None:
    mine = encode_message(FLAG_REQUEST, 272, 4, hop, hop, b"".join(ours(spec) for spec in tree))
    header = PdHeader(command_flags=FLAG_REQUEST, command_code=272, application_id=4)
    header.hop_by_hop_identifier = header.end_to_end_identifier = hop
    their_message = PdMessage(header, [theirs(spec) for spec in tree])
    assert mine == their_message.as_bytes()  # same bytes from both encoders
    assert as_tree(decode_message(mine).avps) == tree  # ours reads it back
    assert as_tree(PdMessage.from_bytes(mine, plain_msg=True).avps) == tree  # python-diameter reads ours
