"""RADIUS packets (RFC 2865 §3, RFC 2866, RFC 5176): decoding, encoding and every authenticator. Pure: no I/O.

A decoded :class:`Packet` keeps its attributes in wire order as ``(key, value)`` pairs, the key being
:func:`aaa.dictionary.key_of` (vendor-specific attributes are split out of their Vendor-Specific wrapper).
The few attribute types the codec itself must know (Vendor-Specific, Message-Authenticator, Proxy-State)
come from the dictionary through :class:`Framing`.

Authenticators:

- Access-Request, Status-Server: a random Request Authenticator; User-Password hidden with it (§5.2).
- Accounting-Request, CoA-Request, Disconnect-Request: Request Authenticator = MD5(header with 16 zero
  octets + attributes + secret) (RFC 2866 §3, RFC 5176 §2.3).
- Responses: Response Authenticator = MD5(header with the request's authenticator + attributes + secret).
- Message-Authenticator (RFC 3579 §3.2, RFC 5176 §3.3): HMAC-MD5 over the packet with its own value zeroed,
  the authenticator field holding the request's authenticator (Access-Request, Status-Server and their
  responses) or 16 zero octets (Accounting-, CoA- and Disconnect-Request and Accounting-Response); replies
  carry it first (the BlastRADIUS mitigation).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCOUNTING_REQUEST = 4
ACCOUNTING_RESPONSE = 5
ACCESS_CHALLENGE = 11
STATUS_SERVER = 12
DISCONNECT_REQUEST = 40
DISCONNECT_ACK = 41
DISCONNECT_NAK = 42
COA_REQUEST = 43
COA_ACK = 44
COA_NAK = 45

PACKET_NAMES = {
    ACCESS_REQUEST: "Access-Request",
    ACCESS_ACCEPT: "Access-Accept",
    ACCESS_REJECT: "Access-Reject",
    ACCOUNTING_REQUEST: "Accounting-Request",
    ACCOUNTING_RESPONSE: "Accounting-Response",
    ACCESS_CHALLENGE: "Access-Challenge",
    STATUS_SERVER: "Status-Server",
    DISCONNECT_REQUEST: "Disconnect-Request",
    DISCONNECT_ACK: "Disconnect-ACK",
    DISCONNECT_NAK: "Disconnect-NAK",
    COA_REQUEST: "CoA-Request",
    COA_ACK: "CoA-ACK",
    COA_NAK: "CoA-NAK",
}
# Requests whose Request Authenticator is a digest (and whose Message-Authenticator uses zeros)
DIGEST_REQUESTS = frozenset({ACCOUNTING_REQUEST, DISCONNECT_REQUEST, COA_REQUEST})

HEADER = 20
MAX_PACKET = 4096  # RFC 2865 §3 (RFC 7930 larger packets are not used)
ZERO16 = bytes(16)
_HEADER = struct.Struct("!BBH16s")
_HEAD = struct.Struct("!BBH")  # code, identifier, length: the header without its authenticator
_VENDOR = struct.Struct("!I")


class DecodeError(Exception):
    """A datagram that is not a well-formed RADIUS packet: dropped and counted as malformed."""


@dataclass(frozen=True, slots=True)
class Framing:
    """The attribute types the codec handles itself, resolved from the dictionary."""

    vendor_specific: int
    message_authenticator: int
    proxy_state: int


class Packet(msgspec.Struct, frozen=True, gc=False):
    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[tuple[int, bytes], ...]  # (key, value) in wire order

    def get(self, key: int) -> bytes | None:
        for k, value in self.attributes:
            if k == key:
                return value
        return None


def decode(data: bytes, framing: Framing) -> Packet:
    """The packet in ``data`` (trailing bytes beyond its Length are ignored, RFC 2865 §3)."""
    size = len(data)
    if size < HEADER:
        raise DecodeError(f"{size} bytes, shorter than a header")
    code, identifier, length, authenticator = _HEADER.unpack_from(data)
    if length < HEADER or length > MAX_PACKET:
        raise DecodeError(f"Length {length} outside 20..4096")
    if length > size:
        raise DecodeError(f"Length {length} beyond the {size} bytes received")
    attributes: list[tuple[int, bytes]] = []
    append = attributes.append
    vsa = framing.vendor_specific
    pos = HEADER
    while pos < length:
        if pos + 2 > length:
            raise DecodeError(f"attribute header cut at offset {pos}")
        kind = data[pos]
        alen = data[pos + 1]
        end = pos + alen
        if alen < 2 or end > length:
            raise DecodeError(f"attribute {kind} with length {alen} at offset {pos}")
        if kind == vsa and alen >= 6:
            vendor = _VENDOR.unpack_from(data, pos + 2)[0]
            if _split_vendor(data, pos + 6, end, vendor, append):
                pos = end
                continue
        append((kind, data[pos + 2 : end]))
        pos = end
    return Packet(code, identifier, authenticator, tuple(attributes))


def _split_vendor(
    data: bytes, pos: int, end: int, vendor: int, append: Callable[[tuple[int, bytes]], None]
) -> bool:
    """Append the sub-attributes of one Vendor-Specific (one-byte type and length); False (keep it
    whole, as an opaque Vendor-Specific) when its content is not in that format."""
    found: list[tuple[int, bytes]] = []
    while pos < end:
        if pos + 2 > end:
            return False
        sub = data[pos]
        slen = data[pos + 1]
        if slen < 2 or pos + slen > end:
            return False
        found.append((vendor << 8 | sub, data[pos + 2 : pos + slen]))
        pos += slen
    if vendor == 0 or not found:
        return False  # vendor 0 would read as a standard attribute
    for item in found:
        append(item)
    return True


def encode_attributes(attributes: Iterable[tuple[int, bytes]], framing: Framing) -> bytes:
    """Attributes on the wire; a vendor key becomes its own Vendor-Specific. ValueError for a value too
    long for one attribute (253 octets, 247 in a Vendor-Specific)."""
    parts: list[bytes] = []
    vsa = framing.vendor_specific
    for key, value in attributes:
        size = len(value)
        if key > 0xFF:
            if size > 247:
                raise ValueError(f"attribute {key >> 8}/{key & 0xFF}: {size} octets, at most 247")
            parts.append(
                bytes((vsa, size + 8)) + _VENDOR.pack(key >> 8) + bytes((key & 0xFF, size + 2)) + value
            )
        else:
            if size > 253:
                raise ValueError(f"attribute {key}: {size} octets, at most 253")
            parts.append(bytes((key, size + 2)) + value)
    return b"".join(parts)


def encode(code: int, identifier: int, authenticator: bytes, attributes: bytes) -> bytes:
    length = HEADER + len(attributes)
    if length > MAX_PACKET:
        raise ValueError(f"packet of {length} octets, more than {MAX_PACKET}")
    return _HEADER.pack(code, identifier, length, authenticator) + attributes


# ---- authenticators --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _hmac_md5_pads(secret: bytes) -> tuple[Any, Any]:
    """MD5 states after the inner and outer padded key (RFC 2104), computed once per shared secret."""
    key = hashlib.md5(secret).digest() if len(secret) > 64 else secret
    key = key.ljust(64, b"\x00")
    return hashlib.md5(bytes(b ^ 0x36 for b in key)), hashlib.md5(bytes(b ^ 0x5C for b in key))


def hmac_md5(secret: bytes, data: bytes) -> bytes:
    """HMAC-MD5 (RFC 2104) of ``data``: ``hmac.digest(secret, data, "md5")`` from the secret's precomputed
    pads, half its cost; tests hold the two equal."""
    inner, outer = _hmac_md5_pads(secret)
    h = inner.copy()
    h.update(data)
    o = outer.copy()
    o.update(h.digest())
    return o.digest()  # type: ignore[no-any-return]


def request_digest(data: bytes, secret: bytes) -> bytes:
    """The Request Authenticator of an Accounting-, CoA- or Disconnect-Request (``data`` is the packet)."""
    return hashlib.md5(data[:4] + ZERO16 + data[HEADER:] + secret).digest()


def request_digest_ok(data: bytes, secret: bytes) -> bool:
    length = int.from_bytes(data[2:4])
    return hmac.compare_digest(request_digest(data[:length], secret), data[4:HEADER])


def packet_name(code: int) -> str:
    return PACKET_NAMES.get(code, str(code))


def message_authenticator_offset(data: bytes | bytearray, length: int, ma: int) -> int:
    """Offset of the first Message-Authenticator's value, -1 when there is none."""
    pos = HEADER
    while pos + 2 <= length:
        alen = data[pos + 1]
        if data[pos] == ma:
            return pos + 2 if alen == 18 else -2
        if alen < 2:
            return -1
        pos += alen
    return -1


