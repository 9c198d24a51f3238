"""The pure peer state machine (occ.diameter.peer): no sockets, no sleeping; the clock is passed in.

The table test drives a machine into every state and applies every input there, checking the state the
table names and what the action must have produced (hypothesis picks the concrete stimulus and the
segmentation of the bytes). A second hypothesis test walks random input sequences against the table.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from occ.diameter import dictionary as d
from occ.diameter.codec import (
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    Message,
    avp_address,
    avp_grouped,
    avp_u32,
    avp_utf8,
    decode_message,
    encode_message,
)
from occ.diameter.peer import (
    TRANSITIONS,
    Action,
    Answered,
    AnswerReceived,
    Closed,
    Discarded,
    Event,
    Input,
    LocalProtocolError,
    PeerConfig,
    PeerMachine,
    PeerOpened,
    RequestReceived,
    State,
    result_code_of,
    salvage_echo_avps,
)

CC = d.APP_CREDIT_CONTROL
CCR = d.CMD_CREDIT_CONTROL
RAR = d.CMD_RE_AUTH
TW = 30.0

CONFIG = PeerConfig(
    origin_host="occ.test",
    origin_realm="test",
    origin_state_id=1234567,
    host_ip_addresses=("127.0.0.1", "::1"),
    vendor_id=0,
    product_name="occ",
    firmware_revision=7,
    allowed_peers=(("client*.test", "test"), ("relay.other", "*")),
    applications={CC: frozenset({CCR})},
    vendor_specific_applications=((d.VENDOR_3GPP, CC),),
    supported_vendor_ids=(d.VENDOR_3GPP,),
    watchdog_s=TW,
    max_message_length=4096,
    disconnect_timeout_s=5.0,
)


# ---- message builders ---------------------------------------------------------------------------------


def identity(host: str = "client1.test", realm: str = "test") -> bytes:
    return avp_utf8(d.AVP_ORIGIN_HOST, host) + avp_utf8(d.AVP_ORIGIN_REALM, realm)


def cer(
    host: str | None = "client1.test",
    realm: str | None = "test",
    apps: bytes = avp_u32(d.AVP_AUTH_APPLICATION_ID, CC),
    hbh: int = 1,
) -> bytes:
    avps = b""
    if host is not None:
        avps += avp_utf8(d.AVP_ORIGIN_HOST, host)
    if realm is not None:
        avps += avp_utf8(d.AVP_ORIGIN_REALM, realm)
    avps += avp_address(d.AVP_HOST_IP_ADDRESS, "127.0.0.1") + avp_u32(d.AVP_VENDOR_ID, 0)
    avps += avp_utf8(d.AVP_PRODUCT_NAME, "test", mandatory=False) + apps
    return encode_message(FLAG_REQUEST, d.CMD_CAPABILITIES_EXCHANGE, 0, hbh, hbh + 1000, avps)


def request(code: int, app: int = 0, hbh: int = 10, extra: bytes = b"", flags: int = FLAG_REQUEST) -> bytes:
    return encode_message(flags, code, app, hbh, hbh + 1000, identity() + extra)


def answer(code: int, app: int = 0, hbh: int = 10, result: int = d.DIAMETER_SUCCESS) -> bytes:
    return encode_message(0, code, app, hbh, hbh + 1000, avp_u32(d.AVP_RESULT_CODE, result) + identity())


SESSION = avp_utf8(d.AVP_SESSION_ID, "client1.test;1;2")
PROXY_1 = avp_grouped(
    d.AVP_PROXY_INFO, avp_utf8(d.AVP_PROXY_HOST, "p1.test"), avp_utf8(d.AVP_PROXY_STATE, "s1", mandatory=True)
)
PROXY_2 = avp_grouped(
    d.AVP_PROXY_INFO, avp_utf8(d.AVP_PROXY_HOST, "p2.test"), avp_utf8(d.AVP_PROXY_STATE, "s2", mandatory=True)
)


def ccr(hbh: int = 20, extra: bytes = b"") -> bytes:
    return encode_message(
        FLAG_REQUEST | FLAG_PROXIABLE,
        CCR,
        CC,
        hbh,
        hbh + 1000,
        SESSION + identity() + extra + PROXY_1 + PROXY_2,
    )


def bad_avp_length_request(hbh: int = 30) -> bytes:
    """A CCR whose last AVP claims more bytes than the message has (5014)."""
    good = SESSION + identity() + PROXY_1
    bad = (416).to_bytes(4, "big") + bytes([0x40]) + (200).to_bytes(3, "big") + b"\0\0\0\1"
    return encode_message(FLAG_REQUEST, CCR, CC, hbh, hbh + 1000, good + bad)


def bad_avp_bits_request(hbh: int = 31) -> bytes:
    """A CCR with a reserved AVP flag bit set (3009)."""
    bad = (416).to_bytes(4, "big") + bytes([0x41]) + (12).to_bytes(3, "big") + b"\0\0\0\1"
    return encode_message(FLAG_REQUEST, CCR, CC, hbh, hbh + 1000, SESSION + identity() + bad + PROXY_1)


def bad_header_bits_request(hbh: int = 32) -> bytes:
    """A CCR with a reserved command flag bit set (3008)."""
    data = bytearray(ccr(hbh))
    data[4] |= 0x01
    return bytes(data)


def bad_answer(hbh: int = 40) -> bytes:
    bad = (268).to_bytes(4, "big") + bytes([0x40]) + (100).to_bytes(3, "big") + b"\0\0\0\1"
    return encode_message(0, RAR, CC, hbh, hbh + 1000, bad)


GARBAGE = {
    "version": b"\x02\x00\x00\x14" + bytes(16),
    "too_long": b"\x01" + (5000).to_bytes(3, "big") + bytes(16),
    "too_short": b"\x01\x00\x00\x08" + bytes(16),
}


def decode_all(data: bytes) -> list[Message]:
    out = []
    while data:
        length = int.from_bytes(data[1:4], "big")
        out.append(decode_message(data[:length]))
        data = data[length:]
    return out


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# ---- driving a machine --------------------------------------------------------------------------------


class Driver:
    """A machine plus a clock; collects events and output."""

    def __init__(self, config: PeerConfig = CONFIG, seed: int = 1) -> None:
        self.now = 1000.0
        self.machine = PeerMachine(config, self.now, random.Random(seed))
        self.events: list[Event] = []

    def feed(self, data: bytes, cuts: list[int] | None = None) -> list[Event]:
        events: list[Event] = []
        for part in chunks(data, cuts or []):
            events += self.machine.receive_data(part, self.now)
        self.events += events
        return events

    def out(self) -> list[Message]:
        return decode_all(self.machine.data_to_send())

    def fire_timer(self) -> list[Event]:
        at = self.machine.next_timer()
        if at is not None:
            self.now = max(self.now, at)
        events = self.machine.handle_timer(self.now + (0 if at is not None else 1e9))
        self.events += events
        return events

    def open(self) -> None:
        self.feed(cer())
        assert self.machine.state is State.OPEN
        self.out()


def drive_to(state: State) -> Driver:
    drv = Driver()
    if state is State.WAIT_CER:
        return drv
    drv.open()
    if state is State.OPEN_PENDING:
        drv.fire_timer()
    elif state is State.CLOSING:
        drv.machine.disconnect(drv.now)
    elif state is State.DRAINING:
        drv.feed(ccr(hbh=500))  # one answer outstanding keeps the machine draining
        drv.machine.disconnect(drv.now)
        drv.feed(answer(d.CMD_DISCONNECT_PEER, hbh=drv.machine.next_ids()[0] - 1))
    elif state is State.CLOSED:
        drv.machine.connection_lost(drv.now)
    drv.out()
    assert drv.machine.state is state
    return drv


# What each input is on the wire (or as a call); several variants where the input has several causes.
STIMULI: dict[Input, list[Callable[[Driver, list[int]], list[Event]]]] = {
    Input.CER: [lambda drv, cuts: drv.feed(cer(hbh=77), cuts)],
    Input.CER_REJECTED: [
        lambda drv, cuts: drv.feed(cer(host="intruder.evil"), cuts),  # 3010
        lambda drv, cuts: drv.feed(cer(apps=avp_u32(d.AVP_AUTH_APPLICATION_ID, 16777238)), cuts),  # 5010
        lambda drv, cuts: drv.feed(cer(host=None), cuts),  # 5005
        lambda drv, cuts: drv.feed(cer()[:-4] + b"\0\0\0\0", cuts),  # last AVP cut: malformed CER
    ],
    Input.CEA: [lambda drv, cuts: drv.feed(answer(d.CMD_CAPABILITIES_EXCHANGE), cuts)],
    Input.DWR: [lambda drv, cuts: drv.feed(request(d.CMD_DEVICE_WATCHDOG, hbh=78), cuts)],
    Input.DWA: [lambda drv, cuts: drv.feed(answer(d.CMD_DEVICE_WATCHDOG), cuts)],
    Input.DPR: [
        lambda drv, cuts: drv.feed(
            request(d.CMD_DISCONNECT_PEER, hbh=79, extra=avp_u32(d.AVP_DISCONNECT_CAUSE, 0)), cuts
        )
    ],
    Input.DPA: [lambda drv, cuts: drv.feed(answer(d.CMD_DISCONNECT_PEER), cuts)],
    Input.APP_REQUEST: [lambda drv, cuts: drv.feed(ccr(hbh=80), cuts)],
    Input.UNSUPPORTED_REQUEST: [
        lambda drv, cuts: drv.feed(request(999, CC, hbh=81), cuts),  # 3001
        lambda drv, cuts: drv.feed(request(CCR, 16777238, hbh=82), cuts),  # 3007
        lambda drv, cuts: drv.feed(request(RAR, 0, hbh=83), cuts),  # 3001 (base application)
    ],
    Input.BAD_REQUEST: [
        lambda drv, cuts: drv.feed(bad_avp_length_request(), cuts),
        lambda drv, cuts: drv.feed(bad_avp_bits_request(), cuts),
        lambda drv, cuts: drv.feed(bad_header_bits_request(), cuts),
    ],
    Input.APP_ANSWER: [lambda drv, cuts: drv.feed(answer(RAR, CC, hbh=84), cuts)],
    Input.BAD_ANSWER: [lambda drv, cuts: drv.feed(bad_answer(), cuts)],
    Input.GARBAGE: [
        lambda drv, cuts: drv.feed(GARBAGE["version"], cuts),
        lambda drv, cuts: drv.feed(GARBAGE["too_long"], cuts),
        lambda drv, cuts: drv.feed(GARBAGE["too_short"], cuts),
    ],
    Input.TIMER: [lambda drv, cuts: drv.fire_timer()],
    Input.SEND_ANSWER: [lambda drv, cuts: drv.machine.send_answer(answer(CCR, CC, hbh=500), drv.now)],
    Input.SEND_REQUEST: [
        lambda drv, cuts: drv.machine.send_request(request(RAR, CC, hbh=drv.machine.next_ids()[0]), drv.now)
    ],
    Input.DISCONNECT: [lambda drv, cuts: drv.machine.disconnect(drv.now)],
    Input.CONNECTION_LOST: [lambda drv, cuts: drv.machine.connection_lost(drv.now)],
}

ANSWERING = {
    Action.ACCEPT_CER,
    Action.REJECT_CER,
    Action.ANSWER_DWR,
    Action.ANSWER_DPR,
    Action.ANSWER_UNSUPPORTED,
    Action.ANSWER_ERROR,
    Action.ANSWER_BUSY,
}
SILENT = {Action.CLEAR_WATCHDOG, Action.DPA_RECEIVED, Action.NOTHING, Action.DROP_ANSWER, Action.CLOSE}


def check_step(drv: Driver, inp: Input, variant: int, cuts: list[int]) -> None:
    """Apply one input and check the machine did what TRANSITIONS says."""
    state = drv.machine.state
    action, target = TRANSITIONS[state][inp]
    stimuli = STIMULI[inp]
    stimulus = stimuli[variant % len(stimuli)]
    if action is Action.MISUSE:
        with pytest.raises(LocalProtocolError):
            stimulus(drv, cuts)
        assert drv.machine.state is state
        return
    events = stimulus(drv, cuts)
    expected = target
    if expected is State.DRAINING and drv.machine.outstanding == 0:
        expected = State.CLOSED  # the rule outside the table
    assert drv.machine.state is expected, (state, inp, action)
    out = drv.out()
    kinds = [type(e) for e in events]
    if action in ANSWERING:
        assert out and not out[-1].is_request
        assert all(not m.is_request for m in out)
    elif action in SILENT:
        assert out == []
    elif action in (Action.SEND_DWR, Action.SEND_DPR, Action.WRITE_REQUEST):
        assert len(out) == 1 and out[0].is_request
    elif action is Action.WRITE_ANSWER:
        assert len(out) == 1 and not out[0].is_request
    else:
        assert out == []
    if action is Action.DISPATCH:
        assert RequestReceived in kinds
    if action is Action.DELIVER:
        assert AnswerReceived in kinds
    if action is Action.DISCARD:
        assert Discarded in kinds
    if action is Action.ACCEPT_CER:
        assert PeerOpened in kinds
    closed_now = expected is State.CLOSED and state is not State.CLOSED
    assert (Closed in kinds) == closed_now
    if expected is State.CLOSED:
        assert drv.machine.next_timer() is None


ALL_PAIRS = [(s, i) for s in State for i in Input]


def test_the_table_is_total() -> None:
    for state in State:
        assert set(TRANSITIONS[state]) == set(Input), state


@pytest.mark.parametrize(("state", "inp"), ALL_PAIRS, ids=[f"{s.value}-{i.value}" for s, i in ALL_PAIRS])
@given(variant=st.integers(0, 3), cuts=st.lists(st.integers(0, 400), max_size=6))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_state_input_pair_follows_the_table(
    state: State, inp: Input, variant: int, cuts: list[int]
) -> None:
    drv = drive_to(state)
    check_step(drv, inp, variant, cuts)


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(list(Input)), st.integers(0, 3), st.lists(st.integers(0, 400), max_size=3)),
        max_size=25,
    )
)
@settings(max_examples=300, deadline=None)
def test_random_input_sequences_follow_the_table(steps: list[tuple[Input, int, list[int]]]) -> None:
    drv = Driver()
    for inp, variant, cuts in steps:
        check_step(drv, inp, variant, cuts)


# ---- capabilities exchange ----------------------------------------------------------------------------


def test_cea_carries_our_capabilities() -> None:
    drv = Driver()
    events = drv.feed(cer(hbh=42))
    [cea] = drv.out()
    assert not cea.is_request and not cea.is_error
    assert (cea.code, cea.application_id, cea.hop_by_hop, cea.end_to_end) == (257, 0, 42, 1042)
    assert cea.find(d.AVP_RESULT_CODE).u32() == d.DIAMETER_SUCCESS  # type: ignore[union-attr]
    assert cea.find(d.AVP_ORIGIN_HOST).utf8() == "occ.test"  # type: ignore[union-attr]
    assert cea.find(d.AVP_ORIGIN_REALM).utf8() == "test"  # type: ignore[union-attr]
    assert [a.address() for a in cea.find_all(d.AVP_HOST_IP_ADDRESS)] == ["127.0.0.1", "::1"]
    assert cea.find(d.AVP_VENDOR_ID).u32() == 0  # type: ignore[union-attr]
    assert cea.find(d.AVP_PRODUCT_NAME).utf8() == "occ"  # type: ignore[union-attr]
    assert cea.find(d.AVP_FIRMWARE_REVISION).u32() == 7  # type: ignore[union-attr]
    assert cea.find(d.AVP_ORIGIN_STATE_ID).u32() == 1234567  # type: ignore[union-attr]
    assert [a.u32() for a in cea.find_all(d.AVP_AUTH_APPLICATION_ID)] == [CC]
    [vsai] = cea.find_all(d.AVP_VENDOR_SPECIFIC_APPLICATION_ID)
    assert [(a.code, a.u32()) for a in vsai.grouped()] == [
        (d.AVP_VENDOR_ID, d.VENDOR_3GPP),
        (d.AVP_AUTH_APPLICATION_ID, CC),
    ]
    assert PeerOpened("client1.test", "test", frozenset({CC})) in events
    assert (drv.machine.peer_host, drv.machine.peer_realm) == ("client1.test", "test")


@pytest.mark.parametrize(
    "apps",
    [
        avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_RELAY),
        avp_grouped(
            d.AVP_VENDOR_SPECIFIC_APPLICATION_ID,
            avp_u32(d.AVP_VENDOR_ID, d.VENDOR_3GPP),
            avp_u32(d.AVP_AUTH_APPLICATION_ID, CC),
        ),
        avp_u32(d.AVP_ACCT_APPLICATION_ID, 3) + avp_u32(d.AVP_AUTH_APPLICATION_ID, CC),
    ],
    ids=["relay", "vendor-specific", "among-others"],
)
def test_cer_with_a_common_application_or_relay_is_accepted(apps: bytes) -> None:
    drv = Driver()
    drv.feed(cer(apps=apps))
    assert drv.machine.state is State.OPEN
    [cea] = drv.out()
    assert cea.find(d.AVP_RESULT_CODE).u32() == d.DIAMETER_SUCCESS  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("message", "code", "error_bit"),
    [
        (cer(host="intruder.evil"), d.DIAMETER_UNKNOWN_PEER, True),
        (cer(realm="other"), d.DIAMETER_UNKNOWN_PEER, True),
        (cer(apps=avp_u32(d.AVP_AUTH_APPLICATION_ID, 16777238)), d.DIAMETER_NO_COMMON_APPLICATION, False),
        (cer(apps=b""), d.DIAMETER_NO_COMMON_APPLICATION, False),
        (cer(host=None), d.DIAMETER_MISSING_AVP, False),
        (cer(realm=None), d.DIAMETER_MISSING_AVP, False),
    ],
    ids=["unknown-host", "unknown-realm", "no-common-app", "no-app", "no-origin-host", "no-origin-realm"],
)
def test_rejected_cer_is_answered_then_closed(message: bytes, code: int, error_bit: bool) -> None:
    drv = Driver()
    events = drv.feed(message)
    [cea] = drv.out()
    assert cea.code == 257 and not cea.is_request
    assert cea.find(d.AVP_RESULT_CODE).u32() == code  # type: ignore[union-attr]
    assert cea.is_error is error_bit
    assert cea.find(d.AVP_ORIGIN_HOST).utf8() == "occ.test"  # type: ignore[union-attr]
    assert drv.machine.state is State.CLOSED
    assert any(isinstance(e, Closed) and e.reason == "cer_rejected" for e in events)
    if code == d.DIAMETER_MISSING_AVP:
        failed = cea.find(d.AVP_FAILED_AVP)
        assert failed is not None
        [missing] = failed.grouped()
        assert missing.code in (d.AVP_ORIGIN_HOST, d.AVP_ORIGIN_REALM) and missing.data == b""


def test_allowed_peers_reload_applies_to_the_next_cer() -> None:
    drv = Driver()
    drv.machine.config = PeerConfig(
        origin_host="occ.test",
        origin_realm="test",
        origin_state_id=1,
        allowed_peers=(),
        applications={CC: frozenset({CCR})},
    )
    drv.feed(cer())
    [cea] = drv.out()
    assert cea.find(d.AVP_RESULT_CODE).u32() == d.DIAMETER_UNKNOWN_PEER  # type: ignore[union-attr]


def test_peer_patterns_are_case_insensitive_globs() -> None:
    assert CONFIG.peer_allowed("CLIENT7.TEST", "Test")
    assert CONFIG.peer_allowed("relay.other", "anything.example")
    assert not CONFIG.peer_allowed("client7.test", "other")
    assert not CONFIG.peer_allowed("relay.other.evil", "x")


def test_anything_before_cer_closes_without_an_answer() -> None:
    drv = Driver()
    events = drv.feed(ccr())
    assert drv.out() == []
    assert drv.machine.state is State.CLOSED
    assert [e for e in events if isinstance(e, Closed)] == [Closed("before_cer", "")]


def test_no_cer_within_tw_closes() -> None:
    drv = Driver()
    assert drv.machine.next_timer() == drv.now + TW
    assert drv.machine.handle_timer(drv.now + TW - 1) == []
    events = drv.machine.handle_timer(drv.now + TW)
    assert events == [Closed("no_cer", "")]


# ---- framing ------------------------------------------------------------------------------------------


def test_byte_by_byte_and_many_per_write_give_the_same_events() -> None:
    stream = cer() + ccr(hbh=1) + request(d.CMD_DEVICE_WATCHDOG, hbh=2) + ccr(hbh=3) + request(999, CC, hbh=4)
    one = Driver()
    whole = one.feed(stream)
    two = Driver()
    by_byte = [e for i in range(len(stream)) for e in two.feed(stream[i : i + 1])]
    assert whole == by_byte
    assert [e.message.hop_by_hop for e in whole if isinstance(e, RequestReceived)] == [1, 3]
    assert [(m.code, m.hop_by_hop) for m in one.out()] == [(257, 1), (280, 2), (999, 4)]
    assert one.machine.data_to_send() == b""


def test_message_longer_than_the_maximum_closes() -> None:
    drv = Driver()
    drv.open()
    big = ccr(extra=avp_utf8(d.AVP_USER_NAME, "x" * 5000))
    events = drv.feed(big[:100])
    assert drv.machine.state is State.CLOSED
    assert drv.out() == []
    assert events[-1].reason == "garbage"  # type: ignore[union-attr]


# ---- watchdog -----------------------------------------------------------------------------------------


def test_watchdog_sends_dwr_after_tw_of_silence_and_closes_when_unanswered() -> None:
    drv = Driver()
    drv.open()
    at = drv.machine.next_timer()
    assert at is not None and TW - 2 <= at - drv.now <= TW + 2  # jittered by up to ±2 s
    drv.fire_timer()
    [dwr] = drv.out()
    assert dwr.is_request and dwr.code == d.CMD_DEVICE_WATCHDOG
    assert dwr.find(d.AVP_ORIGIN_STATE_ID).u32() == 1234567  # type: ignore[union-attr]
    assert drv.machine.state is State.OPEN_PENDING
    events = drv.fire_timer()
    assert events == [Closed("watchdog", "")]
    assert drv.out() == []


def test_dwa_clears_the_watchdog_and_traffic_rearms_it() -> None:
    drv = Driver()
    drv.open()
    drv.fire_timer()
    [dwr] = drv.out()
    drv.now += 10
    drv.feed(answer(d.CMD_DEVICE_WATCHDOG, hbh=dwr.hop_by_hop))
    assert drv.machine.state is State.OPEN
    at = drv.machine.next_timer()
    assert at is not None and TW - 2 <= at - drv.now <= TW + 2
    drv.now = at - 1
    drv.feed(ccr())  # traffic moves the next DWR later
    moved = drv.machine.next_timer()
    assert moved is not None and moved > at


def test_dwr_is_answered_with_dwa() -> None:
    drv = Driver()
    drv.open()
    drv.feed(request(d.CMD_DEVICE_WATCHDOG, hbh=9))
    [dwa] = drv.out()
    assert (dwa.code, dwa.hop_by_hop, dwa.end_to_end, dwa.is_request) == (280, 9, 1009, False)
    assert dwa.find(d.AVP_RESULT_CODE).u32() == d.DIAMETER_SUCCESS  # type: ignore[union-attr]
    assert dwa.find(d.AVP_ORIGIN_STATE_ID).u32() == 1234567  # type: ignore[union-attr]


def test_jitter_stays_within_two_seconds() -> None:
    for seed in range(50):
        drv = Driver(seed=seed)
        drv.open()
        at = drv.machine.next_timer()
        assert at is not None and TW - 2 <= at - drv.now <= TW + 2


# ---- disconnect ---------------------------------------------------------------------------------------


def test_dpr_is_answered_and_closes() -> None:
    drv = Driver()
    drv.open()
    events = drv.feed(request(d.CMD_DISCONNECT_PEER, hbh=5, extra=avp_u32(d.AVP_DISCONNECT_CAUSE, 2)))
    [dpa] = drv.out()
    assert (dpa.code, dpa.hop_by_hop, dpa.is_request) == (282, 5, False)
    assert dpa.find(d.AVP_RESULT_CODE).u32() == d.DIAMETER_SUCCESS  # type: ignore[union-attr]
    assert Closed("peer_dpr", "") in events


def test_dpr_with_answers_outstanding_drains_them_first() -> None:
    drv = Driver()
    drv.open()
    drv.feed(ccr(hbh=1) + ccr(hbh=2))
    drv.feed(request(d.CMD_DISCONNECT_PEER, hbh=5))
    assert drv.machine.state is State.DRAINING
    drv.out()
    drv.machine.send_answer(answer(CCR, CC, hbh=2), drv.now)
    assert drv.machine.state is State.DRAINING
    events = drv.machine.send_answer(answer(CCR, CC, hbh=1), drv.now)
    assert [m.hop_by_hop for m in drv.out()] == [2, 1]
    assert events == [Closed("peer_dpr", "")]


def test_our_dpr_waits_for_dpa_then_closes() -> None:
    drv = Driver()
    drv.open()
    drv.machine.disconnect(drv.now)
    [dpr] = drv.out()
    assert dpr.is_request and dpr.code == d.CMD_DISCONNECT_PEER
    assert dpr.find(d.AVP_DISCONNECT_CAUSE).u32() == d.DISCONNECT_CAUSE_REBOOTING  # type: ignore[union-attr]
    # requests arriving meanwhile are turned away so the client retries elsewhere
    drv.feed(ccr(hbh=66))
    [busy] = drv.out()
    assert busy.is_error and busy.find(d.AVP_RESULT_CODE).u32() == d.DIAMETER_TOO_BUSY  # type: ignore[union-attr]
    events = drv.feed(answer(d.CMD_DISCONNECT_PEER, hbh=dpr.hop_by_hop))
    assert events == [Closed("disconnected", "")]


def test_our_dpr_without_dpa_closes_at_the_deadline() -> None:
    drv = Driver()
    drv.open()
    drv.machine.disconnect(drv.now)
    assert drv.machine.next_timer() == drv.now + CONFIG.disconnect_timeout_s
    assert drv.fire_timer() == [Closed("no_dpa", "")]


# ---- error answers ------------------------------------------------------------------------------------


def check_error_answer(msg: Message, request_hbh: int, code: int, result: int) -> None:
    assert not msg.is_request
    assert msg.code == code and msg.hop_by_hop == request_hbh and msg.end_to_end == request_hbh + 1000
    assert msg.is_error is (3000 <= result < 4000)
    names = [a.code for a in msg.avps]
    assert names[:4] == [d.AVP_SESSION_ID, d.AVP_ORIGIN_HOST, d.AVP_ORIGIN_REALM, d.AVP_RESULT_CODE]
    assert msg.avps[0].utf8() == "client1.test;1;2"
    assert msg.find(d.AVP_RESULT_CODE).u32() == result  # type: ignore[union-attr]
    assert [p.encoded() for p in msg.find_all(d.AVP_PROXY_INFO)][:1] == [PROXY_1]


def test_unsupported_command_and_application() -> None:
    drv = Driver()
    drv.open()
    drv.feed(encode_message(FLAG_REQUEST, 999, CC, 7, 1007, SESSION + identity() + PROXY_1 + PROXY_2))
    drv.feed(encode_message(FLAG_REQUEST, CCR, 77, 8, 1008, SESSION + identity() + PROXY_1 + PROXY_2))
    first, second = drv.out()
    check_error_answer(first, 7, 999, d.DIAMETER_COMMAND_UNSUPPORTED)
    check_error_answer(second, 8, CCR, d.DIAMETER_APPLICATION_UNSUPPORTED)
    assert second.application_id == 77
    assert [p.encoded() for p in first.find_all(d.AVP_PROXY_INFO)] == [PROXY_1, PROXY_2]


@pytest.mark.parametrize(
    ("destination", "result"),
    [
        (avp_utf8(d.AVP_DESTINATION_REALM, "TEST"), None),  # our realm, any case
        (avp_utf8(d.AVP_DESTINATION_REALM, "billing.test"), None),  # a served realm
        (avp_utf8(d.AVP_DESTINATION_HOST, "occ.test") + avp_utf8(d.AVP_DESTINATION_REALM, "x"), None),
        (b"", None),  # no Destination-Realm: the application answers 5005
        (avp_utf8(d.AVP_DESTINATION_REALM, "other.example"), d.DIAMETER_REALM_NOT_SERVED),
        (avp_utf8(d.AVP_DESTINATION_HOST, "ocs2.test"), d.DIAMETER_UNABLE_TO_DELIVER),
    ],
    ids=["own-realm", "served-realm", "own-host", "no-realm", "other-realm", "other-host"],
)
def test_requests_for_another_host_or_realm_are_answered_not_dispatched(
    destination: bytes, result: int | None
) -> None:
    drv = Driver(dataclasses.replace(CONFIG, served_realms=("billing.test",)))
    drv.open()
    events = drv.feed(
        encode_message(FLAG_REQUEST, CCR, CC, 9, 1009, SESSION + identity() + destination + PROXY_1)
    )
    if result is None:
        assert [type(e) for e in events] == [RequestReceived]
        assert drv.out() == []
    else:
        assert not any(isinstance(e, RequestReceived) for e in events)
        [msg] = drv.out()
        check_error_answer(msg, 9, CCR, result)


@pytest.mark.parametrize(
    ("message", "result"),
    [
        (bad_avp_length_request(), d.DIAMETER_INVALID_AVP_LENGTH),
        (bad_avp_bits_request(), d.DIAMETER_INVALID_AVP_BITS),
        (bad_header_bits_request(), d.DIAMETER_INVALID_HDR_BITS),
    ],
    ids=["5014", "3009", "3008"],
)
def test_malformed_requests_are_answered(message: bytes, result: int) -> None:
    drv = Driver()
    drv.open()
    drv.feed(message)
    [msg] = drv.out()
    hbh = int.from_bytes(message[12:16], "big")
    check_error_answer(msg, hbh, CCR, result)
    if result != d.DIAMETER_INVALID_HDR_BITS:
        assert msg.find(d.AVP_FAILED_AVP) is not None
    assert drv.machine.state is State.OPEN


def test_the_p_bit_is_ignored_and_echoed() -> None:
    drv = Driver()
    drv.open()
    drv.feed(encode_message(FLAG_REQUEST | FLAG_PROXIABLE, 999, CC, 7, 1007, identity()))
    drv.feed(encode_message(FLAG_REQUEST, 999, CC, 8, 1008, identity()))
    first, second = drv.out()
    assert first.flags == FLAG_PROXIABLE | FLAG_ERROR and second.flags == FLAG_ERROR


def test_salvage_reads_echo_avps_up_to_the_damage() -> None:
    session, proxies = salvage_echo_avps(bad_avp_length_request())
    assert session == SESSION and proxies == [PROXY_1]


def test_result_code_of_an_encoded_answer() -> None:
    assert result_code_of(answer(CCR, CC, result=4012)) == 4012
    assert result_code_of(encode_message(0, CCR, CC, 1, 1, identity())) is None


# ---- application traffic ------------------------------------------------------------------------------


def test_requests_answered_in_any_order_and_answers_to_our_requests_delivered() -> None:
    drv = Driver()
    drv.open()
    events = drv.feed(ccr(hbh=1) + ccr(hbh=2))
    assert [e.message.hop_by_hop for e in events if isinstance(e, RequestReceived)] == [1, 2]
    assert drv.machine.outstanding == 2
    drv.machine.send_answer(answer(CCR, CC, hbh=2), drv.now)
    drv.machine.send_answer(answer(CCR, CC, hbh=1), drv.now)
    assert [m.hop_by_hop for m in drv.out()] == [2, 1]
    hbh, e2e = drv.machine.next_ids()
    drv.machine.send_request(encode_message(FLAG_REQUEST, RAR, CC, hbh, e2e, identity()), drv.now)
    [rar] = drv.out()
    assert rar.hop_by_hop == hbh
    [delivered] = drv.feed(answer(RAR, CC, hbh=hbh))
    assert isinstance(delivered, AnswerReceived) and delivered.message.hop_by_hop == hbh


def test_ids_increase_and_end_to_end_carries_the_start_time() -> None:
    drv = Driver()
    first = drv.machine.next_ids()
    second = drv.machine.next_ids()
    assert second == ((first[0] + 1) & 0xFFFFFFFF, (first[1] + 1) & 0xFFFFFFFF)
    assert first[1] >> 20 == CONFIG.origin_state_id & 0xFFF


def test_base_answers_are_reported_for_metrics() -> None:
    drv = Driver()
    events = drv.feed(cer())
    assert Answered(257, d.DIAMETER_SUCCESS) in events


def test_sending_a_request_before_open_is_a_local_error() -> None:
    drv = Driver()
    with pytest.raises(LocalProtocolError):
        drv.machine.send_request(request(RAR, CC), drv.now)


# ---- totality ----------------------------------------------------------------------------------------


@given(
    prefix=st.sampled_from([b"", cer()]),
    junk=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([ccr(), bad_avp_length_request(), bad_answer(), answer(RAR, CC)]),
            st.builds(lambda b: b"\x01\x00\x00\x1c" + b, st.binary(min_size=24, max_size=24)),
        ),
        max_size=8,
    ),
)
@settings(max_examples=400, deadline=None)
def test_any_bytes_give_events_or_a_close_never_an_exception(prefix: bytes, junk: list[bytes]) -> None:
    drv = Driver()
    drv.feed(prefix)
    for data in junk:
        drv.feed(data)
        for message in drv.out():  # whatever we write decodes
            assert not message.is_request or message.code in (d.CMD_DEVICE_WATCHDOG, d.CMD_DISCONNECT_PEER)
    assert drv.machine.state in (State.WAIT_CER, State.OPEN, State.CLOSED)


# ---- purity -------------------------------------------------------------------------------------------


def test_the_machine_and_what_it_imports_do_no_io() -> None:
    """peer.py, and every project module it imports, imports no I/O library (ARCHITECTURE: pure code)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    io_libraries = {"asyncio", "socket", "selectors", "ssl", "redis", "asyncpg", "uvloop", "hiredis", "time"}
    seen: set[str] = set()
    todo = ["occ.diameter.peer"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        tree = ast.parse((root / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else []
            )
            for name in names:
                assert name.split(".")[0] not in io_libraries, f"{module} imports {name}"
                if name.startswith("occ."):
                    todo.append(name)
    assert {"occ.diameter.peer", "occ.diameter.codec", "occ.diameter.dictionary"} <= seen
