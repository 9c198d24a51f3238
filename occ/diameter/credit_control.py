"""The credit-control application (Application-Id 4): Gy/Ro online charging on the charging service.

A CCR becomes one charging-service call (and so one Lua script call for all its rating groups):
INITIAL -> initiate, UPDATE -> update, TERMINATION -> terminate, EVENT -> event / refund / balance check /
price enquiry. The idempotency key is "<Session-Id>;<CC-Request-Number>", so a retransmission (T flag or
not) gets the first decision replayed — and, answers being deterministic, the same answer content — and
charges nothing twice. The sequence number is CC-Request-Number + 1, so a late or reordered request is
refused (5012 DIAMETER_UNABLE_TO_COMPLY) without moving money.

Result codes: unknown subscriber 5030, account not active 4010, no money for a rating group 4012,
no rate 5031, unknown session 5002, Redis unreachable 3004 DIAMETER_TOO_BUSY (the client then applies
its Credit-Control-Failure-Handling) — never a silent drop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from balance.service import (
    ChargingService,
    EventRequest,
    InvalidRequest,
    ItemAnswer,
    SessionAnswer,
    SessionRequest,
    UsageItem,
)
from balance.store import Notification, StoreUnavailable, UnknownAccount, cancel_listener
from occ.diameter import dictionary as d
from occ.diameter import metrics
from occ.diameter.application import PeerHandle
from occ.diameter.cc_answer import (
    Cost,
    Grant,
    abort_session_request,
    credit_control_answer,
    error_answer,
    re_auth_request,
)
from occ.diameter.cc_request import CcError, CreditControlRequest, ServiceControl, Units, parse_ccr
from occ.diameter.cc_settings import CreditControlSettings, RatingGroupSettings
from occ.diameter.codec import Message
from rating_core.rating import Usage, quote
from rating_core.tariff import NoRate, UnknownPlan

if TYPE_CHECKING:
    from occ.components import DaemonContext

log = logging.getLogger("occ.diameter.cc")

# Subscription-Id-Type -> identity kind of the provisioning CLI (NAI shares the RADIUS user namespace).
IDENTITY_KINDS = {
    d.SUBSCRIPTION_ID_TYPE_END_USER_E164: "msisdn",
    d.SUBSCRIPTION_ID_TYPE_END_USER_IMSI: "imsi",
    d.SUBSCRIPTION_ID_TYPE_END_USER_SIP_URI: "sip_uri",
    d.SUBSCRIPTION_ID_TYPE_END_USER_NAI: "radius_user",
}
ITEM_RESULTS = {
    "OK": d.DIAMETER_SUCCESS,
    "NO_MONEY": d.DIAMETER_CREDIT_LIMIT_REACHED,
    "DENIED": d.DIAMETER_END_USER_SERVICE_DENIED,
    "NO_RATE": d.DIAMETER_RATING_FAILED,
}
SESSION_RESULTS = {
    "UNKNOWN_ACCOUNT": d.DIAMETER_USER_UNKNOWN,
    "UNKNOWN_SESSION": d.DIAMETER_UNKNOWN_SESSION_ID,
    "OUT_OF_ORDER": d.DIAMETER_UNABLE_TO_COMPLY,
    "NO_PLAN": d.DIAMETER_RATING_FAILED,
}
# ISO 4217 numeric codes for Cost-Information's Currency-Code.
CURRENCIES = {
    "EUR": 978, "USD": 840, "GBP": 826, "CHF": 756, "SEK": 752, "NOK": 578, "DKK": 208, "PLN": 985,
    "CZK": 203, "HUF": 348, "RON": 946, "BGN": 975, "TRY": 949, "RUB": 643, "UAH": 980, "JPY": 392,
    "CNY": 156, "INR": 356, "BRL": 986, "MXN": 484, "CAD": 124, "AUD": 36, "NZD": 554, "ZAR": 710,
    "NGN": 566, "KES": 404, "EGP": 818, "AED": 784, "SAR": 682, "IDR": 360, "PHP": 608, "KRW": 410,
}  # fmt: skip
# Service-Context-Id (3GPP TS 32.299 §7.1.12: [[ext.]MNC.MCC.release.]<spec>@3gpp.org): the charging
# specification names the kind of service when the request carries no Service-Information.
IMS_CONTEXT = "32260"
SMS_CONTEXT = "32274"
IDENTITY_CACHE_S = 30.0
CACHE_SIZE = 100_000
STOPPING = ("suspended", "blocked", "closed")


class Reply(NamedTuple):
    result_code: int
    data: bytes


# A worker tracks every open session it serves, 100,000 and more on a busy gateway. As tracked objects
# (dataclasses, tuples, sets) every full collection walked them: 17-19 ms per 100,000 sessions, a stall in
# every request's latency. So the table holds what the cyclic collector never sees: gc=False Structs and
# dicts of strings. Safe because nothing refers to an entry but the table: an entry's ``peer`` (a
# connection) counts as referenced from outside while the entry holds it, and is freed by reference
# counting once the entry is dropped.
class _Held(msgspec.Struct, frozen=True, gc=False):
    """What one item of a session holds, for the gauges."""

    service: str
    units: int  # granted
    money: int  # reserved


class _Tracked(msgspec.Struct, gc=False):
    """A session this worker serves: where to send RAR/ASR, and whether it is waiting for money."""

    account_id: str
    peer: PeerHandle
    client_host: str  # the CCR's Origin-Host/Realm: where RAR/ASR go, also through a relay
    client_realm: str
    seen: float = 0.0  # monotonic time of the last request
    starved: bool = False
    rar_pending: bool = False
    held: dict[str, _Held] = msgspec.field(default_factory=dict)  # item -> what it holds


@dataclass(slots=True)
class _Tables:
    sessions: dict[str, _Tracked] = field(default_factory=dict)
    by_account: dict[str, dict[str, None]] = field(default_factory=dict)  # account -> its session ids


class CreditControlApplication:
    application_id = d.APP_CREDIT_CONTROL
    commands = frozenset({d.CMD_CREDIT_CONTROL})

    def __init__(
        self,
        charging: ChargingService,
        settings: CreditControlSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.charging = charging
        self.store = charging.store
        self.settings = settings
        self.clock = clock
        self._identities: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._tables = _Tables()
        self.held = metrics.HeldTotals()  # what the open sessions hold, for /metrics
        metrics.HELD.sources.add(self)
        self._swept = 0.0
        self._listener: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------------------
    def reload(self, settings: CreditControlSettings) -> None:
        self.settings = settings

    def listen(self) -> None:
        """Follow balance notifications (top-ups, status changes) for RAR and ASR."""
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="cc-notifications")

    def peer_opened(self, peer: PeerHandle) -> None:
        self.listen()

    def peer_closed(self, peer: PeerHandle) -> None:
        tables = self._tables
        for session_id in [s for s, t in tables.sessions.items() if t.peer is peer]:
            self._untrack(session_id)

    async def stop(self, timeout: float = 2.0) -> None:
        """Cancel the background tasks and wait for them, a bounded time: shutdown must not hang."""
        listener, self._listener = self._listener, None
        if listener is not None and not await cancel_listener(listener, timeout):
            log.warning("background task did not stop in time task=%s", listener.get_name())
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                log.warning("background task did not stop in time task=%s", task.get_name())

    # --- requests -------------------------------------------------------------------------------
    async def handle(self, request: Message, peer: PeerHandle) -> bytes:
        started = time.perf_counter()
        try:
            ccr = parse_ccr(request)
        except CcError as exc:
            metrics.cc_requests("invalid", exc.result_code).inc()
            return self._error(request, peer, exc.result_code, exc.failed_avp, str(exc)).data
        kind = metrics.CC_TYPES.get(ccr.request_type, "other")
        try:
            answer = await self._serve(request, ccr, peer)
        except StoreUnavailable as exc:
            log.warning("credit control refused: store unavailable session=%s reason=%s", ccr.session_id, exc)
            answer = self._error(request, peer, d.DIAMETER_TOO_BUSY, None, "charging store unavailable")
        except InvalidRequest as exc:
            answer = self._error(request, peer, d.DIAMETER_INVALID_AVP_VALUE, None, str(exc))
        except Exception:  # a bug must still get a proper answer (with its CC AVPs), never a silent drop
            log.exception("credit control failed session=%s", ccr.session_id)
            answer = self._error(request, peer, d.DIAMETER_UNABLE_TO_COMPLY, None, "internal error")
        metrics.cc_seconds(kind).observe(time.perf_counter() - started)
        metrics.cc_requests(kind, answer.result_code).inc()
        return answer.data

    def _error(
        self, request: Message, peer: PeerHandle, code: int, failed: bytes | None, message: str
    ) -> Reply:
        return Reply(
            code,
            error_answer(
                request,
                origin_host=peer.origin_host,
                origin_realm=peer.origin_realm,
                result_code=code,
                failed_avp=failed,
                message=message,
            ),
        )

    async def _serve(self, request: Message, ccr: CreditControlRequest, peer: PeerHandle) -> Reply:
        account_id = await self._account(ccr)
        if account_id is None:
            later = ccr.request_type in (
                d.CC_REQUEST_TYPE_UPDATE_REQUEST,
                d.CC_REQUEST_TYPE_TERMINATION_REQUEST,
            )
            if later and not ccr.subscription_ids:
                return self._answer(request, ccr, peer, d.DIAMETER_UNKNOWN_SESSION_ID)
            return self._answer(request, ccr, peer, d.DIAMETER_USER_UNKNOWN)
        if ccr.request_type == d.CC_REQUEST_TYPE_EVENT_REQUEST:
            return await self._event(request, ccr, peer, account_id)
        if ccr.controls:
            controls = ccr.controls
        elif ccr.top is not None or not ccr.multiple_services:
            controls = (ccr.top or ServiceControl(),)
        else:
            # a multi-service client with nothing to report or ask yet: open the session, grant nothing
            controls = ()
        items = tuple(self._item(ccr, control) for control in controls)
        session_request = SessionRequest(
            account_id=account_id,
            session_id=ccr.session_id,
            key=_key(ccr),
            items=items,
            now=self.clock(),
            sequence=ccr.request_number + 1,
            ttl_s=self.settings.session_timeout_s,
        )
        if ccr.request_type == d.CC_REQUEST_TYPE_INITIAL_REQUEST:
            answer = await self.charging.initiate(session_request)
            if answer.result == "OK":
                self._remember_owner(ccr.session_id, account_id)
        elif ccr.request_type == d.CC_REQUEST_TYPE_UPDATE_REQUEST:
            answer = await self.charging.update(session_request)
        else:
            answer = await self.charging.terminate(session_request)
            self._forget_owner(ccr.session_id)
        if answer.result != "OK":
            return self._answer(
                request, ccr, peer, SESSION_RESULTS.get(answer.result, d.DIAMETER_UNABLE_TO_COMPLY)
            )
        # by item, not by position: a retransmission may list its MSCCs in another order
        by_item = {out.item: out for out in answer.items}
        grants = [self._grant(c, i, by_item[i.item]) for c, i in zip(controls, items, strict=True)]
        terminating = ccr.request_type == d.CC_REQUEST_TYPE_TERMINATION_REQUEST
        if terminating:
            self._untrack(ccr.session_id)
        else:
            starved = any(g.final_action or g.result_code == d.DIAMETER_CREDIT_LIMIT_REACHED for g in grants)
            held = {
                i.item: _Held(i.service, by_item[i.item].granted, by_item[i.item].reserved) for i in items
            }
            if answer.status == "active":
                self._track(ccr, account_id, peer, starved, held)
            else:
                self._untrack(ccr.session_id)
        handling = "" if terminating else self.settings.failure_handling
        result = d.DIAMETER_SUCCESS
        if not terminating and answer.status != "active":
            result = d.DIAMETER_END_USER_SERVICE_DENIED
        if not ccr.controls:
            # single-service client: the grant and its result are the answer's own
            top = grants[0] if grants else None
            if top is not None and result == d.DIAMETER_SUCCESS:
                result = top.result_code
            return self._answer(request, ccr, peer, result, top=top, failure_handling=handling)
        return self._answer(request, ccr, peer, result, grants=grants, failure_handling=handling)

    @staticmethod
    def _answer(
        request: Message,
        ccr: CreditControlRequest,
        peer: PeerHandle,
        code: int,
        *,
        grants: Sequence[Grant] = (),
        top: Grant | None = None,
        cost: Cost | None = None,
        check_balance: int | None = None,
        failure_handling: str = "",
    ) -> Reply:
        return Reply(
            code,
            credit_control_answer(
                request,
                ccr,
                origin_host=peer.origin_host,
                origin_realm=peer.origin_realm,
                result_code=code,
                grants=grants,
                top=top,
                cost=cost,
                check_balance=check_balance,
                failure_handling=failure_handling,
            ),
        )

    # --- accounts -------------------------------------------------------------------------------
    async def _account(self, ccr: CreditControlRequest) -> str | None:
        now = time.monotonic()
        for sub_type, value in ccr.subscription_ids:
            kind = IDENTITY_KINDS.get(sub_type)
            if kind is None:
                continue
            cached = self._identities.get((kind, value))
            if cached is not None and cached[1] > now:
                return cached[0]
            found = await self.store.resolve_identity(kind, value)
            if found is not None:
                self._identities[(kind, value)] = (found[0], now + IDENTITY_CACHE_S)
                if len(self._identities) > CACHE_SIZE:
                    self._identities.popitem(last=False)
                return found[0]
        if ccr.subscription_ids and ccr.request_type in (
            d.CC_REQUEST_TYPE_INITIAL_REQUEST,
            d.CC_REQUEST_TYPE_EVENT_REQUEST,
        ):
            return None
        owner = self._owners.get(ccr.session_id)
        if owner is None and ccr.request_type != d.CC_REQUEST_TYPE_INITIAL_REQUEST:
            owner = await self.store.session_owner(ccr.session_id)
        return owner

    def _remember_owner(self, session_id: str, account_id: str) -> None:
        if self._owners.get(session_id) == account_id:
            return
        self._owners[session_id] = account_id
        if len(self._owners) > CACHE_SIZE:
            self._owners.popitem(last=False)
        # for another worker taking over the session; this one answers from memory
        ttl = max(self.settings.session_timeout_s * 4, 86_400)
        self._spawn(self.store.put_session_owner(session_id, account_id, ttl))

    def _forget_owner(self, session_id: str) -> None:
        # the index key in Redis expires on its own: deleting it would cost a round trip per session
        self._owners.pop(session_id, None)

    def _spawn(self, coro: object) -> None:
        async def run() -> None:
            try:
                await coro  # type: ignore[misc]
            except StoreUnavailable as exc:
                log.warning("session index not updated reason=%s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- items and grants -----------------------------------------------------------------------
    def _configured(self, control: ServiceControl) -> RatingGroupSettings | None:
        """The ``[diameter.credit_control.rating_groups]`` entry of an MSCC's Rating-Group, if any."""
        if control.rating_group is None:
            return None
        return self.settings.rating_groups.get(str(control.rating_group))

    def _service(self, ccr: CreditControlRequest, control: ServiceControl) -> str:
        configured = self._configured(control)
        if configured is not None:
            return configured.service
        context = ccr.service_context_id.split("@", 1)[0].split(".")[-1]
        if ccr.ims or context == IMS_CONTEXT:
            return self.settings.voice_service
        if ccr.sms or context == SMS_CONTEXT:
            return self.settings.sms_service
        return self.settings.default_service

    def unit_of(self, service: str) -> str:
        """The unit kind (second, byte, event) every tariff plan counts a service in."""
        unit = self.charging.catalog.unit_of(service)
        return "byte" if unit is None else str(unit)

    @staticmethod
    def _amount(units: Units, unit: str) -> int | None:
        if unit == "second":
            return units.time
        if unit == "event":
            return units.specific
        return units.octets()

    def _item(self, ccr: CreditControlRequest, control: ServiceControl) -> UsageItem:
        service = self._service(ccr, control)
        unit = self.unit_of(service)
        used = sum(self._amount(u, unit) or 0 for u in control.used)
        requested: int | None
        if ccr.request_type == d.CC_REQUEST_TYPE_TERMINATION_REQUEST or _final(control):
            # the session, or this rating group (Reporting-Reason FINAL, TS 32.299), is done: no new grant
            requested = 0
        elif control.requested is None:
            # CCR-I: a grant even without Requested-Service-Unit; later: none unless asked for
            requested = None if ccr.request_type == d.CC_REQUEST_TYPE_INITIAL_REQUEST else 0
        else:
            requested = self._amount(control.requested, unit)  # None (empty RSU): the default grant
        return UsageItem(
            item=_item_key(control),
            service=service,
            destination=ccr.called_party,
            used=used,
            requested=requested,
        )

    def _grant(self, control: ServiceControl, item: UsageItem, out: ItemAnswer) -> Grant:
        configured = self._configured(control)
        final_action = ""
        if out.final and out.granted:
            final_action = configured.final_unit_action if configured is not None else "TERMINATE"
        return Grant(
            result_code=ITEM_RESULTS.get(out.result, d.DIAMETER_UNABLE_TO_COMPLY),
            rating_group=control.rating_group,
            service_identifier=control.service_identifier,
            unit=self.unit_of(item.service),
            granted=out.granted,
            validity_time=self.settings.validity_time_s,
            final_action=final_action,
            redirect_url=configured.redirect_url if configured is not None else "",
            filter_id=configured.filter_id if configured is not None else "",
            volume_threshold=self.settings.volume_quota_threshold,
            time_threshold=self.settings.time_quota_threshold_s,
            quota_holding_time=self.settings.quota_holding_time_s,
        )

    # --- events: direct debit, refund, balance check, price enquiry -----------------------------
    def _event_units(self, ccr: CreditControlRequest, control: ServiceControl) -> tuple[str, str, int]:
        """(service, unit, units) an event MSCC asks for: its RSU, else its USU, else one."""
        service = self._service(ccr, control)
        unit = self.unit_of(service)
        for source in (control.requested, *control.used):
            amount = self._amount(source, unit) if source is not None else None
            if amount:
                return service, unit, amount
        return service, unit, 1

    async def _event(
        self, request: Message, ccr: CreditControlRequest, peer: PeerHandle, account_id: str
    ) -> Reply:
        controls = ccr.controls or (ccr.top or ServiceControl(),)
        if ccr.requested_action == d.REQUESTED_ACTION_DIRECT_DEBITING:
            return await self._debit(request, ccr, peer, account_id, _key(ccr), controls)
        # the other actions price the units under the account's plan, summed over the MSCCs
        try:
            view = await self.charging.summary(account_id)  # sessions are not needed to price
        except UnknownAccount:
            return self._answer(request, ccr, peer, d.DIAMETER_USER_UNKNOWN)
        if view.account.status != "active":
            return self._answer(request, ccr, peer, d.DIAMETER_END_USER_SERVICE_DENIED)
        currency = CURRENCIES.get(view.account.currency)
        if currency is None:
            return self._error(
                request, peer, d.DIAMETER_UNABLE_TO_COMPLY, None, "no ISO 4217 code for currency"
            )
        now = self.clock()
        price = 0
        covered = True  # every MSCC's units wholly in unit buckets
        try:
            plan = self.charging.catalog.plan(view.account.plan, now)
            for control in controls:
                service, _, units = self._event_units(ccr, control)
                in_buckets = sum(b.units - b.reserved for b in view.buckets if b.service == service)
                covered = covered and in_buckets >= units
                usage = Usage(service=service, quantity=units, start=now, destination=ccr.called_party)
                price += quote(plan, usage).amount
        except (UnknownPlan, NoRate):
            return self._answer(request, ccr, peer, d.DIAMETER_RATING_FAILED)
        cost = Cost(micro=price, currency=currency, unit="")
        if ccr.requested_action == d.REQUESTED_ACTION_REFUND_ACCOUNT:
            if price > self.settings.max_refund_micro:
                return self._error(
                    request, peer, d.DIAMETER_UNABLE_TO_COMPLY, None, "refund above the configured limit"
                )
            if price > 0:
                await self.charging.refund(account_id, price, key=_key(ccr), now=now)
            return self._answer(request, ccr, peer, d.DIAMETER_SUCCESS, cost=cost)
        if ccr.requested_action == d.REQUESTED_ACTION_CHECK_BALANCE:
            enough = covered or view.balance + view.account.credit_limit >= price
            result = d.CHECK_BALANCE_RESULT_ENOUGH_CREDIT if enough else d.CHECK_BALANCE_RESULT_NO_CREDIT
            return self._answer(request, ccr, peer, d.DIAMETER_SUCCESS, check_balance=result)
        return self._answer(request, ccr, peer, d.DIAMETER_SUCCESS, cost=cost)  # price enquiry: no grant

    async def _debit(
        self,
        request: Message,
        ccr: CreditControlRequest,
        peer: PeerHandle,
        account_id: str,
        key: str,
        controls: Sequence[ServiceControl],
    ) -> Reply:
        """Direct debit: each MSCC (or the request itself) is one event, answered in the same form."""
        grants = []
        for index, control in enumerate(controls):
            service, unit, units = self._event_units(ccr, control)
            event = await self.charging.event(
                EventRequest(
                    account_id=account_id,
                    key=key if len(controls) == 1 else f"{key}#{index}",
                    service=service,
                    units=units,
                    destination=ccr.called_party,
                    item=_item_key(control),
                    now=self.clock(),
                )
            )
            code = SESSION_RESULTS.get(event.result) or ITEM_RESULTS.get(
                event.result, d.DIAMETER_UNABLE_TO_COMPLY
            )
            grants.append(
                Grant(
                    result_code=code,
                    rating_group=control.rating_group,
                    service_identifier=control.service_identifier,
                    unit=unit,
                    granted=units if code == d.DIAMETER_SUCCESS else 0,
                )
            )
        if not ccr.controls:
            return self._answer(request, ccr, peer, grants[0].result_code, top=grants[0])
        return self._answer(request, ccr, peer, d.DIAMETER_SUCCESS, grants=grants)

    # --- server-initiated: RAR after a top-up, ASR when the account stops ------------------------
    def _track(
        self,
        ccr: CreditControlRequest,
        account_id: str,
        peer: PeerHandle,
        starved: bool,
        held: dict[str, _Held],
    ) -> None:
        tables = self._tables
        session_id = ccr.session_id
        tracked = tables.sessions.get(session_id)
        if tracked is None:
            tracked = _Tracked(
                account_id=account_id,
                peer=peer,
                client_host=ccr.origin_host,
                client_realm=ccr.origin_realm,
                seen=time.monotonic(),
            )
            tables.sessions[session_id] = tracked
            tables.by_account.setdefault(account_id, {})[session_id] = None
            metrics.CC_SESSIONS.inc()
            self._sweep()
        tracked.peer = peer  # the client may have reconnected
        tracked.seen = time.monotonic()
        tracked.starved = starved
        tracked.rar_pending = False
        _count_held(self.held, tracked.held, -1)
        tracked.held.update(held)
        _count_held(self.held, tracked.held, +1)

    def _sweep(self) -> None:
        """Forget sessions silent for twice Tcc (the store's reaper has returned their reservations)."""
        now = time.monotonic()
        if now - self._swept < 1.0:
            return
        self._swept = now
        horizon = now - 2 * self.settings.session_timeout_s
        for session_id in [s for s, t in self._tables.sessions.items() if t.seen < horizon]:
            self._untrack(session_id)

    def _untrack(self, session_id: str) -> None:
        tables = self._tables
        tracked = tables.sessions.pop(session_id, None)
        if tracked is not None:
            metrics.CC_SESSIONS.dec()
            _count_held(self.held, tracked.held, -1)
            sessions = tables.by_account.get(tracked.account_id)
            if sessions is not None:
                sessions.pop(session_id, None)
                if not sessions:
                    del tables.by_account[tracked.account_id]

    async def _listen(self) -> None:
        async for notice in self.store.notifications():
            try:
                await self.notify(notice)
            except Exception:  # a notification must never stop the listener
                log.exception("handling a balance notification failed")

    async def notify(self, notice: Notification) -> None:
        """React to a credit (RAR to starved sessions) or a status change (ASR to every session)."""
        sessions = list(self._tables.by_account.get(notice.account_id, ()))
        for session_id in sessions:
            tracked = self._tables.sessions.get(session_id)
            if tracked is None or not tracked.peer.is_open:
                continue
            if notice.kind == "credit" and tracked.starved and not tracked.rar_pending:
                tracked.rar_pending = True
                self._spawn(self._send(session_id, tracked, re_auth_request))
            elif notice.kind == "status" and notice.status in STOPPING:
                self._spawn(self._send(session_id, tracked, abort_session_request))

    async def _send(self, session_id: str, tracked: _Tracked, build_request: Callable[..., bytes]) -> None:
        peer = tracked.peer

        def build(hop_by_hop: int, end_to_end: int) -> bytes:
            return build_request(
                session_id,
                origin_host=peer.origin_host,
                origin_realm=peer.origin_realm,
                destination_host=tracked.client_host,
                destination_realm=tracked.client_realm,
                hop_by_hop=hop_by_hop,
                end_to_end=end_to_end,
            )

        command = "RAR" if build_request is re_auth_request else "ASR"
        try:
            answer = await peer.send_request(build, self.settings.request_timeout_s)
        except (TimeoutError, ConnectionError) as exc:
            log.warning("no answer to a server-initiated request session=%s reason=%s", session_id, exc)
            metrics.CC_SERVER_REQUESTS.labels(command=command, outcome="no_answer").inc()
            tracked.rar_pending = False
            return
        result = answer.find(d.AVP_RESULT_CODE)
        code = result.u32() if result is not None else 0
        metrics.CC_SERVER_REQUESTS.labels(command=command, outcome=str(code)).inc()
        if code == d.DIAMETER_UNKNOWN_SESSION_ID or command == "ASR":
            self._untrack(session_id)  # the client has no such session (any more)
        log.info(
            "server-initiated request answered session=%s command=%d result=%d", session_id, answer.code, code
        )


