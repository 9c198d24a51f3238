"""Messages exchanged with the Lua scripts. Field names are the scripts' (see lib.lua).

Requests go to Redis as JSON, replies and stored state come back as msgpack.
"""

from __future__ import annotations

from typing import Any

import msgspec


class ItemPlan(msgspec.Struct, frozen=True):
    """One rating group of a session step, priced by the charging service."""

    id: str
    s: str  # service
    u: int  # used units reported
    cu: int  # charged units of u (after increments), for tier counters
    c: int  # of u, units covered by the bucket units the item had reserved
    m: int  # money for the units not covered
    raw: int  # raw rated money (before setup/minimum) added to the session's prior
    r: int  # units to reserve next (0 none, -1 nothing affordable)
    rm: int  # money for r
    mn: int  # money of the smallest grant
    nx: int  # money of the next increment after r (decides Final-Unit-Indication)
    cy: str  # tier counter field, "" when the rate has no tiers
    lo: int  # the price holds while the counter (before this item) is in [lo, hi]; -1: no check
    hi: int
    fl: str = ""  # flags for the charge record, e.g. "unrated"


class SessionStep(msgspec.Struct, frozen=True):
    k: str
    now: int
    ttl: int
    ittl: int
    sid: str
    aid: str
    op: str  # I | U | T
    v: int
    plan: str
    st: int
    it: list[ItemPlan]
    n: int = 0  # sequence number of the request in its session (0: unordered)


class ItemOutcome(msgspec.Struct, frozen=True):
    id: str
    code: str  # OK | DENIED | NO_MONEY
    g: int  # granted units
    gb: int  # of g, held in unit buckets
    fin: int  # 1: the last grant the balance affords
    m: int  # money charged for the used units
    u: int
    over: int  # 1: used more than granted (charged anyway)


class StepReply(msgspec.Struct, frozen=True):
    v: int
    bal: int
    rsv: int
    lim: int
    st: str
    it: list[ItemOutcome]


class EventStep(msgspec.Struct, frozen=True):
    k: str
    now: int
    ittl: int
    aid: str
    plan: str
    s: str
    i: str
    u: int
    c: int
    m: int
    cy: str = ""  # tier counter field, "" when the rate has no tiers
    lo: int = -1  # the price holds while the counter is in [lo, hi]; -1: no check
    hi: int = -1
    cu: int = 0  # charged units, added to the counter


class EventReply(msgspec.Struct, frozen=True):
    code: str
    u: int
    bu: int
    m: int
    bal: int
    rsv: int
    lim: int
    st: str


class CreditStep(msgspec.Struct, frozen=True):
    k: str
    now: int
    ittl: int
    aid: str
    kind: str
    m: int
    s: str
    ref: str


class CreditReply(msgspec.Struct, frozen=True):
    bal: int
    rsv: int


# gc=False: a worker caches up to 100,000 session states (balance.service), and a full collection walking
# them as tracked objects took ~45 ms; they hold only strings, integers and each other, never a cycle.
class ItemState(msgspec.Struct, frozen=True, gc=False):
    """What the store holds for one item of an open session."""

    s: str
    off: int = 0
    pr: int = 0
    g: int = 0
    rm: int = 0
    rb: int = 0
    ba: dict[str, int] = msgspec.field(default_factory=dict)


class SessionState(msgspec.Struct, frozen=True, gc=False):
    v: int
    st: int
    exp: int
    it: dict[str, ItemState]
    plan: str = ""  # the plan the session started under ("" for a session not stored yet)
    n: int = 0  # last sequence number applied


class SessionView(msgspec.Struct, frozen=True):
    """Answer to a stale plan: the state the plan must be made from."""

    v: int
    session: SessionState | None
    plan: str
    status: str
    counters: dict[str, int]


encode_request = msgspec.json.Encoder().encode
_step_reply = msgspec.msgpack.Decoder(StepReply)
_event_reply = msgspec.msgpack.Decoder(EventReply)
_credit_reply = msgspec.msgpack.Decoder(CreditReply)


def decode_step_reply(data: bytes) -> StepReply:
    return _step_reply.decode(data)


def decode_event_reply(data: bytes) -> EventReply:
    return _event_reply.decode(data)


def decode_credit_reply(data: bytes) -> CreditReply:
    return _credit_reply.decode(data)


def mapping(value: Any) -> dict[Any, Any]:
    # Lua's cmsgpack packs an empty table as an empty array.
    return value if isinstance(value, dict) else {}


def decode_session_state(data: bytes | dict[str, Any]) -> SessionState:
    raw = msgspec.msgpack.decode(data) if isinstance(data, bytes) else data
    items = {
        str(key): ItemState(
            s=value["s"],
            off=value["off"],
            pr=value["pr"],
            g=value["g"],
            rm=value["rm"],
            rb=value["rb"],
            ba={str(b): n for b, n in mapping(value.get("ba")).items()},
        )
        for key, value in mapping(raw.get("it")).items()
    }
    return SessionState(
        v=raw["v"], st=raw["st"], exp=raw["exp"], it=items, plan=raw.get("plan") or "", n=raw.get("n") or 0
    )


def decode_session_view(data: bytes) -> SessionView:
    raw = msgspec.msgpack.decode(data)
    session = raw.get("s")
    return SessionView(
        v=raw["v"],
        session=decode_session_state(session) if isinstance(session, dict) else None,
        plan=raw["plan"],
        status=raw["st"],
        counters={str(k): int(v) for k, v in mapping(raw.get("cy")).items()},
    )


def decode_quotes(data: bytes) -> dict[str, int]:
    return {str(k): int(v) for k, v in mapping(msgspec.msgpack.decode(data)).items()}
