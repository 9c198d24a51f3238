"""Diameter codec (RFC 6733 §3-§4): bytes in, values out, and back. Pure: no I/O, no clock, no asyncio.

Decoding is one struct walk over the message: ``decode_message`` reads the header and the top-level AVPs into
immutable ``Avp`` values whose ``data`` is the payload without header and padding; a Grouped AVP is parsed
only when ``Avp.grouped()`` is called, so a server pays for the branches of the tree it reads.

Errors separate the peer's fault from ours:

- ``FramingError``: the byte stream cannot be trusted (wrong version, impossible length); close the
  connection. Raised by ``Framer`` only.
- ``DecodeError``: one message is malformed; it carries the answer's Result-Code, the Failed-AVP and, when
  the header was readable, the header, so the caller can answer instead of dropping. ``decode_message`` is
  total: any bytes either decode or raise ``DecodeError``. ``AvpError`` (a ``DecodeError``) is raised by the
  typed accessors (``u32``, ``utf8``, ``grouped`` ...) on a payload of the wrong length or encoding.
- ``ValueError``: we misused the encoder (a value out of range, a malformed IP address).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Sequence
from typing import Final, NoReturn

import msgspec

from occ.diameter.dictionary import (
    AVPS,
    DIAMETER_INVALID_AVP_BITS,
    DIAMETER_INVALID_AVP_LENGTH,
    DIAMETER_INVALID_AVP_VALUE,
    DIAMETER_INVALID_HDR_BITS,
    DIAMETER_INVALID_MESSAGE_LENGTH,
    DIAMETER_UNSUPPORTED_VERSION,
)

# command flags (RFC 6733 §3)
FLAG_REQUEST: Final = 0x80
FLAG_PROXIABLE: Final = 0x40
FLAG_ERROR: Final = 0x20
FLAG_RETRANSMIT: Final = 0x10
# AVP flags (RFC 6733 §4.1)
AVP_VENDOR: Final = 0x80
AVP_MANDATORY: Final = 0x40
AVP_PROTECTED: Final = 0x20

HEADER_LENGTH: Final = 20
VERSION: Final = 1
MAX_LENGTH: Final = 0xFFFFFF  # the 24-bit length fields of the message and AVP headers

_RESERVED_COMMAND_FLAGS: Final = 0x0F
_RESERVED_AVP_FLAGS: Final = 0x1F

# NTP time (RFC 6733 §4.3.1, RFC 5905 eras): values with the top bit clear are in era 1 (from 2036-02-07).
_NTP_TO_UNIX: Final = 2208988800
_NTP_ERA: Final = 1 << 32
_NTP_HIGH_BIT: Final = 0x80000000

# zero payload of the smallest valid size per data format, for Failed-AVP of an AVP whose length is
# unusable (RFC 6733 §7.5, DIAMETER_INVALID_AVP_LENGTH)
_MIN_PAYLOAD: Final = {
    "Unsigned32": 4,
    "Integer32": 4,
    "Enumerated": 4,
    "Float32": 4,
    "Time": 4,
    "Unsigned64": 8,
    "Integer64": 8,
    "Float64": 8,
    "Address": 6,
}

_unpack_header = struct.Struct("!IIIII").unpack_from
_unpack_avp_header = struct.Struct("!II").unpack_from
_unpack_u32 = struct.Struct("!I").unpack_from
_pack_header = struct.Struct("!IIIII").pack
_pack_ii = struct.Struct("!II").pack
_pack_iii = struct.Struct("!III").pack
_pack_iiii = struct.Struct("!IIII").pack
_pack_ii_q = struct.Struct("!IIQ").pack
_pack_iii_q = struct.Struct("!IIIQ").pack
_pack_ii_i = struct.Struct("!IIi").pack
_pack_iii_i = struct.Struct("!IIIi").pack
_pack_ii_sq = struct.Struct("!IIq").pack
_pack_iii_sq = struct.Struct("!IIIq").pack
_pack_ii_f = struct.Struct("!IIf").pack
_pack_iii_f = struct.Struct("!IIIf").pack
_pack_ii_d = struct.Struct("!IId").pack
_pack_iii_d = struct.Struct("!IIId").pack
_PADDING: Final = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by length % 4

Header = tuple[int, int, int, int, int]
"""(flags, code, application_id, hop_by_hop, end_to_end) of a message."""


class DecodeError(Exception):
    """The peer sent a malformed message. ``result_code`` and ``failed_avp`` are what the answer carries
    (RFC 6733 §7.5); ``header`` is set when the header itself was readable, so an answer can be sent."""

    def __init__(
        self,
        result_code: int,
        message: str,
        *,
        failed_avp: bytes | None = None,
        header: Header | None = None,
    ) -> None:
        super().__init__(message)
        self.result_code = result_code
        self.failed_avp = failed_avp
        self.header = header


class AvpError(DecodeError):
    """An AVP's payload is not a valid value of the type it was read as (5014 wrong length, 5004 bad
    encoding), or a Grouped AVP's children are malformed. ``failed_avp`` defaults to the AVP's wire form."""

    def __init__(self, result_code: int, message: str, avp: Avp, *, failed_avp: bytes | None = None) -> None:
        super().__init__(
            result_code,
            f"AVP {avp.code} (vendor {avp.vendor}): {message}",
            failed_avp=avp.encoded() if failed_avp is None else failed_avp,
        )
        self.avp = avp


class FramingError(Exception):
    """The byte stream is unusable (wrong version, length below the header or above the maximum): nothing
    after this point can be framed, so the connection must be closed."""


class Avp(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One AVP as received: ``data`` is the payload without the 8/12-byte header and the padding.
    ``flags`` are the received flags (the V bit says whether the header had a Vendor-ID)."""

    code: int
    flags: int
    vendor: int
    data: bytes

    @property
    def mandatory(self) -> bool:
        return bool(self.flags & AVP_MANDATORY)

    def _length_error(self, expected: str) -> AvpError:
        return AvpError(
            DIAMETER_INVALID_AVP_LENGTH, f"payload of {len(self.data)} bytes, expected {expected}", self
        )

    def u32(self) -> int:
        data = self.data
        if len(data) != 4:
            raise self._length_error("4")
        return int.from_bytes(data)

    def u64(self) -> int:
        data = self.data
        if len(data) != 8:
            raise self._length_error("8")
        return int.from_bytes(data)

    def i32(self) -> int:
        data = self.data
        if len(data) != 4:
            raise self._length_error("4")
        return int.from_bytes(data, signed=True)

    def i64(self) -> int:
        data = self.data
        if len(data) != 8:
            raise self._length_error("8")
        return int.from_bytes(data, signed=True)

    def f32(self) -> float:
        if len(self.data) != 4:
            raise self._length_error("4")
        value: float = struct.unpack("!f", self.data)[0]
        return value

    def f64(self) -> float:
        if len(self.data) != 8:
            raise self._length_error("8")
        value: float = struct.unpack("!d", self.data)[0]
        return value

    def utf8(self) -> str:
        try:
            return self.data.decode()
        except UnicodeDecodeError as error:
            raise AvpError(DIAMETER_INVALID_AVP_VALUE, f"not UTF-8: {error.reason}", self) from None

    def octets(self) -> bytes:
        return self.data

    def address(self) -> str:
        """Address (RFC 6733 §4.3.1): 2-byte IANA address family, then the address. IPv4 (1) and IPv6 (2)
        only; another family is an invalid value (5004), a wrong size for the family an invalid length."""
        data = self.data
        if len(data) < 2:
            raise self._length_error("2 + address")
        family = int.from_bytes(data[:2])
        if family == 1:
            if len(data) != 6:
                raise self._length_error("6 for IPv4")
            return str(ipaddress.IPv4Address(data[2:]))
        if family == 2:
            if len(data) != 18:
                raise self._length_error("18 for IPv6")
            return str(ipaddress.IPv6Address(data[2:]))
        raise AvpError(DIAMETER_INVALID_AVP_VALUE, f"address family {family} is not IPv4 or IPv6", self)

    def time(self) -> int:
        """Time (RFC 6733 §4.3.1): NTP seconds, read with the RFC 5905 era rule -> Unix seconds."""
        ntp = self.u32()
        if ntp & _NTP_HIGH_BIT:
            return ntp - _NTP_TO_UNIX
        return ntp + _NTP_ERA - _NTP_TO_UNIX

    def grouped(self) -> tuple[Avp, ...]:
        """The children of a Grouped AVP. A malformed child raises ``AvpError`` whose Failed-AVP is this
        AVP wrapping only the offending child (RFC 6733 §7.5)."""
        data = self.data
        try:
            return _parse_avps(data, 0, len(data))
        except DecodeError as error:
            inner = error.failed_avp or b""
            raise AvpError(
                error.result_code,
                f"in Grouped: {error}",
                self,
                failed_avp=_encode_avp(self.code, self.flags, self.vendor, inner),
            ) from None

    def encoded(self) -> bytes:
        """The AVP on the wire, padding included (for Failed-AVP, Proxy-Info echo, re-sending)."""
        return _encode_avp(self.code, self.flags, self.vendor, self.data)