def message_authenticator_ok(
    data: bytes, secret: bytes, framing: Framing, vector: bytes | None = None
) -> bool | None:
    """None: no Message-Authenticator; else whether it is right. ``vector``: the authenticator the HMAC is
    computed with (default: the packet's own, or zeros for digest requests)."""
    length = int.from_bytes(data[2:4])
    at = message_authenticator_offset(data, length, framing.message_authenticator)
    if at == -1:
        return None
    if at < 0:
        return False  # a Message-Authenticator of the wrong length
    if vector is None:
        vector = ZERO16 if data[0] in DIGEST_REQUESTS else data[4:HEADER]
    mac = hmac_md5(secret, data[:4] + vector + data[HEADER:at] + ZERO16 + data[at + 16 : length])
    return hmac.compare_digest(mac, data[at : at + 16])


def sign_request(
    code: int,
    identifier: int,
    attributes: Sequence[tuple[int, bytes]],
    secret: bytes,
    framing: Framing,
    *,
    authenticator: bytes | None = None,
    message_authenticator: bool = True,
) -> bytes:
    """A request on the wire: digest requests get their Request Authenticator computed; others use
    ``authenticator`` (random when None). With ``message_authenticator`` it is added first."""
    ma = framing.message_authenticator
    body = encode_attributes(((ma, ZERO16),) if message_authenticator else (), framing)
    body += encode_attributes(attributes, framing)
    digest = code in DIGEST_REQUESTS
    auth = ZERO16 if digest else authenticator if authenticator is not None else secrets.token_bytes(16)
    packet = bytearray(encode(code, identifier, auth, body))
    if message_authenticator:
        mac = hmac_md5(secret, bytes(packet))
        packet[HEADER + 2 : HEADER + 18] = mac
    if digest:
        packet[4:HEADER] = hashlib.md5(bytes(packet) + secret).digest()
    return bytes(packet)


