"""``occ serve``: start, reload and stop the server process.

Lifecycle (one asyncio event loop on uvloop):

1. take the pid file ``<server.run_dir>/occ.pid`` (an exclusive ``flock``, so a stale file left by a
   crash never blocks a start and a live daemon is never doubled);
2. connect Redis (``BalanceStore``) and PostgreSQL (asyncpg pool) -- either unreachable: one error line
   naming it, exit status 1;
3. load the tariff catalog from PostgreSQL (no tariff tables yet: a warning and an empty catalog);
4. serve ``/metrics`` and ``/health``; start the components (:mod:`occ.components`);
5. SIGHUP: reload (below); SIGTERM / SIGINT: graceful shutdown, exit status 0.

Reload never stops the loop: the new file and catalog are read and checked while requests keep being
served, and only a fully valid result replaces the running :class:`DaemonContext` -- in one assignment,
followed by every component's synchronous ``reload``. Settings bound to connections or sockets
(:data:`RESTART_ONLY`) keep their running value and are logged as needing a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import gc
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from balance.store import BalanceStore
from billing import tariff_store
from occ import log, metrics
from occ.components import Component, DaemonContext, build_components
from occ.http_endpoint import HttpEndpoint, Response
from occ.settings import ConfigError, Settings, load_settings, with_metrics_port
from rating_core.tariff import Catalog

_log = log.get("occ.daemon")

PID_FILE_NAME = "occ.pid"

# Settings a running daemon cannot adopt: the connections, sockets and files they describe are opened
# once at startup. A dotted name covers every key below it. The balance slice (grant sizes, TTLs) is
# read per request, so it is swapped on reload like the tariffs.
RESTART_ONLY: tuple[str, ...] = (
    "server.run_dir",
    "server.workers",
    "metrics",
    "redis",
    "database",
    # the Diameter listener's socket and TLS files, and the identity peers exchanged capabilities with
    "diameter.listen",
    "diameter.port",
    "diameter.tls",
    "diameter.origin_host",
    "diameter.origin_realm",
    # the RADIUS sockets (clients, dictionaries, plans and profiles reload)
    "radius.enabled",
    "radius.listen",
    "radius.auth_port",
    "radius.acct_port",
)

# How long one dependency probe of /health and /metrics may take before it counts as a failure.
PROBE_TIMEOUT_S = 2.0
# Bound on reading the tariff catalog (startup and reload).
CATALOG_TIMEOUT_S = 30.0
# How long closing Redis and PostgreSQL may take at shutdown before connections are cut.
CLOSE_TIMEOUT_S = 5.0
# Extra time a component gets beyond its grace period before its stop is cancelled.
STOP_MARGIN_S = 2.0

S = TypeVar("S", bound=msgspec.Struct)


class StartupError(Exception):
    """The daemon cannot start; the message is one password-free line."""


class NoDaemon(Exception):
    """No running daemon holds the pid file; the message is one line."""


# ---- pid file ------------------------------------------------------------------------------------------


def pid_file_path(settings: Settings, name: str = PID_FILE_NAME) -> Path:
    return Path(settings.server.run_dir) / name


def take_pid_file(path: Path) -> PidFile | None:
    """The pid file, locked; None (and the reason logged) when another process holds it."""
    pid_file = PidFile(path)
    try:
        pid_file.acquire()
    except StartupError as exc:
        _log.error(f"cannot start: {exc}")
        return None
    return pid_file


class PidFile:
    """The pid file, held with an exclusive ``flock`` for the daemon's lifetime.

    The lock, not the file's existence, says whether a daemon runs: the kernel drops it when the process
    dies however it dies, so a file left by a crash is simply taken over, and a recycled pid is never
    mistaken for a live daemon.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the file and write our pid; raises StartupError when another live daemon holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create run directory {self.path.parent}: {exc.strerror}") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise StartupError(f"cannot open pid file {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f" (pid {holder})" if holder else ""
                raise StartupError(f"another occ daemon{who} is running: it holds {self.path}") from None
            # A daemon that was stopping may have unlinked the file between our open and our lock:
            # then we hold a lock on a file nobody else will look at -- start over on the current one.
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = -1
            if current != os.fstat(fd).st_ino:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return

    def release(self) -> None:
        """Remove the file, then drop the lock (in this order, so no other daemon's file is removed)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def running_daemon_pid(path: Path) -> int:
    """The pid of the live daemon holding the pid file at ``path``; raises NoDaemon otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NoDaemon(f"no occ daemon is running (no pid file {path})") from None
    except OSError as exc:
        raise NoDaemon(f"cannot read pid file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            if pid is None:
                raise NoDaemon(f"pid file {path} is locked but holds no pid") from None
            return pid
        raise NoDaemon(f"no occ daemon is running (stale pid file {path})")
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


# ---- settings comparison --------------------------------------------------------------------------------


def changed_keys(old: msgspec.Struct, new: msgspec.Struct, prefix: str = "") -> list[str]:
    """Dotted names of the leaf keys whose values differ between two settings trees."""
    keys: list[str] = []
    for name in old.__struct_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if isinstance(a, msgspec.Struct) and type(a) is type(b):
            keys.extend(changed_keys(a, b, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _is_restart_only(key: str) -> bool:
    return any(key == fixed or key.startswith(fixed + ".") for fixed in RESTART_ONLY)


def _get(tree: msgspec.Struct, dotted: str) -> Any:
    value: Any = tree
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _with(tree: S, dotted: str, value: Any) -> S:
    head, _, rest = dotted.partition(".")
    if rest:
        value = _with(getattr(tree, head), rest, value)
    return msgspec.structs.replace(tree, **{head: value})


def keep_restart_only(running: Settings, loaded: Settings) -> tuple[Settings, list[str]]:
    """``loaded`` with every restart-only key put back to its running value, and the keys that differed."""
    held = [key for key in changed_keys(running, loaded) if _is_restart_only(key)]
    effective = loaded
    for fixed in RESTART_ONLY:
        effective = _with(effective, fixed, _get(running, fixed))
    return effective, held


# ---- tariff catalog -----------------------------------------------------------------------------------


class CatalogUnavailable(Exception):
    """The tariff catalog could not be read or is invalid; the message is one line."""


def _missing_table(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is PostgreSQL's undefined_table error (SQLSTATE 42P01)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlstate", None) == "42P01":
            return True
        current = current.__cause__ or current.__context__
    return False


def plan_count(catalog: Catalog) -> int:
    """Distinct plans (a plan with several versions counts once)."""
    return len(catalog.names())


async def load_catalog(pool: asyncpg.Pool) -> tuple[Catalog, str | None]:
    """The catalog in PostgreSQL, and a warning when it had to be replaced by an empty one.

    Raises CatalogUnavailable when PostgreSQL cannot be asked or the stored tariffs are invalid.
    """
    try:
        async with asyncio.timeout(CATALOG_TIMEOUT_S):
            async with pool.acquire() as conn:
                catalog = await tariff_store.load_catalog(conn)
    except TimeoutError:
        raise CatalogUnavailable(f"reading the tariff catalog took over {CATALOG_TIMEOUT_S:g}s") from None
    except Exception as exc:
        if _missing_table(exc):
            return Catalog(), (
                "PostgreSQL has no tariff tables (run the migrations); running with an empty tariff catalog"
            )
        raise CatalogUnavailable(f"cannot load the tariff catalog: {log.one_line(exc)}") from None
    return catalog, None


# ---- the daemon ---------------------------------------------------------------------------------------

ComponentFactory = Callable[[Settings], Sequence[Component]]


class Daemon:
    def __init__(
        self,
        config_path: Path,
        settings: Settings,
        components: ComponentFactory = build_components,
        *,
        pid_name: str = PID_FILE_NAME,
        metrics_port: int | None = None,
    ) -> None:
        self._config_path = config_path.absolute()
        self._pid_name = pid_name
        # a process with /metrics on a port of its own (a worker, `occ sink`): kept over every reload
        self._metrics_port = metrics_port
        self._boot_settings = self._own(settings)
        self._component_factory = components
        self._ctx: DaemonContext | None = None
        self._store: BalanceStore | None = None
        self._pool: asyncpg.Pool | None = None
        self._started: list[Component] = []
        self._http: HttpEndpoint | None = None
        self._started_at = time.monotonic()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._stopping = False
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self._probe_task: asyncio.Task[dict[str, str | None]] | None = None

    # -- run ------------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit status: 0 after a stop on request, 1 if the start failed."""
        settings = self._boot_settings
        log.configure(settings.server.log_level, settings.server.log_format)
        _log.info("starting", pid=os.getpid(), version=metrics.VERSION, config=str(self._config_path))
        pid_file = take_pid_file(pid_file_path(settings, self._pid_name))
        if pid_file is None:
            return 1
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        try:
            # A stop signal while starting cancels the start instead of waiting out connect timeouts.
            starting = asyncio.ensure_future(self._start(settings))
            stop_signal = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({starting, stop_signal}, return_when=asyncio.FIRST_COMPLETED)
            stop_signal.cancel()
            if not starting.done():
                starting.cancel()
                await asyncio.wait({starting})
            if starting.cancelled():
                await self._shutdown()
                return 0
            failure = starting.exception()
            if isinstance(failure, StartupError):
                _log.error(f"cannot start: {failure}")
                await self._stop_components()
                await self._close_dependencies()
                return 1
            if failure is not None:
                raise failure
            if self._reload_again:  # SIGHUP while starting
                self._request_reload()
            await self._stop.wait()
            await self._shutdown()
            return 0
        finally:
            self._remove_signals(loop)
            pid_file.release()

    async def _start(self, settings: Settings) -> None:
        store, pool = await self._connect(settings)
        try:
            catalog, warning = await load_catalog(pool)
        except CatalogUnavailable as exc:
            raise StartupError(str(exc)) from None
        if warning:
            _log.warning(warning)
        self._ctx = ctx = DaemonContext(
            settings=settings,
            config_path=self._config_path,
            store=store,
            pool=pool,
            catalog=catalog,
        )
        metrics.TARIFF_PLANS.set(plan_count(catalog))
        metrics.CONFIG_LAST_RELOAD_TIME.set(time.time())
        metrics.CONFIG_LAST_RELOAD_OK.set(1)

        http = HttpEndpoint({"/metrics": self._serve_metrics, "/health": self._serve_health})
        where = f"{settings.metrics.listen}:{settings.metrics.port}"
        try:
            await http.start(settings.metrics.listen, settings.metrics.port)
        except OSError as exc:
            raise StartupError(f"cannot listen for /metrics on {where}: {exc.strerror or exc}") from None
        self._http = http

        for component in self._component_factory(settings):
            try:
                await component.start(ctx)
            except Exception as exc:
                reason = log.one_line(exc)
                raise StartupError(f"component {component.name} failed to start: {reason}") from None
            self._started.append(component)
            metrics.UP.labels(component=component.name).set(1)
        metrics.START_TIME.set(time.time())
        settle_heap()
        _log.info(
            "ready",
            pid=os.getpid(),
            metrics=f"http://{where}/metrics",
            plans=plan_count(catalog),
            components=[c.name for c in self._started] or "none",
        )

    async def _connect(self, settings: Settings) -> tuple[BalanceStore, asyncpg.Pool]:
        """Redis and PostgreSQL, connected concurrently; StartupError naming whichever is unreachable.

        Each connection is kept on ``self`` as soon as it exists, so a failed or cancelled start closes it.
        """

        async def redis() -> None:
            self._store = await _connect_redis(settings)

        async def postgres() -> None:
            self._pool = await _connect_postgres(settings)

        redis_failure, pg_failure = await asyncio.gather(redis(), postgres(), return_exceptions=True)
        failures: list[str] = []
        if redis_failure is not None:
            where = log.redact_url(settings.redis.url)
            failures.append(f"Redis unreachable at {where}: {_reason(redis_failure)}")
        if pg_failure is not None:
            where = log.redact_url(settings.database.url)
            failures.append(f"PostgreSQL unreachable at {where}: {_reason(pg_failure)}")
        if failures:
            raise StartupError("; ".join(failures))
        assert self._store is not None and self._pool is not None
        metrics.UP.labels(component="redis").set(1)
        metrics.UP.labels(component="postgres").set(1)
        return self._store, self._pool

    # -- signals --------------------------------------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_stop_signal(self, name: str) -> None:
        if self._stop.is_set():
            _log.warning("second stop signal: not waiting for work in flight any longer", signal=name)
            self._force.set()
            return
        _log.info("stop requested", signal=name)
        self._stop.set()

    # -- reload ---------------------------------------------------------------------------------------

    def _request_reload(self) -> None:
        if self._stopping:
            _log.info("reload ignored: shutting down")
            return
        if self._ctx is None or self._http is None or (self._reload_task and not self._reload_task.done()):
            # still starting, or a reload is running: (re)do it once that is finished, so the file's
            # latest content always wins
            self._reload_again = True
            return
        self._reload_task = asyncio.get_running_loop().create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        while True:
            self._reload_again = False
            try:
                await self.reload()
            except Exception:  # reload must never take the daemon down
                _log.exception("reload failed unexpectedly; keeping the running configuration")
                metrics.RELOAD_REJECTED.inc()
                metrics.CONFIG_LAST_RELOAD_OK.set(0)
            if not self._reload_again or self._stopping:
                return

    def _own(self, settings: Settings) -> Settings:
        return settings if self._metrics_port is None else with_metrics_port(settings, self._metrics_port)

    async def reload(self) -> bool:
        """Re-read the config file and the tariff catalog; apply them only if both are valid."""
        running = self._ctx
        assert running is not None
        try:
            loaded = self._own(await asyncio.to_thread(load_settings, self._config_path))
        except ConfigError as exc:
            return self._reject(str(exc))
        effective, held = keep_restart_only(running.settings, loaded)
        try:
            catalog, warning = await load_catalog(running.pool)
        except CatalogUnavailable as exc:
            return self._reject(str(exc))
        if self._stopping:
            return False
        # Everything is valid: switch. No await from here to the end, so the switch is atomic for
        # every request and every component.
        if warning:
            _log.warning(warning)
        if held:
            _log.warning("settings changed that require a restart; keeping their running values", keys=held)
        changed = changed_keys(running.settings, effective)
        new = dataclasses.replace(running, settings=effective, catalog=catalog)
        self._ctx = new
        new.store.settings = effective.balance
        server = effective.server
        log.configure(server.log_level, server.log_format)
        for component in self._started:
            try:
                component.reload(new)
            except Exception:
                _log.exception("component failed to adopt the new configuration", component=component.name)
        metrics.RELOAD_OK.inc()
        metrics.CONFIG_LAST_RELOAD_OK.set(1)
        metrics.CONFIG_LAST_RELOAD_TIME.set(time.time())
        metrics.TARIFF_PLANS.set(plan_count(catalog))
        settle_heap()
        _log.info("configuration reloaded", changed=changed or "none", plans=plan_count(catalog))
        return True

    def _reject(self, reason: str) -> bool:
        _log.error("reload rejected; keeping the running configuration", reason=reason)
        metrics.RELOAD_REJECTED.inc()
        metrics.CONFIG_LAST_RELOAD_OK.set(0)
        return False

    # -- shutdown -------------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._stopping = True
        settings = self._ctx.settings if self._ctx is not None else self._boot_settings
        grace = settings.server.shutdown_grace_s
        _log.info("stopping", grace_s=grace, components=len(self._started))
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_task.cancel()
            await asyncio.wait({self._reload_task}, timeout=1.0)
        await self._stop_components(grace)
        # /health answers 503 "stopping" while components drain, so balancers move away; now close it.
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self._close_dependencies()
        _log.info("stopped", uptime_s=round(time.monotonic() - self._started_at, 3))

    async def _stop_components(self, grace: float = 0.0) -> None:
        """Stop started components, last started first, all within one shared grace period."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._started:
            component = self._started.pop()
            budget = max(0.0, deadline - loop.time()) if not self._force.is_set() else 0.0
            stopping = asyncio.ensure_future(component.stop(budget))
            forced = asyncio.ensure_future(self._force.wait())
            done, _ = await asyncio.wait(
                {stopping, forced}, timeout=budget + STOP_MARGIN_S, return_when=asyncio.FIRST_COMPLETED
            )
            forced.cancel()
            if stopping not in done:
                stopping.cancel()
                await asyncio.wait({stopping}, timeout=1.0)
                _log.warning("component did not stop in time; cancelled", component=component.name)
            elif (exc := stopping.exception()) is not None:
                _log.error("component failed to stop", component=component.name, error=log.one_line(exc))
            metrics.UP.labels(component=component.name).set(0)

    async def _close_dependencies(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._ctx = None
        store, self._store = self._store, None
        if store is not None:
            await _quietly(store.close())
            metrics.UP.labels(component="redis").set(0)
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
            except Exception:
                pool.terminate()
            metrics.UP.labels(component="postgres").set(0)

    # -- /health and /metrics -------------------------------------------------------------------------

    async def _probe(self) -> dict[str, str | None]:
        """Ping Redis and PostgreSQL (concurrent callers share one probe): dependency -> error or None."""
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.ensure_future(self._probe_once())
        return await asyncio.shield(self._probe_task)

    async def _probe_once(self) -> dict[str, str | None]:
        ctx = self._ctx
        if ctx is None:
            return {"redis": "not connected", "postgres": "not connected"}

        async def redis() -> None:
            await ctx.store.ping()

        async def postgres() -> None:
            async with ctx.pool.acquire() as conn:
                await conn.fetchval("select 1")

        outcomes = await asyncio.gather(
            asyncio.wait_for(redis(), PROBE_TIMEOUT_S),
            asyncio.wait_for(postgres(), PROBE_TIMEOUT_S),
            return_exceptions=True,
        )
        results: dict[str, str | None] = {}
        for name, outcome in zip(("redis", "postgres"), outcomes, strict=True):
            results[name] = _reason(outcome) if isinstance(outcome, BaseException) else None
            metrics.UP.labels(component=name).set(0 if results[name] else 1)
        return results

    async def _serve_metrics(self) -> Response:
        await self._probe()  # occ_up{component="redis"|"postgres"} as of this scrape
        return Response(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)

    async def _serve_health(self) -> Response:
        problems = await self._probe()
        ctx = self._ctx
        healthy = not any(problems.values())
        status = "stopping" if self._stopping else "ok" if healthy else "degraded"
        body: dict[str, Any] = {
            "status": status,
            "redis": _check(problems["redis"]),
            "postgres": _check(problems["postgres"]),
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "config": str(self._config_path),
            "plans": plan_count(ctx.catalog) if ctx is not None else 0,
            "plan_versions": len(ctx.catalog) if ctx is not None else 0,
            "pid": os.getpid(),
            "version": metrics.VERSION,
        }
        code = 200 if status == "ok" else 503
        return Response(code, json.dumps(body).encode() + b"\n", "application/json")


def settle_heap() -> None:
    """Move every object alive now out of the cyclic collector's sight (``gc.freeze``).

    The daemon's long-lived heap (dictionaries, tariff catalog, metrics, driver state) is large, and a
    full collection walking it stalls the event loop for tens of milliseconds -- the whole latency tail
    of a loaded server. Frozen objects are never scanned again; a reload unfreezes first so that the
    replaced catalog and settings can still be freed (one full collection, at reload time).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _reason(exc: BaseException) -> str:
    return "timed out" if isinstance(exc, TimeoutError) else log.one_line(exc)


def _check(problem: str | None) -> dict[str, Any]:
    return {"ok": True} if problem is None else {"ok": False, "error": problem}


async def _connect_redis(settings: Settings) -> BalanceStore:
    # Bounded here as well, so a store that forgets a timeout cannot hang the start.
    limit = settings.redis.connect_timeout_s * 2 + 1
    store = await asyncio.wait_for(BalanceStore.connect(settings.redis, settings.balance), limit)
    try:
        await asyncio.wait_for(store.ping(), limit)
    except BaseException:
        await _quietly(store.close())
        raise
    return store


async def _connect_postgres(settings: Settings) -> asyncpg.Pool:
    from billing.db import create_pool

    limit = settings.database.connect_timeout_s * 2 + 1
    return await asyncio.wait_for(create_pool(settings.database), limit)


async def _quietly(closing: Any) -> None:
    """Await a close() that may fail or hang; at shutdown there is nothing left to do about either."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closing, CLOSE_TIMEOUT_S)
