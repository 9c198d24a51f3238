"""``occ serve`` with ``server.workers`` > 1: worker processes sharing the ports, and their supervisor.

The supervisor holds the pid file (so ``occ reload`` and init systems see one daemon), starts each worker
as ``occ serve --worker I`` (its own event loop, its own Redis and PostgreSQL connections, SO_REUSEPORT
on the Diameter and RADIUS ports, /metrics on ``metrics.port + I - 1``), forwards SIGHUP (reload) and
SIGTERM/SIGINT (graceful stop) to them, and starts again a worker that died. Workers keep no state that
matters (ARCHITECTURE.md: every session lives in Redis), so any NAS or peer may land on any of them: the
kernel spreads RADIUS datagrams over the workers' sockets, and the supervisor itself accepts Diameter
connections and hands each to the worker holding the fewest (:mod:`occ.diameter.handoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

from occ import log
from occ.child_process import die_with_parent
from occ.daemon import pid_file_path, take_pid_file
from occ.diameter.handoff import Dealer, bind_listener
from occ.settings import Settings

_log = log.get("occ.supervisor")

# A worker that dies this soon after its start, this many times in a row, means it cannot run: stop.
EARLY_EXIT_S = 5.0
EARLY_EXITS = 5
RESTART_DELAY_S = 1.0
STOP_MARGIN_S = 5.0


class Supervisor:
    def __init__(self, config_path: Path, settings: Settings) -> None:
        self._config = config_path.absolute()
        self._settings = settings
        self._workers: dict[int, asyncio.subprocess.Process] = {}
        self._stop = asyncio.Event()
        self._dealer: Dealer | None = None

    async def run(self) -> int:
        s = self._settings
        log.configure(s.server.log_level, s.server.log_format)
        pid_file = take_pid_file(pid_file_path(s))
        if pid_file is None:
            return 1
        d = s.diameter
        try:
            self._dealer = Dealer(bind_listener(d.listen, d.port))
        except OSError as exc:
            _log.error(f"cannot start: Diameter cannot listen on {d.listen}:{d.port}: {exc.strerror or exc}")
            pid_file.release()
            return 1
        self._dealer.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        try:
            _log.info("supervising", workers=s.server.workers, config=str(self._config))
            return await self._supervise(s.server.workers)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            pid_file.release()

    async def _supervise(self, count: int) -> int:
        started: dict[int, float] = {}
        early: dict[int, int] = dict.fromkeys(range(1, count + 1), 0)
        for worker in range(1, count + 1):
            await self._start(worker, started)
        code = 0
        while not self._stop.is_set():
            waits = {asyncio.ensure_future(p.wait()): w for w, p in self._workers.items()}
            stop = asyncio.ensure_future(self._stop.wait())
            done, _ = await asyncio.wait({*waits, stop}, return_when=asyncio.FIRST_COMPLETED)
            for future in waits:
                if future not in done:
                    future.cancel()
            if stop in done:
                break
            stop.cancel()
            for future in done:
                worker = waits[future]
                status = future.result()
                quick = time.monotonic() - started[worker] < EARLY_EXIT_S
                early[worker] = early[worker] + 1 if quick else 0
                if early[worker] >= EARLY_EXITS:
                    _log.error("worker keeps failing at start: stopping", worker=worker, status=status)
                    code = 1
                    self._stop.set()
                    break
                _log.warning("worker exited: starting it again", worker=worker, status=status)
                await asyncio.sleep(RESTART_DELAY_S)
                if not self._stop.is_set():
                    await self._start(worker, started)
        await self._stop_all()
        return code

    async def _start(self, worker: int, started: dict[int, float]) -> None:
        assert self._dealer is not None
        handoff = self._dealer.attach(worker)
        argv = [sys.executable, "-m", "occ", "serve", "--config", str(self._config), "--worker", str(worker)]
        argv += ["--handoff-fd", str(handoff.fileno())]
        try:
            # a worker must not outlive the supervisor (killed, even by SIGKILL): an orphan would keep
            # sharing the RADIUS ports with the next `occ serve`, on its old configuration
            self._workers[worker] = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(handoff.fileno(),),
                preexec_fn=die_with_parent(),
            )
        finally:
            handoff.close()  # the worker holds its own copy
        started[worker] = time.monotonic()

    def _forward(self, sig: signal.Signals) -> None:
        for process in self._workers.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)

    async def _stop_all(self) -> None:
        if self._dealer is not None:  # no new Diameter connection while the workers stop
            await self._dealer.close()
        self._forward(signal.SIGTERM)
        deadline = self._settings.server.shutdown_grace_s + STOP_MARGIN_S
        for worker, process in self._workers.items():
            try:
                await asyncio.wait_for(process.wait(), deadline)
            except TimeoutError:
                _log.warning("worker did not stop in time: killing it", worker=worker)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
