"""Connections to PostgreSQL, with failures reduced to one line that never shows the DSN's password."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg

from billing.settings import DatabaseSettings


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached or refused the connection; the message is one line, password-free."""


def describe_dsn(dsn: str) -> str | None:
    """The DSN as it may be shown to a person: scheme, user, host, port and database, no password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme:
        return None
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}{host}:{port}" if port else f"{user}{host}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def unavailable(exc: BaseException, dsn: str) -> DatabaseUnavailable:
    """The one-line error for a failed connection, with the DSN's password (should any library echo
    it) blanked out."""
    if isinstance(exc, TimeoutError):
        text = "timed out"
    else:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        password = urlsplit(dsn).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
    where = describe_dsn(dsn)
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL at {where}: {text}"
        if where
        else f"cannot connect to PostgreSQL: {text}"
    )


# What asyncpg raises when a server is absent, refuses us, or the DSN is unusable.
_CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError)


async def connect(dsn: str, timeout: float) -> asyncpg.Connection:
    """One connection; raises DatabaseUnavailable with a one-line reason."""
    try:
        return await asyncpg.connect(dsn, timeout=timeout)
    except _CONNECT_ERRORS as exc:
        raise unavailable(exc, dsn) from None


async def create_pool(settings: DatabaseSettings) -> asyncpg.Pool:
    """A pool opened with its minimum connections; raises DatabaseUnavailable with a one-line reason."""
    try:
        return await asyncpg.create_pool(
            settings.url,
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            timeout=settings.connect_timeout_s,
        )
    except _CONNECT_ERRORS as exc:
        raise unavailable(exc, settings.url) from None
