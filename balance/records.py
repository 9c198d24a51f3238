"""Value types crossing the balance package boundary (frozen, slotted)."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec


class AccountKind(enum.StrEnum):
    PREPAID = "prepaid"
    POSTPAID = "postpaid"


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    BLOCKED = "blocked"
    CLOSED = "closed"


class AccountRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Attributes of an account as the live store holds them (money lives in the store, not here)."""

    account_id: str
    kind: AccountKind
    currency: str
    plan: str
    status: AccountStatus = AccountStatus.ACTIVE
    # Postpaid only: how far below zero the balance may go, micro-units. Prepaid accounts have 0.
    credit_limit: int = 0


class BucketRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A unit allowance: consumed before money, lowest priority number first, then earliest expiry."""

    bucket_id: str
    service: str
    units: int
    expires_at: datetime
    priority: int = 100


class BucketView(msgspec.Struct, frozen=True, kw_only=True):
    bucket_id: str
    service: str
    units: int  # remaining, including reserved
    reserved: int
    expires_at_ms: int
    priority: int


class ReservationView(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    item: str  # rating group or service key within the session
    service: str
    money: int  # reserved micro-units
    units: int  # granted units
    bucket_units: int  # part of the grant held in unit buckets
    expires_at_ms: int


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    account: AccountRecord
    balance: int  # available micro-units (excludes reserved money)
    reserved: int  # micro-units held by open reservations
    buckets: tuple[BucketView, ...]
    reservations: tuple[ReservationView, ...]
    # Tier counters: "cy:<service>:<cycle>" -> charged units this cycle.
    counters: dict[str, int] = msgspec.field(default_factory=dict)


class CreditResult(msgspec.Struct, frozen=True, kw_only=True):
    balance: int
    duplicate: bool  # the idempotency key was seen before: nothing moved
