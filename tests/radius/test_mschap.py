"""aaa.mschap: RFC 2759 §9.2 and RFC 3079 §3.5 vectors, verify(), the RFC 2548 MS-MPPE key encoding, and
cross-checks against independent implementations (libpass's MD4/DES, pyrad's salt decryption)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aaa import mschap

try:  # independent MD4 and DES for the cross-check (test-only; pip install libpass)
    from passlib.crypto import _md4 as libpass_md4  # type: ignore[import-untyped]
    from passlib.crypto import des as libpass_des
except ImportError:  # pragma: no cover
    libpass_md4 = libpass_des = None

# RFC 2759 §9.2
USER = "User"
PASSWORD = "clientPass"
AUTH_CHALLENGE = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = bytes.fromhex("21402324255E262A28295F2B3A337C7E")
CHALLENGE = bytes.fromhex("D02E4386BCE91226")
PASSWORD_HASH = bytes.fromhex("44EBBA8D5312B8D611474411F56989AE")
NT_RESPONSE = bytes.fromhex("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
PASSWORD_HASH_HASH = bytes.fromhex("41C00C584BD2D91C4017A2A12FA59F3F")
AUTHENTICATOR_RESPONSE = "S=407A5589115FD0D6209F510FE9C04566932CDA56"

# RFC 3079 §3.5 (same user, password and challenges). The RFC derives these on the server side,
# GetAsymmetricStartKey(MasterKey, ..., IsSend=TRUE, IsServer=TRUE): Magic3, the server's send key.
MASTER_KEY = bytes.fromhex("FDECE3717A8C838CB388E527AE3CDD31")
SEND_START_KEY_128 = bytes.fromhex("8B7CDC149B993A1BA118CB153F56DCCB")  # §3.5.3
SEND_START_KEY_40 = bytes.fromhex("8B7CDC149B993A1B")  # §3.5.1 (8-octet start key)

SECRET = b"testing123"
REQUEST_AUTHENTICATOR = bytes(range(16))


def ms_chap2_response(
    ident: int = 0x2A, peer_challenge: bytes = PEER_CHALLENGE, nt: bytes = NT_RESPONSE
) -> bytes:
    """MS-CHAP2-Response value: Ident, Flags, Peer-Challenge, Reserved, NT-Response."""
    return bytes([ident, 0]) + peer_challenge + bytes(8) + nt


# --- RFC 2759 §9.2 ------------------------------------------------------------------------------------------


def test_rfc2759_nt_password_hash() -> None:
    assert mschap.nt_password_hash(PASSWORD) == PASSWORD_HASH


def test_rfc2759_hash_nt_password_hash() -> None:
    assert mschap.hash_nt_password_hash(PASSWORD_HASH) == PASSWORD_HASH_HASH


def test_rfc2759_challenge_hash() -> None:
    assert mschap.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, USER) == CHALLENGE
    assert mschap.challenge_hash(PEER_CHALLENGE, AUTH_CHALLENGE, USER.encode()) == CHALLENGE


def test_rfc2759_challenge_response() -> None:
    assert mschap.challenge_response(CHALLENGE, PASSWORD_HASH) == NT_RESPONSE


def test_rfc2759_generate_nt_response() -> None:
    assert mschap.generate_nt_response(AUTH_CHALLENGE, PEER_CHALLENGE, USER, PASSWORD) == NT_RESPONSE


def test_rfc2759_authenticator_response() -> None:
    got = mschap.authenticator_response(PASSWORD, NT_RESPONSE, PEER_CHALLENGE, AUTH_CHALLENGE, USER)
    assert got == AUTHENTICATOR_RESPONSE


def test_des_key_expansion_has_odd_parity() -> None:
    """RFC 2759 §8.6: 7 key bits per octet, the low bit making the octet's parity odd."""
    for key7 in (bytes(7), b"\xff" * 7, PASSWORD_HASH[:7], bytes(range(1, 8))):
        key8 = mschap._des_key(key7)
        assert len(key8) == 8
        assert all(bin(octet).count("1") % 2 == 1 for octet in key8)
        assert int("".join(f"{octet >> 1:07b}" for octet in key8), 2) == int.from_bytes(key7, "big")


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (mschap.challenge_hash, (PEER_CHALLENGE[:15], AUTH_CHALLENGE, USER)),
        (mschap.challenge_hash, (PEER_CHALLENGE, AUTH_CHALLENGE + b"x", USER)),
        (mschap.challenge_response, (CHALLENGE[:7], PASSWORD_HASH)),
        (mschap.challenge_response, (CHALLENGE, PASSWORD_HASH + b"x")),
        (mschap.master_key, (PASSWORD_HASH_HASH, NT_RESPONSE[:23])),
    ],
)
def test_wrong_lengths_raise(call: Callable[..., object], args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        call(*args)


# --- RFC 3079 §3.5 ------------------------------------------------------------------------------------------


def test_rfc3079_master_key() -> None:
    assert mschap.master_key(PASSWORD_HASH_HASH, NT_RESPONSE) == MASTER_KEY


def test_rfc3079_send_start_key_is_the_servers_send_key() -> None:
    server_send = mschap.asymmetric_start_key(MASTER_KEY, 16, is_send=True, is_server=True)
    assert server_send == SEND_START_KEY_128
    assert mschap.asymmetric_start_key(MASTER_KEY, 8, is_send=True, is_server=True) == SEND_START_KEY_40
    # The peer receives with what the server sends, and the other way round.
    assert mschap.asymmetric_start_key(MASTER_KEY, is_send=False, is_server=False) == server_send
    server_recv = mschap.asymmetric_start_key(MASTER_KEY, is_send=False, is_server=True)
    assert mschap.asymmetric_start_key(MASTER_KEY, is_send=True, is_server=False) == server_recv
    assert server_recv != server_send


def test_asymmetric_start_key_rejects_other_lengths() -> None:
    with pytest.raises(ValueError):
        mschap.asymmetric_start_key(MASTER_KEY, 20, is_send=True, is_server=True)


# --- verify -------------------------------------------------------------------------------------------------


def test_verify_accepts_the_right_password() -> None:
    result = mschap.verify(AUTH_CHALLENGE, ms_chap2_response(ident=0x2A), USER, PASSWORD)
    assert result is not None
    assert result.ident == 0x2A
    assert result.success == b"\x2a" + AUTHENTICATOR_RESPONSE.encode()
    assert len(result.success) == 43
    assert result.master_key == MASTER_KEY
    assert result.send_key == SEND_START_KEY_128
    assert result.recv_key == mschap.asymmetric_start_key(MASTER_KEY, is_send=False, is_server=True)
    assert "8B7CDC" not in repr(result).upper()  # keys stay out of logs


def test_verify_strips_the_nt_domain() -> None:
    response = ms_chap2_response()
    assert mschap.verify(AUTH_CHALLENGE, response, "CORP\\User", PASSWORD) is not None
    assert mschap.verify(AUTH_CHALLENGE, response, b"CORP\\User", PASSWORD) is not None
    assert mschap.verify(AUTH_CHALLENGE, response, "CORP\\User", PASSWORD, strip_domain=False) is None
    assert mschap.strip_nt_domain("CORP\\User") == "User"
    assert mschap.strip_nt_domain("User@realm") == "User@realm"


def test_verify_rejects_a_wrong_password() -> None:
    assert mschap.verify(AUTH_CHALLENGE, ms_chap2_response(), USER, "clientPasS") is None
    assert mschap.verify(AUTH_CHALLENGE, ms_chap2_response(), USER, "") is None


def test_verify_rejects_another_user_name() -> None:
    assert mschap.verify(AUTH_CHALLENGE, ms_chap2_response(), "user", PASSWORD) is None


@pytest.mark.parametrize("length", [0, 49, 51])
def test_verify_rejects_a_wrong_length_response(length: int) -> None:
    response = (ms_chap2_response() + b"\x00")[:length]
    assert mschap.verify(AUTH_CHALLENGE, response, USER, PASSWORD) is None


@pytest.mark.parametrize("length", [0, 8, 15, 17])
def test_verify_rejects_a_wrong_length_challenge(length: int) -> None:
    challenge = (AUTH_CHALLENGE + b"\x00")[:length]
    assert mschap.verify(challenge, ms_chap2_response(), USER, PASSWORD) is None


def test_verify_rejects_a_changed_peer_challenge() -> None:
    changed = bytes([PEER_CHALLENGE[0] ^ 1]) + PEER_CHALLENGE[1:]
    assert mschap.verify(AUTH_CHALLENGE, ms_chap2_response(peer_challenge=changed), USER, PASSWORD) is None


def test_verify_rejects_a_changed_nt_response_or_challenge() -> None:
    changed = NT_RESPONSE[:-1] + bytes([NT_RESPONSE[-1] ^ 0x80])
    assert mschap.verify(AUTH_CHALLENGE, ms_chap2_response(nt=changed), USER, PASSWORD) is None
    other_challenge = AUTH_CHALLENGE[:-1] + b"\x00"
    assert mschap.verify(other_challenge, ms_chap2_response(), USER, PASSWORD) is None


# --- MS-MPPE-Send-Key / MS-MPPE-Recv-Key (RFC 2548 §2.4.2, §2.4.3) ------------------------------------------


def test_mppe_key_attributes_round_trip() -> None:
    send, recv = mschap.mppe_key_attributes(SECRET, REQUEST_AUTHENTICATOR, PASSWORD_HASH, NT_RESPONSE)
    for value in (send, recv):
        assert len(value) == 2 + 32  # salt + (length octet + 16-octet key, padded to 32)
        assert (len(value) - 2) % 16 == 0
        assert value[0] & 0x80
    assert send[:2] != recv[:2]
    assert mschap.decrypt_mppe_key(SECRET, REQUEST_AUTHENTICATOR, send) == SEND_START_KEY_128
    recv_key = mschap.asymmetric_start_key(MASTER_KEY, is_send=False, is_server=True)
    assert mschap.decrypt_mppe_key(SECRET, REQUEST_AUTHENTICATOR, recv) == recv_key


def test_mppe_key_attributes_salts() -> None:
    fixed = mschap.mppe_key_attributes(SECRET, REQUEST_AUTHENTICATOR, PASSWORD_HASH, NT_RESPONSE, b"\x01\x02")
    assert [value[:2] for value in fixed] == [b"\x81\x02", b"\x81\x03"]
    assert fixed == mschap.mppe_key_attributes(
        SECRET, REQUEST_AUTHENTICATOR, PASSWORD_HASH, NT_RESPONSE, b"\x81\x02"
    )
    wrap = mschap.mppe_key_attributes(SECRET, REQUEST_AUTHENTICATOR, PASSWORD_HASH, NT_RESPONSE, b"\xff\xff")
    assert [value[:2] for value in wrap] == [b"\xff\xff", b"\x80\x00"]

    salts = itertools.cycle([b"\x12\x34", b"\x12\x34"])  # a source repeating itself still gives two salts
    send, recv = mschap.mppe_key_attributes(
        SECRET, REQUEST_AUTHENTICATOR, PASSWORD_HASH, NT_RESPONSE, lambda: next(salts)
    )
    assert (send[:2], recv[:2]) == (b"\x92\x34", b"\x92\x35")
    assert mschap.decrypt_mppe_key(SECRET, REQUEST_AUTHENTICATOR, recv) == mschap.asymmetric_start_key(
        MASTER_KEY, is_send=False, is_server=True
    )


def test_result_mppe_key_attributes_match_the_module_function() -> None:
    result = mschap.verify(AUTH_CHALLENGE, ms_chap2_response(), USER, PASSWORD)
    assert result is not None
    args = (SECRET, REQUEST_AUTHENTICATOR)
    assert result.mppe_key_attributes(*args, salt=b"\x80\x07") == mschap.mppe_key_attributes(
        *args, PASSWORD_HASH, NT_RESPONSE, b"\x80\x07"
    )


def test_mppe_key_depends_on_secret_and_request_authenticator() -> None:
    value = mschap.encrypt_mppe_key(SECRET, REQUEST_AUTHENTICATOR, SEND_START_KEY_128, b"\x80\x01")
    other_secret = mschap.encrypt_mppe_key(b"other", REQUEST_AUTHENTICATOR, SEND_START_KEY_128, b"\x80\x01")
    other_ra = mschap.encrypt_mppe_key(SECRET, bytes(16), SEND_START_KEY_128, b"\x80\x01")
    assert len({value, other_secret, other_ra}) == 3
    # First block: (16, key[:15]) XOR MD5(secret + request authenticator + salt).
    mask = hashlib.md5(SECRET + REQUEST_AUTHENTICATOR + b"\x80\x01").digest()
    assert bytes(a ^ b for a, b in zip(value[2:18], mask, strict=True)) == b"\x10" + SEND_START_KEY_128[:15]


@pytest.mark.parametrize("key_length", [1, 8, 15, 16, 31, 100])
def test_encrypt_decrypt_round_trip_any_length(key_length: int) -> None:
    key = bytes(range(key_length))
    value = mschap.encrypt_mppe_key(SECRET, REQUEST_AUTHENTICATOR, key, b"\xab\xcd")
    assert (len(value) - 2) % 16 == 0 and len(value) - 2 >= key_length + 1
    assert mschap.decrypt_mppe_key(SECRET, REQUEST_AUTHENTICATOR, value) == key


def test_encrypt_rejects_a_salt_without_high_bit() -> None:
    with pytest.raises(ValueError):
        mschap.encrypt_mppe_key(SECRET, REQUEST_AUTHENTICATOR, SEND_START_KEY_128, b"\x7f\xff")


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x80\x01" + bytes(15),
        b"\x80\x01" + bytes(33),
        b"\x00\x01" + bytes(32),  # salt without its high bit
    ],
)
def test_decrypt_rejects_malformed_values(value: bytes) -> None:
    with pytest.raises(ValueError):
        mschap.decrypt_mppe_key(SECRET, REQUEST_AUTHENTICATOR, value)


