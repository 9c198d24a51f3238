"""Diameter connections dealt to the worker processes of a supervised ``occ serve`` (``server.workers`` > 1).

With SO_REUSEPORT the kernel picks a worker's listener by a hash of each connection's addresses; with the
handful of long-lived connections a Diameter server has, that often leaves one worker with most of them
(measured here: the four connections of ``occ bench diameter`` all on one worker, the other idle). So the
supervisor holds the one Diameter listener, accepts, and hands each new connection to the worker holding
the fewest, over that worker's Unix socket pair (the descriptor travels as SCM_RIGHTS). The worker serves
it as if it had accepted it (TLS handshake, CER/CEA and everything after happen there) and writes one
byte back on the pair when it is gone, so the supervisor's counts stay true.

:class:`Dealer` is the supervisor's side, :class:`Receiver` the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from occ import log

_log = log.get("occ.diameter.handoff")

HANDED = b"c"  # supervisor -> worker, carries the connection's descriptor
CLOSED = b"-"  # worker -> supervisor, one per handed connection that is gone
BACKLOG = 128


def bind_listener(host: str, port: int) -> socket.socket:
    """The Diameter listening socket (OSError when the address is taken); an IPv6 address listens for
    IPv6 only, as the listener of a single process does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Dealer:
    """Accepts on the listener; each connection goes to the attached worker holding the fewest."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self._links: dict[int, socket.socket] = {}  # worker -> the supervisor's end of its pair
        self._held: dict[int, int] = {}  # worker -> connections handed to it and not yet gone
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> dict[int, int]:
        return dict(self._held)

    def attach(self, worker: int) -> socket.socket:
        """A new pair for a (new) start of ``worker``: the worker's end is returned, for the caller to pass
        to the process and then close."""
        self.detach(worker)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        self._links[worker] = ours
        self._held[worker] = 0
        asyncio.get_running_loop().add_reader(ours.fileno(), self._read_closes, worker)
        return theirs

    def detach(self, worker: int) -> None:
        """Forget ``worker`` (it died or stops): nothing more is handed to it."""
        link = self._links.pop(worker, None)
        self._held.pop(worker, None)
        if link is not None:
            asyncio.get_running_loop().remove_reader(link.fileno())
            link.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._accept(), name="diameter-dealer")

    async def close(self) -> None:
        """Stop accepting, close the listener and every pair (the workers keep what they hold)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for worker in list(self._links):
            self.detach(worker)
        self.listener.close()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.listener)
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                _log.warning("Diameter accept failed", error=str(exc))
                await asyncio.sleep(0.1)
                continue
            with conn:
                self.deal(conn)

    def deal(self, conn: socket.socket) -> int | None:
        """Hand ``conn`` to the worker with the fewest connections (the lowest number on a tie); the worker
        it went to, or None when no worker could take it (the connection is then closed by the caller)."""
        for worker in sorted(self._links, key=lambda w: (self._held[w], w)):
            try:
                socket.send_fds(self._links[worker], [HANDED], [conn.fileno()])
            except OSError:  # the worker is gone or its pair is full: try the next one
                continue
            self._held[worker] += 1
            return worker
        _log.warning("no worker could take a Diameter connection: closed")
        return None

    def _read_closes(self, worker: int) -> None:
        link = self._links.get(worker)
        if link is None:
            return
        try:
            data = link.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker's end is closed: it died; its restart attaches a new pair
            self.detach(worker)
            return
        self._held[worker] = max(0, self._held[worker] - data.count(CLOSED))


class Receiver:
    """A worker's end of its pair: each descriptor that arrives is given to ``take`` as a socket."""

    def __init__(self, link: socket.socket, take: Callable[[socket.socket], None]) -> None:
        link.setblocking(False)
        self._link: socket.socket | None = link
        self._take = take

    def start(self) -> None:
        if self._link is not None:
            asyncio.get_running_loop().add_reader(self._link.fileno(), self._receive)

    def closed(self) -> None:
        """A handed connection is gone: tell the supervisor."""
        if self._link is not None:
            with contextlib.suppress(OSError):
                self._link.send(CLOSED)

    def stop(self) -> None:
        if self._link is not None:
            asyncio.get_running_loop().remove_reader(self._link.fileno())
            self._link.close()
            self._link = None

    def _receive(self) -> None:
        while self._link is not None:
            try:
                data, fds, _flags, _address = socket.recv_fds(self._link, 64, 16)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            for fd in fds:
                self._take(socket.socket(fileno=fd))
            if not data and not fds:  # the supervisor is stopping (or gone: SIGTERM follows)
                _log.info("the supervisor's connection hand-off closed: no more Diameter connections")
                self.stop()
