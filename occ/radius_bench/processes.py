"""Processes of ``occ bench radius``: ``occ serve`` on a private copy of the config (spawned by
:func:`occ.bench_spawn.spawn_occ_serve`), the servers under load, and a child that dies with the bench."""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from occ.bench_spawn import Spawned, free_ports, serve_config, spawn_occ_serve
from occ.child_process import die_with_parent

BENCH_SECRET = "testing123"


@dataclass
class Server:
    """A RADIUS server under load: where it listens, its shared secret for us, and its process if ours."""

    name: str
    host: str
    auth_port: int
    acct_port: int
    secret: bytes
    spawned: Spawned | None = None

    def port(self, mode: str) -> int:
        return self.auth_port if mode == "auth" else self.acct_port

    def where(self) -> dict[str, Any]:
        """Its host and ports, as the report names them."""
        return {"host": self.host, "auth_port": self.auth_port, "acct_port": self.acct_port}

    def watched(self, watch: Mapping[str, int]) -> dict[str, int]:
        """``watch`` and, when the process is ours, this server under its name (for the CPU shares)."""
        if self.spawned is not None and self.spawned.process.pid:
            return {**watch, self.name: self.spawned.process.pid}
        return dict(watch)

    async def stop(self, grace: float = 15.0) -> dict[str, Any]:
        """Stop the spawned daemon: its exit status (None when it was not ours), its log's end when not 0."""
        if self.spawned is None:
            return {"exit_status": None}
        spawned, self.spawned = self.spawned, None
        return await spawned.stopped(grace)


def bench_client(radius: dict[str, Any]) -> dict[str, Any]:
    """The only client of the copy: 127.0.0.1 with the bench secret, with the profile (and Message-
    Authenticator rule) of the config's own entry for 127.0.0.1 when it has one; never sent Disconnects."""
    profiles = radius.get("profiles") or {"generic": {}}
    profile = "generic" if "generic" in profiles else next(iter(profiles))
    strict = False
    for client in radius.get("clients", []):
        if str(client.get("address", "")).split("/")[0] in ("127.0.0.1", "127.0.0.0", "0.0.0.0"):
            profile = client.get("profile", profile)
            strict = bool(client.get("require_message_authenticator", False))
            break
    return {
        "address": "127.0.0.1",
        "secret": BENCH_SECRET,
        "name": "bench",
        "coa_port": 0,
        "profile": profile,
        "require_message_authenticator": strict,
    }


def daemon_config(raw: dict[str, Any], workdir: Path, auth_port: int, acct_port: int) -> dict[str, Any]:
    """The spawned daemon's settings: RADIUS on 127.0.0.1 only, free ports, a private run directory."""
    client = bench_client(raw.setdefault("radius", {}))
    radius = {"enabled": True, "listen": ["127.0.0.1"], "auth_port": auth_port, "acct_port": acct_port}
    return serve_config(raw, workdir, {**radius, "clients": [client]})


async def spawn_occ(config: Path, workdir: Path, startup_timeout: float = 60.0) -> Server:
    """``python -m occ serve`` on a copy of ``config`` (see :func:`daemon_config`), healthy."""
    auth_port, acct_port = free_ports(2, socket.SOCK_DGRAM)
    raw = daemon_config(tomllib.loads(config.read_text(encoding="utf-8")), workdir, auth_port, acct_port)
    spawned = await spawn_occ_serve(
        raw, workdir, preexec_fn=die_with_parent(), startup_timeout=startup_timeout
    )
    return Server("occ serve", "127.0.0.1", auth_port, acct_port, BENCH_SECRET.encode(), spawned)
