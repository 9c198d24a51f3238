"""The Diameter peer state machine of one accepted connection (RFC 6733 §5, RFC 3539 watchdog). No I/O.

Bytes go in with :meth:`PeerMachine.receive_data`, events come out; bytes to write are taken with
:meth:`PeerMachine.data_to_send`; time is passed in (``now``, seconds on any monotonic clock) and the one
timer the machine needs is read with :meth:`PeerMachine.next_timer` and fired with
:meth:`PeerMachine.handle_timer`. The asyncio adapter is :mod:`occ.diameter.transport`.

The server only accepts connections, so this is the responder half of RFC 6733 §5.6: a connection starts
waiting for the peer's CER (the RFC's Closed state receiving R-Conn-CER), and the election of §5.6.4 —
which decides between two connections both peers *initiated* — never happens. A second connection from an
Origin-Host that already has one is accepted as well (the peer most likely lost the first; the watchdog
reaps it).

States (RFC names in brackets)::

    WAIT_CER      accepted, nothing received yet                 [Closed + R-Conn-CER]
    OPEN          capabilities exchanged, watchdog idle          [R-Open, RFC 3539 OKAY]
    OPEN_PENDING  as OPEN, our DWR awaits its DWA               [R-Open, OKAY with Pending]
    CLOSING       our DPR awaits its DPA                         [Closing]
    DRAINING      DPR/DPA exchanged; answers still being worked
                  on go out, then the connection closes
    CLOSED        the transport must close the connection        [Closed]

Every input the machine can see is classified into one :class:`Input`; what happens is the
:data:`TRANSITIONS` table. One rule sits outside it: DRAINING with nothing outstanding is CLOSED at once.

Watchdog (RFC 3539 §3.4): any message received re-arms Tw; after Tw of silence a DWR goes out; if nothing
arrives within the next Tw the connection is closed. A server has nobody to fail over to, so RFC 3539's
SUSPECT state (one more Tw) is folded into that close.
"""

from __future__ import annotations

import enum
import fnmatch
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from occ.diameter.codec import (
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    HEADER_LENGTH,
    Avp,
    DecodeError,
    Framer,
    FramingError,
    Message,
    avp_address,
    avp_grouped,
    avp_octets,
    avp_u32,
    avp_utf8,
    decode_message,
    encode_message,
)
from occ.diameter.dictionary import (
    APP_COMMON,
    APP_RELAY,
    AVP_ACCT_APPLICATION_ID,
    AVP_AUTH_APPLICATION_ID,
    AVP_DESTINATION_HOST,
    AVP_DESTINATION_REALM,
    AVP_DISCONNECT_CAUSE,
    AVP_ERROR_MESSAGE,
    AVP_FAILED_AVP,
    AVP_FIRMWARE_REVISION,
    AVP_HOST_IP_ADDRESS,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_ORIGIN_STATE_ID,
    AVP_PRODUCT_NAME,
    AVP_PROXY_INFO,
    AVP_RESULT_CODE,
    AVP_SESSION_ID,
    AVP_SUPPORTED_VENDOR_ID,
    AVP_VENDOR_ID,
    AVP_VENDOR_SPECIFIC_APPLICATION_ID,
    CMD_CAPABILITIES_EXCHANGE,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    DIAMETER_APPLICATION_UNSUPPORTED,
    DIAMETER_COMMAND_UNSUPPORTED,
    DIAMETER_MISSING_AVP,
    DIAMETER_NO_COMMON_APPLICATION,
    DIAMETER_REALM_NOT_SERVED,
    DIAMETER_SUCCESS,
    DIAMETER_TOO_BUSY,
    DIAMETER_UNABLE_TO_DELIVER,
    DIAMETER_UNKNOWN_PEER,
    DISCONNECT_CAUSE_REBOOTING,
)

# ---- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """Who we are and whom we accept; shared by every connection, replaced as a whole on reload."""

    origin_host: str
    origin_realm: str
    # Per process start, constant (RFC 6733 §8.16); also seeds the End-to-End identifiers.
    origin_state_id: int
    host_ip_addresses: tuple[str, ...] = ("127.0.0.1",)
    vendor_id: int = 0
    product_name: str = "occ"
    firmware_revision: int = 1
    # (host pattern, realm pattern): fnmatch, case-insensitive; "*" matches anything.
    allowed_peers: tuple[tuple[str, str], ...] = (("*", "*"),)
    # Application-Id -> command codes of the requests it answers.
    applications: Mapping[int, frozenset[int]] = field(default_factory=dict)
    # Vendor-Specific-Application-Id entries advertised in the CEA: (Vendor-Id, Auth-Application-Id).
    vendor_specific_applications: tuple[tuple[int, int], ...] = ()
    supported_vendor_ids: tuple[int, ...] = ()
    watchdog_s: float = 30.0
    max_message_length: int = 65536
    # Longest wait for a DPA (ours sent) or for answers in flight after DPR/DPA.
    disconnect_timeout_s: float = 5.0
    # Realms served here besides origin_realm (RFC 6733 §6.1.4: requests for other realms get 3003).
    served_realms: tuple[str, ...] = ()

    def serves_realm(self, realm: str) -> bool:
        realm = realm.lower()
        return realm == self.origin_realm.lower() or any(realm == r.lower() for r in self.served_realms)

    def peer_allowed(self, host: str, realm: str) -> bool:
        host, realm = host.lower(), realm.lower()
        return any(
            fnmatch.fnmatchcase(host, h.lower()) and fnmatch.fnmatchcase(realm, r.lower())
            for h, r in self.allowed_peers
        )

    @property
    def jitter_s(self) -> float:
        # RFC 3539 §3.4.1: Tw is jittered by up to ±2 s; a quarter of Tw at most for the tiny Tw of tests.
        return min(2.0, self.watchdog_s / 4)


