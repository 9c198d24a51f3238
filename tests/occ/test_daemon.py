"""``occ serve`` as a process: real Redis, real PostgreSQL, signals, the pid file, /health and /metrics.

Each test starts its own daemon (``python -m occ serve``) on a free port with a private run directory
and Redis key prefix. Every wait is bounded; a daemon left running by a failed test is killed.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from occ import log
from occ.components import DaemonContext
from occ.daemon import Daemon, NoDaemon, PidFile, StartupError, keep_restart_only, running_daemon_pid
from occ.settings import Settings, load_settings, settings_from_dict

REPO = Path(__file__).resolve().parents[2]
OCC = [sys.executable, "-m", "occ"]
ADMIN_DSN = os.environ.get("OCC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
WAIT_TIMEOUT_S = 15.0

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCC_")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def config_text(
    *,
    run_dir: Path,
    port: int,
    redis_url: str,
    prefix: str,
    database_url: str,
    extra: str = "",
    **server: str,
) -> str:
    server_lines = "".join(f'{key} = "{value}"\n' for key, value in server.items())
    return (
        f'[server]\nrun_dir = "{run_dir}"\nshutdown_grace_s = 3.0\n{server_lines}'
        f'[metrics]\nlisten = "127.0.0.1"\nport = {port}\n'
        f'[redis]\nurl = "{redis_url}"\nkey_prefix = "{prefix}"\nconnect_timeout_s = 2.0\n'
        f'[database]\nurl = "{database_url}"\nconnect_timeout_s = 3.0\n'
        f"[diameter]\nport = 0\n"  # any free port: daemons of parallel tests never collide
        f"[radius]\nauth_port = 0\nacct_port = 0\n"
        f"{extra}"
    )


@dataclass
class DaemonProcess:
    config: Path
    run_dir: Path
    port: int
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None
    base_config: dict[str, str] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "occ.pid"

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def log_lines(self) -> list[str]:
        return self.log().splitlines()

    def wait_log(self, pattern: str, timeout: float = WAIT_TIMEOUT_S) -> str:
        """The first log line matching ``pattern`` (a regex), waiting for it up to ``timeout``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines():
                if regex.search(line):
                    return line
            if time.monotonic() > deadline:
                pytest.fail(f"no log line matching {pattern!r} within {timeout}s; log:\n{self.log()}")
            time.sleep(0.05)

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        return request(self.port, method, path)

    def metric(self, name: str, labels: str = "") -> float:
        _, _, body = self.get("/metrics")
        sample = re.escape(name + (f"{{{labels}}}" if labels else ""))
        match = re.search(rf"^{sample} (\S+)$", body.decode(), re.M)
        assert match, f"{name}{{{labels}}} not in /metrics"
        return float(match.group(1))

    def wait_metric(self, name: str, labels: str, expected: float) -> None:
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while (value := self.metric(name, labels)) != expected:
            if time.monotonic() > deadline:
                pytest.fail(f"{name}{{{labels}}} is {value}, not {expected}; log:\n{self.log()}")
            time.sleep(0.05)

    def rewrite(self, text: str) -> None:
        # write-then-rename: a reload never reads a half-written file
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.config)

    def start(self) -> subprocess.Popen[bytes]:
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [*OCC, "serve", "--config", str(self.config)],
                cwd=REPO,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        return self.proc

    def start_and_wait_healthy(self) -> None:
        proc = self.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"daemon exited with {proc.returncode} while starting; log:\n{self.log()}")
            try:
                status, _, _ = self.get("/health")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"/health not answering within {START_TIMEOUT_S}s; log:\n{self.log()}")
            time.sleep(0.1)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon still running {timeout}s later; log:\n{self.log()}")

    def occ(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*OCC, *args, "--config", str(config or self.config)],
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=WAIT_TIMEOUT_S * 2,
            check=False,
        )


