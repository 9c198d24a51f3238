"""Provisioning: accounts, identities, buckets, top-ups, and rebuilding the live store from PostgreSQL.

Every operation writes PostgreSQL first, in one transaction, and only then the live store (Redis) through
``BalanceStore``. Every operation is idempotent, so when the Redis step fails the same command run again
finds PostgreSQL already done and brings Redis up to it: the two converge.

Validation is pure (the ``check_*`` functions) so a caller can reject bad input before opening any
connection; the operations run the same checks again.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from balance.keys import ACCOUNT_ID
from balance.records import AccountKind, AccountRecord, AccountStatus, AccountView, BucketRecord
from balance.store import BalanceStore, UnknownAccount
from billing import accounts
from billing.accounts import IdentityRow
from billing.tariff_store import load_catalog
from rating_core.money import MICRO, format_money
from rating_core.tariff import UnknownPlan


class ProvisioningError(Exception):
    """The operation was refused (a conflict, the live store out of step); the message is one line."""


class InvalidInput(ProvisioningError):
    """The request itself is wrong: malformed value, unknown plan, unknown account."""


class UnknownAccountError(InvalidInput):
    """No such account in PostgreSQL."""


class Conflict(ProvisioningError):
    """The thing exists already with different attributes."""


class NotInLiveStore(ProvisioningError):
    """PostgreSQL has the account but Redis does not."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {account_id!r} is missing from Redis; run 'occ redis rebuild'")


class IdentityKind(enum.StrEnum):
    MSISDN = "msisdn"
    IMSI = "imsi"
    SIP_URI = "sip_uri"
    RADIUS_USER = "radius_user"


class Outcome(enum.StrEnum):
    CREATED = "created"
    EXISTS = "exists"  # the same thing was there already: nothing changed in PostgreSQL
    UPDATED = "updated"


# Largest top-up, credit limit or bucket size accepted: below 2**53, where the store's Lua numbers
# (doubles) would start losing digits.
MAX_AMOUNT = 10**9 * MICRO
MAX_UNITS = 2**53 - 1