# ---- states, inputs, actions, the table ----------------------------------------------------------------


class State(enum.Enum):
    __hash__ = object.__hash__  # identity, as equality is: the table is looked up per message

    WAIT_CER = "wait_cer"
    OPEN = "open"
    OPEN_PENDING = "open_pending"
    CLOSING = "closing"
    DRAINING = "draining"
    CLOSED = "closed"


class Input(enum.Enum):
    __hash__ = object.__hash__  # identity, as equality is: the table is looked up per message

    # from the peer (classified by receive_data)
    CER = "cer"  # acceptable capabilities exchange request
    CER_REJECTED = "cer_rejected"  # unknown peer, no common application, missing or malformed AVP
    CEA = "cea"
    DWR = "dwr"
    DWA = "dwa"
    DPR = "dpr"
    DPA = "dpa"
    APP_REQUEST = "app_request"  # a request some application answers
    UNSUPPORTED_REQUEST = "unsupported_request"  # unknown command or application: 3001 / 3007
    BAD_REQUEST = "bad_request"  # decode error with a readable header: answered with its Result-Code
    APP_ANSWER = "app_answer"  # answer to one of our application requests
    BAD_ANSWER = "bad_answer"  # answer that does not decode: dropped
    GARBAGE = "garbage"  # unreadable header, bad framing, message too long
    # from the clock
    TIMER = "timer"
    # from the transport / applications
    SEND_ANSWER = "send_answer"
    SEND_REQUEST = "send_request"
    DISCONNECT = "disconnect"
    CONNECTION_LOST = "connection_lost"


class Action(enum.Enum):
    ACCEPT_CER = "accept_cer"  # CEA 2001
    REJECT_CER = "reject_cer"  # CEA with the error, then close
    ANSWER_DWR = "answer_dwr"
    ANSWER_DPR = "answer_dpr"  # DPA, then drain and close
    CLEAR_WATCHDOG = "clear_watchdog"  # a DWA: OPEN_PENDING -> OPEN (the state is RFC 3539's Pending)
    DPA_RECEIVED = "dpa_received"  # drain, then close
    DISPATCH = "dispatch"  # RequestReceived event
    ANSWER_UNSUPPORTED = "answer_unsupported"  # 3001 / 3007
    ANSWER_ERROR = "answer_error"  # Result-Code of the decode error
    ANSWER_BUSY = "answer_busy"  # 3004: we are leaving, ask another peer
    DELIVER = "deliver"  # AnswerReceived event
    DISCARD = "discard"  # Discarded event, nothing sent
    SEND_DWR = "send_dwr"
    SEND_DPR = "send_dpr"
    WRITE_ANSWER = "write_answer"
    WRITE_REQUEST = "write_request"
    DROP_ANSWER = "drop_answer"  # the connection is gone; an answer finished too late
    MISUSE = "misuse"  # the caller broke the API contract: LocalProtocolError
    NOTHING = "nothing"
    CLOSE = "close"


_OPEN_ROW: dict[Input, tuple[Action, State]] = {
    # a repeated CER is answered again (RFC 6733 §5.6: R-Open R-Rcv-CER)
    Input.CER: (Action.ACCEPT_CER, State.OPEN),
    Input.CER_REJECTED: (Action.REJECT_CER, State.CLOSED),
    Input.CEA: (Action.DISCARD, State.OPEN),  # we never send a CER
    Input.DWR: (Action.ANSWER_DWR, State.OPEN),
    Input.DWA: (Action.CLEAR_WATCHDOG, State.OPEN),
    Input.DPR: (Action.ANSWER_DPR, State.DRAINING),
    Input.DPA: (Action.DISCARD, State.OPEN),  # we sent no DPR
    Input.APP_REQUEST: (Action.DISPATCH, State.OPEN),
    Input.UNSUPPORTED_REQUEST: (Action.ANSWER_UNSUPPORTED, State.OPEN),
    Input.BAD_REQUEST: (Action.ANSWER_ERROR, State.OPEN),
    Input.APP_ANSWER: (Action.DELIVER, State.OPEN),
    Input.BAD_ANSWER: (Action.DISCARD, State.OPEN),
    Input.GARBAGE: (Action.CLOSE, State.CLOSED),
    Input.TIMER: (Action.SEND_DWR, State.OPEN_PENDING),
    Input.SEND_ANSWER: (Action.WRITE_ANSWER, State.OPEN),
    Input.SEND_REQUEST: (Action.WRITE_REQUEST, State.OPEN),
    Input.DISCONNECT: (Action.SEND_DPR, State.CLOSING),
    Input.CONNECTION_LOST: (Action.CLOSE, State.CLOSED),
}


