"""Accounting-Request -> the charging service (RFC 2866): Start = initiate, Interim-Update = update, Stop =
terminate, Accounting-On/Off = terminate every open session of that NAS.

A RADIUS session is charged as one item of the access service (``[radius] service``). NASes report running
totals, so every request carries the total (octets including Acct-*-Gigawords for a service counted in
bytes, Acct-Session-Time for one counted in seconds) and the service charges what it adds to what was
counted before: a retransmission, a late interim or an interim after a lost one charges exactly what it
should. Each Start/Interim also reserves the service's default grant, so concurrent sessions of one account
cannot overshoot its balance; when no further grant is possible, or the account is no longer active, the
caller disconnects the session (RFC 5176).

Timing: the event happened Acct-Delay-Time seconds before it arrived; the session started Acct-Session-Time
seconds before that. The session lives in Redis (any worker can take its next packet) and expires, its
reservation returned, after ``stale_intervals`` interim intervals without accounting.

The reply (Accounting-Response) is sent only once the charge is recorded; when the store is unreachable
there is no reply and the NAS retransmits.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from datetime import timedelta

import msgspec

from aaa.access import account_of_class
from aaa.clients import NasClient
from aaa.codec import Packet
from aaa.context import IDENTITY_KIND, RadiusContext
from aaa.values import read_text, read_u32
from balance.service import SessionAnswer, SessionRequest, UsageItem, added_by
from rating_core.tariff import Unit

SESSION_PREFIX = "radius"


class Recorded(msgspec.Struct, frozen=True):
    outcome: str  # for the metrics: start, interim, stop, accounting_on, ...
    cut: str = ""  # why the session must be disconnected ("" when it may go on)
    account_id: str = ""  # the session's account and id, when the request was about one session
    session_id: str = ""
    acct_session: str = ""  # what a Disconnect-Request names: Acct-Session-Id, User-Name, Framed-IP-Address
    user: str = ""
    framed_ip: bytes | None = None
    closed: bool = False  # the session ended (Stop)
    total: int = 0  # the running total reported
    granted: int = 0  # units the session holds beyond it


def nas_of(ctx: RadiusContext, packet: Packet, host: str) -> str:
    """The NAS's identity for session ids: NAS-IP-Address, NAS-IPv6-Address, NAS-Identifier, or the source."""
    a = ctx.attrs
    for key in (a.nas_ip_address, a.nas_ipv6_address):
        value = packet.get(key)
        if value is not None and len(value) in (4, 16):
            return str(ipaddress.ip_address(value))
    ident = read_text(packet.get(a.nas_identifier))
    return ident or host


def _total(ctx: RadiusContext, packet: Packet, unit: Unit | None) -> tuple[int | None, int | None]:
    """The running total (None when the packet reports none, e.g. a Start) and, when it is a wrapping
    32-bit octet counter (no Gigawords), 32."""
    a = ctx.attrs
    if unit is Unit.SECOND:
        return read_u32(packet.get(a.acct_session_time)), None
    octets = 0
    seen = gigawords = False
    for low, high in (
        (a.acct_input_octets, a.acct_input_gigawords),
        (a.acct_output_octets, a.acct_output_gigawords),
    ):
        count = read_u32(packet.get(low))
        giga = read_u32(packet.get(high))
        seen = seen or count is not None or giga is not None
        gigawords = gigawords or giga is not None
        octets += (giga or 0) << 32 | (count or 0)
    if not seen:
        return None, None
    return octets, None if gigawords else 32