def _count_held(totals: metrics.HeldTotals, held: dict[str, _Held], sign: int) -> None:
    for item in held.values():
        if item.units:
            totals.units[item.service] = totals.units.get(item.service, 0) + sign * item.units
        totals.money += sign * item.money


def _key(ccr: CreditControlRequest) -> str:
    """The idempotency key of a request: a retransmission carries the same Session-Id and number."""
    return f"{ccr.session_id};{ccr.request_number}"


def _final(control: ServiceControl) -> bool:
    return d.REPORTING_REASON_FINAL in control.reporting_reasons


def _item_key(control: ServiceControl) -> str:
    key = ""
    if control.rating_group is not None:
        key = f"rg{control.rating_group}"
    if control.service_identifier is not None:
        key += f"si{control.service_identifier}"
    return key or "default"


def build_application(ctx: DaemonContext) -> CreditControlApplication:
    """The application the daemon's Diameter component serves, on the context's store and tariffs."""
    charging = ChargingService(ctx.store, ctx.catalog, ctx.settings.balance)
    app = CreditControlApplication(charging, ctx.settings.diameter.credit_control)
    app.listen()  # subscribed before the first peer, so no top-up goes unnoticed
    return app


def reload_application(app: CreditControlApplication, ctx: DaemonContext) -> None:
    app.charging.reload(ctx.catalog, ctx.settings.balance)
    app.reload(ctx.settings.diameter.credit_control)


__all__ = ["CreditControlApplication", "SessionAnswer", "build_application", "reload_application"]