class Message(msgspec.Struct, frozen=True, gc=False):
    """One decoded message: the header fields and the top-level AVPs in wire order."""

    flags: int
    code: int
    application_id: int
    hop_by_hop: int
    end_to_end: int
    avps: tuple[Avp, ...]

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_REQUEST)

    @property
    def is_proxiable(self) -> bool:
        return bool(self.flags & FLAG_PROXIABLE)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    @property
    def is_retransmission(self) -> bool:
        return bool(self.flags & FLAG_RETRANSMIT)

    @property
    def header(self) -> Header:
        return (self.flags, self.code, self.application_id, self.hop_by_hop, self.end_to_end)

    def find(self, code: int, vendor: int = 0) -> Avp | None:
        """The first top-level AVP with this code and vendor."""
        for avp in self.avps:
            if avp.code == code and avp.vendor == vendor:
                return avp
        return None

    def find_all(self, code: int, vendor: int = 0) -> list[Avp]:
        return [avp for avp in self.avps if avp.code == code and avp.vendor == vendor]


def find(avps: Sequence[Avp], code: int, vendor: int = 0) -> Avp | None:
    """The first AVP of ``avps`` (e.g. a Grouped AVP's children) with this code and vendor."""
    for avp in avps:
        if avp.code == code and avp.vendor == vendor:
            return avp
    return None


