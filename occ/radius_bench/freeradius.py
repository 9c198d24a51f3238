"""The FreeRADIUS baseline of ``occ bench radius``: Debian's ``freeradius`` (3.2) on a private copy of its
stock configuration, in the foreground and without debug output (``freeradius -f -d <copy>``).

The copy of ``/etc/freeradius/3.0`` changes only what a private instance needs: its directories (log,
run, radacct) point into the bench's temporary directory and it runs as the bench's user (no ``user`` /
``group`` switch); the ``default`` site listens on 127.0.0.1 only, on free auth and accounting ports, and
the ``inner-tunnel`` site's test listener is dropped; ``clients.conf`` holds one client, 127.0.0.1 with the
bench secret; the ``users`` file (``mods-config/files/authorize``) starts with one
``<user> Cleartext-Password := "<password>"`` line per bench subscriber. Everything else is stock: PAP
through ``files`` and ``pap``, and accounting through ``preprocess``, ``acct_unique``, ``files``, the
``detail`` module (one detail file per client, written into the temporary directory), ``unix`` and
``exec``; the stock thread pool, ``max_requests`` and ``cleanup_delay``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from occ.bench_spawn import ProcessError, Spawned, child_env, free_ports
from occ.child_process import die_with_parent
from occ.radius_bench.packets import Identity
from occ.radius_bench.processes import BENCH_SECRET, Server

STOCK_CONFIG = Path("/etc/freeradius/3.0")
INSTALL = ("apt-get", "install", "-y", "--no-install-recommends", "freeradius")
INSTALL_HINT = shlex.join(INSTALL)
INSTALL_TIMEOUT_S = 600.0
_LISTEN = re.compile(r"^\s*listen\s*\{")
_SERVER_DEFAULT = re.compile(r"^\s*server\s+default\s*\{")
_SETTINGS = {  # radiusd.conf variable -> directory under the bench's temporary directory ("" = the copy)
    "raddbdir": "",
    "logdir": "log",
    "run_dir": "run",
}


class BaselineUnavailable(Exception):
    """FreeRADIUS cannot be run here; the message says what to do about it."""


def binary() -> str | None:
    for name in ("freeradius", "radiusd"):
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
        if found:
            return found
    return None


async def ensure_installed(install: bool, progress: Callable[[str], None] = lambda _: None) -> str:
    """The FreeRADIUS binary; installs the Debian package when missing and allowed (root, apt-get)."""
    found = binary()
    if found and STOCK_CONFIG.is_dir():
        return found
    if not install:
        raise BaselineUnavailable(f"FreeRADIUS is not installed (install it with: {INSTALL_HINT})")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BaselineUnavailable(f"FreeRADIUS is not installed; as root run: {INSTALL_HINT}")
    progress(f"FreeRADIUS missing: {INSTALL_HINT}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    process = await asyncio.create_subprocess_exec(
        *INSTALL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), INSTALL_TIMEOUT_S)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    found = binary()
    if process.returncode != 0 or not found or not STOCK_CONFIG.is_dir():
        tail = "\n".join(output.decode(errors="replace").splitlines()[-5:])
        raise BaselineUnavailable(
            f"installing FreeRADIUS failed (status {process.returncode}; try `apt-get update` first, then "
            f"{INSTALL_HINT}):\n{tail}"
        )
    return found


async def version(path: str) -> str:
    """``FreeRADIUS Version 3.2.1`` (what ``freeradius -v`` says first), or the binary's name."""
    process = await asyncio.create_subprocess_exec(
        path, "-v", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 10.0)
    except TimeoutError:
        process.kill()
        await process.wait()
        return Path(path).name
    match = re.search(r"FreeRADIUS Version [0-9][0-9.]*", output.decode(errors="replace"))
    return match.group(0) if match else Path(path).name


def _code(line: str) -> str:
    """A config line without its comment (FreeRADIUS comments run from '#' to the end of the line)."""
    return line.split("#", 1)[0]


def without_listen_sections(text: str) -> str:
    """``text`` with every ``listen { ... }`` section removed (braces matched, comments ignored)."""
    out: list[str] = []
    depth = 0
    for line in text.splitlines(keepends=True):
        code = _code(line)
        if depth == 0 and _LISTEN.match(code):
            depth = code.count("{") - code.count("}")
            continue
        if depth > 0:
            depth += code.count("{") - code.count("}")
            continue
        out.append(line)
    return "".join(out)


