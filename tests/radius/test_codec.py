"""The project's RADIUS codec against pyrad, an independent implementation: what one encodes and signs the
other decodes and verifies, for hypothesis-generated packets; and malformed datagrams are refused cleanly."""

from __future__ import annotations

import hashlib
import hmac
import os

import pyrad.packet
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrad.dictionary import Dictionary as PyradDictionary

from aaa import codec
from aaa.attributes import resolve
from aaa.dictionary import load

DICTIONARY = "config/dictionaries/dictionary"
SECRET = b"testing123"
OURS = load(DICTIONARY)
ATTRS = resolve(OURS)
FRAMING = ATTRS.framing
PYRAD = PyradDictionary(DICTIONARY)

names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)
# (attribute, value) pairs pyrad encodes from Python values: strings, integers, vendor strings
pairs = st.lists(
    st.one_of(
        st.tuples(st.just("User-Name"), names),
        st.tuples(st.just("NAS-Identifier"), names),
        st.tuples(st.just("Acct-Session-Id"), names),
        st.tuples(st.just("NAS-Port"), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("Acct-Input-Octets"), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("Acct-Input-Gigawords"), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("Mikrotik-Rate-Limit"), names),
        st.tuples(st.just("Cisco-AVPair"), names),
    ),
    max_size=12,
    unique_by=lambda p: p[0],
)


def pyrad_acct(values: list[tuple[str, object]], *, with_ma: bool) -> bytes:
    packet = pyrad.packet.AcctPacket(dict=PYRAD, secret=SECRET, id=7)
    packet["Acct-Status-Type"] = "Interim-Update"
    for name, value in values:
        packet[name] = value
    if with_ma:
        packet.add_message_authenticator()
    raw: bytes = packet.RequestPacket()
    return raw


def expected_value(name: str, value: object) -> bytes:
    return value.to_bytes(4) if isinstance(value, int) else str(value).encode()


@settings(max_examples=200, deadline=None)
@given(values=pairs, with_ma=st.booleans())
def test_accounting_requests_pyrad_signs_decode_and_verify_here(
    values: list[tuple[str, object]], with_ma: bool
) -> None:
    raw = pyrad_acct(values, with_ma=with_ma)
    packet = codec.decode(raw, FRAMING)
    assert packet.code == codec.ACCOUNTING_REQUEST and packet.identifier == 7
    for name, value in values:
        assert packet.get(OURS.key(name)) == expected_value(name, value)
    assert codec.request_digest_ok(raw, SECRET)
    assert not codec.request_digest_ok(raw, b"other-secret")
    assert codec.message_authenticator_ok(raw, SECRET, FRAMING) is (True if with_ma else None)


@settings(max_examples=100, deadline=None)
@given(values=pairs, reply_values=pairs)
def test_replies_signed_here_verify_in_pyrad(
    values: list[tuple[str, object]], reply_values: list[tuple[str, object]]
) -> None:
    request = pyrad.packet.AuthPacket(dict=PYRAD, secret=SECRET, id=9)
    request["User-Name"] = "alice"
    request["Proxy-State"] = b"state-1"
    for name, value in values:
        if name != "User-Name":
            request[name] = value
    request.add_message_authenticator()
    raw = request.RequestPacket()
    ours = codec.decode(raw, FRAMING)
    assert codec.message_authenticator_ok(raw, SECRET, FRAMING) is True
    attributes = [(OURS.key(n), expected_value(n, v)) for n, v in reply_values]
    reply = codec.sign_response(codec.ACCESS_ACCEPT, ours, attributes, SECRET, FRAMING)
    decoded = request.CreateReply(packet=reply)
    assert request.VerifyReply(decoded, reply, enforce_ma=True)
    assert decoded.code == codec.ACCESS_ACCEPT
    assert decoded["Proxy-State"] == [b"state-1"]  # echoed
    assert reply[codec.HEADER] == FRAMING.message_authenticator  # first on the wire (BlastRADIUS)
    for name, value in reply_values:
        got = decoded[name][0]
        assert (got.encode() if isinstance(got, str) else got) == (
            value if isinstance(value, int) else str(value).encode()
        )


