"""Balance-driven session control: the RADIUS sessions this worker has accounting for, by account, and what
happens to them when the account changes (balance notifications from the store):

- the account is suspended, blocked or closed: a Disconnect-Request for each of its sessions;
- money arrives (a top-up, a refund), the plan changes or the account is active again: a CoA-Request for
  each of its sessions with the new allowance (Session-Timeout or data quota) and the plan's limits, as an
  Access-Accept would carry them now.

A session is known from its first accounting packet on this worker until its Stop (or Accounting-On/Off
of its NAS). Notifications reach every worker; only the ones that saw a session act on it.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from aaa import access, codec, metrics
from aaa.clients import NasClient
from aaa.context import RadiusContext
from aaa.dynauth import DynAuthClient
from balance.store import Notification, StoreUnavailable, UnknownAccount, cancel_listener

log = logging.getLogger("occ.radius.control")

STOPPING = frozenset({"suspended", "blocked", "closed"})
PRUNE_EVERY = 10_000  # accounting packets between sweeps of the session table


class LiveSession(msgspec.Struct, frozen=True, gc=False):  # one per open session: never a cycle
    client: NasClient
    nas_host: str  # where Disconnect/CoA go
    acct_session: str
    user: str
    framed_ip: bytes | None
    so_far: int = 0  # units reported and held: the base of a CoA's session-long allowance
    seen_at: float = 0.0  # monotonic time of its latest accounting


class SessionControl:
    def __init__(self, dynauth: DynAuthClient) -> None:
        self.dynauth = dynauth
        self.by_account: dict[str, dict[str, LiveSession]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._seen = 0

    def seen(self, account_id: str, session_id: str, live: LiveSession, stale_s: float = 0.0) -> None:
        sessions = self.by_account.setdefault(account_id, {})
        if session_id not in sessions:
            metrics.SESSIONS.inc()
        sessions[session_id] = live
        self._seen += 1
        if stale_s and self._seen % PRUNE_EVERY == 0:
            self.prune(live.seen_at - stale_s)

    def prune(self, before: float) -> None:
        """Forget sessions without accounting since ``before`` (their Stop never came; the store's reaper
        has returned their reservations)."""
        for account_id in list(self.by_account):
            for session_id, live in list(self.by_account[account_id].items()):
                if live.seen_at < before:
                    self.gone(account_id, session_id)

    def gone(self, account_id: str, session_id: str) -> None:
        sessions = self.by_account.get(account_id)
        if sessions is not None and sessions.pop(session_id, None) is not None:
            metrics.SESSIONS.dec()
            if not sessions:
                del self.by_account[account_id]

    def forget_nas(self, nas_host: str) -> None:
        for account_id in list(self.by_account):
            for session_id, live in list(self.by_account[account_id].items()):
                if live.nas_host == nas_host:
                    self.gone(account_id, session_id)

    # -- notifications -----------------------------------------------------------------------------------
    def listen(self, context: RadiusContext) -> None:
        if self._listener is None:
            loop = asyncio.get_running_loop()
            self._listener = loop.create_task(self._listen(context), name="radius-control")

    async def stop(self, timeout: float = 2.0) -> None:
        """Cancel the listener and wait for it, a bounded time: a shutdown must not hang on Redis."""
        listener, self._listener = self._listener, None
        if listener is not None and not await cancel_listener(listener, timeout):
            log.warning("the balance notification listener did not stop in time")

    async def _listen(self, context: RadiusContext) -> None:
        async for notice in context.charging.store.notifications():
            try:
                await self.notify(self.dynauth.context(), notice)
            except Exception:  # one bad notice must not stop the listener
                log.exception("handling a balance notification failed")

    async def notify(self, ctx: RadiusContext, notice: Notification) -> None:
        sessions = dict(self.by_account.get(notice.account_id, {}))
        if not sessions:
            return
        if notice.kind == "status" and notice.status in STOPPING:
            for session_id, live in sessions.items():
                client = ctx.clients.lookup(live.nas_host) or live.client  # the secret in force now
                self.dynauth.disconnect(
                    client, live.nas_host, live.acct_session, live.user, live.framed_ip, notice.status
                )
                self.gone(notice.account_id, session_id)
        elif notice.kind == "credit" or (notice.kind == "status" and notice.status == "active"):
            try:
                view = await ctx.charging.summary(notice.account_id)
            except (UnknownAccount, StoreUnavailable) as exc:
                log.warning("no CoA after a credit account=%s reason=%s", notice.account_id, exc)
                return
            a = ctx.attrs
            for live in sessions.values():
                client = ctx.clients.lookup(live.nas_host) or live.client  # the secret in force now
                granted = access.limits(ctx, client, view, live.so_far)
                if granted is None or granted[0] <= 0:
                    continue
                attributes = [(a.acct_session_id, live.acct_session.encode())]
                if live.user:
                    attributes.append((a.user_name, live.user.encode()))
                self.dynauth.send(codec.COA_REQUEST, client, live.nas_host, [*attributes, *granted[1]])
