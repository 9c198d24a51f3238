"""The daemon's RADIUS component: the :mod:`aaa` server on the context's store and tariffs."""

from __future__ import annotations

from aaa.server import RadiusServer, build_context
from balance.service import ChargingService
from occ import log
from occ.components import DaemonContext

_log = log.get("occ.radius")


class RadiusComponent:
    name = "radius"

    def __init__(self) -> None:
        self.server: RadiusServer | None = None
        self._charging: ChargingService | None = None

    async def start(self, ctx: DaemonContext) -> None:
        settings = ctx.settings.radius
        self._charging = ChargingService(ctx.store, ctx.catalog, ctx.settings.balance)
        self.server = RadiusServer(
            build_context(settings, self._charging),
            workers=ctx.settings.server.workers,
        )
        try:
            await self.server.start()
            for address in settings.listen:
                if ("auth", address) not in self.server.ports:
                    continue  # skipped: the host has no IPv6 (logged by the server)
                _log.info(
                    "RADIUS listening",
                    listen=address,
                    auth_port=self.server.ports[("auth", address)],
                    acct_port=self.server.ports[("acct", address)],
                    clients=len(settings.clients),
                )
        except OSError as exc:
            where = ", ".join(settings.listen)
            ports = f"{settings.auth_port}/{settings.acct_port}"
            raise OSError(
                exc.errno, f"RADIUS cannot listen on {where} ports {ports}: {exc.strerror}"
            ) from None

    def reload(self, ctx: DaemonContext) -> None:
        if self.server is None or self._charging is None:
            return
        self._charging.reload(ctx.catalog, ctx.settings.balance)
        # the settings were validated (dictionaries included) before the reload was applied
        self.server.reload(build_context(ctx.settings.radius, self._charging))

    async def stop(self, grace_s: float) -> None:
        if self.server is not None:
            await self.server.stop(grace_s)
