"""The charge sink: Redis charge streams -> PostgreSQL ledger, every record exactly once.

One round reads up to ``batch_size`` entries from every partition's stream (one pipelined write to
Redis), stores all of them in one PostgreSQL transaction (:class:`billing.ledger.Ledger`), and only
after the commit acknowledges them, which lets ``stream_ack.lua`` trim them from Redis. So:

* PostgreSQL down: the round's batch is retried with backoff until it is stored; meanwhile new
  records wait in Redis (the streams are the backlog) and drain once PostgreSQL is back.
* the sink dies after the commit and before the acknowledgement: the entries stay pending in the
  group; the same consumer reads them again at start (``read_pending``), another one claims them
  after ``claim_idle_s``, and the ledger's primary key turns the second copy into nothing.
* Redis down: reads and acknowledgements are retried; nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from balance.charges import Batch, ChargeStreams, Lag
from balance.link import RedisError
from billing import metrics
from billing.db import DatabaseUnavailable
from billing.ledger import Ledger, Stored
from billing.settings import SinkSettings

log = logging.getLogger("occ.billing.sink")

# What PostgreSQL being away (or a broken connection) looks like from asyncpg: retried, never fatal.
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, DatabaseUnavailable)
_LAG_INTERVAL_S = 1.0


def consumer_name(settings: SinkSettings) -> str:
    return settings.consumer or socket.gethostname()


class ChargeSink:
    """Moves charge records from the streams to the ledger until :meth:`stop`."""

    def __init__(
        self,
        streams: ChargeStreams,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        settings: SinkSettings,
    ) -> None:
        self.streams = streams
        self.settings = settings
        self._connect = connect
        self._ledger: Ledger | None = None
        self._stop = asyncio.Event()
        self._lag: list[Lag] = [Lag(0, None)] * len(streams.streams)
        # the state of a run: still reading this consumer's own pending entries; the next round read
        # ahead; the last round's acknowledgement; when to claim idle entries and refresh the lag next
        self._pending = True
        self._ahead: asyncio.Task[list[Batch]] | None = None
        self._acking: asyncio.Task[bool] | None = None
        self._next_claim = self._next_lag = 0.0
        # what the sink has done since it started (tests and `occ sink --once` read these)
        self.stored = 0
        self.duplicates = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Read, store and acknowledge until stopped; outages of either service are waited out."""
        self._stop.clear()
        self._pending, self._ahead, self._acking = True, None, None
        self._next_claim = self._next_lag = 0.0
        try:
            if not await self._retry("redis", self.streams.ensure_groups):
                return
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    batches = await self._read_round()
                except RedisError as exc:
                    metrics.SINK_ERRORS.labels(service="redis").inc()
                    log.warning("charge sink cannot read the charge streams reason=%s", exc)
                    if await self._pause(self.settings.retry_max_s):
                        return
                    continue
                if not batches:
                    if await self._pause(self.settings.poll_interval_s):
                        return
                    continue
                # a full batch means a backlog: the next round is read at once (and read ahead)
                backlog = any(len(b.ids) >= self.settings.batch_size for b in batches)
                if not await self._store_and_ack(batches, read_ahead=backlog):
                    return  # stopped while a service was away: the round stays pending in Redis
                rest = self.settings.poll_interval_s - (time.monotonic() - started)
                if not backlog and rest > 0 and await self._pause(rest):
                    # otherwise rounds start a poll interval apart, so that each gathers the records
                    # of that time (a round costs a transaction and a read of every partition)
                    return
        finally:
            if self._acking is not None:
                await self._acking
            if self._ahead is not None:
                self._ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisError):
                    await self._ahead
            await self._close()

    async def _read_round(self) -> list[Batch]:
        """The next round: the one read ahead, else what this consumer read before a restart and never
        acknowledged, else new entries; now and then also entries other consumers left idle."""
        now = time.monotonic()
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            batches = await ahead
        elif self._pending:
            batches = await self.streams.read_pending(self.settings.batch_size)
            self._pending = bool(batches)
        else:
            batches = await self.streams.read_new(self.settings.batch_size)
        if now >= self._next_claim:
            self._next_claim = now + self.settings.claim_idle_s / 2
            batches += await self.streams.claim(
                self.settings.batch_size, int(self.settings.claim_idle_s * 1000)
            )
        if not batches and now >= self._next_lag:
            self._next_lag = now + _LAG_INTERVAL_S
            self._set_lag(list(enumerate(await self.streams.lag())))
        return batches

    async def _store_and_ack(self, batches: list[Batch], *, read_ahead: bool) -> bool:
        """Store a round and have it acknowledged; False when the sink was stopped meanwhile."""
        if read_ahead and not self._pending:
            # Redis reads the next round while PostgreSQL stores this one; were the sink to stop
            # meanwhile, that round stays pending for this consumer's next start
            self._ahead = asyncio.create_task(self.streams.read_new(self.settings.batch_size))
        if not await self.store(batches):
            return False
        # acknowledged while the next round is stored; one at a time, in order. Pending entries are read
        # again until acknowledged, so that phase waits for it
        if self._acking is not None and not await self._acking:
            return False
        self._acking = asyncio.create_task(self._retry("redis", functools.partial(self._ack, batches)))
        if self._pending:
            acking, self._acking = self._acking, None
            return await acking
        return True

    async def store(self, batches: Sequence[Batch]) -> bool:
        """Store the batches in one transaction, retrying until it worked (True) or the sink is stopped
        (False: nothing of the batch is acknowledged, so nothing is lost)."""
        for entry_id, _, reason in (reject for b in batches for reject in b.rejects):
            log.error("charge stream entry is not a charge record id=%s reason=%s", entry_id, reason)
        delay, down_since = 0.1, 0.0
        while True:
            try:
                ledger = await self._open()
                started = time.perf_counter()
                stored = await ledger.store(batches)
                metrics.SINK_COMMIT_SECONDS.observe(time.perf_counter() - started)
                break
            except _DATABASE_ERRORS as exc:
                metrics.SINK_ERRORS.labels(service="postgres").inc()
                if not down_since:
                    down_since = time.monotonic()
                    log.warning("charge sink cannot store records, retrying reason=%s", _one_line(exc))
                await self._close()
                if await self._pause(delay):
                    return False
                delay = min(delay * 2, self.settings.retry_max_s)
        if down_since:
            log.info("charge sink stores again after_s=%.1f", time.monotonic() - down_since)
        self._count(stored)
        return True

    def _count(self, stored: Stored) -> None:
        self.stored += stored.inserted
        self.duplicates += stored.duplicates
        metrics.SINK_BATCHES.inc()
        metrics.SINK_RECORDS.labels(outcome="stored").inc(stored.inserted)
        if stored.duplicates:
            metrics.SINK_RECORDS.labels(outcome="duplicate").inc(stored.duplicates)
        if stored.rejects:
            metrics.SINK_RECORDS.labels(outcome="rejected").inc(stored.rejects)

    async def _ack(self, batches: Sequence[Batch]) -> None:
        lags = await asyncio.gather(*(self.streams.ack(b.partition, b.ids) for b in batches))
        self._set_lag([(b.partition, lag) for b, lag in zip(batches, lags, strict=True)])

    def _set_lag(self, lags: Sequence[tuple[int, Lag]]) -> None:
        for partition, lag in lags:
            self._lag[partition] = lag
        metrics.SINK_LAG_ENTRIES.set(sum(lag.entries for lag in self._lag))
        oldest = min((lag.oldest_ms for lag in self._lag if lag.oldest_ms is not None), default=None)
        metrics.SINK_LAG_SECONDS.set(0.0 if oldest is None else max(0.0, time.time() - oldest / 1000))

    async def _retry(self, service: str, operation: Callable[[], Awaitable[None]]) -> bool:
        """Run a Redis operation until it works (True) or the sink is stopped (False)."""
        delay = 0.1
        while True:
            try:
                await operation()
                return True
            except RedisError as exc:
                metrics.SINK_ERRORS.labels(service=service).inc()
                log.warning("charge sink Redis call failed, retrying reason=%s", exc)
            if await self._pause(delay):
                return False
            delay = min(delay * 2, self.settings.retry_max_s)

    async def _pause(self, seconds: float) -> bool:
        """Sleep; True when the sink was stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def _open(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(await self._connect())
        return self._ledger

    async def _close(self) -> None:
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            with contextlib.suppress(*_DATABASE_ERRORS):
                await ledger.conn.close(timeout=1.0)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
