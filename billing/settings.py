"""Settings slice of the billing package: the PostgreSQL system of record."""

from __future__ import annotations

import msgspec


class DatabaseSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str = "postgresql://postgres@127.0.0.1:5432/test"
    pool_min: int = 1
    pool_max: int = 8
    connect_timeout_s: float = 5.0