_CURRENCY = re.compile(r"[A-Z]{3}")
_PLAN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_REFERENCE = re.compile(r"[A-Za-z0-9._:@+-]{1,128}")
_BUCKET_ID = re.compile(r"[A-Za-z0-9._:@+-]{1,200}")
_DIGITS = {IdentityKind.MSISDN: re.compile(r"[0-9]{3,15}"), IdentityKind.IMSI: re.compile(r"[0-9]{6,15}")}
_SIP_URI = re.compile(r"(?i:sips?|tel):\S{1,250}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --- validation (pure) ----------------------------------------------------------------------------
def check_account_id(account_id: str) -> None:
    if not ACCOUNT_ID.fullmatch(account_id):
        raise InvalidInput(f"invalid account ID {account_id!r}: 1-64 characters of A-Z a-z 0-9 . _ @ + -")


def check_account(record: AccountRecord) -> None:
    check_account_id(record.account_id)
    if not _CURRENCY.fullmatch(record.currency):
        raise InvalidInput(f"invalid currency {record.currency!r}: expected a 3-letter code such as EUR")
    if not _PLAN.fullmatch(record.plan):
        raise InvalidInput(f"invalid plan name {record.plan!r}")
    if record.kind is AccountKind.PREPAID and record.credit_limit != 0:
        raise InvalidInput("a credit limit is for postpaid accounts only")
    if not 0 <= record.credit_limit <= MAX_AMOUNT:
        raise InvalidInput(f"credit limit must be between 0 and {format_money(MAX_AMOUNT)}")


def check_identity(identity: IdentityRow) -> None:
    check_account_id(identity.account_id)
    try:
        kind = IdentityKind(identity.kind)
    except ValueError:
        raise InvalidInput(f"unknown identity kind {identity.kind!r}") from None
    value = identity.value
    if kind in _DIGITS:
        if not _DIGITS[kind].fullmatch(value):
            size = "6-15" if kind is IdentityKind.IMSI else "3-15"
            raise InvalidInput(f"invalid {kind.value} {value!r}: {size} digits (no +, no spaces)")
    elif kind is IdentityKind.SIP_URI:
        if not _SIP_URI.fullmatch(value):
            raise InvalidInput(f"invalid SIP URI {value!r}: expected sip:, sips: or tel: and no spaces")
    elif not value or len(value.encode()) > 253 or _CONTROL.search(value):
        raise InvalidInput(f"invalid RADIUS user name {value!r}: 1-253 bytes, no control characters")
    if kind is IdentityKind.RADIUS_USER:
        # the secret is never echoed, not even in an error
        if identity.secret is None:
            raise InvalidInput("a RADIUS user needs a password")
        if not identity.secret or len(identity.secret.encode()) > 128 or "\x00" in identity.secret:
            raise InvalidInput("invalid password: 1-128 bytes")
    elif identity.secret is not None:
        raise InvalidInput("only a RADIUS user has a password")


def check_bucket(bucket: BucketRecord, now: datetime) -> None:
    if not _BUCKET_ID.fullmatch(bucket.bucket_id):
        raise InvalidInput(
            f"invalid bucket ID {bucket.bucket_id!r}: 1-200 characters of A-Z a-z 0-9 . _ : @ + -"
        )
    if not _SERVICE.fullmatch(bucket.service):
        raise InvalidInput(f"invalid service {bucket.service!r}: 1-64 characters of A-Z a-z 0-9 . _ -")
    if not 0 < bucket.units <= MAX_UNITS:
        raise InvalidInput(f"units must be between 1 and {MAX_UNITS}, got {bucket.units}")
    if not 0 <= bucket.priority < 2**31:
        raise InvalidInput(f"priority must be between 0 and {2**31 - 1}, got {bucket.priority}")
    if bucket.expires_at.tzinfo is None:
        raise InvalidInput("bucket expiry needs a UTC offset")
    if bucket.expires_at <= now:
        raise InvalidInput(f"bucket expiry {bucket.expires_at.isoformat()} is not in the future")


def check_topup(account_id: str, amount: int, reference: str) -> None:
    check_account_id(account_id)
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidInput(f"top-up amount must be greater than 0 and at most {format_money(MAX_AMOUNT)}")
    if not _REFERENCE.fullmatch(reference):
        raise InvalidInput(f"invalid reference {reference!r}: 1-128 characters of A-Z a-z 0-9 . _ : @ + -")


def new_reference() -> str:
    return str(uuid.uuid4())


# --- allowances -----------------------------------------------------------------------------------
def period_bounds(period: str, now: datetime) -> tuple[str, datetime]:
    """(label, end) of the UTC calendar period containing ``now``: "2025-06" or "2025-06-17", and the
    instant the next period starts, which is when this period's allowance expires."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day.strftime("%Y-%m-%d"), day + timedelta(days=1)
    if period == "monthly":
        first = day.replace(day=1)
        following = (
            first.replace(year=first.year + 1, month=1)
            if first.month == 12
            else first.replace(month=first.month + 1)
        )
        return first.strftime("%Y-%m"), following
    raise ProvisioningError(f"allowance period {period!r} is not supported (monthly or daily)")


def allowance_bucket(account_id: str, service: str, units: int, period: str, now: datetime) -> BucketRecord:
    """The bucket of one included allowance for the period containing ``now``.

    Its ID is derived from account, service and period, so provisioning the same period twice finds the
    same bucket instead of granting the allowance again.
    """
    label, end = period_bounds(period, now)
    return BucketRecord(
        bucket_id=f"{account_id}:{service}:{label}", service=service, units=units, expires_at=end
    )


# --- results --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AccountResult:
    account: AccountRecord
    outcome: Outcome
    buckets: tuple[BucketRecord, ...]  # this period's allowance buckets


@dataclass(frozen=True, slots=True)
class TopupResult:
    account_id: str
    reference: str
    amount: int
    duplicate: bool  # the reference was credited before: no money moved this time
    balance: int


@dataclass(frozen=True, slots=True)
class AccountDetails:
    account: AccountRecord
    identities: tuple[IdentityRow, ...]
    buckets: tuple[BucketRecord, ...]  # unexpired, as provisioned
    in_live_store: bool


@dataclass(frozen=True, slots=True)
class RebuildResult:
    accounts: int  # accounts in PostgreSQL
    restored: int  # of which Redis lacked and now has
    identities: int
    buckets: int


# --- operations -----------------------------------------------------------------------------------
async def live_balance(store: BalanceStore, account_id: str) -> AccountView:
    """Money, buckets and reservations as the live store has them; PostgreSQL is not consulted."""
    check_account_id(account_id)
    try:
        return await store.query(account_id)
    except UnknownAccount:
        raise UnknownAccountError(f"unknown account {account_id!r}") from None


class Provisioning:
    """The operations on one PostgreSQL connection and one live store."""

    REBUILD_PAGE = 500

    def __init__(self, conn: asyncpg.Connection, store: BalanceStore) -> None:
        self._conn = conn
        self._store = store

    @property
    def conn(self) -> asyncpg.Connection:
        return self._conn

    @property
    def store(self) -> BalanceStore:
        return self._store

    async def _account(self, account_id: str, *, lock: bool = False) -> AccountRecord:
        record = await accounts.fetch_account(self._conn, account_id, lock=lock)
        if record is None:
            raise UnknownAccountError(f"unknown account {account_id!r}")
        return record

    async def create_account(self, record: AccountRecord, *, now: datetime) -> AccountResult:
        """Create the account and this period's allowance buckets of its plan.

        Running it again with the same attributes succeeds with ``Outcome.EXISTS`` and completes whatever
        a failed earlier run left undone in Redis; different attributes raise Conflict.
        """
        check_account(record)
        conn = self._conn
        async with conn.transaction():
            if not await accounts.plan_exists(conn, record.plan):
                raise InvalidInput(f"unknown plan {record.plan!r}")
            created = await accounts.insert_account(conn, record, now)
            if created:
                await accounts.start_plan(conn, record.account_id, record.plan, now)
            current = await self._account(record.account_id, lock=True)
            if not created:
                _same_account(record, current)
            try:
                plan = (await load_catalog(conn)).plan(record.plan, at=now)
            except UnknownPlan as exc:
                raise InvalidInput(str(exc)) from None
            if plan.currency != record.currency:
                raise InvalidInput(f"plan {record.plan!r} charges in {plan.currency}, not {record.currency}")
            buckets = tuple(
                allowance_bucket(record.account_id, a.service, a.units, a.period, now)
                for a in plan.allowances
            )
            for bucket in buckets:
                await accounts.insert_bucket(conn, record.account_id, bucket, now)
            pending = await accounts.unloaded_buckets(conn, record.account_id, now)
        if created or await self._store.has_account(record.account_id):
            # status comes from PostgreSQL: a re-run must not undo a set-status
            await self._store.put_account(current)
            await self._load_buckets(record.account_id, pending, now)
        else:
            # created by an earlier run whose Redis step failed, or Redis lost it: a plain put_account
            # would start it at zero, so restore it with the balance PostgreSQL explains
            await self._restore(current, now)
        return AccountResult(current, Outcome.CREATED if created else Outcome.EXISTS, buckets)

    async def set_status(self, account_id: str, status: AccountStatus, *, now: datetime) -> Outcome:
        check_account_id(account_id)
        async with self._conn.transaction():
            previous = await accounts.update_status(self._conn, account_id, status, now)
        if previous is None:
            raise UnknownAccountError(f"unknown account {account_id!r}")
        try:
            await self._store.set_status(account_id, status)
        except UnknownAccount:
            raise NotInLiveStore(account_id) from None
        return Outcome.EXISTS if previous is status else Outcome.UPDATED

    async def set_plan(self, account_id: str, plan: str, *, now: datetime) -> Outcome:
        """Move the account to ``plan`` from ``now``: PostgreSQL (plan and plan history) first, then the
        live store, whose sessions in progress keep the plan they started under."""
        check_account_id(account_id)
        conn = self._conn
        async with conn.transaction():
            current = await self._account(account_id, lock=True)
            if current.plan != plan:
                try:
                    version = (await load_catalog(conn)).plan(plan, at=now)
                except UnknownPlan as exc:
                    raise InvalidInput(str(exc)) from None
                if version.currency != current.currency:
                    raise InvalidInput(f"plan {plan!r} charges in {version.currency}, not {current.currency}")
                await conn.execute(
                    "update accounts set plan = $2, updated_at = $3 where account_id = $1",
                    account_id,
                    plan,
                    now,
                )
                await accounts.start_plan(conn, account_id, plan, now)
        updated = msgspec.structs.replace(current, plan=plan)
        if not await self._store.has_account(account_id):
            raise NotInLiveStore(account_id)
        await self._store.put_account(updated)
        return Outcome.EXISTS if current.plan == plan else Outcome.UPDATED

    async def add_identity(self, identity: IdentityRow, *, now: datetime) -> Outcome:
        """Attach an identity; repeating it is harmless, repeating it with a new password changes the
        password, attaching an identity another account holds is a Conflict."""
        check_identity(identity)
        async with self._conn.transaction():
            await self._account(identity.account_id, lock=True)
            previous = await accounts.upsert_identity(self._conn, identity, now)
        if previous is not None and previous.account_id != identity.account_id:
            raise Conflict(f"{identity.kind} {identity.value!r} belongs to account {previous.account_id!r}")
        await self._store.put_identity(identity.kind, identity.value, identity.account_id, identity.secret)
        if previous is None:
            return Outcome.CREATED
        return Outcome.EXISTS if previous.secret == identity.secret else Outcome.UPDATED

    async def add_bucket(self, account_id: str, bucket: BucketRecord, *, now: datetime) -> Outcome:
        check_account_id(account_id)
        check_bucket(bucket, now)
        async with self._conn.transaction():
            await self._account(account_id, lock=True)
            created = await accounts.insert_bucket(self._conn, account_id, bucket, now)
            loaded = False
            if not created:
                found = await accounts.fetch_bucket(self._conn, bucket.bucket_id)
                if found is None or found[:2] != (account_id, bucket):
                    raise Conflict(f"bucket {bucket.bucket_id!r} exists with different attributes")
                loaded = found[2]
        if not loaded:
            await self._load_buckets(account_id, [bucket], now)
        return Outcome.CREATED if created else Outcome.EXISTS

    async def _load_buckets(self, account_id: str, buckets: list[BucketRecord], now: datetime) -> None:
        """Give the live store buckets it has never had, marking each in PostgreSQL as soon as it has it."""
        for bucket in buckets:
            try:
                await self._store.add_bucket(account_id, bucket)
            except UnknownAccount:
                raise NotInLiveStore(account_id) from None
            await accounts.mark_loaded(self._conn, [bucket.bucket_id], now)

    async def topup(self, account_id: str, amount: int, reference: str, *, now: datetime) -> TopupResult:
        """Credit ``amount`` once per (account, reference).

        PostgreSQL records the top-up first; the store's idempotency key ("topup:" + reference) makes a
        repeated credit a no-op while the store remembers the key. ``credited_at`` covers the time after
        it forgets: once set, a repeat does not reach the store at all.
        """
        check_topup(account_id, amount, reference)
        async with self._conn.transaction():
            await self._account(account_id, lock=True)
            previous = await accounts.insert_topup(self._conn, account_id, reference, amount, now)
        if previous is not None and previous.amount != amount:
            raise Conflict(
                f"reference {reference!r} was used for a top-up of {format_money(previous.amount)}, "
                f"not {format_money(amount)}"
            )
        try:
            if previous is not None and previous.credited:
                view = await self._store.query(account_id)
                return TopupResult(account_id, reference, amount, duplicate=True, balance=view.balance)
            result = await self._store.credit(
                account_id, amount, key="topup:" + reference, reason="topup", now=now
            )
        except UnknownAccount:
            raise NotInLiveStore(account_id) from None
        await accounts.mark_credited(self._conn, account_id, reference, now)
        return TopupResult(account_id, reference, amount, duplicate=result.duplicate, balance=result.balance)

    async def show(self, account_id: str, *, now: datetime) -> AccountDetails:
        check_account_id(account_id)
        async with self._conn.transaction(isolation="repeatable_read", readonly=True):
            record = await self._account(account_id)
            identities = await accounts.identities_of(self._conn, account_id)
            buckets = await accounts.live_buckets(self._conn, account_id, now)
        live = await self._store.has_account(account_id)
        return AccountDetails(record, tuple(identities), tuple(buckets), live)

    async def rebuild(self, *, now: datetime) -> RebuildResult:
        """Recreate in Redis every account PostgreSQL has and Redis lacks.

        Accounts Redis already has are left alone. Run it with charging stopped: a charge committed in
        Redis but not yet in the ledger is not part of the restored balance.
        """
        total = restored = identities = buckets = 0
        after = ""
        while page := await accounts.accounts_after(self._conn, after, self.REBUILD_PAGE):
            for record in page:
                total += 1
                if await self._store.has_account(record.account_id):
                    continue
                done = await self._restore(record, now)
                if done is not None:
                    restored += 1
                    identities += done[0]
                    buckets += done[1]
            after = page[-1].account_id
        return RebuildResult(total, restored, identities, buckets)

    async def _restore(self, record: AccountRecord, now: datetime) -> tuple[int, int] | None:
        """Put one account back into Redis from PostgreSQL; (identities, buckets) written, or None when
        the account appeared in Redis meanwhile."""
        conn = self._conn
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            balance = await accounts.ledger_balance(conn, record.account_id)
            references = await accounts.uncredited_topups(conn, record.account_id)
            identities = await accounts.identities_of(conn, record.account_id)
            # restored at their provisioned size: the ledger does not yet say which bucket a charge used
            buckets = await accounts.live_buckets(conn, record.account_id, now)
        # identities first: they do not need the account, and a run that fails after restore_account
        # will not come back to this account (has_account is then true)
        for identity in identities:
            await self._store.put_identity(
                identity.kind, identity.value, identity.account_id, identity.secret
            )
        if not await self._store.restore_account(record, balance):
            return None
        for bucket in buckets:
            await self._store.add_bucket(record.account_id, bucket)
        await accounts.mark_loaded(conn, [b.bucket_id for b in buckets], now)
        # the restored balance holds these top-ups: repeating one of them must not credit it again
        await accounts.mark_all_credited(conn, record.account_id, references, now)
        return len(identities), len(buckets)


def _same_account(wanted: AccountRecord, found: AccountRecord) -> None:
    differences = [
        f"{name} {shown(found)} (not {shown(wanted)})"
        for name, shown in (
            ("kind", lambda r: r.kind.value),
            ("currency", lambda r: r.currency),
            ("plan", lambda r: r.plan),
            ("credit limit", lambda r: format_money(r.credit_limit)),
        )
        if shown(found) != shown(wanted)
    ]
    if differences:
        raise Conflict(f"account {wanted.account_id!r} exists with " + ", ".join(differences))