def test_disconnect_requests_signed_here_verify_in_pyrad() -> None:
    raw = codec.sign_request(
        codec.DISCONNECT_REQUEST,
        3,
        [(ATTRS.acct_session_id, b"s1"), (ATTRS.user_name, b"alice")],
        SECRET,
        FRAMING,
    )
    packet = pyrad.packet.CoAPacket(packet=raw, dict=PYRAD, secret=SECRET)
    assert packet.VerifyCoARequest()
    assert packet.verify_message_authenticator()
    assert packet["Acct-Session-Id"] == ["s1"]
    # and pyrad's ACK to it verifies here
    ack = packet.CreateReply()
    ack.code = codec.DISCONNECT_ACK
    ack.add_message_authenticator()
    raw_ack = ack.ReplyPacket()
    assert codec.response_ok(raw_ack, raw[4:20], SECRET)
    assert codec.message_authenticator_ok(raw_ack, SECRET, FRAMING, raw[4:20]) is True


@settings(max_examples=200, deadline=None)
@given(password=st.binary(min_size=1, max_size=128).filter(lambda p: not p.endswith(b"\x00")))
def test_user_password_hiding_matches_pyrad(password: bytes) -> None:
    authenticator = os.urandom(16)
    request = pyrad.packet.AuthPacket(dict=PYRAD, secret=SECRET, authenticator=authenticator)
    hidden = codec.hide_password(password, SECRET, authenticator)
    assert hidden == request.PwCrypt(password)
    assert codec.reveal_password(hidden, SECRET, authenticator) == password


@settings(max_examples=300, deadline=None)
@given(secret=st.binary(min_size=1, max_size=130), data=st.binary(max_size=300))
def test_hmac_md5_from_precomputed_pads_equals_the_standard_library(secret: bytes, data: bytes) -> None:
    # secrets longer than MD5's 64-octet block are hashed first (RFC 2104 §2): both sides of that edge
    assert codec.hmac_md5(secret, data) == hmac.digest(secret, data, "md5")


def test_chap_matches_pyrad() -> None:
    challenge = os.urandom(16)
    request = pyrad.packet.AuthPacket(dict=PYRAD, secret=SECRET, authenticator=challenge)
    chap = b"\x07" + hashlib.md5(b"\x07" + b"alice-secret" + challenge).digest()
    request["CHAP-Password"] = chap
    assert request.VerifyChapPasswd(b"alice-secret")
    assert codec.chap_ok(chap, challenge, b"alice-secret")
    assert not codec.chap_ok(chap, challenge, b"alice-secreT")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x02\x00\x13" + bytes(15),  # shorter than a header
        b"\x01\x02\x00\x10" + bytes(16),  # Length below 20
        b"\x01\x02\x10\x01" + bytes(16),  # Length above 4096
        b"\x01\x02\x00\x20" + bytes(16),  # Length beyond the datagram
        b"\x01\x02\x00\x17" + bytes(16) + b"\x01\x05\x61",  # attribute beyond the packet
        b"\x01\x02\x00\x16" + bytes(16) + b"\x01\x01",  # attribute length below 2
        b"\x01\x02\x00\x15" + bytes(16) + b"\x01",  # attribute header cut
    ],
)
def test_malformed_datagrams_are_refused(data: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode(data, FRAMING)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200))
def test_any_datagram_decodes_or_is_refused_with_decode_error(data: bytes) -> None:
    try:
        packet = codec.decode(data, FRAMING)
    except codec.DecodeError:
        return
    for key, value in packet.attributes:
        assert key >= 0 and isinstance(value, bytes)


def test_a_vendor_specific_in_another_format_is_kept_whole() -> None:
    odd = bytes((26, 11)) + (14988).to_bytes(4) + b"\x08\x09abc"  # sub-length beyond the wrapper
    raw = codec.encode(codec.ACCOUNTING_REQUEST, 1, bytes(16), odd)
    assert codec.decode(raw, FRAMING).attributes == ((FRAMING.vendor_specific, odd[2:]),)