def request(port: int, method: str, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


# ---- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def empty_database_url() -> Iterator[str]:
    """A throw-away database with no tables at all (no migrations applied)."""
    name = "occ_test_empty_" + uuid.uuid4().hex[:10]
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{ADMIN_DSN.rpartition('/')[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


MakeDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def make_daemon(tmp_path: Path, redis_url: str, key_prefix: str, database_url: str) -> Iterator[MakeDaemon]:
    """Daemon factory: a config with a free port, private run dir and key prefix; overrides as kwargs."""
    made: list[DaemonProcess] = []

    def make(name: str = "d", **overrides: str) -> DaemonProcess:
        base = {
            "run_dir": str(tmp_path / name / "run"),
            "port": str(free_port()),
            "redis_url": redis_url,
            "prefix": key_prefix,
            "database_url": database_url,
        }
        base.update(overrides)
        (tmp_path / name).mkdir(exist_ok=True)
        daemon = DaemonProcess(
            config=tmp_path / name / "occ.toml",
            run_dir=Path(base["run_dir"]),
            port=int(base["port"]),
            log_file=tmp_path / name / "daemon.log",
            base_config=base,
        )
        daemon.rewrite(render(daemon))
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)


def render(daemon: DaemonProcess, extra: str = "", **server: str) -> str:
    b = daemon.base_config
    return config_text(
        run_dir=Path(b["run_dir"]),
        port=int(b["port"]),
        redis_url=b["redis_url"],
        prefix=b["prefix"],
        database_url=b["database_url"],
        extra=extra,
        **server,
    )


@pytest.fixture
def daemon(make_daemon: MakeDaemon) -> DaemonProcess:
    running = make_daemon()
    running.start_and_wait_healthy()
    return running


# ---- a running daemon ---------------------------------------------------------------------------------


def test_health_reports_dependencies_config_and_plans(daemon: DaemonProcess) -> None:
    status, headers, body = daemon.get("/health")
    assert status == 200
    assert headers["content-type"] == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["redis"] == {"ok": True}
    assert health["postgres"] == {"ok": True}
    assert health["config"] == str(daemon.config)
    assert isinstance(health["plans"], int)
    assert health["uptime_s"] >= 0
    assert daemon.proc is not None
    assert health["pid"] == daemon.proc.pid


def test_metrics_expose_the_daemon_metrics(daemon: DaemonProcess) -> None:
    status, headers, body = daemon.get("/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert re.search(r'^occ_build_info\{.*version="[^"]+".*\} 1\.0$', text, re.M)
    assert 'occ_config_reloads_total{result="ok"} 0.0' in text
    assert 'occ_config_reloads_total{result="rejected"} 0.0' in text
    assert 'occ_up{component="redis"} 1.0' in text
    assert 'occ_up{component="postgres"} 1.0' in text
    assert "occ_config_last_reload_successful 1.0" in text
    assert re.search(r"^occ_start_time_seconds \d", text, re.M)
    assert re.search(r"^occ_config_last_reload_timestamp_seconds \d", text, re.M)


def test_http_answers_head_404_405_and_bounds_requests(daemon: DaemonProcess) -> None:
    status, headers, body = daemon.get("/health", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0
    assert daemon.get("/metrics?x=1")[0] == 200
    assert daemon.get("/nowhere")[0] == 404
    status, headers, _ = daemon.get("/metrics", method="POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    huge = b"GET /health HTTP/1.1\r\nX-Filler: " + b"a" * 20_000 + b"\r\n\r\n"
    assert raw_request(daemon.port, huge).startswith(b"HTTP/1.1 431 ")
    assert raw_request(daemon.port, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_request(daemon.port, b"GET /health HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    # still serving after all that
    assert daemon.get("/health")[0] == 200


def test_pid_file_holds_the_daemon_pid(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    assert daemon.pid_file.read_text().strip() == str(daemon.proc.pid)


def test_second_daemon_with_the_same_run_dir_is_refused(
    daemon: DaemonProcess, make_daemon: MakeDaemon
) -> None:
    assert daemon.proc is not None
    second = make_daemon("second", run_dir=str(daemon.run_dir))
    second.start()
    assert second.wait_exit() == 1
    errors = [line for line in second.log_lines() if "level=error" in line]
    assert len(errors) == 1, second.log()
    assert f"another occ daemon (pid {daemon.proc.pid}) is running" in errors[0]
    # the first one is untouched, pid file included
    assert daemon.get("/health")[0] == 200
    assert daemon.pid_file.read_text().strip() == str(daemon.proc.pid)


# ---- reload -------------------------------------------------------------------------------------------


def test_sighup_applies_a_valid_change(daemon: DaemonProcess) -> None:
    daemon.rewrite(render(daemon, log_level="debug"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_metric("occ_config_reloads_total", 'result="ok"', 1.0)
    line = daemon.wait_log(r'msg="configuration reloaded"')
    assert "changed=server.log_level" in line
    assert daemon.metric("occ_config_reloads_total", 'result="rejected"') == 0.0
    assert daemon.get("/health")[0] == 200


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        ('[server]\nlog_levl = "debug"\n', "server.log_levl: unknown key"),
        ("[metrics]\nport = 70000\n", "metrics.port: expected a port number 1-65535"),
        ("[server\n", "not valid TOML"),
    ],
    ids=["unknown-key", "bad-value", "bad-toml"],
)
def test_sighup_with_an_invalid_file_keeps_the_running_config(
    daemon: DaemonProcess, broken: str, named: str
) -> None:
    good = daemon.config.read_text()
    daemon.rewrite(broken)
    daemon.signal(signal.SIGHUP)
    daemon.wait_metric("occ_config_reloads_total", 'result="rejected"', 1.0)
    line = daemon.wait_log(r'msg="reload rejected; keeping the running configuration"')
    assert "level=error" in line
    assert named in line
    assert str(daemon.config) in line
    assert daemon.metric("occ_config_reloads_total", 'result="ok"') == 0.0
    assert daemon.metric("occ_config_last_reload_successful") == 0.0
    assert daemon.get("/health")[0] == 200
    # a fixed file is picked up by the next reload
    daemon.rewrite(good)
    daemon.signal(signal.SIGHUP)
    daemon.wait_metric("occ_config_reloads_total", 'result="ok"', 1.0)
    assert daemon.metric("occ_config_last_reload_successful") == 1.0


def test_restart_only_settings_keep_their_running_value(daemon: DaemonProcess) -> None:
    other_port = free_port()
    text = render(daemon, log_level="debug").replace(f"port = {daemon.port}", f"port = {other_port}")
    daemon.rewrite(text.replace('key_prefix = "', 'key_prefix = "moved'))
    daemon.signal(signal.SIGHUP)
    daemon.wait_metric("occ_config_reloads_total", 'result="ok"', 1.0)
    held = daemon.wait_log(r"require a restart")
    assert "metrics.port" in held
    assert "redis.key_prefix" in held
    reloaded = daemon.wait_log(r'msg="configuration reloaded"')
    assert "changed=server.log_level" in reloaded
    assert "metrics.port" not in reloaded
    # still on the old port, nothing on the new one
    assert daemon.get("/health")[0] == 200
    with pytest.raises(OSError):
        request(other_port, "GET", "/health", timeout=1.0)


def test_occ_reload_validates_then_signals_the_daemon(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    daemon.rewrite(render(daemon, log_level="debug"))
    done = daemon.occ("reload")
    assert done.returncode == 0, done.stderr
    assert f"sent SIGHUP to the occ daemon (pid {daemon.proc.pid})" in done.stdout
    daemon.wait_metric("occ_config_reloads_total", 'result="ok"', 1.0)

    daemon.rewrite('[server]\nlog_levl = "debug"\n')
    refused = daemon.occ("reload")
    assert refused.returncode == 2
    assert "server.log_levl: unknown key" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    time.sleep(0.5)  # had a signal been sent, the daemon would have counted a rejected reload by now
    assert daemon.metric("occ_config_reloads_total", 'result="rejected"') == 0.0
    assert daemon.metric("occ_config_reloads_total", 'result="ok"') == 1.0


def test_occ_reload_without_a_daemon_fails_with_one_line(make_daemon: MakeDaemon) -> None:
    idle = make_daemon("idle")
    done = idle.occ("reload")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"occ: no occ daemon is running (no pid file {idle.pid_file})"
    ]
    # a pid file left by a crashed daemon is not a running daemon
    idle.run_dir.mkdir(parents=True)
    idle.pid_file.write_text("999999\n")
    stale = idle.occ("reload")
    assert stale.returncode == 1
    assert "stale pid file" in stale.stderr


# ---- shutdown -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_stops_gracefully(daemon: DaemonProcess, sig: signal.Signals) -> None:
    daemon.signal(sig)
    assert daemon.wait_exit() == 0, daemon.log()
    assert not daemon.pid_file.exists()
    daemon.wait_log(r"msg=stopped")
    with pytest.raises(OSError):
        request(daemon.port, "GET", "/health", timeout=1.0)


def test_a_crashed_daemons_pid_file_does_not_block_a_start(make_daemon: MakeDaemon) -> None:
    fresh = make_daemon("fresh")
    fresh.run_dir.mkdir(parents=True)
    fresh.pid_file.write_text("999999\n")
    fresh.start_and_wait_healthy()
    assert fresh.proc is not None
    assert fresh.pid_file.read_text().strip() == str(fresh.proc.pid)
    fresh.signal(signal.SIGTERM)
    assert fresh.wait_exit() == 0


# ---- startup failures ---------------------------------------------------------------------------------


def test_unreachable_redis_exits_1_with_one_line_naming_it(make_daemon: MakeDaemon) -> None:
    nowhere = f"redis://:s3cret-redis@127.0.0.1:{free_port()}/0"
    broken = make_daemon("noredis", redis_url=nowhere)
    broken.start()
    assert broken.wait_exit() == 1
    errors = [line for line in broken.log_lines() if "level=error" in line]
    assert len(errors) == 1, broken.log()
    assert "cannot start: Redis unreachable at redis://:***@127.0.0.1" in errors[0]
    assert "PostgreSQL" not in errors[0]
    assert "s3cret" not in broken.log()
    assert not broken.pid_file.exists()


def test_unreachable_postgres_exits_1_with_one_line_naming_it(make_daemon: MakeDaemon) -> None:
    nowhere = f"postgresql://postgres:s3cret-pg@127.0.0.1:{free_port()}/occ"
    broken = make_daemon("nopg", database_url=nowhere)
    broken.start()
    assert broken.wait_exit() == 1
    errors = [line for line in broken.log_lines() if "level=error" in line]
    assert len(errors) == 1, broken.log()
    assert "cannot start: PostgreSQL unreachable at postgresql://postgres:***@127.0.0.1" in errors[0]
    assert "Redis" not in errors[0]
    assert "s3cret" not in broken.log()
    assert not broken.pid_file.exists()


def test_database_without_tariff_tables_runs_with_an_empty_catalog(
    make_daemon: MakeDaemon, empty_database_url: str
) -> None:
    bare = make_daemon("bare", database_url=empty_database_url)
    bare.start_and_wait_healthy()
    warning = bare.wait_log(r"empty tariff catalog")
    assert "level=warning" in warning
    _, _, body = bare.get("/health")
    assert json.loads(body)["plans"] == 0
    assert bare.metric("occ_tariff_plans") == 0.0
    bare.signal(signal.SIGTERM)
    assert bare.wait_exit() == 0


# ---- the daemon's parts, in process -------------------------------------------------------------------


def test_redact_masks_passwords_in_urls_and_fields() -> None:
    assert log.redact("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert (
        log.redact("postgresql://occ:p%40ss@db/occ?sslmode=require")
        == "postgresql://occ:***@db/occ?sslmode=require"
    )
    assert (
        log.redact("seeds redis://a:x@h1:1,redis://a:y@h2:2") == "seeds redis://a:***@h1:1,redis://a:***@h2:2"
    )
    assert log.redact("host=db password=hunter2 user=occ") == "host=db password=*** user=occ"
    assert log.redact("postgresql://db/occ?password=hunter2&x=1") == "postgresql://db/occ?password=***&x=1"
    assert (
        log.redact("redis://h:6379/0 and postgresql://occ@db/occ")
        == "redis://h:6379/0 and postgresql://occ@db/occ"
    )


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        log._handler = None


def test_log_lines_are_one_line_redacted_in_text_and_json(captured_log: io.StringIO) -> None:
    log.configure("info", "text", stream=captured_log)
    logger = log.get("occ.test")
    logger.debug("hidden")
    logger.info("cannot reach\nRedis", url="redis://:pw@h:1/0", error=ValueError("password=pw"), n=3, ok=True)
    log.configure("debug", "json")
    logger.debug("visible", keys=["a.b", "c.d"])
    lines = captured_log.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "hidden" not in lines[0]
    assert 'msg="cannot reach\\nRedis"' in lines[0]
    assert "url=redis://:***@h:1/0" in lines[0]
    assert 'error="password=***"' in lines[0]
    assert "n=3 ok=true" in lines[0]
    assert "pw" not in lines[0].replace("password", "")
    record = json.loads(lines[1])
    assert (record["level"], record["logger"], record["msg"], record["keys"]) == (
        "debug",
        "occ.test",
        "visible",
        "a.b,c.d",
    )


def test_restart_only_settings_are_held_and_named() -> None:
    running = Settings()
    loaded = settings_from_dict(
        {
            "server": {"log_level": "debug", "run_dir": "elsewhere"},
            "metrics": {"port": 9999},
            "redis": {"url": "redis://:pw@other:6379/0"},
            "balance": {"max_grants": {"data": 1}},
        },
        "test",
        {},
    )
    effective, held = keep_restart_only(running, loaded)
    assert held == ["server.run_dir", "metrics.port", "redis.url"]
    assert effective.server.log_level == "debug"
    assert effective.server.run_dir == running.server.run_dir
    assert effective.metrics == running.metrics
    assert effective.redis == running.redis
    assert effective.balance.max_grants == {"data": 1}  # grant sizes change without a restart


def test_pid_file_lock_tells_a_live_daemon_from_a_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "occ.pid"
    with pytest.raises(NoDaemon, match="no pid file"):
        running_daemon_pid(path)
    first = PidFile(path)
    first.acquire()
    try:
        assert running_daemon_pid(path) == os.getpid()
        with pytest.raises(StartupError, match=f"another occ daemon \\(pid {os.getpid()}\\) is running"):
            PidFile(path).acquire()
    finally:
        first.release()
    assert not path.exists()
    path.write_text("12345\n")
    with pytest.raises(NoDaemon, match="stale pid file"):
        running_daemon_pid(path)
    second = PidFile(path)
    second.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    second.release()


class Recorder:
    """A component that records what the daemon asks of it."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.started = asyncio.Event()

    async def start(self, ctx: DaemonContext) -> None:
        self.calls.append(("start", ctx.settings.server.log_level))
        self.started.set()

    def reload(self, ctx: DaemonContext) -> None:
        self.calls.append(("reload", ctx.settings.server.log_level))

    async def stop(self, grace_s: float) -> None:
        self.calls.append(("stop", grace_s))


class Stuck:
    """A component that never finishes stopping."""

    name = "stuck"

    async def start(self, ctx: DaemonContext) -> None:
        pass

    def reload(self, ctx: DaemonContext) -> None:
        raise RuntimeError("cannot adopt anything")

    async def stop(self, grace_s: float) -> None:
        await asyncio.sleep(3600)


async def test_components_are_started_reloaded_and_stopped_in_order(
    tmp_path: Path, redis_url: str, key_prefix: str, database_url: str, captured_log: io.StringIO
) -> None:
    config = tmp_path / "occ.toml"
    text = config_text(
        run_dir=tmp_path / "run",
        port=free_port(),
        redis_url=redis_url,
        prefix=key_prefix,
        database_url=database_url,
    ).replace("shutdown_grace_s = 3.0", "shutdown_grace_s = 0.5")
    config.write_text(text)
    recorder, stuck = Recorder(), Stuck()
    daemon = Daemon(config, load_settings(config, environ={}), components=lambda _: [recorder, stuck])
    log.configure(stream=captured_log)
    running = asyncio.ensure_future(daemon.run())
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            await recorder.started.wait()
        config.write_text(text + "[server.x]\n")  # invalid: components hear nothing
        assert await daemon.reload() is False
        config.write_text(text.replace("[server]\n", '[server]\nlog_level = "debug"\n'))
        assert await daemon.reload() is True
        daemon._on_stop_signal("SIGTERM")
        async with asyncio.timeout(STOP_TIMEOUT_S):
            assert await running == 0
    finally:
        if not running.done():
            running.cancel()
    assert recorder.calls == [("start", "info"), ("reload", "debug"), ("stop", pytest.approx(0.0, abs=0.5))]
    text_log = captured_log.getvalue()
    assert 'msg="component failed to adopt the new configuration" component=stuck' in text_log
    assert 'msg="component did not stop in time; cancelled" component=stuck' in text_log
    assert not (tmp_path / "run" / "occ.pid").exists()


# ---- tariff catalog reloads ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tariff_database_url() -> Iterator[str]:
    """A migrated database of this module's own: the reload test installs (and breaks) tariffs in it."""
    from billing.migrate import apply_migrations

    name = "occ_test_tariffs_" + uuid.uuid4().hex[:10]
    url = f"{ADMIN_DSN.rpartition('/')[0]}/{name}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(apply_migrations(url))
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(sql: str, dsn: str = ADMIN_DSN) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _install_demo_tariff(dsn: str) -> None:
    import asyncpg

    from billing.tariff_store import install_tariff

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await install_tariff(conn, (REPO / "config/tariffs/demo.toml").read_text(), "demo.toml")
    finally:
        await conn.close()


def test_reload_adopts_new_tariffs_and_refuses_a_broken_catalog(
    make_daemon: MakeDaemon, tariff_database_url: str
) -> None:
    rated = make_daemon("tariffs", database_url=tariff_database_url)
    rated.start_and_wait_healthy()
    assert json.loads(rated.get("/health")[2])["plans"] == 0
    assert "empty tariff catalog" not in rated.log()  # the tables exist, they are just empty

    asyncio.run(_install_demo_tariff(tariff_database_url))
    rated.signal(signal.SIGHUP)
    rated.wait_metric("occ_config_reloads_total", 'result="ok"', 1.0)
    plans = json.loads(rated.get("/health")[2])["plans"]
    assert plans > 0
    assert rated.metric("occ_tariff_plans") == plans

    # a stored text that no longer parses (installing refuses such text, so write the rows directly)
    asyncio.run(
        _admin(
            "insert into tariff_sources (sha256, source_name, source) "
            "values ('broken', 'broken.toml', '[plan');"
            "insert into tariff_versions (plan, effective_from, source_name, source_sha256) "
            "values ('broken', now(), 'broken.toml', 'broken')",
            tariff_database_url,
        )
    )
    rated.signal(signal.SIGHUP)
    rated.wait_metric("occ_config_reloads_total", 'result="rejected"', 1.0)
    line = rated.wait_log(r'msg="reload rejected; keeping the running configuration"')
    assert "cannot load the tariff catalog" in line
    assert "broken.toml" in line
    assert json.loads(rated.get("/health")[2])["plans"] == plans
    assert rated.metric("occ_tariff_plans") == plans