def _pending(row: dict[Input, tuple[Action, State]]) -> dict[Input, tuple[Action, State]]:
    """OPEN_PENDING behaves as OPEN but stays pending, except for the DWA and the timer."""
    out: dict[Input, tuple[Action, State]] = {
        i: (a, State.OPEN_PENDING if s is State.OPEN else s) for i, (a, s) in row.items()
    }
    out[Input.DWA] = (Action.CLEAR_WATCHDOG, State.OPEN)
    out[Input.TIMER] = (Action.CLOSE, State.CLOSED)  # no DWA (nor anything else) within Tw of our DWR
    return out


TRANSITIONS: dict[State, dict[Input, tuple[Action, State]]] = {
    State.WAIT_CER: {
        Input.CER: (Action.ACCEPT_CER, State.OPEN),
        Input.CER_REJECTED: (Action.REJECT_CER, State.CLOSED),
        # anything but a CER before the capabilities exchange: close (RFC 6733 §5.3)
        Input.CEA: (Action.CLOSE, State.CLOSED),
        Input.DWR: (Action.CLOSE, State.CLOSED),
        Input.DWA: (Action.CLOSE, State.CLOSED),
        Input.DPR: (Action.CLOSE, State.CLOSED),
        Input.DPA: (Action.CLOSE, State.CLOSED),
        Input.APP_REQUEST: (Action.CLOSE, State.CLOSED),
        Input.UNSUPPORTED_REQUEST: (Action.CLOSE, State.CLOSED),
        Input.BAD_REQUEST: (Action.CLOSE, State.CLOSED),
        Input.APP_ANSWER: (Action.CLOSE, State.CLOSED),
        Input.BAD_ANSWER: (Action.CLOSE, State.CLOSED),
        Input.GARBAGE: (Action.CLOSE, State.CLOSED),
        Input.TIMER: (Action.CLOSE, State.CLOSED),  # no CER within Tw of the accept
        Input.SEND_ANSWER: (Action.MISUSE, State.WAIT_CER),  # nothing was dispatched yet
        Input.SEND_REQUEST: (Action.MISUSE, State.WAIT_CER),
        Input.DISCONNECT: (Action.CLOSE, State.CLOSED),  # nobody to say goodbye to yet
        Input.CONNECTION_LOST: (Action.CLOSE, State.CLOSED),
    },
    State.OPEN: _OPEN_ROW,
    State.OPEN_PENDING: _pending(_OPEN_ROW),
    State.CLOSING: {
        Input.CER: (Action.ANSWER_BUSY, State.CLOSING),
        Input.CER_REJECTED: (Action.REJECT_CER, State.CLOSED),
        Input.CEA: (Action.DISCARD, State.CLOSING),
        Input.DWR: (Action.ANSWER_DWR, State.CLOSING),
        Input.DWA: (Action.NOTHING, State.CLOSING),
        Input.DPR: (Action.ANSWER_DPR, State.DRAINING),  # both sides said goodbye at once
        Input.DPA: (Action.DPA_RECEIVED, State.DRAINING),
        # we are leaving: 3004 DIAMETER_TOO_BUSY, the client retries elsewhere
        Input.APP_REQUEST: (Action.ANSWER_BUSY, State.CLOSING),
        Input.UNSUPPORTED_REQUEST: (Action.ANSWER_UNSUPPORTED, State.CLOSING),
        Input.BAD_REQUEST: (Action.ANSWER_ERROR, State.CLOSING),
        Input.APP_ANSWER: (Action.DELIVER, State.CLOSING),
        Input.BAD_ANSWER: (Action.DISCARD, State.CLOSING),
        Input.GARBAGE: (Action.CLOSE, State.CLOSED),
        Input.TIMER: (Action.CLOSE, State.CLOSED),  # no DPA in time
        Input.SEND_ANSWER: (Action.WRITE_ANSWER, State.CLOSING),
        Input.SEND_REQUEST: (Action.MISUSE, State.CLOSING),
        Input.DISCONNECT: (Action.NOTHING, State.CLOSING),
        Input.CONNECTION_LOST: (Action.CLOSE, State.CLOSED),
    },
    State.DRAINING: {
        Input.CER: (Action.ANSWER_BUSY, State.DRAINING),
        Input.CER_REJECTED: (Action.REJECT_CER, State.CLOSED),
        Input.CEA: (Action.DISCARD, State.DRAINING),
        Input.DWR: (Action.ANSWER_DWR, State.DRAINING),
        Input.DWA: (Action.NOTHING, State.DRAINING),
        Input.DPR: (Action.ANSWER_DPR, State.DRAINING),
        Input.DPA: (Action.NOTHING, State.DRAINING),
        Input.APP_REQUEST: (Action.ANSWER_BUSY, State.DRAINING),
        Input.UNSUPPORTED_REQUEST: (Action.ANSWER_UNSUPPORTED, State.DRAINING),
        Input.BAD_REQUEST: (Action.ANSWER_ERROR, State.DRAINING),
        Input.APP_ANSWER: (Action.DELIVER, State.DRAINING),
        Input.BAD_ANSWER: (Action.DISCARD, State.DRAINING),
        Input.GARBAGE: (Action.CLOSE, State.CLOSED),
        Input.TIMER: (Action.CLOSE, State.CLOSED),  # answers in flight took too long
        # the last answer outstanding closes (the rule outside the table)
        Input.SEND_ANSWER: (Action.WRITE_ANSWER, State.DRAINING),
        Input.SEND_REQUEST: (Action.MISUSE, State.DRAINING),
        Input.DISCONNECT: (Action.NOTHING, State.DRAINING),
        Input.CONNECTION_LOST: (Action.CLOSE, State.CLOSED),
    },
    State.CLOSED: {
        **{i: (Action.NOTHING, State.CLOSED) for i in Input},
        Input.SEND_ANSWER: (Action.DROP_ANSWER, State.CLOSED),
        Input.SEND_REQUEST: (Action.MISUSE, State.CLOSED),
    },
}


