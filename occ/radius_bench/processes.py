"""Processes of ``occ bench radius``: ``occ serve`` on a private copy of the config, free UDP ports, and a
child that dies with the bench."""

from __future__ import annotations

import asyncio
import ctypes
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from occ.diameter.bench_processes import ProcessError, Spawned, _child_env, _http_status, free_port, to_toml

BENCH_SECRET = "testing123"
PR_SET_PDEATHSIG = 1


def free_udp_ports(count: int) -> list[int]:
    """``count`` distinct UDP ports free on 127.0.0.1 right now (all bound at once, then released)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send SIGTERM to the child when the bench dies (killed, crashed): the
    ``finally`` blocks stop it on every other path. None where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return preexec


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

    async def stop(self, grace: float = 15.0) -> int | None:
        if self.spawned is None:
            return None
        spawned, self.spawned = self.spawned, None
        return await spawned.stop(grace)


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
    radius = raw.setdefault("radius", {})
    client = bench_client(radius)
    radius.update(
        enabled=True, listen=["127.0.0.1"], auth_port=auth_port, acct_port=acct_port, clients=[client]
    )
    diameter = raw.setdefault("diameter", {})
    diameter.update(listen="127.0.0.1", port=free_port())
    raw.setdefault("metrics", {}).update(listen="127.0.0.1", port=free_port())
    raw.setdefault("server", {}).update(run_dir=str(workdir / "run"), log_level="warning")
    return raw


async def spawn_occ(config: Path, workdir: Path, startup_timeout: float = 60.0) -> Server:
    """``python -m occ serve`` on a copy of ``config`` (see :func:`daemon_config`), healthy."""
    auth_port, acct_port = free_udp_ports(2)
    raw = daemon_config(tomllib.loads(config.read_text(encoding="utf-8")), workdir, auth_port, acct_port)
    copy = workdir / "occ.toml"
    copy.write_text(to_toml(raw), encoding="utf-8")
    log = workdir / "daemon.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "occ", "serve", "--config", str(copy),
            stdout=sink, stderr=asyncio.subprocess.STDOUT, env=_child_env(), preexec_fn=die_with_parent(),
        )  # fmt: skip
    spawned = Spawned(process, auth_port, log)
    metrics_port = int(raw["metrics"]["port"])
    deadline = time.monotonic() + startup_timeout
    try:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise ProcessError(f"occ serve exited with status {process.returncode}:\n{spawned.tail()}")
            if await _http_status(metrics_port, "/health") == 200:
                return Server("occ serve", "127.0.0.1", auth_port, acct_port, BENCH_SECRET.encode(), spawned)
            await asyncio.sleep(0.2)
        raise ProcessError(f"occ serve not healthy within {startup_timeout:.0f} s:\n{spawned.tail()}")
    except BaseException:
        await spawned.stop()
        raise
