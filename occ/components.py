"""What the daemon runs: components (protocol listeners, background tasks) and the context they share.

A component is started once with the running :class:`DaemonContext`, told about every applied reload
with the new context, and stopped with a grace period at shutdown. Adding a listener or a background task
is one line in :func:`build_components`; the daemon core (:mod:`occ.daemon`) does not change.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg

from balance.reaper import Reaper
from balance.store import BalanceStore
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


def build_components(settings: Settings) -> list[Component]:
    """The components of ``occ serve``, in start order (they are stopped in reverse order)."""
    components: list[Component] = [ReaperComponent()]
    # ---- components are registered here, in start order ------------------------------------------
    # Background tasks first, so they run before the first request arrives:
    #   * balance reaper -- returns expired reservations (above).
    #   * charge sink (billing) -- Redis charge streams -> PostgreSQL ledger.
    # Protocol listeners last, so nothing is accepted before the machinery behind it runs:
    #   * RADIUS auth/accounting (aaa), Diameter Gy/Ro (occ.diameter, last: below).
    # --------------------------------------------------------------------------------------------------
    if settings.radius.enabled:
        components.append(_radius_component())
    components.append(_diameter_component())
    return components


def _radius_component() -> Component:
    from occ.radius import RadiusComponent

    return RadiusComponent()


def _diameter_component() -> Component:
    """The Diameter listener serving the credit-control application."""
    from occ.diameter import credit_control
    from occ.diameter.server import ApplicationFactory, DiameterComponent

    factory = ApplicationFactory(credit_control.build_application, credit_control.reload_application)
    return DiameterComponent([factory])


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
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