def test_decrypt_rejects_a_length_octet_beyond_the_data() -> None:
    salt = b"\x80\x01"
    mask = hashlib.md5(SECRET + REQUEST_AUTHENTICATOR + salt).digest()
    plain = bytes([16]) + bytes(15)  # claims 16 key octets, only 15 follow
    value = salt + bytes(a ^ b for a, b in zip(plain, mask, strict=True))
    with pytest.raises(ValueError):
        mschap.decrypt_mppe_key(SECRET, REQUEST_AUTHENTICATOR, value)


# --- cross-checks against independent implementations -------------------------------------------------------


def test_mppe_encoding_matches_pyrad_salt_encryption() -> None:
    """pyrad's RFC 2868 §3.5 salt encryption is the same scheme as RFC 2548 §2.4.2."""
    packet_mod = pytest.importorskip("pyrad.packet")
    packet = packet_mod.Packet(secret=SECRET)
    packet.request_authenticator = REQUEST_AUTHENTICATOR
    send, recv = mschap.mppe_key_attributes(SECRET, REQUEST_AUTHENTICATOR, PASSWORD_HASH, NT_RESPONSE)
    assert packet.SaltDecrypt(send) == SEND_START_KEY_128
    assert packet.SaltDecrypt(recv) == mschap.asymmetric_start_key(MASTER_KEY, is_send=False, is_server=True)
    for key in (SEND_START_KEY_128, b"k", bytes(range(40))):
        assert mschap.decrypt_mppe_key(SECRET, REQUEST_AUTHENTICATOR, packet.SaltCrypt(key)) == key


