"""The charging service both protocol fronts call: initiate / update / terminate / event / refund / query.

How a request becomes one atomic script call: the service prices every item with ``rating_core`` from its
*view* of the session (units used so far, what is reserved), of the account (plan, tier counters) — kept
in a per-worker cache — and sends the priced plan to the session script. The script is the referee: it
checks the view is current and applies the whole plan, or, without writing anything, answers with the
current view (the service prices again) or with the money an unaffordable grant could still have (the
service sizes the exact grant that fits with ``units_for``). A warm cache means one Redis round trip; a
cold cache or a balance running out costs one more. Any worker can take any request of any session.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, tzinfo
from typing import Any

import msgspec

from balance import metrics, wire
from balance.records import AccountView, CreditResult
from balance.settings import BalanceSettings
from balance.store import (
    MAX_MONEY,
    BalanceStore,
    EventApplied,
    StepApplied,
    StepNeedsQuote,
    StepNeedsView,
    StepOutOfOrder,
    UnknownAccount,
    to_ms,
)
from rating_core.rating import Usage, quote, units_for
from rating_core.tariff import Catalog, NoRate, Plan, Rate, Unit, UnknownPlan

log = logging.getLogger("occ.balance.service")
MAX_ATTEMPTS = 8
MAX_UNITS = 2**53 - 1  # units of one report or grant: beyond this, Lua's doubles lose integers


class InvalidRequest(ValueError):
    """A request the service refuses before touching the store (negative or duplicate items, ...)."""


CACHE_SIZE = 100_000


class UsageItem(msgspec.Struct, frozen=True, kw_only=True):
    """One rating group (or service) of a session request."""

    item: str  # key of the item within its session: a rating group, or the service name
    service: str
    destination: str = ""
    used: int = 0  # units used since the previous report
    requested: int | None = None  # units wanted next; None: the service's default grant; 0: none
    # Units used since the session started, for clients that report running totals (RADIUS): the
    # service charges what the total adds to what it already counted (never less than nothing), so a
    # repeated or late report moves nothing. Exclusive with ``used``.
    total: int | None = None
    # The total is a counter of this many bits that wraps (RADIUS octets without Gigawords): it moved
    # forward by (total - counted) mod 2**bits when that is at most half the range, else the report is
    # late (serial-number arithmetic, RFC 1982).
    total_bits: int | None = None


class SessionRequest(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    session_id: str
    key: str  # idempotency key: a repeat returns the first answer and moves nothing
    items: tuple[UsageItem, ...]
    now: datetime | None = None
    started: datetime | None = None  # session start for time-banded rating; default: now at initiate
    # An update or terminate of a session the store does not know starts it (RADIUS interim without start).
    create_missing: bool = False
    # Position of the request in its session (e.g. CC-Request-Number + 1); a request whose number is not
    # above the last applied one is refused as OUT_OF_ORDER. None: no ordering.
    sequence: int | None = None
    # Seconds the session's reservations live without a further request (default: the store's).
    ttl_s: int | None = None


class ItemAnswer(msgspec.Struct, frozen=True, kw_only=True):
    item: str
    result: str  # OK | DENIED | NO_MONEY | NO_RATE
    granted: int = 0
    from_buckets: int = 0
    final: bool = False  # the last grant the balance affords: Final-Unit-Indication
    charged: int = 0  # money for the used units
    reserved: int = 0  # money held for the granted units (0 when buckets hold them)
    used: int = 0
    overuse: bool = False  # more used than granted: charged anyway


class SessionAnswer(msgspec.Struct, frozen=True, kw_only=True):
    result: str  # OK | UNKNOWN_ACCOUNT | UNKNOWN_SESSION | NO_PLAN | OUT_OF_ORDER
    items: tuple[ItemAnswer, ...] = ()
    balance: int = 0
    reserved: int = 0
    status: str = ""
    duplicate: bool = False


class EventRequest(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    key: str
    service: str
    units: int = 1
    destination: str = ""
    item: str = ""
    now: datetime | None = None


class EventAnswer(msgspec.Struct, frozen=True, kw_only=True):
    result: str  # OK | DENIED | NO_MONEY | NO_RATE | UNKNOWN_ACCOUNT | NO_PLAN
    charged: int = 0
    units: int = 0
    from_buckets: int = 0
    balance: int = 0
    duplicate: bool = False


class _AccountView(msgspec.Struct, gc=False):
    """An account's plan and tier counters as this worker last saw them (cached like sessions, and as
    invisible to the cyclic collector)."""

    plan: str
    counters: dict[str, int]


class ChargingService:
    def __init__(
        self,
        store: BalanceStore,
        catalog: Catalog,
        settings: BalanceSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.clock = clock
        self._sessions: OrderedDict[tuple[str, str], wire.SessionState] = OrderedDict()
        self._accounts: OrderedDict[str, _AccountView] = OrderedDict()

    def reload(self, catalog: Catalog, settings: BalanceSettings) -> None:
        """Swap tariffs and settings; requests in flight finish with what they started with."""
        self.catalog = catalog
        self.settings = settings

    # --- sessions -------------------------------------------------------------------------------
    # Plain functions returning the step's coroutine: one frame less to suspend and resume per request.
    def initiate(self, request: SessionRequest) -> Coroutine[Any, Any, SessionAnswer]:
        return self._step("I", request)

    def update(self, request: SessionRequest) -> Coroutine[Any, Any, SessionAnswer]:
        return self._step("U", request)

    def terminate(self, request: SessionRequest) -> Coroutine[Any, Any, SessionAnswer]:
        return self._step("T", request)

    async def _step(self, op: str, request: SessionRequest) -> SessionAnswer:
        _validate(request)
        now = request.now or self.clock()
        sid_key = (request.account_id, request.session_id)
        session = self._sessions.get(sid_key)
        if session is None:
            # an initiate starts a new session (version 0); a cold cache asks the script for the view (-1)
            session = _new_session(0 if op == "I" else -1, request, now)
        account = self._accounts.get(request.account_id)
        quotes: dict[str, int] = {}
        for attempt in range(MAX_ATTEMPTS):
            step = self._plan(op, request, now, session, account, quotes)
            try:
                outcome = await self.store.session_step(step)
            except UnknownAccount:
                self._forget(sid_key, request.account_id)
                metrics.charging_requests(op, "unknown_account").inc()
                return SessionAnswer(result="UNKNOWN_ACCOUNT")
            if isinstance(outcome, StepApplied):
                answer = self._applied(op, request, step, session, account, outcome)
                metrics.charging_requests(op, "ok").inc()
                return answer
            if isinstance(outcome, StepOutOfOrder):
                metrics.charging_requests(op, "out_of_order").inc()
                return SessionAnswer(result="OUT_OF_ORDER")
            if isinstance(outcome, StepNeedsQuote):
                metrics.REPLANS.labels(reason="quote").inc()
                quotes = outcome.available
                continue
            assert isinstance(outcome, StepNeedsView)
            metrics.REPLANS.labels(reason="view").inc()
            view = outcome.view
            account = _AccountView(plan=view.plan, counters=dict(view.counters))
            self._remember_account(request.account_id, account)
            quotes = {}
            if view.session is None:
                if op != "I" and not request.create_missing:
                    self._sessions.pop(sid_key, None)
                    return SessionAnswer(result="UNKNOWN_SESSION", status=view.status)
                session = _new_session(0, request, now)
            else:
                session = view.session
            if attempt >= 2:
                # other sessions of the account keep moving the tier counter: let them pass
                await asyncio.sleep(random.uniform(0, 0.002 * attempt))
        raise RuntimeError(f"session {request.session_id}: no stable plan after {MAX_ATTEMPTS} attempts")

    def _plan(
        self,
        op: str,
        request: SessionRequest,
        now: datetime,
        session: wire.SessionState,
        account: _AccountView | None,
        quotes: dict[str, int],
    ) -> wire.SessionStep:
        start = datetime.fromtimestamp(session.st / 1000, UTC)
        # a session keeps the plan it started under, in the version in force when it started
        plan_name = session.plan or (account.plan if account is not None else "")
        plan: Plan | None = None
        if plan_name:
            try:
                plan = self.catalog.plan(plan_name, start)
            except UnknownPlan:
                log.warning(
                    "no version of plan %r for session %s: usage recorded unrated",
                    plan_name,
                    request.session_id,
                )
        # tier counters as the items of this request move them, one after the other
        running = dict(account.counters) if account is not None else {}
        items: list[wire.ItemPlan] = []
        for item in request.items:
            state = session.it.get(item.item) or wire.ItemState(s=item.service)
            if item.total is not None:
                item = msgspec.structs.replace(item, used=added_by(item.total, state.off, item.total_bits))
            if not plan_name:
                # cold cache: a placeholder the script answers with the view
                items.append(_unpriced(item, state, ""))
                continue
            rate = None
            if plan is not None:
                with contextlib.suppress(NoRate):
                    rate = plan.rate_for(item.service, item.destination)
            if plan is None or rate is None:
                # never drop usage: commit it at no price, flagged for re-rating; grant nothing
                items.append(_unpriced(item, state, "unrated"))
                continue
            items.append(self._price_item(op, plan, rate, item, state, start, now, running, quotes))
        return wire.SessionStep(
            k=request.key,
            now=to_ms(now),
            ttl=(request.ttl_s or self.settings.reservation_ttl_s) * 1000,
            ittl=self.settings.idempotency_ttl_s,
            sid=request.session_id,
            aid=request.account_id,
            op=op,
            v=session.v,
            plan=plan_name,
            st=session.st,
            it=items,
            n=request.sequence or 0,
        )

    def _price_item(
        self,
        op: str,
        plan: Plan,
        rate: Rate,
        item: UsageItem,
        state: wire.ItemState,
        start: datetime,
        now: datetime,
        running: dict[str, int],
        quotes: dict[str, int],
    ) -> wire.ItemPlan:
        timed = plan.unit_of(item.service) is Unit.SECOND
        at = start if timed else now
        tiered = len(rate.tiers) > 1
        counter = tier_counter(plan, item.service, now) if tiered else ""
        cycle_used = running.get(counter, 0) if tiered else 0

        # units used since the last report: those covered by reserved bucket units cost nothing
        covered = min(item.used, state.rb)
        money = raw = charged_units = 0
        service, destination = item.service, item.destination
        if item.used > covered:
            money, raw, charged_units = quote(
                plan,
                Usage(
                    service, item.used - covered, at, destination, state.off + covered, state.pr, cycle_used
                ),
            )
        low = high = -1
        if tiered and charged_units:
            low, high = tier_range(rate, cycle_used, charged_units)
        if tiered:
            running[counter] = cycle_used + charged_units

        # the next grant, priced as the continuation of the session
        wanted = 0
        if op != "T":
            wanted = self._wanted(item)
        reserve = reserve_money = smallest = following = 0
        if wanted > 0:
            offset, prior, position = state.off + item.used, state.pr + raw, cycle_used + charged_units
            if item.item in quotes:
                available = quotes[item.item]
                base = Usage(service, wanted, at, destination, offset, prior, position)
                wanted = units_for(plan, base, available, wanted)
            if wanted == 0:
                reserve = -1
            else:
                grant = quote(plan, Usage(service, wanted, at, destination, offset, prior, position))
                reserve, reserve_money = wanted, grant.amount
                smallest = quote(plan, Usage(service, 1, at, destination, offset, prior, position)).amount
                following = quote(
                    plan,
                    Usage(
                        service,
                        1,
                        at,
                        destination,
                        offset + wanted,
                        prior + grant.raw,
                        position + grant.charged_units,
                    ),
                ).amount
        if money > MAX_MONEY or reserve_money > MAX_MONEY:
            raise InvalidRequest(f"item {item.item}: the price exceeds {MAX_MONEY} micro-units")
        return wire.ItemPlan(
            id=item.item,
            s=item.service,
            u=item.used,
            cu=charged_units,
            c=covered,
            m=money,
            raw=raw,
            r=reserve,
            rm=reserve_money,
            mn=smallest,
            nx=following,
            cy=counter,
            lo=low,
            hi=high,
        )

    def _wanted(self, item: UsageItem) -> int:
        wanted = (
            self.settings.default_grants.get(item.service, 0) if item.requested is None else item.requested
        )
        cap = self.settings.max_grants.get(item.service)
        if cap is not None:
            wanted = min(wanted, cap)
        return max(0, wanted)

    def _applied(
        self,
        op: str,
        request: SessionRequest,
        step: wire.SessionStep,
        session: wire.SessionState,
        account: _AccountView | None,
        outcome: StepApplied,
    ) -> SessionAnswer:
        reply = outcome.reply
        sid_key = (request.account_id, request.session_id)
        planned = {p.id: p for p in step.it}
        if op == "T" or outcome.duplicate:
            # A replayed answer says nothing about the session now: forget it, the script re-teaches.
            self._sessions.pop(sid_key, None)
        else:
            items = dict(session.it)
            for out in reply.it:
                p = planned[out.id]
                old = items.get(out.id) or wire.ItemState(s=p.s)
                items[out.id] = wire.ItemState(
                    s=p.s,
                    off=old.off + p.u,
                    pr=old.pr + p.raw,
                    g=out.g,
                    rm=p.rm if out.g and not out.gb else 0,
                    rb=out.gb,
                )
            self._remember_session(
                sid_key, wire.SessionState(v=reply.v, st=session.st, exp=0, it=items, plan=step.plan)
            )
            if account is not None:
                for p in step.it:
                    if p.cy:
                        account.counters[p.cy] = account.counters.get(p.cy, 0) + p.cu
        answers = [
            ItemAnswer(
                item=out.id,
                result="NO_RATE" if planned[out.id].fl == "unrated" else out.code,
                granted=out.g,
                from_buckets=out.gb,
                final=bool(out.fin),
                charged=out.m,
                reserved=planned[out.id].rm if out.g and not out.gb else 0,
                used=out.u,
                overuse=bool(out.over),
            )
            for out in reply.it
        ]
        return SessionAnswer(
            result="OK",
            items=tuple(answers),
            balance=reply.bal,
            reserved=reply.rsv,
            status=reply.st,
            duplicate=outcome.duplicate,
        )

    def _remember_session(self, key: tuple[str, str], state: wire.SessionState) -> None:
        self._sessions[key] = state
        self._sessions.move_to_end(key)
        if len(self._sessions) > CACHE_SIZE:
            self._sessions.popitem(last=False)

    def _remember_account(self, account_id: str, view: _AccountView) -> None:
        self._accounts[account_id] = view
        self._accounts.move_to_end(account_id)
        if len(self._accounts) > CACHE_SIZE:
            self._accounts.popitem(last=False)

    def _forget(self, sid_key: tuple[str, str], account_id: str) -> None:
        self._sessions.pop(sid_key, None)
        self._accounts.pop(account_id, None)

    # --- one-time events, refunds, queries ------------------------------------------------------
    async def event(self, request: EventRequest) -> EventAnswer:
        """Direct debit of an event (SMS, purchase): buckets first, then money; refused if unaffordable."""
        if not 1 <= request.units <= MAX_UNITS:
            raise InvalidRequest(f"an event needs 1..{MAX_UNITS} units, got {request.units}")
        now = request.now or self.clock()
        account = self._accounts.get(request.account_id)
        plan_name = account.plan if account is not None else ""
        cover = -1
        for _ in range(MAX_ATTEMPTS):
            money = charged = 0
            counter = ""
            low = high = -1
            if plan_name:
                try:
                    plan = self.catalog.plan(plan_name, now)
                    rate = plan.rate_for(request.service, request.destination)
                except UnknownPlan:
                    return EventAnswer(result="NO_PLAN")
                except NoRate:
                    return EventAnswer(result="NO_RATE")
                position = 0
                if len(rate.tiers) > 1:
                    counter = tier_counter(plan, request.service, now)
                    position = account.counters.get(counter, 0) if account is not None else 0
                quantity = request.units - max(cover, 0)
                if quantity > 0:
                    rated = quote(
                        plan,
                        Usage(
                            service=request.service,
                            quantity=quantity,
                            start=now,
                            destination=request.destination,
                            offset=max(cover, 0),
                            cycle_used=position,
                        ),
                    )
                    money, charged = rated.amount, rated.charged_units
                    if counter:
                        low, high = tier_range(rate, position, charged)
                if money > MAX_MONEY:
                    raise InvalidRequest(f"event {request.key}: the price exceeds {MAX_MONEY} micro-units")
            step = wire.EventStep(
                k=request.key,
                now=to_ms(now),
                ittl=self.settings.idempotency_ttl_s,
                aid=request.account_id,
                plan=plan_name,
                s=request.service,
                i=request.item or request.service,
                u=request.units,
                c=cover,
                m=money,
                cy=counter,
                lo=low,
                hi=high,
                cu=charged,
            )
            try:
                outcome = await self.store.event(step)
            except UnknownAccount:
                self._accounts.pop(request.account_id, None)
                return EventAnswer(result="UNKNOWN_ACCOUNT")
            if isinstance(outcome, EventApplied):
                r = outcome.reply
                if counter and account is not None and r.code == "OK" and r.m and not outcome.duplicate:
                    account.counters[counter] = account.counters.get(counter, 0) + charged
                return EventAnswer(
                    result=r.code,
                    charged=r.m,
                    units=r.u,
                    from_buckets=r.bu,
                    balance=r.bal,
                    duplicate=outcome.duplicate,
                )
            metrics.REPLANS.labels(reason="view").inc()
            plan_name, cover = outcome.plan, outcome.cover
            counters = dict(account.counters) if account is not None else {}
            if counter:
                counters[counter] = outcome.counter
            account = _AccountView(plan=plan_name, counters=counters)
            self._remember_account(request.account_id, account)
        raise RuntimeError(f"event {request.key}: no stable plan after {MAX_ATTEMPTS} attempts")

    async def refund(
        self, account_id: str, amount: int, *, key: str, service: str = "", now: datetime | None = None
    ) -> CreditResult:
        if not 0 < amount <= MAX_MONEY:
            raise ValueError("refund amount out of range")
        return await self.store.credit(
            account_id, amount, key=key, reason="refund", now=now or self.clock(), service=service
        )

    async def balance(self, account_id: str) -> AccountView:
        return await self.store.query(account_id)

    async def summary(self, account_id: str) -> AccountView:
        """:meth:`balance` without the sessions: attributes, money and buckets, one Redis read."""
        return await self.store.summary(account_id)


def _new_session(version: int, request: SessionRequest, now: datetime) -> wire.SessionState:
    return wire.SessionState(v=version, st=to_ms(request.started or now), exp=0, it={})


def _unpriced(item: UsageItem, state: wire.ItemState, flags: str) -> wire.ItemPlan:
    """An item committed at no price and granted nothing: a placeholder or unrated usage."""
    covered = min(item.used, state.rb)
    return wire.ItemPlan(
        id=item.item,
        s=item.service,
        u=item.used,
        cu=0,
        c=covered,
        m=0,
        raw=0,
        r=0,
        rm=0,
        mn=0,
        nx=0,
        cy="",
        lo=-1,
        hi=-1,
        fl=flags,
    )


def tier_counter(plan: Plan, service: str, now: datetime) -> str:
    """Field of the account hash counting a service's charged units in the current cycle (a calendar
    month in the plan's time zone)."""
    return f"cy:{service}:{_month_label(plan.tz, now)}"