# ---- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerOpened:
    """The capabilities exchange succeeded."""

    peer_host: str
    peer_realm: str
    # Application-Ids the peer advertised (APP_RELAY for a relay / proxy).
    applications: frozenset[int]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """An application request: answer it with :meth:`PeerMachine.send_answer` (in any order)."""

    message: Message


@dataclass(frozen=True, slots=True)
class AnswerReceived:
    """An answer to a request sent with :meth:`PeerMachine.send_request` (match it by Hop-by-Hop)."""

    message: Message


@dataclass(frozen=True, slots=True)
class Answered:
    """The machine answered a request itself (base protocol or error): for metrics."""

    command: int
    result_code: int


@dataclass(frozen=True, slots=True)
class Discarded:
    """Something received was dropped without an answer (for logs and metrics)."""

    reason: str  # short and from a fixed set (a metric label)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is over: write what data_to_send() holds, then close it."""

    reason: str  # short and from a fixed set (a metric label), see _close_reason
    detail: str = ""


Event = PeerOpened | RequestReceived | AnswerReceived | Answered | Discarded | Closed


class LocalProtocolError(Exception):
    """The caller misused the machine (e.g. sent a request on a connection that is not open)."""


# ---- the machine -------------------------------------------------------------------------------------


class PeerMachine:
    """One accepted connection, from the first byte to the close."""

    def __init__(self, config: PeerConfig, now: float, rng: random.Random | None = None) -> None:
        # Replaceable at any time (reload): read for every new message and timer.
        self.config = config
        self.state = State.WAIT_CER
        self.peer_host = ""
        self.peer_realm = ""
        self.peer_applications: frozenset[int] = frozenset()
        self.close_reason = ""
        self.close_detail = ""
        # Application requests dispatched and not answered yet.
        self.outstanding = 0
        self._rng = rng or random.Random()
        self._framer = Framer(config.max_message_length)
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._timer: float | None = now + config.watchdog_s
        self._hop_by_hop = self._rng.getrandbits(32)
        # RFC 6733 §3: high 12 bits from the (start) time, low 20 bits random, then incremented.
        self._end_to_end = ((config.origin_state_id & 0xFFF) << 20) | self._rng.getrandbits(20)
        self._disconnect_cause = DISCONNECT_CAUSE_REBOOTING

    # -- public API ------------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes as they arrive (any segmentation); returns what happened."""
        if self.state is State.CLOSED:
            return []
        try:
            frames = self._framer.feed(data)
        except FramingError as exc:
            frames = None
            framing_error = str(exc) or type(exc).__name__
        for frame in frames or ():
            if self._closed:
                break
            self._receive_frame(frame, now)
        if frames is None and not self._closed:
            self._fire(Input.GARBAGE, now, detail=f"framing: {framing_error}")
        return self._take_events()

    def data_to_send(self) -> bytes:
        """Bytes to write to the connection, in order (empty when there are none)."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next, or None."""
        return self._timer

    def handle_timer(self, now: float) -> list[Event]:
        """Call at (or after) :meth:`next_timer`; early calls do nothing."""
        if self._timer is not None and now >= self._timer:
            self._fire(Input.TIMER, now)
        return self._take_events()

    def next_ids(self) -> tuple[int, int]:
        """Fresh (Hop-by-Hop, End-to-End) identifiers for a request we originate."""
        self._hop_by_hop = (self._hop_by_hop + 1) & 0xFFFFFFFF
        self._end_to_end = (self._end_to_end + 1) & 0xFFFFFFFF
        return self._hop_by_hop, self._end_to_end

    def send_answer(self, data: bytes, now: float) -> list[Event]:
        """Queue the encoded answer to a :class:`RequestReceived` (answers may go in any order)."""
        self._fire(Input.SEND_ANSWER, now, data=data)
        return self._take_events()

    def send_request(self, data: bytes, now: float) -> list[Event]:
        """Queue an application request built with :meth:`next_ids`; raises LocalProtocolError unless open."""
        self._fire(Input.SEND_REQUEST, now, data=data)
        return self._take_events()

    def disconnect(self, now: float, cause: int = DISCONNECT_CAUSE_REBOOTING) -> list[Event]:
        """Say goodbye: DPR (Disconnect-Cause ``cause``), wait for the DPA, let answers in flight out."""
        self._disconnect_cause = cause
        self._fire(Input.DISCONNECT, now)
        return self._take_events()

    def connection_lost(self, now: float) -> list[Event]:
        self._fire(Input.CONNECTION_LOST, now)
        return self._take_events()

    @property
    def is_open(self) -> bool:
        return self.state in (State.OPEN, State.OPEN_PENDING)

    @property
    def _closed(self) -> bool:
        return self.state is State.CLOSED

    # -- classification --------------------------------------------------------------------------------

    def _receive_frame(self, frame: bytes, now: float) -> None:
        if self.state in (State.OPEN, State.OPEN_PENDING):
            # RFC 3539: any traffic re-arms the watchdog (a pending DWR stays pending)
            self._timer = now + self._tw()
        try:
            message = decode_message(frame)
        except DecodeError as exc:
            if exc.header is None:
                self._fire(Input.GARBAGE, now, detail=f"unreadable header: {exc}")
            elif exc.header[0] & FLAG_REQUEST:
                is_cer = exc.header[1] == CMD_CAPABILITIES_EXCHANGE
                self._fire(Input.CER_REJECTED if is_cer else Input.BAD_REQUEST, now, frame=frame, error=exc)
            else:
                self._fire(Input.BAD_ANSWER, now, detail=str(exc))
            return
        code = message.code
        if message.is_request:
            if code == CMD_CAPABILITIES_EXCHANGE:
                result = self._check_cer(message)
                if result is None:
                    self._fire(Input.CER, now, message=message)
                else:
                    self._fire(Input.CER_REJECTED, now, message=message, result=result)
            elif code == CMD_DEVICE_WATCHDOG:
                self._fire(Input.DWR, now, message=message)
            elif code == CMD_DISCONNECT_PEER:
                self._fire(Input.DPR, now, message=message)
            else:
                commands = self.config.applications.get(message.application_id)
                if commands is None or code not in commands:
                    self._fire(Input.UNSUPPORTED_REQUEST, now, message=message)
                elif (refused := self._check_destination(message)) is not None:
                    self._fire(Input.UNSUPPORTED_REQUEST, now, message=message, result=(refused, None))
                else:
                    self._fire(Input.APP_REQUEST, now, message=message)
        elif code == CMD_CAPABILITIES_EXCHANGE:
            self._fire(Input.CEA, now)
        elif code == CMD_DEVICE_WATCHDOG:
            self._fire(Input.DWA, now, message=message)
        elif code == CMD_DISCONNECT_PEER:
            self._fire(Input.DPA, now, message=message)
        else:
            self._fire(Input.APP_ANSWER, now, message=message)

    def _check_cer(self, cer: Message) -> tuple[int, bytes | None] | None:
        """None when the CER is acceptable, else (Result-Code, Failed-AVP content)."""
        for code in (AVP_ORIGIN_HOST, AVP_ORIGIN_REALM):
            if cer.find(code) is None:
                # RFC 6733 §7.5: a missing AVP is reported as an example of it, with a zero-length value
                return DIAMETER_MISSING_AVP, avp_octets(code, b"")
        host = _text(cer.find(AVP_ORIGIN_HOST))
        realm = _text(cer.find(AVP_ORIGIN_REALM))
        if not self.config.peer_allowed(host, realm):
            return DIAMETER_UNKNOWN_PEER, None
        offered = advertised_applications(cer)
        ours = set(self.config.applications) - {APP_COMMON}
        if APP_RELAY not in offered and not offered & ours:
            return DIAMETER_NO_COMMON_APPLICATION, None
        return None

    def _check_destination(self, request: Message) -> int | None:
        """RFC 6733 §6.1.4: a request is ours when its Destination-Host names us, or when it has none and
        its Destination-Realm is one we serve. This node relays nothing, so a request for another host
        gets 3002 DIAMETER_UNABLE_TO_DELIVER and one for another realm 3003 DIAMETER_REALM_NOT_SERVED. A
        missing Destination-Realm is the application's to report (5005, with the rest of its checks)."""
        host = request.find(AVP_DESTINATION_HOST)
        if host is not None:
            if _text(host).lower() != self.config.origin_host.lower():
                return DIAMETER_UNABLE_TO_DELIVER
            return None
        realm = request.find(AVP_DESTINATION_REALM)
        if realm is not None and not self.config.serves_realm(_text(realm)):
            return DIAMETER_REALM_NOT_SERVED
        return None

    # -- the table at work -----------------------------------------------------------------------------

    def _fire(
        self,
        inp: Input,
        now: float,
        *,
        message: Message | None = None,
        frame: bytes = b"",
        data: bytes = b"",
        error: DecodeError | None = None,
        result: tuple[int, bytes | None] | None = None,
        detail: str = "",
    ) -> None:
        action, target = TRANSITIONS[self.state][inp]
        if action is Action.MISUSE:
            raise LocalProtocolError(f"{inp.value} is not possible in state {self.state.value}")
        previous = self.state
        self.state = target
        # the two actions of every application request first: this is the hot path
        if action is Action.DISPATCH:
            assert message is not None
            self.outstanding += 1
            self._events.append(RequestReceived(message))
        elif action is Action.WRITE_ANSWER:
            self.outstanding = max(0, self.outstanding - 1)
            self._out.append(data)
        elif action is Action.ACCEPT_CER:
            assert message is not None
            self._accept_cer(message)
        elif action is Action.REJECT_CER:
            self._reject_cer(message, frame, error, result)
        elif action is Action.ANSWER_DWR:
            assert message is not None
            self._answer_base(
                message, DIAMETER_SUCCESS, avp_u32(AVP_ORIGIN_STATE_ID, self.config.origin_state_id)
            )
        elif action is Action.ANSWER_DPR:
            assert message is not None
            self._answer_base(message, DIAMETER_SUCCESS)
            self.close_reason = "peer_dpr"
        elif action is Action.DPA_RECEIVED:
            self.close_reason = "disconnected"
        elif action is Action.ANSWER_UNSUPPORTED:
            assert message is not None
            if result is not None:  # known command, but not for this node
                self._answer_error(message, result[0])
            else:
                known = message.application_id in self.config.applications or (
                    message.application_id == APP_COMMON
                )
                self._answer_error(
                    message, DIAMETER_COMMAND_UNSUPPORTED if known else DIAMETER_APPLICATION_UNSUPPORTED
                )
        elif action is Action.ANSWER_ERROR:
            assert error is not None
            self._answer_decode_error(frame, error)
        elif action is Action.ANSWER_BUSY:
            assert message is not None
            self._answer_error(message, DIAMETER_TOO_BUSY)
        elif action is Action.DELIVER:
            assert message is not None
            self._events.append(AnswerReceived(message))
        elif action is Action.DISCARD:
            self._events.append(Discarded(inp.value, detail))
        elif action is Action.SEND_DWR:
            self._send_dwr()
        elif action is Action.SEND_DPR:
            self._send_dpr()
        elif action is Action.WRITE_REQUEST:
            self._out.append(data)
        elif action is Action.CLOSE:
            self.close_reason = _close_reason(previous, inp)
            self.close_detail = detail
        # DROP_ANSWER and NOTHING: nothing to do

        # The one rule outside the table: DRAINING ends when nothing is outstanding any more.
        if target is previous and target is not State.DRAINING:
            return  # staying keeps the deadline (receipt re-arms Tw separately)
        if target is State.DRAINING and self.outstanding == 0:
            self.state = State.CLOSED
            self.close_reason = self.close_reason or "disconnected"
        self._set_timer(previous, now)
        if self.state is State.CLOSED and previous is not State.CLOSED:
            self._events.append(Closed(self.close_reason or "closed", self.close_detail))

    def _set_timer(self, previous: State, now: float) -> None:
        """Entering a state sets its deadline; staying keeps it (receipt re-arms Tw separately)."""
        state = self.state
        if state is previous:
            return
        if state in (State.OPEN, State.OPEN_PENDING):
            self._timer = now + self._tw()
        elif state in (State.CLOSING, State.DRAINING):
            self._timer = now + self.config.disconnect_timeout_s
        else:
            self._timer = None

    def _tw(self) -> float:
        jitter = self.config.jitter_s
        return max(0.0, self.config.watchdog_s + self._rng.uniform(-jitter, jitter))

    # -- actions ---------------------------------------------------------------------------------------

    def _identity(self) -> bytes:
        return avp_utf8(AVP_ORIGIN_HOST, self.config.origin_host) + avp_utf8(
            AVP_ORIGIN_REALM, self.config.origin_realm
        )

    def _accept_cer(self, cer: Message) -> None:
        self.peer_host = _text(cer.find(AVP_ORIGIN_HOST))
        self.peer_realm = _text(cer.find(AVP_ORIGIN_REALM))
        self.peer_applications = frozenset(advertised_applications(cer))
        cfg = self.config
        avps = [
            avp_u32(AVP_RESULT_CODE, DIAMETER_SUCCESS),
            self._identity(),
            *(avp_address(AVP_HOST_IP_ADDRESS, ip) for ip in cfg.host_ip_addresses),
            avp_u32(AVP_VENDOR_ID, cfg.vendor_id),
            avp_utf8(AVP_PRODUCT_NAME, cfg.product_name, mandatory=False),
            avp_u32(AVP_ORIGIN_STATE_ID, cfg.origin_state_id),
            *(avp_u32(AVP_SUPPORTED_VENDOR_ID, v) for v in cfg.supported_vendor_ids),
            *(avp_u32(AVP_AUTH_APPLICATION_ID, app) for app in sorted(cfg.applications) if app != APP_COMMON),
            *(
                avp_grouped(
                    AVP_VENDOR_SPECIFIC_APPLICATION_ID,
                    avp_u32(AVP_VENDOR_ID, vendor) + avp_u32(AVP_AUTH_APPLICATION_ID, app),
                )
                for vendor, app in cfg.vendor_specific_applications
            ),
            avp_u32(AVP_FIRMWARE_REVISION, cfg.firmware_revision, mandatory=False),
        ]
        self._write_answer(cer.code, cer.application_id, cer.flags, cer.hop_by_hop, cer.end_to_end, avps)
        self._events.append(Answered(cer.code, DIAMETER_SUCCESS))
        self._events.append(PeerOpened(self.peer_host, self.peer_realm, self.peer_applications))

    def _reject_cer(
        self,
        cer: Message | None,
        frame: bytes,
        error: DecodeError | None,
        result: tuple[int, bytes | None] | None,
    ) -> None:
        self.close_reason = "cer_rejected"
        if error is not None:
            self._answer_decode_error(frame, error)
            self.close_detail = f"malformed CER: {error}"
            return
        assert cer is not None and result is not None
        code, failed = result
        self._answer_error(cer, code, failed_avp=failed)
        self.close_detail = {
            DIAMETER_UNKNOWN_PEER: "3010: peer not allowed",
            DIAMETER_NO_COMMON_APPLICATION: "5010: no common application",
        }.get(code, f"{code}: Origin-Host/Origin-Realm missing")

    def _answer_base(self, request: Message, result_code: int, *extra: bytes) -> None:
        avps = [avp_u32(AVP_RESULT_CODE, result_code), self._identity(), *extra]
        self._write_answer(
            request.code, request.application_id, request.flags, request.hop_by_hop, request.end_to_end, avps
        )
        self._events.append(Answered(request.code, result_code))

    def _answer_error(self, request: Message, result_code: int, *, failed_avp: bytes | None = None) -> None:
        self._out.append(answer_error_to(self.config, request, result_code, failed_avp))
        self._events.append(Answered(request.code, result_code))

    def _answer_decode_error(self, frame: bytes, error: DecodeError) -> None:
        assert error.header is not None
        session, proxies = salvage_echo_avps(frame)
        self._write_error(error.header, error.result_code, session, proxies, error.failed_avp)

    def _write_error(
        self,
        header: tuple[int, int, int, int, int],
        result_code: int,
        session_id: bytes | None,
        proxy_infos: Iterable[bytes],
        failed_avp: bytes | None,
    ) -> None:
        flags, code, app_id, hbh, e2e = header
        data = error_answer(
            self.config, flags, code, app_id, hbh, e2e, result_code, session_id, proxy_infos, failed_avp
        )
        self._out.append(data)
        self._events.append(Answered(code, result_code))

    def _write_answer(
        self, code: int, app_id: int, request_flags: int, hbh: int, e2e: int, avps: list[bytes]
    ) -> None:
        flags = request_flags & FLAG_PROXIABLE  # RFC 6733 §6.2: the P bit as in the request
        self._out.append(encode_message(flags, code, app_id, hbh, e2e, b"".join(avps)))

    def _send_dwr(self) -> None:
        hbh, e2e = self.next_ids()
        avps = self._identity() + avp_u32(AVP_ORIGIN_STATE_ID, self.config.origin_state_id)
        self._out.append(encode_message(FLAG_REQUEST, CMD_DEVICE_WATCHDOG, 0, hbh, e2e, avps))

    def _send_dpr(self) -> None:
        hbh, e2e = self.next_ids()
        avps = self._identity() + avp_u32(AVP_DISCONNECT_CAUSE, self._disconnect_cause)
        self._out.append(encode_message(FLAG_REQUEST, CMD_DISCONNECT_PEER, 0, hbh, e2e, avps))

    def _take_events(self) -> list[Event]:
        if not self._events:
            return []
        events = self._events
        self._events = []
        return events


