"""Settings slice of the balance package: the Redis store and the charging service."""

from __future__ import annotations

import msgspec


class RedisSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # redis://host:port/db, or a comma list of redis://host:port seeds when cluster = true
    url: str = "redis://127.0.0.1:6379/0"
    cluster: bool = False
    # Every key starts with this prefix, so several deployments (or test runs) can share one Redis.
    key_prefix: str = "occ"
    # Accounts are spread over this many hash-tag partitions; each partition lives in one cluster slot
    # and owns one charge stream. Changing it re-homes every account: set it once.
    partitions: int = 16
    connect_timeout_s: float = 2.0


class BalanceSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # A reservation not committed or renewed within this many seconds is returned by the reaper.
    reservation_ttl_s: int = 600
    reaper_interval_s: float = 5.0
    # How long a session's continuation (units and money so far) outlives its returned reservations, so
    # a report arriving after the reaper ran is still rated as the same session.
    session_keep_s: int = 86_400
    # How long a session step's or event's answer is kept for replay of a repeated idempotency key
    # (credits keep theirs for good: a bank reference never credits twice).
    idempotency_ttl_s: int = 86_400
    # Units granted when a request asks for none, per service (seconds, bytes or events).
    default_grants: dict[str, int] = msgspec.field(
        default_factory=lambda: {"voice": 300, "data": 10_485_760, "sms": 1}
    )
    # Largest grant handed out in one answer, per service; services not listed are uncapped.
    max_grants: dict[str, int] = msgspec.field(default_factory=lambda: {"data": 104_857_600})
