"""``occ serve`` and other helper processes of the benchmarks: spawned on free loopback ports with a
private copy of the config, watched until healthy, stopped with SIGTERM (SIGKILL after a grace period),
their exit status and log tail kept for the report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ProcessError(Exception):
    """A helper process (daemon, baseline) did not start; the message is one line plus its log tail."""


@dataclass
class Spawned:
    """A child process of the bench, the port it serves on, and its log."""

    process: asyncio.subprocess.Process
    port: int
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stopped(self, grace: float = 15.0) -> dict[str, Any]:
        """:meth:`stop`, and what the report says of it: the exit status and, when it is not 0 (the daemon
        failed, or gave up on a worker, during the run), the end of its log."""
        status = await self.stop(grace)
        out: dict[str, Any] = {"exit_status": status}
        if status != 0:
            out["log_tail"] = self.tail(40)
        return out

    async def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, SIGKILL after ``grace`` seconds; the exit status."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        return self.process.returncode


def free_ports(count: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> list[int]:
    """``count`` distinct TCP (``SOCK_DGRAM``: UDP) ports free on 127.0.0.1 now (all bound, then released)."""
    sockets = [socket.socket(socket.AF_INET, kind) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def child_env() -> dict[str, str]:
    """The environment of a child: the bench's, without what would override its private config copy."""
    return {k: v for k, v in os.environ.items() if k not in ("OCC_METRICS_PORT", "OCC_RUN_DIR", "OCC_CONFIG")}


async def http_status(port: int, path: str) -> int | None:
    """The status of ``GET path`` on 127.0.0.1:``port``; None when nothing answers (in time, sensibly)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 3.0)
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else json.dumps(key)


def to_toml(data: Mapping[str, Any], path: tuple[str, ...] = ()) -> str:
    """A TOML document for what :func:`tomllib.loads` gave (tables, arrays of tables, plain values)."""
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        ):
            nested.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in nested:
        sub = (*path, key)
        name = ".".join(_toml_key(k) for k in sub)
        if isinstance(value, dict):
            out += f"\n[{name}]\n" + to_toml(value, sub)
        else:
            for element in value:
                out += f"\n[[{name}]]\n" + to_toml(element, sub)
    return out


def serve_config(raw: dict[str, Any], workdir: Path, radius: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` (a parsed occ.toml) for a spawned daemon: Diameter and metrics on 127.0.0.1 on free ports,
    ``radius`` laid over ``[radius]``, a private run directory under ``workdir``, warnings only."""
    diameter_port, metrics_port = free_ports(2)
    raw.setdefault("radius", {}).update(radius)
    raw.setdefault("diameter", {}).update(listen="127.0.0.1", port=diameter_port)
    raw.setdefault("metrics", {}).update(listen="127.0.0.1", port=metrics_port)
    raw.setdefault("server", {}).update(run_dir=str(workdir / "run"), log_level="warning")
    return raw


async def spawn_occ_serve(
    raw: dict[str, Any],
    workdir: Path,
    *,
    preexec_fn: Callable[[], None] | None = None,
    startup_timeout: float = 60.0,
) -> Spawned:
    """``python -m occ serve`` on ``raw`` (see :func:`serve_config`) written to ``workdir/occ.toml``, once
    its ``/health`` answers 200 (stopped when it does not); ``port`` is its Diameter port."""
    copy = workdir / "occ.toml"
    copy.write_text(to_toml(raw), encoding="utf-8")
    log = workdir / "daemon.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "occ", "serve", "--config", str(copy),
            stdout=sink, stderr=asyncio.subprocess.STDOUT, env=child_env(), preexec_fn=preexec_fn,
        )  # fmt: skip
    spawned = Spawned(process, int(raw["diameter"]["port"]), log)
    deadline = time.monotonic() + startup_timeout
    try:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise ProcessError(f"occ serve exited with status {process.returncode}:\n{spawned.tail()}")
            if await http_status(int(raw["metrics"]["port"]), "/health") == 200:
                return spawned
            await asyncio.sleep(0.2)
        raise ProcessError(f"occ serve not healthy within {startup_timeout:.0f} s:\n{spawned.tail()}")
    except BaseException:
        await spawned.stop()
        raise