# Why a CLOSE action closed, as a metric label. Elsewhere: cer_rejected, peer_dpr (DPR received and
# answered), disconnected (our DPR answered).
_CLOSE_REASONS: dict[tuple[State, Input], str] = {
    (State.WAIT_CER, Input.TIMER): "no_cer",  # no CER within Tw of the accept
    (State.OPEN_PENDING, Input.TIMER): "watchdog",  # no answer to our DWR within Tw
    (State.CLOSING, Input.TIMER): "no_dpa",
    (State.DRAINING, Input.TIMER): "drain_timeout",  # answers in flight took too long after DPR/DPA
    (State.WAIT_CER, Input.DISCONNECT): "shutdown",
}


def _close_reason(state: State, inp: Input) -> str:
    if (state, inp) in _CLOSE_REASONS:
        return _CLOSE_REASONS[state, inp]
    if inp in (Input.GARBAGE, Input.CONNECTION_LOST):
        return str(inp.value)
    return "before_cer"  # anything but a CER first


# ---- helpers (pure, also used by the transport and tests) -------------------------------------------


def _text(avp: Avp | None) -> str:
    if avp is None:
        return ""
    try:
        return avp.utf8()
    except Exception:
        return avp.data.decode("utf-8", "replace")


def advertised_applications(cer: Message) -> set[int]:
    """Application-Ids of a CER: Auth-, Acct- and those inside Vendor-Specific-Application-Id."""
    apps: set[int] = set()

    def collect(avps: Iterable[Avp]) -> None:
        for avp in avps:
            if avp.vendor:
                continue
            try:
                if avp.code in (AVP_AUTH_APPLICATION_ID, AVP_ACCT_APPLICATION_ID):
                    apps.add(avp.u32())
                elif avp.code == AVP_VENDOR_SPECIFIC_APPLICATION_ID:
                    collect(avp.grouped())
            except Exception:  # a malformed value advertises nothing
                continue

    collect(cer.avps)
    return apps


