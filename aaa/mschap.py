"""MS-CHAPv2 (RFC 2759) with its MPPE keys (RFC 3079 §3.4) and their RADIUS encoding (RFC 2548). Pure: no I/O.

The RADIUS server sees MS-CHAP-Challenge (the authenticator challenge, 16 octets) and MS-CHAP2-Response
(Ident, Flags, Peer-Challenge, Reserved, NT-Response: 50 octets); :func:`verify` checks them against the
cleartext password and returns the MS-CHAP2-Success value and the MPPE master keys, which
:func:`mppe_key_attributes` / :meth:`MSCHAPv2Result.mppe_key_attributes` encode as MS-MPPE-Send-Key and
MS-MPPE-Recv-Key for the Access-Accept.

User name: RFC 2759 §8.2 hashes the user name *without* the Windows domain. Windows peers send
``DOMAIN\\user`` in User-Name but hash only ``user``, so whoever calls :func:`challenge_hash`,
:func:`generate_nt_response` or :func:`authenticator_response` must strip the prefix first
(:func:`strip_nt_domain`); :func:`verify` does it itself unless told not to.

Perspective of the MPPE keys: RADIUS hands the keys to the NAS, which is the *server* side of the PPP link
(RFC 3079 §3.3: ``GetAsymmetricStartKey(MasterKey, MasterSendKey, 16, TRUE, TRUE)``). So MS-MPPE-Send-Key is
the key derived with ``is_send=True, is_server=True`` (RFC 3079 Magic3), which is the peer's receive key, and
MS-MPPE-Recv-Key is derived with ``is_send=False, is_server=True`` (Magic2), the peer's send key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import overload

from Crypto.Cipher import DES
from Crypto.Hash import MD4

from aaa.codec import md5_chain

CHALLENGE_LENGTH = 16
RESPONSE_LENGTH = 50  # Ident(1) Flags(1) Peer-Challenge(16) Reserved(8) NT-Response(24)
NT_RESPONSE_LENGTH = 24

# RFC 2759 §8.7
_AUTH_MAGIC1 = b"Magic server to client signing constant"
_AUTH_MAGIC2 = b"Pad to make it do more than one iteration"
# RFC 3079 §3.4
_MPPE_MAGIC1 = b"This is the MPPE Master Key"
_MPPE_MAGIC2 = b"On the client side, this is the send key; on the server side, it is the receive key."
_MPPE_MAGIC3 = b"On the client side, this is the receive key; on the server side, it is the send key."
_SHS_PAD1 = b"\x00" * 40
_SHS_PAD2 = b"\xf2" * 40

SaltSource = Callable[[], bytes] | bytes | None
"""Where MS-MPPE key salts come from: a function called once per attribute, a fixed 2-octet salt (the
Recv-Key then gets the next value), or None for random salts. The high bit is always set on the wire."""


@overload
def strip_nt_domain(user_name: str) -> str: ...
@overload
def strip_nt_domain(user_name: bytes) -> bytes: ...
def strip_nt_domain(user_name: str | bytes) -> str | bytes:
    """The user name without a leading ``DOMAIN\\`` (RFC 2759 §4: the domain is not part of the hash)."""
    if isinstance(user_name, bytes):
        return user_name.partition(b"\\")[2] if b"\\" in user_name else user_name
    return user_name.partition("\\")[2] if "\\" in user_name else user_name


def nt_password_hash(password: str) -> bytes:
    """MD4 of the UTF-16LE password (RFC 2759 §8.3 NtPasswordHash)."""
    return MD4.new(password.encode("utf-16-le")).digest()


def hash_nt_password_hash(password_hash: bytes) -> bytes:
    """MD4 of the password hash (RFC 2759 §8.4 HashNtPasswordHash)."""
    return MD4.new(password_hash).digest()


def challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, user_name: str | bytes) -> bytes:
    """First 8 octets of SHA1(peer challenge + authenticator challenge + user name) (RFC 2759 §8.2).

    ``user_name`` must already be stripped of any ``DOMAIN\\`` prefix (see :func:`strip_nt_domain`); a str
    is hashed as UTF-8.
    """
    _require_length("peer challenge", peer_challenge, CHALLENGE_LENGTH)
    _require_length("authenticator challenge", authenticator_challenge, CHALLENGE_LENGTH)
    name = user_name.encode("utf-8") if isinstance(user_name, str) else user_name
    return hashlib.sha1(peer_challenge + authenticator_challenge + name).digest()[:8]


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    """The 24-octet response: DES of the challenge under the 21-octet zero-padded hash (RFC 2759 §8.5)."""
    _require_length("challenge", challenge, 8)
    _require_length("password hash", password_hash, 16)
    key = password_hash + bytes(5)
    return b"".join(_des_encrypt(challenge, key[i : i + 7]) for i in (0, 7, 14))


def generate_nt_response(
    authenticator_challenge: bytes, peer_challenge: bytes, user_name: str | bytes, password: str
) -> bytes:
    """The NT-Response a peer with this password sends (RFC 2759 §8.1 GenerateNTResponse)."""
    challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name)
    return challenge_response(challenge, nt_password_hash(password))


def authenticator_response(
    password: str,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    user_name: str | bytes,
) -> str:
    """The ``S=`` + 40 upper-case hex digits string (RFC 2759 §8.7 GenerateAuthenticatorResponse)."""
    password_hash_hash = hash_nt_password_hash(nt_password_hash(password))
    return _authenticator_response(
        password_hash_hash, nt_response, peer_challenge, authenticator_challenge, user_name
    )


def master_key(password_hash_hash: bytes, nt_response: bytes) -> bytes:
    """The 16-octet MPPE master key (RFC 3079 §3.4 GetMasterKey)."""
    _require_length("password hash hash", password_hash_hash, 16)
    _require_length("NT-Response", nt_response, NT_RESPONSE_LENGTH)
    return hashlib.sha1(password_hash_hash + nt_response + _MPPE_MAGIC1).digest()[:16]


def asymmetric_start_key(master_key: bytes, key_length: int = 16, *, is_send: bool, is_server: bool) -> bytes:
    """A master send or receive key as seen from one side (RFC 3079 §3.4 GetAsymmetricStartKey).

    ``key_length`` is 16 for 128-bit MPPE, 8 for 40- and 56-bit. The server's send key equals the client's
    receive key (both Magic3), and the server's receive key the client's send key (both Magic2).
    """
    _require_length("master key", master_key, 16)
    if key_length not in (8, 16):
        raise ValueError(f"MPPE start key length must be 8 or 16, not {key_length}")
    magic = _MPPE_MAGIC3 if is_send == is_server else _MPPE_MAGIC2
    return hashlib.sha1(master_key + _SHS_PAD1 + magic + _SHS_PAD2).digest()[:key_length]


def encrypt_mppe_key(secret: bytes, request_authenticator: bytes, key: bytes, salt: bytes) -> bytes:
    """An MS-MPPE-Send-Key / MS-MPPE-Recv-Key value: salt + encrypted length, key, padding (RFC 2548 §2.4.2).

    ``salt`` is 2 octets with the high bit set, unique among the salts of one Access-Accept.
    """
    _require_length("salt", salt, 2)
    if not salt[0] & 0x80:
        raise ValueError("the high bit of an MS-MPPE key salt must be set (RFC 2548 §2.4.2)")
    if not key or len(key) > 239:
        raise ValueError(f"an MS-MPPE key must be 1 to 239 octets, not {len(key)}")
    plain = bytes([len(key)]) + key
    plain += bytes(-len(plain) % 16)
    return salt + md5_chain(secret, request_authenticator + salt, plain, encrypt=True)


def decrypt_mppe_key(secret: bytes, request_authenticator: bytes, value: bytes) -> bytes:
    """The key inside an MS-MPPE-Send-Key / MS-MPPE-Recv-Key value (RFC 2548 §2.4.2, §2.4.3).

    Raises ValueError for a value of the wrong length, a salt without its high bit or a key length octet
    larger than the decrypted data.
    """
    if len(value) < 18 or (len(value) - 2) % 16:
        raise ValueError(f"an MS-MPPE key value is 2 + a multiple of 16 octets, not {len(value)}")
    salt = value[:2]
    if not salt[0] & 0x80:
        raise ValueError("MS-MPPE key salt without its high bit (RFC 2548 §2.4.2)")
    plain = md5_chain(secret, request_authenticator + salt, value[2:], encrypt=False)
    if not 0 < plain[0] <= len(plain) - 1:
        raise ValueError("MS-MPPE key length octet does not fit the value (wrong secret?)")
    return plain[1 : 1 + plain[0]]


def mppe_key_attributes(
    secret: bytes,
    request_authenticator: bytes,
    nt_password_hash: bytes,
    nt_response: bytes,
    salt: SaltSource = None,
) -> tuple[bytes, bytes]:
    """(MS-MPPE-Send-Key, MS-MPPE-Recv-Key) values for an MS-CHAPv2 Access-Accept (RFC 3079 §3.3, RFC 2548).

    ``nt_password_hash`` is the 16-octet NtPasswordHash (§8.3), not its hash; the keys are the 128-bit
    master keys from the server's side (send: is_send=True, is_server=True).
    """
    _require_length("NT password hash", nt_password_hash, 16)
    key = master_key(hash_nt_password_hash(nt_password_hash), nt_response)
    send = asymmetric_start_key(key, 16, is_send=True, is_server=True)
    recv = asymmetric_start_key(key, 16, is_send=False, is_server=True)
    return _encode_key_pair(secret, request_authenticator, send, recv, salt)


@dataclass(frozen=True, slots=True)
class MSCHAPv2Result:
    """A verified MS-CHAPv2 response: what the Access-Accept needs (RFC 2548 §2.3.3, RFC 3079 §3.3)."""

    ident: int
    success: bytes
    """MS-CHAP2-Success value: Ident octet + b"S=" + 40 upper-case hex digits."""
    master_key: bytes = field(repr=False)
    send_key: bytes = field(repr=False)
    """Server's master send key (MS-MPPE-Send-Key; the peer's receive key)."""
    recv_key: bytes = field(repr=False)
    """Server's master receive key (MS-MPPE-Recv-Key; the peer's send key)."""

    def mppe_key_attributes(
        self, secret: bytes, request_authenticator: bytes, salt: SaltSource = None
    ) -> tuple[bytes, bytes]:
        """(MS-MPPE-Send-Key, MS-MPPE-Recv-Key) values for the Access-Accept (RFC 2548 §2.4.2, §2.4.3)."""
        return _encode_key_pair(secret, request_authenticator, self.send_key, self.recv_key, salt)


def verify(
    challenge: bytes,
    response: bytes,
    user_name: str | bytes,
    password: str,
    *,
    strip_domain: bool = True,
) -> MSCHAPv2Result | None:
    """Check MS-CHAP-Challenge + MS-CHAP2-Response against a cleartext password (RFC 2759 §5, RFC 2548 §2.3).

    ``challenge`` and ``response`` are the raw attribute values, ``user_name`` the User-Name (its
    ``DOMAIN\\`` prefix is stripped unless ``strip_domain`` is false). Returns None for a wrong password or
    a malformed challenge or response. The Flags and Reserved octets are not checked.
    """
    if len(challenge) != CHALLENGE_LENGTH or len(response) != RESPONSE_LENGTH:
        return None
    ident = response[0]
    peer_challenge = response[2:18]
    nt_response = response[26:50]
    name = strip_nt_domain(user_name) if strip_domain else user_name
    password_hash = nt_password_hash(password)
    expected = challenge_response(challenge_hash(peer_challenge, challenge, name), password_hash)
    if not hmac.compare_digest(expected, nt_response):
        return None
    password_hash_hash = hash_nt_password_hash(password_hash)
    auth = _authenticator_response(password_hash_hash, nt_response, peer_challenge, challenge, name)
    key = master_key(password_hash_hash, nt_response)
    return MSCHAPv2Result(
        ident=ident,
        success=bytes([ident]) + auth.encode("ascii"),
        master_key=key,
        send_key=asymmetric_start_key(key, 16, is_send=True, is_server=True),
        recv_key=asymmetric_start_key(key, 16, is_send=False, is_server=True),
    )


def _authenticator_response(
    password_hash_hash: bytes,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    user_name: str | bytes,
) -> str:
    """RFC 2759 §8.7 from the password hash hash."""
    _require_length("NT-Response", nt_response, NT_RESPONSE_LENGTH)
    digest = hashlib.sha1(password_hash_hash + nt_response + _AUTH_MAGIC1).digest()
    challenge = challenge_hash(peer_challenge, authenticator_challenge, user_name)
    digest = hashlib.sha1(digest + challenge + _AUTH_MAGIC2).digest()
    return "S=" + digest.hex().upper()


def _des_key(key7: bytes) -> bytes:
    """The 7-octet key spread over 8 octets of 7 bits + an odd parity bit each (RFC 2759 §8.6)."""
    bits = int.from_bytes(key7, "big")
    out = bytearray()
    for i in range(8):
        seven = (bits >> (49 - 7 * i)) & 0x7F
        out.append(seven << 1 | (seven.bit_count() + 1) % 2)
    return bytes(out)


def _des_encrypt(clear: bytes, key7: bytes) -> bytes:
    """DES-ECB of one 8-octet block under a 7-octet key (RFC 2759 §8.6 DesEncrypt)."""
    return DES.new(_des_key(key7), DES.MODE_ECB).encrypt(clear)


def _encode_key_pair(
    secret: bytes, request_authenticator: bytes, send: bytes, recv: bytes, salt: SaltSource
) -> tuple[bytes, bytes]:
    """Both MS-MPPE key values, with two distinct salts."""
    _require_length("request authenticator", request_authenticator, 16)
    if salt is None:
        first, second = secrets.token_bytes(2), secrets.token_bytes(2)
    elif isinstance(salt, bytes):
        _require_length("salt", salt, 2)
        first = salt
        second = (int.from_bytes(salt, "big") + 1).to_bytes(3, "big")[1:]
    else:
        first, second = salt(), salt()
    first, second = _high_bit(first), _high_bit(second)
    if second == first:
        second = _high_bit((int.from_bytes(first, "big") + 1).to_bytes(3, "big")[1:])
    return (
        encrypt_mppe_key(secret, request_authenticator, send, first),
        encrypt_mppe_key(secret, request_authenticator, recv, second),
    )


def _high_bit(salt: bytes) -> bytes:
    """The salt with its most significant bit set (RFC 2548 §2.4.2)."""
    _require_length("salt", salt, 2)
    return bytes([salt[0] | 0x80, salt[1]])


def _require_length(what: str, value: bytes, length: int) -> None:
    """ValueError unless ``value`` has ``length`` octets."""
    if len(value) != length:
        raise ValueError(f"{what} must be {length} octets, not {len(value)}")
