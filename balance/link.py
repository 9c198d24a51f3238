"""Connections to Redis behind one small interface.

``FastLink`` is the hot path for a standalone Redis: an asyncio protocol that packs commands with
hiredis, coalesces every command issued within one event-loop turn into a single write (an implicit
pipeline), and matches replies to callers in order. redis-py's asyncio client spends most of a call in
Python bookkeeping; measured here it tops out at roughly a fifth of this path (benchmarks/bench_money_core.py
prints both). ``RedisPyLink`` (redis-py) is kept as the independent cross-check in tests and
``ClusterLink`` (redis-py's cluster client) serves Redis Cluster, where routing matters more than speed.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from balance.scripts import Script

Arg = bytes | str | int
# hiredis' stub types the argument as a 1-tuple; it takes any tuple of arguments.
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


class RedisError(Exception):
    """Redis could not be reached or failed a command."""


class ResponseError(RedisError):
    """Redis answered with an error reply."""


class ConnectionLost(RedisError):
    """The connection closed or timed out; commands in flight may or may not have run."""


class RedisLink(Protocol):
    async def execute(self, *args: Arg) -> Any: ...

    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...

    async def close(self) -> None: ...


def redact(url: str) -> str:
    """The URL (or comma-separated cluster seeds) with every password replaced, for messages and logs."""
    return ",".join(_redact_one(part) for part in url.split(","))


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    authority, slash, path = rest.partition("/")
    credentials, _, host = authority.rpartition("@")  # the password itself may contain "@"
    user = credentials.split(":", 1)[0] if ":" in credentials else ""
    return f"{scheme}://{user}:***@{host}{slash}{path}"


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._reader = hiredis.Reader()
        self._waiters: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have the same interface
        self._transport = cast(asyncio.Transport, transport)
        self._watchdog = self._loop.call_later(self._timeout, self._check_stalled)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiters = self._waiters
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            if not waiters:  # a reply nobody asked for: the stream is out of step
                self._fail(ConnectionLost("unexpected reply from Redis"))
                return
            _, future = waiters.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(
            ConnectionLost(f"connection to Redis lost: {exc}" if exc else "connection to Redis closed")
        )

    def _fail(self, error: RedisError) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(error)
        if self._transport is not None:
            self._transport.abort()

    def _check_stalled(self) -> None:
        # A reply older than the timeout means Redis (or the path to it) is stuck: fail everything.
        if self._waiters and time.monotonic() - self._waiters[0][0] > self._timeout:
            self._fail(ConnectionLost(f"no reply from Redis within {self._timeout} s"))
            return
        self._watchdog = self._loop.call_later(self._timeout / 2, self._check_stalled)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.closed:
            future.set_exception(ConnectionLost("connection to Redis closed"))
            return future
        self._waiters.append((time.monotonic(), future))
        self._outgoing.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._transport is not None and not self.closed:
            data = self._outgoing[0] if len(self._outgoing) == 1 else b"".join(self._outgoing)
            self._transport.write(data)
        self._outgoing.clear()

    def close(self) -> None:
        self._fail(ConnectionLost("link closed"))


class FastLink:
    """One pipelined connection to a standalone Redis, re-established on demand."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        self._url = url
        self._timeout = timeout
        self._password = unquote(parts.password) if parts.password else None
        self._username = unquote(parts.username) if parts.username else None
        if parts.scheme == "unix":
            self._path: str | None = parts.path
            self._host, self._port = "", 0
            self._db = int(parse_qs(parts.query).get("db", ["0"])[0])
        else:
            self._path = None
            self._host = parts.hostname or "127.0.0.1"
            self._port = parts.port or 6379
            self._db = int(parts.path.lstrip("/") or 0)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._timeout):
                    if self._path is not None:
                        _, protocol = await loop.create_unix_connection(
                            lambda: _Protocol(loop, self._timeout), self._path
                        )
                    else:
                        _, protocol = await loop.create_connection(
                            lambda: _Protocol(loop, self._timeout), self._host, self._port
                        )
                    if self._password is not None:
                        auth: tuple[Arg, ...] = ("AUTH", self._password)
                        if self._username:
                            auth = ("AUTH", self._username, self._password)
                        await protocol.send(_pack(auth))
                    if self._db:
                        await protocol.send(_pack(("SELECT", self._db)))
            except (OSError, TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
                raise ConnectionLost(f"cannot connect to Redis at {redact(self._url)}: {reason}") from None
            except ResponseError as exc:
                raise RedisError(f"Redis at {redact(self._url)} refused the connection: {exc}") from None
            self._protocol = protocol
            return protocol

    async def execute(self, *args: Arg) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await protocol.send(_pack(args))

    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        # the hot path of every charging request: the connection at hand, one coroutine frame
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        try:
            return await protocol.send(_pack(("EVALSHA", script.sha, len(keys), *keys, *args)))
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


class RedisPyLink:
    """redis-py's asyncio client (standalone): the library path, for cross-checks and comparison."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        import redis.asyncio as aioredis

        self._url = url
        self._client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    async def execute(self, *args: Arg) -> Any:
        import redis.exceptions

        try:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except redis.exceptions.NoScriptError as exc:
            raise ResponseError(f"NOSCRIPT {exc}") from None
        except redis.exceptions.ResponseError as exc:
            raise ResponseError(str(exc)) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise ConnectionLost(f"Redis at {redact(self._url)}: {redact(str(exc))}") from None
        except redis.exceptions.RedisError as exc:  # e.g. the cluster client finding no reachable seed
            raise ConnectionLost(f"Redis at {redact(self._url)}: {redact(str(exc))}") from None

    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        await self._client.aclose()


class ClusterLink(RedisPyLink):
    """redis-py's cluster client: commands and scripts (EVALSHA/EVAL) are routed by the slot of their keys."""

    def __init__(self, seeds: str, *, timeout: float = 2.0) -> None:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes = []
        for seed in seeds.split(","):
            parts = urlsplit(seed.strip())
            nodes.append(ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379))
        self._url = seeds
        first = urlsplit(seeds.split(",")[0].strip())
        self._client = RedisCluster(  # type: ignore[assignment]
            startup_nodes=nodes,
            password=unquote(first.password) if first.password else None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )


def open_link(url: str, *, cluster: bool = False, timeout: float = 2.0) -> RedisLink:
    return ClusterLink(url, timeout=timeout) if cluster else FastLink(url, timeout=timeout)
