"""Processes of ``occ bench diameter``: the spawned daemon and baseline node, CPU accounting, raw EVALSHA."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from balance.store import BalanceStore

ROOT = Path(__file__).resolve().parents[2]


# ---- processes: the spawned daemon, the baseline node, CPU accounting ---------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    steal = values[7] if len(values) > 7 else 0
    busy = sum(values[:8]) - idle - steal  # guest time is already in user
    return busy / tick, steal / tick


def _cpu_snapshot(watch: Mapping[str, int]) -> dict[str, float]:
    snapshot = {}
    for name, pid in watch.items():
        seconds = _cpu_seconds(pid)
        if seconds is not None:
            snapshot[name] = seconds
    machine = _machine_cpu()
    if machine is not None:
        snapshot["machine busy"], snapshot["steal"] = machine
    return snapshot


def _cpu_share(before: Mapping[str, float], after: Mapping[str, float], wall: float) -> dict[str, float]:
    """CPU seconds per wall second of each watched process, of everything else, of steal, and in total."""
    if wall <= 0:
        return {}
    shares = {name: (after[name] - before[name]) / wall for name in before if name in after}
    if "machine busy" in shares:
        total = shares.pop("machine busy")
        watched = sum(v for k, v in shares.items() if k != "steal")
        shares["other processes"] = max(0.0, total - watched)
        shares[f"all (of {os.cpu_count() or 1} cores)"] = total
    return shares


class ProcessError(Exception):
    """A helper process (daemon, baseline node) did not start; the message is one line plus its log tail."""


@dataclass
class Spawned:
    process: asyncio.subprocess.Process
    port: int
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, grace: float = 15.0) -> int | None:
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


async def _http_status(port: int, path: str) -> int | None:
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


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # the temp config sets these; an inherited override would defeat it
    env.pop("OCC_METRICS_PORT", None)
    env.pop("OCC_RUN_DIR", None)
    env.pop("OCC_CONFIG", None)
    return env


async def spawn_daemon(config: Path, workdir: Path, startup_timeout: float = 60.0) -> Spawned:
    """``python -m occ serve`` on a copy of ``config`` with free ports and a private run directory."""
    raw = tomllib.loads(config.read_text(encoding="utf-8"))
    diameter_port, metrics_port = free_port(), free_port()
    raw.setdefault("diameter", {})["port"] = diameter_port
    radius = raw.setdefault("radius", {})
    radius["auth_port"] = radius["acct_port"] = 0  # any free ports: never in the way of a running daemon
    raw["diameter"]["listen"] = "127.0.0.1"
    raw.setdefault("metrics", {})["port"] = metrics_port
    raw["metrics"]["listen"] = "127.0.0.1"
    server = raw.setdefault("server", {})
    server["run_dir"] = str(workdir / "run")
    server["log_level"] = "warning"
    copy = workdir / "occ.toml"
    copy.write_text(to_toml(raw), encoding="utf-8")
    log = workdir / "daemon.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "occ", "serve", "--config", str(copy),
            stdout=sink, stderr=asyncio.subprocess.STDOUT, env=_child_env(),
        )  # fmt: skip
    spawned = Spawned(process, diameter_port, log)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise ProcessError(f"occ serve exited with status {process.returncode}:\n{spawned.tail()}")
        if await _http_status(metrics_port, "/health") == 200:
            return spawned
        await asyncio.sleep(0.2)
    await spawned.stop()
    raise ProcessError(f"occ serve not healthy within {startup_timeout:.0f} s:\n{spawned.tail()}")


BASELINE_SCRIPT = ROOT / "benchmarks" / "baseline_diameter_node.py"


async def spawn_baseline(workdir: Path, peers: int, grant: int, startup_timeout: float = 30.0) -> Spawned:
    """The python-diameter node of ``benchmarks/baseline_diameter_node.py`` on a free port."""
    if not BASELINE_SCRIPT.exists():
        raise ProcessError(f"{BASELINE_SCRIPT} not found (a source checkout is needed for the baseline)")
    port = free_port()
    log = workdir / "baseline.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(BASELINE_SCRIPT), "--port", str(port), "--peers", str(peers),
            "--grant", str(grant), stdout=asyncio.subprocess.PIPE, stderr=sink, env=_child_env(),
        )  # fmt: skip
    spawned = Spawned(process, port, log)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), startup_timeout)
    except TimeoutError:
        line = b""
    if not line.startswith(b"ready"):
        await spawned.stop()
        raise ProcessError(f"baseline node did not start:\n{spawned.tail()}")
    return spawned


def _money_core_module() -> ModuleType | None:
    """benchmarks/bench_money_core.py (its machine() and redis_benchmark()), when in a source checkout."""
    path = ROOT / "benchmarks" / "bench_money_core.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_money_core", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def raw_redis_evalsha(store: BalanceStore, url: str, seconds: float) -> tuple[float | None, str]:
    """Session-script EVALSHA calls/s by ``redis-benchmark`` (32 connections, unpipelined) under a throw-away
    key prefix, measured by ``bench_money_core.redis_benchmark`` (kept working by tests/test_benchmarks.py),
    and where the figure came from."""
    module = _money_core_module()
    if module is None or shutil.which("redis-benchmark") is None:
        return None, "not measured: benchmarks/bench_money_core.py or redis-benchmark missing"
    from balance.settings import RedisSettings

    prefix = "benchd" + secrets.token_hex(4)
    scratch = await BalanceStore.connect(
        RedisSettings(url=url.split(",")[0], key_prefix=prefix, partitions=store.keys.partitions),
        store.settings,
    )
    try:
        measure: Callable[[int], float] = lambda n: module.redis_benchmark(url, scratch, 32, 1, n)  # noqa: E731
        source = "benchmarks/bench_money_core.py redis_benchmark()"
        await module.prepare(scratch)
        probe = await asyncio.to_thread(measure, 20_000)
        await module.cleanup(scratch, prefix)
        await module.prepare(scratch)
        n = max(20_000, int(probe * seconds))
        rate = await asyncio.to_thread(measure, n)
        # each call must have opened a session (a repeated random id would take the cheap replay path)
        opened = int(await module.sessions_opened(scratch))
        if opened < n * 0.99:
            return None, f"discarded: {opened} sessions opened by {n} calls, not the full step ({source})"
        return rate, source
    finally:
        await module.cleanup(scratch, prefix)
        await scratch.close()


def machine() -> dict[str, str]:
    module = _money_core_module()
    if module is not None:
        found: dict[str, str] = module.machine()
        return found
    import platform

    return {"host": platform.node(), "cores": str(os.cpu_count()), "python": platform.python_version()}


async def redis_pid(store: BalanceStore) -> int | None:
    """The redis-server's pid when it runs on this machine (for CPU accounting)."""
    try:
        info = await store.link.execute("INFO", "server")
    except Exception:
        return None
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("process_id:"):
            pid = int(line.split(":", 1)[1])
            return pid if Path(f"/proc/{pid}/stat").exists() else None
    return None