# time zone -> (first instant, first instant after, "YYYYMM") of the month last asked about, as Unix
# seconds: the label is a string formatted once a month instead of a time zone conversion per request
_months: dict[tzinfo, tuple[float, float, str]] = {}


def _month_label(tz: tzinfo, now: datetime) -> str:
    moment = now.timestamp()
    known = _months.get(tz)
    if known is not None and known[0] <= moment < known[1]:
        return known[2]
    local = now.astimezone(tz)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    label = f"{local:%Y%m}"
    _months[tz] = (start.timestamp(), following.timestamp(), label)
    return label


def tier_range(rate: Rate, position: int, units: int) -> tuple[int, int]:
    """Counter positions from which `units` charged units cost what they cost from `position`.

    Within one tier the price does not depend on the exact position, so concurrent sessions moving the
    counter do not invalidate each other's prices; a piece crossing a tier boundary needs the exact one.
    """
    starts = rate.tier_starts
    index = bisect.bisect_right(starts, position) - 1
    tier_start = starts[index] if index >= 0 else 0
    tier_end = starts[index + 1] if index + 1 < len(starts) else None
    if tier_end is None:
        return tier_start, MAX_MONEY
    if position + units <= tier_end:
        return tier_start, tier_end - units
    return position, position


def added_by(total: int, counted: int, bits: int | None = None) -> int:
    """What a running ``total`` adds to the ``counted`` units; with ``bits``, the total is a wrapping
    counter of that width and ``counted`` the full count so far."""
    if bits is None:
        return max(0, total - counted)
    forward = (total - counted) % (1 << bits)
    return forward if forward <= 1 << (bits - 1) else 0


def _validate(request: SessionRequest) -> None:
    seen: set[str] = set()
    for item in request.items:
        if item.item in seen:
            raise InvalidRequest(f"item {item.item!r} appears twice in one request")
        seen.add(item.item)
        if not 0 <= item.used <= MAX_UNITS:
            raise InvalidRequest(f"item {item.item!r}: used units {item.used} outside 0..{MAX_UNITS}")
        if item.total is not None and (item.used or not 0 <= item.total <= MAX_UNITS):
            raise InvalidRequest(f"item {item.item!r}: a total of {item.total} (with used {item.used})")
        if item.requested is not None and not 0 <= item.requested <= MAX_UNITS:
            raise InvalidRequest(
                f"item {item.item!r}: requested units {item.requested} outside 0..{MAX_UNITS}"
            )
    if request.ttl_s is not None and request.ttl_s <= 0:
        raise InvalidRequest(f"reservation lifetime must be positive, got {request.ttl_s}")
    if request.sequence is not None and request.sequence <= 0:
        raise InvalidRequest(f"sequence numbers start at 1, got {request.sequence}")