@pytest.mark.skipif(libpass_des is None, reason="libpass (passlib) not installed")
@settings(max_examples=40, deadline=None)
@given(
    password=st.text(max_size=40),
    user_name=st.text(alphabet=st.characters(exclude_characters="\\"), max_size=30),
    authenticator_challenge=st.binary(min_size=16, max_size=16),
    peer_challenge=st.binary(min_size=16, max_size=16),
)
def test_nt_response_matches_libpass(
    password: str, user_name: str, authenticator_challenge: bytes, peer_challenge: bytes
) -> None:
    """libpass (the passlib fork) has its own pure-Python MD4 and DES taking 7-octet keys."""
    assert libpass_des is not None and libpass_md4 is not None
    password_hash = libpass_md4.md4(password.encode("utf-16-le")).digest()
    assert mschap.nt_password_hash(password) == password_hash
    challenge = hashlib.sha1(peer_challenge + authenticator_challenge + user_name.encode()).digest()[:8]
    padded = password_hash + bytes(5)
    expected = b"".join(libpass_des.des_encrypt_block(padded[i : i + 7], challenge) for i in (0, 7, 14))
    nt = mschap.generate_nt_response(authenticator_challenge, peer_challenge, user_name, password)
    assert nt == expected
    result = mschap.verify(
        authenticator_challenge, bytes([7, 0]) + peer_challenge + bytes(8) + nt, user_name, password
    )
    assert result is not None
    auth = mschap.authenticator_response(password, nt, peer_challenge, authenticator_challenge, user_name)
    assert result.success == b"\x07" + auth.encode()