def find_all(avps: Sequence[Avp], code: int, vendor: int = 0) -> list[Avp]:
    return [avp for avp in avps if avp.code == code and avp.vendor == vendor]


# --- decoding --------------------------------------------------------------------------------------------


def _parse_avps(
    data: bytes,
    pos: int,
    end: int,
    _header: Callable[[bytes, int], tuple[int, int]] = _unpack_avp_header,
    _vendor: Callable[[bytes, int], tuple[int]] = _unpack_u32,
    _avp: type[Avp] = Avp,
) -> tuple[Avp, ...]:
    """The AVPs of ``data[pos:end]`` (``pos`` 4-aligned). Raises ``DecodeError`` (without header) at the
    first bad one. The hot loop of the codec: globals are bound as defaults, and every check of a
    well-formed non-vendor AVP is one test, the rest is in ``_avp_error``."""
    avps: list[Avp] = []
    append = avps.append
    try:
        while pos < end:
            code, flags_length = _header(data, pos)  # struct.error when fewer than 8 bytes are left
            length = flags_length & 0xFFFFFF
            stop = pos + length
            if flags_length & 0x9F000000 or length < 8 or stop > end:  # V or reserved bits, bad length
                if flags_length & 0x9F000000 == 0x80000000 and length >= 12 and stop <= end:
                    append(_avp(code, flags_length >> 24, _vendor(data, pos + 8)[0], data[pos + 12 : stop]))
                    pos = (stop + 3) & -4
                    continue
                raise _avp_error(data, pos, end)
            append(_avp(code, flags_length >> 24, 0, data[pos + 8 : stop]))
            pos = (stop + 3) & -4
    except struct.error:
        raise _avp_error(data, pos, end) from None
    return tuple(avps)


