"""Returns reservations whose time ran out (a crashed NAS, gateway or worker leaks nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from balance.store import BalanceStore, StoreUnavailable

log = logging.getLogger("occ.balance.reaper")


class Reaper:
    """Sweeps every partition's expiry index each ``interval_s``; safe to run in several workers at once
    (the reap script re-checks each session's expiry atomically)."""

    def __init__(
        self,
        store: BalanceStore,
        interval_s: float,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.clock = clock
        self._stop = asyncio.Event()

    async def sweep(self) -> int:
        return await self.store.reap(self.clock())

    async def run(self) -> None:
        """Sweep until :meth:`stop`; Redis errors are logged and retried at the next sweep."""
        self._stop.clear()
        while not self._stop.is_set():
            try:
                reaped = await self.sweep()
                if reaped:
                    log.info("reaper returned reservations sessions=%d", reaped)
            except StoreUnavailable as exc:
                log.warning("reaper sweep failed reason=%s", exc)
            except Exception:  # a bug must not silently end the sweeps: log it and keep going
                log.exception("reaper sweep failed unexpectedly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    def stop(self) -> None:
        self._stop.set()