async def record(ctx: RadiusContext, packet: Packet, client: NasClient, host: str) -> Recorded:
    """Apply one Accounting-Request; StoreUnavailable propagates (no reply: the NAS retries)."""
    a = ctx.attrs
    status = read_u32(packet.get(a.acct_status_type))
    # Sessions and the NAS index are scoped by the client entry that authenticated the packet: a NAS
    # cannot name another client's sessions (NAS-IP-Address is only what the packet says).
    nas = f"{client.name}|{nas_of(ctx, packet, host)}"
    store = ctx.charging.store
    keep = ctx.charging.settings.session_keep_s
    if status in (a.status_accounting_on, a.status_accounting_off):
        await close_nas_sessions(ctx, nas)
        return Recorded("accounting_on" if status == a.status_accounting_on else "accounting_off")
    if status not in (a.status_start, a.status_interim, a.status_stop):
        return Recorded("ignored")
    acct_session = read_text(packet.get(a.acct_session_id))
    if not acct_session:
        return Recorded("no_session_id")
    user = read_text(packet.get(a.user_name))
    account_id = account_of_class(packet.get(a.class_))
    if account_id is None and user:
        found = await store.resolve_identity(IDENTITY_KIND, user)
        account_id = found[0] if found is not None else None
    if account_id is None:
        return Recorded("unknown_account")
    delay = read_u32(packet.get(a.acct_delay_time)) or 0
    now = ctx.clock() - timedelta(seconds=delay)
    service = ctx.settings.service
    total, bits = _total(ctx, packet, ctx.charging.catalog.unit_of(service))
    elapsed = read_u32(packet.get(a.acct_session_time)) or 0
    began_at = now - timedelta(seconds=elapsed)
    owner = f"{account_id}|{user}"
    session_id = f"{SESSION_PREFIX}:{nas}:{acct_session}"
    framed = packet.get(a.framed_ip_address)
    ttl = ctx.settings.stale_s

    def request(key: str, item: UsageItem, *, create_missing: bool = False) -> SessionRequest:
        return SessionRequest(
            account_id=account_id or "",
            session_id=session_id,
            key=key,
            items=(item,),
            now=now,
            started=began_at,
            create_missing=create_missing,
            ttl_s=ttl,
        )

    def recorded(outcome: str, answer: SessionAnswer | None) -> Recorded:
        return Recorded(
            outcome,
            _cut_needed(answer) if answer is not None else "",
            account_id=account_id or "",
            session_id=session_id,
            acct_session=acct_session,
            user=user,
            framed_ip=framed,
            closed=answer is None,
            total=total or 0,
            granted=sum(i.granted for i in answer.items) if answer is not None else 0,
        )

    item = UsageItem(item=service, service=service, total=total, total_bits=bits)
    # the session's start (to the second): part of every key, so a reused Acct-Session-Id never replays
    # an earlier session's answers
    started = int(began_at.timestamp())
    if status == a.status_start:
        if not await _begin(ctx, request, account_id, session_id, started):
            return recorded("late", None)  # a Start retransmitted after its session ended
        # the NAS index is no money: written alongside (an entry whose session never began is harmless)
        answer, _ = await asyncio.gather(
            ctx.charging.initiate(request(f"{session_id};start;{started}", item)),
            store.put_nas_session(nas, session_id, owner, keep),
        )
        return recorded("start", answer)
    if status == a.status_interim:
        key = f"{session_id};interim;{started};{total};{elapsed}"
        answer = await ctx.charging.update(request(key, item))
        if answer.result == "UNKNOWN_SESSION":
            closed = await store.closed_total(session_id)
            if closed is not None and await _late(ctx, request, session_id, total, bits, started, closed):
                return recorded("late", None)
            # the Start was lost: the session begins here
            answer = await ctx.charging.update(request(key, item, create_missing=True))
            await store.put_nas_session(nas, session_id, owner, keep)
        return recorded("interim", answer)
    final = msgspec.structs.replace(item, requested=0)
    key = f"{session_id};stop;{started};{total};{elapsed}"
    # the mark goes first: an Interim the Stop overtook, arriving once the session is gone, is then late
    mark = await store.mark_closed_first(session_id, total or 0, started, _mark_ttl(ctx))
    if mark is not None:
        # still open under this start: an earlier Stop left the mark but was not charged (Redis failed in
        # between, nothing was answered), and this retransmission ends the session
        state = await store.session_state(account_id, session_id)
        unfinished = state is not None and _same_start(started, state.st // 1000)
        if not unfinished and await _late(ctx, request, session_id, total, bits, started, mark):
            return recorded("late", None)  # a Stop retransmitted after (or overtaken by) the end
        if mark != (total or 0, started):  # the id was reused, or the unfinished Stop reported another total
            await store.mark_closed(session_id, total or 0, started, _mark_ttl(ctx))
    answer, _ = await asyncio.gather(
        ctx.charging.terminate(request(key, final)), store.drop_nas_session(nas, session_id)
    )
    if answer.result == "UNKNOWN_SESSION":
        await ctx.charging.terminate(request(key, final, create_missing=True))
    return recorded("stop", None)


# Two starts of sessions under one Acct-Session-Id this close (ms) are the same session (a retransmitted
# Start, reports computing its start from Acct-Session-Time); further apart, the id was reused.
SAME_START_MS = 120_000


def _same_start(started: int, other: int) -> bool:
    return abs(started - other) * 1000 <= SAME_START_MS


def _mark_ttl(ctx: RadiusContext) -> int:
    """Closed-session marks outlive the idempotency keys, so no retransmission outruns both."""
    settings = ctx.charging.settings
    return max(settings.session_keep_s, settings.idempotency_ttl_s)


async def _begin(
    ctx: RadiusContext,
    request: Callable[..., SessionRequest],
    account_id: str,
    session_id: str,
    started: int,
) -> bool:
    """Before a Start; False when it is a retransmission of a session that already ended (nothing to do).
    Otherwise a session still open under the id that began at another time ends at what it reported (its
    usage was charged by its reports; its reservation goes back), and the mark of one that ended goes
    away, so the new session counts from zero."""
    store = ctx.charging.store
    state, closed = await asyncio.gather(
        store.session_state(account_id, session_id), store.closed_total(session_id)
    )
    if closed is not None:
        if _same_start(started, closed[1]):
            return False
        await store.clear_closed(session_id)
    if state is not None and not _same_start(started, state.st // 1000):
        service = ctx.settings.service
        ended = UsageItem(item=service, service=service, requested=0)
        await ctx.charging.terminate(request(f"{session_id};reused;{started}", ended))
    return True


async def _late(
    ctx: RadiusContext,
    request: Callable[..., SessionRequest],
    session_id: str,
    total: int | None,
    bits: int | None,
    started: int,
    closed: tuple[int, int],
) -> bool:
    """A report of a session that already ended (a reordered Interim, a Stop retransmitted or buffered
    across the NAS's restart), ``closed`` being the mark (last total, start) that session left: charge only
    what the report's total adds to the last one, reserve nothing. False when the session that ended
    began at another time (the id was reused and this report's Start was lost: it is a new session)."""
    store = ctx.charging.store
    last, began = closed
    if not _same_start(started, began):
        await store.clear_closed(session_id)
        return False
    added = added_by(total, last, bits) if total is not None else 0
    if added:
        service = ctx.settings.service
        late = UsageItem(item=service, service=service, used=added, requested=0)
        key = f"{session_id};late;{began};{total}"
        await ctx.charging.terminate(request(key, late, create_missing=True))
        await store.mark_closed(session_id, total or 0, began, _mark_ttl(ctx))
    return True


def _cut_needed(answer: SessionAnswer) -> str:
    """Why the session must be disconnected after this answer, or ""."""
    if answer.result != "OK":
        return answer.result.lower()
    if answer.status and answer.status != "active":
        return answer.status
    if any(item.granted == 0 and item.result != "OK" for item in answer.items):
        return "no_credit"
    return ""


async def close_nas_sessions(ctx: RadiusContext, nas: str) -> int:
    """Accounting-On/Off: the NAS lost its sessions. Each is terminated with what was last reported (the
    rest of its reservation goes back) and remembered as closed at that total, so a Stop the NAS buffered
    is charged only for what it adds; returns how many."""
    store = ctx.charging.store
    sessions = await store.nas_sessions(nas)
    service = ctx.settings.service
    now = ctx.clock()
    for session_id, value in sessions.items():
        account_id = value.split("|", 1)[0]
        state = await store.session_state(account_id, session_id)
        counted = state.it[service].off if state is not None and service in state.it else None
        if state is not None and counted is not None:
            await store.mark_closed(session_id, counted, state.st // 1000, _mark_ttl(ctx))
        await ctx.charging.terminate(
            SessionRequest(
                account_id=account_id,
                session_id=session_id,
                key=f"{session_id};nas-restart;{state.st if state is not None else 0};{counted}",
                items=(UsageItem(item=service, service=service, requested=0),),
                now=now,
            )
        )
        await store.drop_nas_session(nas, session_id)
    return len(sessions)