def error_answer(
    config: PeerConfig,
    request_flags: int,
    code: int,
    app_id: int,
    hop_by_hop: int,
    end_to_end: int,
    result_code: int,
    session_id: bytes | None = None,
    proxy_infos: Iterable[bytes] = (),
    failed_avp: bytes | None = None,
    error_message: str = "",
) -> bytes:
    """An answer-message (RFC 6733 §7.2) carrying ``result_code``: the E bit for protocol errors (3xxx),
    Session-Id first, Failed-AVP when known, Proxy-Info echoed in order."""
    flags = request_flags & FLAG_PROXIABLE
    if 3000 <= result_code < 4000:
        flags |= FLAG_ERROR
    avps = [
        session_id or b"",
        avp_utf8(AVP_ORIGIN_HOST, config.origin_host),
        avp_utf8(AVP_ORIGIN_REALM, config.origin_realm),
        avp_u32(AVP_RESULT_CODE, result_code),
        avp_u32(AVP_ORIGIN_STATE_ID, config.origin_state_id),
        avp_utf8(AVP_ERROR_MESSAGE, error_message, mandatory=False) if error_message else b"",
        avp_grouped(AVP_FAILED_AVP, _sane_flags(failed_avp)) if failed_avp is not None else b"",
        *proxy_infos,
    ]
    return encode_message(flags, code, app_id, hop_by_hop, end_to_end, b"".join(avps))