def sign_response(
    code: int,
    request: Packet,
    attributes: Sequence[tuple[int, bytes]],
    secret: bytes,
    framing: Framing,
    *,
    message_authenticator: bool = True,
) -> bytes:
    """A response to ``request``: Message-Authenticator first (when asked), the attributes, the request's
    Proxy-State attributes in order (RFC 2865 §5.33), then the Response Authenticator."""
    proxy = framing.proxy_state
    body = encode_attributes(attributes, framing)
    proxy_states = [(k, v) for k, v in request.attributes if k == proxy]
    if proxy_states:
        body += encode_attributes(proxy_states, framing)
    length = HEADER + len(body)
    if message_authenticator:
        length += 18
    if length > MAX_PACKET:
        raise ValueError(f"packet of {length} octets, more than {MAX_PACKET}")
    head = _HEAD.pack(code, request.identifier, length)
    if message_authenticator:
        zeros = code == ACCOUNTING_RESPONSE and request.code != STATUS_SERVER
        vector = ZERO16 if zeros else request.authenticator
        ma = bytes((framing.message_authenticator, 18))
        mac = hmac_md5(secret, head + vector + ma + ZERO16 + body)
        body = ma + mac + body
    # the Response Authenticator: MD5 over the packet with the request's authenticator in its place
    digest = hashlib.md5(head + request.authenticator + body + secret).digest()
    return head + digest + body


def response_ok(data: bytes, request_authenticator: bytes, secret: bytes) -> bool:
    """Whether a response's Response Authenticator matches the request it answers."""
    length = int.from_bytes(data[2:4])
    expected = hashlib.md5(data[:4] + request_authenticator + data[HEADER:length] + secret).digest()
    return hmac.compare_digest(expected, data[4:HEADER])


# ---- hidden values -----------------------------------------------------------------------------------


def md5_chain(secret: bytes, first: bytes, data: bytes, *, encrypt: bool) -> bytes:
    """XOR 16-octet blocks with MD5(secret + previous ciphertext block), seeded by ``first``: the hiding of
    User-Password (RFC 2865 §5.2) and of MS-MPPE keys (RFC 2548 §2.4.2). ``data``: whole blocks."""
    out = []
    previous = first
    for i in range(0, len(data), 16):
        block = data[i : i + 16]
        mask = hashlib.md5(secret + previous).digest()
        result = (int.from_bytes(block) ^ int.from_bytes(mask)).to_bytes(16)
        out.append(result)
        previous = result if encrypt else block
    return b"".join(out)


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """User-Password on the wire (RFC 2865 §5.2): padded to 16-octet blocks, each XORed with
    MD5(secret + previous cipher block, the authenticator for the first)."""
    if len(password) > 128:
        raise ValueError("a User-Password holds at most 128 octets")
    padding = -len(password) % 16 if password else 16
    return md5_chain(secret, authenticator, password + bytes(padding), encrypt=True)


def reveal_password(hidden: bytes, secret: bytes, authenticator: bytes) -> bytes | None:
    """The password in a User-Password value, NULs stripped; None when the value is not 16..128 octets
    in whole blocks."""
    if not hidden or len(hidden) % 16 or len(hidden) > 128:
        return None
    return md5_chain(secret, authenticator, hidden, encrypt=False).rstrip(b"\x00")


def chap_ok(chap_password: bytes, challenge: bytes, password: bytes) -> bool:
    """CHAP-Password (RFC 2865 §5.3: CHAP ident + 16-octet response) against the cleartext password."""
    if len(chap_password) != 17:
        return False
    expected = hashlib.md5(chap_password[:1] + password + challenge).digest()
    return hmac.compare_digest(expected, chap_password[1:])