def default_site(stock: str, auth_port: int, acct_port: int) -> str:
    """The stock ``default`` site listening on 127.0.0.1 only, on the given ports."""
    listen = (
        f"listen {{\n\ttype = auth\n\tipaddr = 127.0.0.1\n\tport = {auth_port}\n}}\n"
        f"listen {{\n\ttype = acct\n\tipaddr = 127.0.0.1\n\tport = {acct_port}\n}}\n"
    )
    lines = without_listen_sections(stock).splitlines(keepends=True)
    for n, line in enumerate(lines):
        if _SERVER_DEFAULT.match(_code(line)):
            return "".join([*lines[: n + 1], listen, *lines[n + 1 :]])
    raise ProcessError("FreeRADIUS sites-available/default has no `server default {`")


def radiusd_conf(stock: str, workdir: Path, raddb: Path) -> str:
    """Stock ``radiusd.conf`` with private directories and no user/group switch."""
    text = stock
    for name, sub in _SETTINGS.items():
        where = str(raddb if not sub else workdir / sub).replace("\\", "\\\\")
        text, n = re.subn(rf"(?m)^(\s*){name}\s*=.*$", rf"\g<1>{name} = {where}", text)
        if n != 1:
            raise ProcessError(f"FreeRADIUS radiusd.conf: expected one `{name} =` line, found {n}")
    text = re.sub(r"(?m)^(\s*)(user|group)\s*=\s*\S+\s*$", r"\1# \2 (bench: runs as the bench's user)", text)
    return text


def clients_conf(secret: str) -> str:
    return (
        "client bench {\n\tipaddr = 127.0.0.1\n"
        f"\tsecret = {secret}\n\trequire_message_authenticator = no\n\tnas_type = other\n}}\n"
    )


def users_file(stock: str, identities: Sequence[Identity], password: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", password):
        raise ValueError("the bench password must be plain (letters, digits, . _ -)")
    ours = "".join(f'{who.user} Cleartext-Password := "{password}"\n' for who in identities)
    return "# occ bench radius subscribers\n" + ours + "\n" + stock


def _replace(path: Path, text: str) -> None:
    """Write ``text`` at ``path``, replacing a symlink (sites-enabled/*) by a file."""
    if path.is_symlink():
        path.unlink()
    path.write_text(text, encoding="utf-8")


def write_config(
    workdir: Path, identities: Sequence[Identity], password: str, auth_port: int, acct_port: int
) -> Path:
    """The private configuration directory (``-d``) under ``workdir``."""
    raddb = workdir / "raddb"
    try:
        shutil.copytree(STOCK_CONFIG, raddb, symlinks=True)
    except (OSError, shutil.Error) as exc:
        raise BaselineUnavailable(
            f"cannot copy {STOCK_CONFIG} (root or group freerad needed): {exc}"
        ) from None
    for sub in ("log", "log/radacct", "run"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    conf = raddb / "radiusd.conf"
    conf.write_text(radiusd_conf(conf.read_text(encoding="utf-8"), workdir, raddb), encoding="utf-8")
    (raddb / "clients.conf").write_text(clients_conf(BENCH_SECRET), encoding="utf-8")
    authorize = raddb / "mods-config" / "files" / "authorize"
    _replace(authorize, users_file(authorize.read_text(encoding="utf-8"), identities, password))
    site = raddb / "sites-enabled" / "default"
    _replace(site, default_site(site.read_text(encoding="utf-8"), auth_port, acct_port))
    tunnel = raddb / "sites-enabled" / "inner-tunnel"
    if tunnel.exists():
        _replace(tunnel, without_listen_sections(tunnel.read_text(encoding="utf-8")))
    return raddb


def log_tail(workdir: Path, lines: int = 15) -> str:
    parts = []
    for path in (workdir / "log" / "radius.log", workdir / "freeradius.out"):
        try:
            parts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            continue
    return "\n".join(parts)


async def start(path: str, workdir: Path, identities: Sequence[Identity], password: str) -> Server:
    """FreeRADIUS on its private configuration, started (not yet known to answer: see the bench's probe)."""
    auth_port, acct_port = free_ports(2, socket.SOCK_DGRAM)
    raddb = write_config(workdir, identities, password, auth_port, acct_port)
    out = workdir / "freeradius.out"
    with out.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            path, "-f", "-d", str(raddb),
            stdout=sink, stderr=asyncio.subprocess.STDOUT, env=child_env(), preexec_fn=die_with_parent(),
        )  # fmt: skip
    spawned = Spawned(process, auth_port, out)
    return Server("freeradius", "127.0.0.1", auth_port, acct_port, BENCH_SECRET.encode(), spawned)


def dropped_requests(workdir: Path) -> int:
    """Requests FreeRADIUS said it dropped (``... is too many``, ``Discarding ...``) in its log."""
    try:
        text = (workdir / "log" / "radius.log").read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if "too many" in line or "Discarding" in line)