def _sane_flags(avp: bytes) -> bytes:
    """The offending AVP for Failed-AVP with its reserved flag bits cleared: the Result-Code (3009) already
    says they were set, and an answer carrying them would itself be malformed."""
    if len(avp) > 4 and avp[4] & 0x1F:
        return avp[:4] + bytes([avp[4] & 0xE0]) + avp[5:]
    return avp


def answer_error_to(
    config: PeerConfig, request: Message, result_code: int, failed_avp: bytes | None = None
) -> bytes:
    """:func:`error_answer` to a decoded request, echoing its Session-Id and Proxy-Info."""
    session = request.find(AVP_SESSION_ID)
    return error_answer(
        config,
        request.flags,
        request.code,
        request.application_id,
        request.hop_by_hop,
        request.end_to_end,
        result_code,
        session.encoded() if session is not None else None,
        [p.encoded() for p in request.find_all(AVP_PROXY_INFO)],
        failed_avp,
    )


def salvage_echo_avps(frame: bytes) -> tuple[bytes | None, list[bytes]]:
    """Session-Id and Proxy-Info AVPs (encoded, in order) of a message that failed to decode, read as far
    as its top-level AVP headers hold together."""
    session: bytes | None = None
    proxies: list[bytes] = []
    pos, end = HEADER_LENGTH, len(frame)
    while pos + 8 <= end:
        code = int.from_bytes(frame[pos : pos + 4], "big")
        flags = frame[pos + 4]
        length = int.from_bytes(frame[pos + 5 : pos + 8], "big")
        header = 12 if flags & 0x80 else 8
        if length < header or pos + length > end:
            break
        if not flags & 0x80:
            if code == AVP_SESSION_ID and session is None:
                session = frame[pos : pos + length] + b"\0" * (-length % 4)
            elif code == AVP_PROXY_INFO:
                proxies.append(frame[pos : pos + length] + b"\0" * (-length % 4))
        pos += length + (-length % 4)
    return session, proxies


def result_code_of(answer: bytes) -> int | None:
    """The top-level Result-Code of an encoded answer (a cheap walk over AVP headers), for metrics."""
    pos, end = HEADER_LENGTH, len(answer)
    while pos + 8 <= end:
        code = int.from_bytes(answer[pos : pos + 4], "big")
        flags = answer[pos + 4]
        length = int.from_bytes(answer[pos + 5 : pos + 8], "big")
        if code == AVP_RESULT_CODE and not flags & 0x80 and length == 12 and pos + 12 <= end:
            return int.from_bytes(answer[pos + 8 : pos + 12], "big")
        if length < 8:
            return None
        pos += length + (-length % 4)
    return None
