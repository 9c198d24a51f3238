"""The packets of ``occ bench radius``, every one built before its phase's timed window.

Each generator socket sends its own sequence of requests (``auth``: Access-Requests) or sessions
(``acct``): item ``q`` of socket ``s`` is number ``g = q × sockets + s`` and is built with Identifier
``q % 256`` (:func:`slot`), the one it gets when the socket's free Identifiers are handed out in turn and
come back in order. The Identifier is part of what the Message-Authenticator and an Accounting-Request's
Request Authenticator sign; when the generator has to use another one (answers came back out of order, or
an Identifier waits for a timeout), :func:`with_identifier` signs the packet again for it.

An accounting session is Start (total 0), ``interims`` Interim-Updates whose running total grows by
``step`` octets each, and Stop, whose total adds a few octets more (``1 + g % 997``, off the 1 KiB charging
increment so that rounding is exercised). All packets of one session go out on its socket with one
Identifier: the next only when the previous one was answered or timed out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass

from aaa import codec
from aaa.access import class_of
from aaa.attributes import Attrs

IDENTIFIERS = 256
SESSION_SECONDS = 60  # Acct-Session-Time grows by this much per report
TERMINATE_USER_REQUEST = 1  # Acct-Terminate-Cause


@dataclass(frozen=True, slots=True)
class Identity:
    """A bench subscriber: its account and its RADIUS User-Name."""

    account_id: str
    user: str


def slot(n: int, sockets: int) -> tuple[int, int]:
    """(socket, Identifier it is built with) of request or session number ``n``."""
    return n % sockets, (n // sockets) % IDENTIFIERS


def number(socket: int, q: int, sockets: int) -> int:
    """The number of the ``q``-th request or session of ``socket``."""
    return q * sockets + socket


def with_identifier(packet: bytes, identifier: int, secret: bytes, framing: codec.Framing) -> bytes:
    """``packet`` (built by :func:`aaa.codec.sign_request`) signed again with another Identifier: the
    Message-Authenticator, and an Accounting-Request's Request Authenticator, cover it."""
    out = bytearray(packet)
    out[1] = identifier
    digest = out[0] in codec.DIGEST_REQUESTS
    if digest:
        out[4 : codec.HEADER] = codec.ZERO16
    at = codec.message_authenticator_offset(out, int.from_bytes(out[2:4]), framing.message_authenticator)
    if at >= 0:
        out[at : at + 16] = codec.ZERO16
        out[at : at + 16] = hmac.digest(secret, bytes(out), "md5")
    if digest:
        out[4 : codec.HEADER] = hashlib.md5(bytes(out) + secret).digest()
    return bytes(out)


def session_total(step_index: int, session: int, interims: int, step: int) -> int:
    """The running total (octets) the ``step_index``-th report of session ``session`` carries."""
    if step_index <= interims:
        return step_index * step  # Start: 0
    return interims * step + 1 + session % 997


@dataclass(frozen=True, slots=True)
class PacketBuilder:
    attrs: Attrs
    secret: bytes
    nas_identifier: str
    password: bytes

    def access_request(self, identifier: int, user: str) -> bytes:
        """PAP with a Message-Authenticator and a fresh random Request Authenticator."""
        a = self.attrs
        authenticator = os.urandom(16)
        hidden = codec.hide_password(self.password, self.secret, authenticator)
        attributes = [
            (a.user_name, user.encode()),
            (a.user_password, hidden),
            (a.nas_identifier, self.nas_identifier.encode()),
        ]
        return codec.sign_request(
            codec.ACCESS_REQUEST, identifier, attributes, self.secret, a.framing, authenticator=authenticator
        )

    def accounting_request(
        self, identifier: int, status: int, session_id: str, who: Identity, total: int, seconds: int
    ) -> bytes:
        """An Accounting-Request as a NAS sends it after an occ Access-Accept (its Class echoed)."""
        a = self.attrs
        attributes = [
            (a.acct_status_type, status.to_bytes(4)),
            (a.acct_session_id, session_id.encode()),
            (a.user_name, who.user.encode()),
            (a.nas_identifier, self.nas_identifier.encode()),
            (a.class_, class_of(who.account_id)),
            (a.acct_session_time, seconds.to_bytes(4)),
            (a.acct_input_octets, (total & 0xFFFFFFFF).to_bytes(4)),
        ]
        if total >> 32:
            attributes.append((a.acct_input_gigawords, (total >> 32).to_bytes(4)))
        if status == a.status_stop:
            attributes.append((a.acct_terminate_cause, TERMINATE_USER_REQUEST.to_bytes(4)))
        return codec.sign_request(
            codec.ACCOUNTING_REQUEST,
            identifier,
            attributes,
            self.secret,
            a.framing,
            message_authenticator=False,
        )


def auth_packets(
    builder: PacketBuilder, identities: Sequence[Identity], count: int, sockets: int
) -> list[bytes]:
    """``count`` Access-Requests, request ``n`` for subscriber ``n % len(identities)``."""
    return [
        builder.access_request(slot(n, sockets)[1], identities[n % len(identities)].user)
        for n in range(count)
    ]


def acct_packets(
    builder: PacketBuilder,
    identities: Sequence[Identity],
    sessions: int,
    interims: int,
    step: int,
    sockets: int,
    tag: str,
) -> list[bytes]:
    """``sessions × (interims + 2)`` Accounting-Requests, session ``n``'s at ``n * (interims + 2)`` on;
    session ``n`` (Acct-Session-Id ``<tag>-<n>``) belongs to subscriber ``n % len(identities)``."""
    a = builder.attrs
    packets: list[bytes] = []
    per_session = interims + 2
    for n in range(sessions):
        who = identities[n % len(identities)]
        identifier = slot(n, sockets)[1]
        session_id = f"{tag}-{n}"
        for index in range(per_session):
            last = index == per_session - 1
            status = a.status_start if index == 0 else a.status_stop if last else a.status_interim
            total = session_total(index, n, interims, step)
            packets.append(
                builder.accounting_request(
                    identifier, status, session_id, who, total, index * SESSION_SECONDS
                )
            )
    return packets
