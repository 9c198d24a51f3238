"""What the daemon runs: components (protocol listeners, background tasks) and the context they share.

A component is started once with the running :class:`DaemonContext`, told about every applied reload
with the new context, and stopped with a grace period at shutdown. Adding a listener or a background task
is one line in :func:`build_components`; the daemon core (:mod:`occ.daemon`) does not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg

from balance.charges import ChargeStreams
from balance.link import RedisLink, open_link
from balance.reaper import Reaper
from balance.store import BalanceStore
from billing import db
from billing.sink import ChargeSink, consumer_name
from occ.settings import Settings
from rating_core.tariff import Catalog


@dataclass(frozen=True, slots=True)
class DaemonContext:
    """Everything a component may use; replaced as a whole (never mutated) when a reload is applied."""

    settings: Settings
    config_path: Path
    store: BalanceStore
    # asyncpg.Pool (asyncpg ships no type information)
    pool: asyncpg.Pool
    # The tariff plans in force. Empty when PostgreSQL has no tariff tables yet.
    catalog: Catalog


class Component(Protocol):
    """A unit of the daemon with a lifetime: a protocol listener, the reaper, the charge sink."""

    @property
    def name(self) -> str:
        """Short stable name, used in log lines and as the ``component`` label of ``occ_up``."""
        ...

    async def start(self, ctx: DaemonContext) -> None:
        """Begin serving; return once ready (sockets bound, tasks running). Raise to abort startup."""
        ...

    def reload(self, ctx: DaemonContext) -> None:
        """Adopt a new, already validated context: settings and catalog.

        Synchronous on purpose: the daemon calls every component's ``reload`` without yielding to the
        event loop in between, so no request ever sees one component on the old configuration and
        another on the new one. Swap references here; anything slow belongs in a task the component
        starts. Must not fail: everything that can be wrong with a configuration is rejected before.
        """
        ...

    async def stop(self, grace_s: float) -> None:
        """Stop accepting new work, finish work in flight within ``grace_s`` seconds, release resources."""
        ...


def build_components(
    settings: Settings, worker: int = 1, diameter_handoff: socket.socket | None = None
) -> list[Component]:
    """The components of ``occ serve`` (of worker ``worker``, which serves the Diameter connections its
    supervisor hands over on ``diameter_handoff``), in start order (stopped in reverse)."""
    components: list[Component] = [ReaperComponent()]
    # ---- components are registered here, in start order ------------------------------------------
    # Background tasks first, so they run before the first request arrives:
    #   * balance reaper -- returns expired reservations (above).
    #   * charge sink (billing) -- Redis charge streams -> PostgreSQL ledger (unless it runs alone).
    # Protocol listeners last, so nothing is accepted before the machinery behind it runs:
    #   * RADIUS auth/accounting (aaa), Diameter Gy/Ro (occ.diameter, last: below).
    # --------------------------------------------------------------------------------------------------
    if settings.sink.enabled and worker == 1:
        components.append(SinkComponent())
    if settings.radius.enabled:
        components.append(_radius_component())
    components.append(_diameter_component(diameter_handoff))
    return components


def _radius_component() -> Component:
    from occ.radius import RadiusComponent

    return RadiusComponent()


def _diameter_component(handoff: socket.socket | None) -> Component:
    """The Diameter listener serving the credit-control application."""
    from occ.diameter import credit_control
    from occ.diameter.server import ApplicationFactory, DiameterComponent

    factory = ApplicationFactory(credit_control.build_application, credit_control.reload_application)
    return DiameterComponent([factory], handoff)


class ReaperComponent:
    """Runs the balance reaper: expired reservations go back to their accounts."""

    name = "reaper"

    def __init__(self) -> None:
        self._reaper: Reaper | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, ctx: DaemonContext) -> None:
        self._reaper = Reaper(ctx.store, ctx.settings.balance.reaper_interval_s)
        self._task = asyncio.create_task(self._reaper.run(), name="reaper")

    def reload(self, ctx: DaemonContext) -> None:
        if self._reaper is not None:
            self._reaper.interval_s = ctx.settings.balance.reaper_interval_s

    async def stop(self, grace_s: float) -> None:
        if self._reaper is None or self._task is None:
            return
        self._reaper.stop()
        await finish(self._task, grace_s)


class SinkComponent:
    """Runs the charge sink on its own Redis and PostgreSQL connections, so its large batches never queue
    behind (or ahead of) the charging requests' calls."""

    name = "sink"

    def __init__(self) -> None:
        self._sink: ChargeSink | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, ctx: DaemonContext) -> None:
        s = ctx.settings
        link = open_link(s.redis.url, cluster=s.redis.cluster, timeout=s.redis.connect_timeout_s)
        streams = ChargeStreams(link, ctx.store.keys, s.sink.group, consumer_name(s.sink))
        database = s.database

        def connect() -> Awaitable[asyncpg.Connection]:
            return db.connect(database.url, database.connect_timeout_s)

        self._sink = ChargeSink(streams, connect, s.sink)
        self._task = asyncio.create_task(self._run(link), name="sink")

    async def _run(self, link: RedisLink) -> None:
        assert self._sink is not None
        try:
            await self._sink.run()
        finally:
            await link.close()

    def reload(self, ctx: DaemonContext) -> None:
        if self._sink is not None:
            self._sink.settings = ctx.settings.sink

    async def stop(self, grace_s: float) -> None:
        if self._sink is None or self._task is None:
            return
        # the batch in hand is stored and acknowledged first; one cut short stays pending in Redis
        self._sink.stop()
        await finish(self._task, grace_s)


async def finish(task: asyncio.Task[None], grace_s: float) -> None:
    """Wait up to ``grace_s`` for a task told to stop; cancel it after that."""
    try:
        await asyncio.wait_for(asyncio.shield(task), grace_s)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
