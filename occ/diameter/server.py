"""The Diameter server of ``occ serve``: the listener, the table of connected peers, dispatch to the
applications, reload and graceful shutdown.

:class:`DiameterServer` needs nothing but settings and applications (tests run it alone);
:class:`DiameterComponent` plugs it into the daemon (:mod:`occ.components`), building the applications
from the daemon's context.

The server only accepts connections (it never initiates one, so it has no reconnect timers and the
RFC 6733 §5.6.4 election never applies). When an Origin-Host connects again while its earlier connection
is still up, the newest open connection is the one :meth:`DiameterServer.peer` returns; the older one lives
until its peer closes it or the watchdog does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from occ import log
from occ.diameter.application import Application, PeerHandle
from occ.diameter.dictionary import APP_CREDIT_CONTROL, VENDOR_3GPP
from occ.diameter.handoff import Receiver
from occ.diameter.peer import PeerConfig
from occ.diameter.settings import DiameterSettings
from occ.diameter.transport import (
    TLS_HANDSHAKE_TIMEOUT_S,
    DiameterConnection,
    listen,
    server_ssl_context,
)

if TYPE_CHECKING:
    from occ.components import DaemonContext

_log = log.get("occ.diameter")

# Origin-State-Id (RFC 6733 §8.16): constant for the life of this process, greater after every restart.
ORIGIN_STATE_ID = int(time.time()) & 0xFFFFFFFF

# How long answers in flight get after our DPR was answered, and how long a DPA is awaited, unless the
# shutdown grace period is shorter.
DISCONNECT_TIMEOUT_S = 5.0


def peer_config(
    settings: DiameterSettings, applications: Sequence[Application], origin_state_id: int = ORIGIN_STATE_ID
) -> PeerConfig:
    """The peer machines' configuration from the settings slice and the applications served."""
    addresses = tuple(settings.host_ip_addresses)
    if not addresses:
        listen_ip = ipaddress.ip_address(settings.listen) if _is_ip(settings.listen) else None
        addresses = (str(listen_ip),) if listen_ip and not listen_ip.is_unspecified else ("127.0.0.1",)
    served = {app.application_id: frozenset(app.commands) for app in applications}
    # Credit control is 3GPP Gy/Ro too: advertised as Vendor-Specific-Application-Id {10415, 4} as well.
    gy = APP_CREDIT_CONTROL in served
    return PeerConfig(
        origin_host=settings.origin_host,
        origin_realm=settings.origin_realm,
        origin_state_id=origin_state_id,
        host_ip_addresses=addresses,
        vendor_id=settings.vendor_id,
        product_name=settings.product_name,
        firmware_revision=settings.firmware_revision,
        allowed_peers=tuple((p.host, p.realm) for p in settings.allowed_peers),
        applications=served,
        vendor_specific_applications=((VENDOR_3GPP, APP_CREDIT_CONTROL),) if gy else (),
        supported_vendor_ids=(VENDOR_3GPP,) if gy else (),
        watchdog_s=settings.watchdog_s,
        max_message_length=settings.max_message_length,
        disconnect_timeout_s=DISCONNECT_TIMEOUT_S,
        served_realms=tuple(settings.served_realms),
    )