def _avp_error(data: bytes, pos: int, end: int) -> DecodeError:
    """Why the AVP at ``pos`` cannot be read: 5014 (length) before 3009 (reserved flag bits)."""
    left = end - pos
    if left < 8:
        return DecodeError(
            DIAMETER_INVALID_AVP_LENGTH,
            f"{left} bytes left at offset {pos}, less than an AVP header",
            failed_avp=_rebuilt(data, pos, end),
        )
    code, flags_length = _unpack_avp_header(data, pos)
    flags = flags_length >> 24
    length = flags_length & 0xFFFFFF
    minimum = 12 if flags & AVP_VENDOR else 8
    if length < minimum or length > left:
        return DecodeError(
            DIAMETER_INVALID_AVP_LENGTH,
            f"AVP {code} at offset {pos}: length {length}, minimum {minimum}, {left} bytes left",
            failed_avp=_rebuilt(data, pos, end),
        )
    return DecodeError(
        DIAMETER_INVALID_AVP_BITS,
        f"AVP {code} at offset {pos}: reserved flag bits set ({flags:#04x})",
        failed_avp=data[pos : pos + length] + _PADDING[length & 3],
    )


def _rebuilt(data: bytes, pos: int, end: int) -> bytes:
    """Failed-AVP for an AVP whose length is unusable (RFC 6733 §7.5): its header as far as it was
    received and a zero payload of the minimum size of its type, with a length field that fits."""
    chunk = data[pos:end]
    code = int.from_bytes(chunk[0:4].ljust(4, b"\0"))
    flags = (chunk[4] if len(chunk) > 4 else 0) & ~_RESERVED_AVP_FLAGS
    vendor = int.from_bytes(chunk[8:12].ljust(4, b"\0")) if flags & AVP_VENDOR else 0
    known = AVPS.get((code, vendor))
    size = _MIN_PAYLOAD.get(known.type, 0) if known is not None else 0
    return _encode_avp(code, flags, vendor, bytes(size))


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode one whole message (as ``Framer.feed`` returns it). Total: raises only ``DecodeError``.

    Header (RFC 6733 §3): version 1 (else 5011), length equal to ``len(data)`` and a multiple of 4 (else
    5015), no reserved flag bits and no E bit on a request (else 3008). AVPs (§4.1): length at least the
    header and within the message (else 5014 with a rebuilt Failed-AVP), no reserved flag bits (else 3009).
    The P bit is accepted and ignored. Every error but a short message or a wrong version carries the
    header.
    """
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size < HEADER_LENGTH:
        raise DecodeError(DIAMETER_INVALID_MESSAGE_LENGTH, f"{size} bytes is shorter than a message header")
    version_length, flags_code, application_id, hop_by_hop, end_to_end = _unpack_header(data)
    if version_length >> 24 != VERSION:
        raise DecodeError(DIAMETER_UNSUPPORTED_VERSION, f"version {version_length >> 24}, expected 1")
    flags = flags_code >> 24
    code = flags_code & 0xFFFFFF
    length = version_length & 0xFFFFFF
    if length != size or length & 3:
        raise DecodeError(
            DIAMETER_INVALID_MESSAGE_LENGTH,
            f"header length {length} for {size} bytes (must match and be a multiple of 4)",
            header=(flags, code, application_id, hop_by_hop, end_to_end),
        )
    if flags & _RESERVED_COMMAND_FLAGS or flags & (FLAG_REQUEST | FLAG_ERROR) == FLAG_REQUEST | FLAG_ERROR:
        raise DecodeError(
            DIAMETER_INVALID_HDR_BITS,
            f"invalid command flags {flags:#04x}",
            header=(flags, code, application_id, hop_by_hop, end_to_end),
        )
    try:
        avps = _parse_avps(data, HEADER_LENGTH, size)
    except DecodeError as error:
        error.header = (flags, code, application_id, hop_by_hop, end_to_end)
        raise
    return Message(flags, code, application_id, hop_by_hop, end_to_end, avps)


# --- encoding ----------------------------------------------------------------------------------------------


def encode_message(
    flags: int, code: int, application_id: int, hop_by_hop: int, end_to_end: int, avps: bytes
) -> bytes:
    """A whole message: header + ``avps`` (concatenated encoded AVPs). Raises ``ValueError`` on reserved
    flag bits, E on a request, fields out of range or a message above 2^24 - 1 bytes."""
    length = HEADER_LENGTH + len(avps)
    if length > MAX_LENGTH or len(avps) & 3:
        raise ValueError(f"AVPs of {len(avps)} bytes: not a multiple of 4 or too long")
    if not 0 <= flags <= 0xFF or flags & _RESERVED_COMMAND_FLAGS:
        raise ValueError(f"invalid command flags {flags:#x}")
    if flags & (FLAG_REQUEST | FLAG_ERROR) == FLAG_REQUEST | FLAG_ERROR:
        raise ValueError("the E bit is not allowed on a request")
    if not 0 <= code <= 0xFFFFFF:
        raise ValueError(f"command code {code} out of range")
    try:
        return (
            _pack_header(
                (VERSION << 24) | length, (flags << 24) | code, application_id, hop_by_hop, end_to_end
            )
            + avps
        )
    except struct.error as error:
        raise ValueError(f"message header: {error}") from None


def _encode_avp(code: int, flags: int, vendor: int, data: bytes) -> bytes:
    """Generic AVP encoder: ``flags`` as given (V is added when ``vendor`` is set)."""
    size = len(data)
    try:
        if vendor or flags & AVP_VENDOR:
            length = 12 + size
            if length > MAX_LENGTH:
                raise ValueError(f"AVP {code}: payload of {size} bytes is too long")
            head = _pack_iii(code, ((flags | AVP_VENDOR) << 24) | length, vendor)
        else:
            length = 8 + size
            if length > MAX_LENGTH:
                raise ValueError(f"AVP {code}: payload of {size} bytes is too long")
            head = _pack_ii(code, (flags << 24) | length)
    except struct.error as error:
        raise ValueError(f"AVP {code}: {error}") from None
    return head + data + _PADDING[size & 3]


def avp_raw(code: int, data: bytes, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    """An AVP with ``data`` as payload: the OctetString / DiameterIdentity / pre-encoded form."""
    return _encode_avp(code, AVP_MANDATORY if mandatory else 0, vendor, data)


def avp_octets(code: int, data: bytes, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    return _encode_avp(code, AVP_MANDATORY if mandatory else 0, vendor, data)


def avp_utf8(code: int, text: str, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    return _encode_avp(code, AVP_MANDATORY if mandatory else 0, vendor, text.encode())


def avp_grouped(code: int, *children: bytes, vendor: int = 0, mandatory: bool = True) -> bytes:
    """A Grouped AVP of already encoded children."""
    return _encode_avp(code, AVP_MANDATORY if mandatory else 0, vendor, b"".join(children))


def avp_u32(code: int, value: int, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    try:
        if vendor:
            return _pack_iiii(code, 0xC0000010 if mandatory else 0x80000010, vendor, value)
        return _pack_iii(code, 0x4000000C if mandatory else 0x0000000C, value)
    except struct.error as error:
        raise ValueError(f"AVP {code}: Unsigned32 {value!r}: {error}") from None


def avp_u64(code: int, value: int, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    try:
        if vendor:
            return _pack_iii_q(code, 0xC0000014 if mandatory else 0x80000014, vendor, value)
        return _pack_ii_q(code, 0x40000010 if mandatory else 0x00000010, value)
    except struct.error as error:
        raise ValueError(f"AVP {code}: Unsigned64 {value!r}: {error}") from None


def avp_i32(code: int, value: int, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    try:
        if vendor:
            return _pack_iii_i(code, 0xC0000010 if mandatory else 0x80000010, vendor, value)
        return _pack_ii_i(code, 0x4000000C if mandatory else 0x0000000C, value)
    except struct.error as error:
        raise ValueError(f"AVP {code}: Integer32 {value!r}: {error}") from None


def avp_i64(code: int, value: int, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    try:
        if vendor:
            return _pack_iii_sq(code, 0xC0000014 if mandatory else 0x80000014, vendor, value)
        return _pack_ii_sq(code, 0x40000010 if mandatory else 0x00000010, value)
    except struct.error as error:
        raise ValueError(f"AVP {code}: Integer64 {value!r}: {error}") from None


def avp_f32(code: int, value: float, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    try:
        if vendor:
            return _pack_iii_f(code, 0xC0000010 if mandatory else 0x80000010, vendor, value)
        return _pack_ii_f(code, 0x4000000C if mandatory else 0x0000000C, value)
    except (struct.error, OverflowError) as error:
        raise ValueError(f"AVP {code}: Float32 {value!r}: {error}") from None


def avp_f64(code: int, value: float, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    try:
        if vendor:
            return _pack_iii_d(code, 0xC0000014 if mandatory else 0x80000014, vendor, value)
        return _pack_ii_d(code, 0x40000010 if mandatory else 0x00000010, value)
    except struct.error as error:
        raise ValueError(f"AVP {code}: Float64 {value!r}: {error}") from None


def avp_address(code: int, ip: str, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    """Address AVP of a textual IPv4 or IPv6 address (family 1 or 2). Raises ``ValueError`` otherwise."""
    address = ipaddress.ip_address(ip)
    family = b"\x00\x01" if address.version == 4 else b"\x00\x02"
    return _encode_avp(code, AVP_MANDATORY if mandatory else 0, vendor, family + address.packed)


def avp_time(code: int, unix_seconds: int, *, vendor: int = 0, mandatory: bool = True) -> bytes:
    """Time AVP: Unix seconds -> NTP seconds (era 0 from 1968-01-20, era 1 from 2036-02-07 until 2104).
    Raises ``ValueError`` outside what 32 bits can say (before 1968-01-20 03:14:08 or after 2104-02-26)."""
    ntp = unix_seconds + _NTP_TO_UNIX
    if _NTP_HIGH_BIT <= ntp < _NTP_ERA:
        pass
    elif _NTP_ERA <= ntp < _NTP_ERA + _NTP_HIGH_BIT:
        ntp -= _NTP_ERA
    else:
        raise ValueError(f"AVP {code}: Unix time {unix_seconds} cannot be said in 32-bit NTP seconds")
    return avp_u32(code, ntp, vendor=vendor, mandatory=mandatory)


# --- framing -----------------------------------------------------------------------------------------------


class Framer:
    """Cuts a TCP byte stream into whole messages, for any segmentation (byte by byte, many per read).

    Only the 4 bytes of version and length are judged here: version 1 and HEADER_LENGTH <= length <=
    ``max_length``, else ``FramingError`` — and every later ``feed`` raises it again, since the stream is
    lost. Everything else about a message is ``decode_message``'s to judge (and answer).
    """

    __slots__ = ("_broken", "_buffer", "_max_length")

    def __init__(self, max_length: int = 65536) -> None:
        if not HEADER_LENGTH <= max_length <= MAX_LENGTH:
            raise ValueError(f"max_length {max_length} outside {HEADER_LENGTH}..{MAX_LENGTH}")
        self._max_length = max_length
        self._buffer = bytearray()
        self._broken: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that do not make a whole message yet."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The whole messages completed by ``data`` (possibly none), each as its own ``bytes``."""
        if self._broken is not None:
            raise FramingError(self._broken)
        buffer = self._buffer
        stream: bytes | bytearray | memoryview
        if buffer:
            buffer += data
            stream = buffer
        else:
            stream = data
        size = len(stream)
        pos = 0
        messages = []
        max_length = self._max_length
        while size - pos >= 4:
            if stream[pos] != VERSION:
                self._fail(f"version {stream[pos]} at stream offset +{pos}, expected 1")
            length = int.from_bytes(stream[pos + 1 : pos + 4])
            if length < HEADER_LENGTH or length > max_length:
                self._fail(f"message length {length} outside {HEADER_LENGTH}..{max_length}")
            end = pos + length
            if end > size:
                break
            messages.append(bytes(stream[pos:end]))
            pos = end
        if pos < size and stream[pos] != VERSION:
            self._fail(f"version {stream[pos]} at stream offset +{pos}, expected 1")
        if stream is buffer:
            del buffer[:pos]
        elif pos < size:
            buffer += stream[pos:]
        return messages

    def _fail(self, reason: str) -> NoReturn:
        self._broken = reason
        self._buffer.clear()
        raise FramingError(reason)