def _is_loopback(host: str) -> bool:
    return host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class DiameterServer:
    """Listener + peer table. Implements the transport's ConnectionHub."""

    def __init__(
        self,
        settings: DiameterSettings,
        applications: Sequence[Application],
        *,
        origin_state_id: int = ORIGIN_STATE_ID,
    ) -> None:
        self.settings = settings
        self.applications = list(applications)
        self._by_id = {app.application_id: app for app in self.applications}
        self._origin_state_id = origin_state_id
        self._config = peer_config(settings, self.applications, origin_state_id)
        self._server: asyncio.Server | None = None
        self._receiver: Receiver | None = None
        self._handed_tls: ssl.SSLContext | None = None
        self._adopting: set[asyncio.Task[None]] = set()
        self._connections: set[DiameterConnection] = set()
        self._opened: set[DiameterConnection] = set()
        self._by_host: dict[str, DiameterConnection] = {}
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, *, handoff: socket.socket | None = None) -> None:
        """Bind and accept; raises OSError when the address is taken. With ``handoff`` (a worker of a
        supervised daemon), serve the connections the supervisor accepts and hands over instead."""
        s = self.settings
        if handoff is not None:
            self._handed_tls = server_ssl_context(s.tls)
            self._receiver = Receiver(handoff, self._adopt)
            self._receiver.start()
            self.port = s.port
        else:
            self._server = await listen(self, s.listen, s.port, server_ssl_context(s.tls))
            sockets = self._server.sockets
            self.port = sockets[0].getsockname()[1] if sockets else s.port
        if ("*", "*") in self._config.allowed_peers and not _is_loopback(s.listen):
            _log.warning(
                "Diameter accepts any peer on a non-loopback address; list the peers in "
                "diameter.allowed_peers",
                listen=s.listen,
            )
        _log.info(
            "Diameter listening",
            listen=s.listen,
            port=self.port,
            tls=s.tls.enabled,
            origin_host=s.origin_host,
            applications=sorted(self._by_id),
        )

    def reload(self, settings: DiameterSettings) -> None:
        """New allowed peers, Tw, identity details: in force for every new message, no connection dropped.

        The listen address, port and TLS files are bound at start (the daemon holds them as restart-only).
        """
        self.settings = settings
        self._config = peer_config(settings, self.applications, self._origin_state_id)
        for conn in self._connections:
            conn.machine.config = self._config

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; DPR to every peer, wait (within ``grace_s``) for the DPAs and the answers in
        flight; then cut what is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        if self._server is not None:
            self._server.close()
        if self._receiver is not None:
            self._receiver.stop()
        for task in self._adopting:
            task.cancel()
        connections = list(self._connections)
        if connections:
            await asyncio.gather(*(c.disconnect(grace_s) for c in connections), return_exceptions=True)
        leftovers = [t for c in connections for t in c.in_flight]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=max(0.1, deadline - loop.time()))
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), max(0.1, deadline - loop.time()))
            self._server = None

    def _adopt(self, sock: socket.socket) -> None:
        """A connection the supervisor accepted: serve it like one of our own listener's."""
        task = asyncio.get_running_loop().create_task(self._serve_handed(sock))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _serve_handed(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        context = self._handed_tls
        try:
            await loop.connect_accepted_socket(
                lambda: DiameterConnection(self),
                sock,
                ssl=context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if context is not None else None,
            )
        except (OSError, asyncio.CancelledError) as exc:  # e.g. a failed TLS handshake: never served
            sock.close()
            if self._receiver is not None:
                self._receiver.closed()
            if isinstance(exc, asyncio.CancelledError):
                raise
            _log.info("handed Diameter connection not served", error=str(exc))

    # -- for applications --------------------------------------------------------------------------------

    def peer(self, host: str) -> PeerHandle | None:
        """The open connection of the peer with this Origin-Host (case-insensitive), if any."""
        conn = self._by_host.get(host.lower())
        return conn if conn is not None and conn.is_open else None

    def open_peers(self) -> list[PeerHandle]:
        return [c for c in self._opened if c.is_open]

    @property
    def connections(self) -> frozenset[DiameterConnection]:
        return frozenset(self._connections)

    # -- ConnectionHub -----------------------------------------------------------------------------------

    @property
    def peer_config(self) -> PeerConfig:
        return self._config

    @property
    def max_in_flight(self) -> int:
        return self.settings.max_in_flight

    def application(self, application_id: int) -> Application | None:
        return self._by_id.get(application_id)

    def connection_made(self, conn: DiameterConnection) -> None:
        self._connections.add(conn)

    def connection_opened(self, conn: DiameterConnection) -> None:
        self._opened.add(conn)
        self._by_host[conn.peer_host.lower()] = conn
        for app in self.applications:
            try:
                app.peer_opened(conn)
            except Exception:
                _log.exception("application failed in peer_opened", peer=conn.peer_host)

    def connection_closed(self, conn: DiameterConnection) -> None:
        self._connections.discard(conn)
        if self._receiver is not None:
            self._receiver.closed()
        if conn not in self._opened:
            return
        self._opened.discard(conn)
        key = conn.peer_host.lower()
        if self._by_host.get(key) is conn:
            del self._by_host[key]
            # an older connection of the same peer, still open, takes over
            for other in self._opened:
                if other.peer_host.lower() == key and other.is_open:
                    self._by_host[key] = other
        for app in self.applications:
            try:
                app.peer_closed(conn)
            except Exception:
                _log.exception("application failed in peer_closed", peer=conn.peer_host)


# ---- the daemon component ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApplicationFactory:
    """How the component makes an application from the daemon context, and hands it a reloaded one."""

    build: Callable[[DaemonContext], Application]
    reload: Callable[[Any, DaemonContext], None] | None = None


class DiameterComponent:
    """The daemon component: builds the applications, runs a :class:`DiameterServer` on its own listener
    or, in a worker of a supervised daemon, on the connections the supervisor hands over.

    An application object may also have an ``async stop()``: it is awaited after the connections are
    closed at shutdown.
    """

    name = "diameter"

    def __init__(self, factories: Sequence[ApplicationFactory], handoff: socket.socket | None = None) -> None:
        self._factories = list(factories)
        self._handoff = handoff  # a worker's end of its pair with the supervisor (occ.diameter.handoff)
        self._applications: list[Application] = []
        self.server: DiameterServer | None = None

    async def start(self, ctx: DaemonContext) -> None:
        self._applications = [f.build(ctx) for f in self._factories]
        self.server = DiameterServer(ctx.settings.diameter, self._applications)
        try:
            await self.server.start(handoff=self._handoff)
        except OSError as exc:
            s = ctx.settings.diameter
            raise OSError(
                exc.errno, f"Diameter cannot listen on {s.listen}:{s.port}: {exc.strerror}"
            ) from None

    def reload(self, ctx: DaemonContext) -> None:
        if self.server is None:
            return
        self.server.reload(ctx.settings.diameter)
        for factory, app in zip(self._factories, self._applications, strict=True):
            if factory.reload is not None:
                factory.reload(app, ctx)

    async def stop(self, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        if self.server is not None:
            await self.server.stop(grace_s)
        for app in self._applications:
            stop = getattr(app, "stop", None)
            if stop is None:
                continue
            try:
                await asyncio.wait_for(stop(), max(0.1, deadline - loop.time()))
            except Exception:
                _log.exception("application failed to stop", application=app.application_id)
