"""Provisioning across the boundary it exists for: PostgreSQL written first, then Redis through BalanceStore.

Real PostgreSQL (one migrated database per session, so every test uses its own account IDs) and real
Redis (a fresh key prefix per test). The pure checks at the top need neither.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import redis.asyncio as aioredis

from balance import wire
from balance.records import AccountKind, AccountRecord, AccountStatus, BucketRecord
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore, EventApplied
from billing.accounts import IdentityRow
from billing.ledger import Ledger
from billing.provisioning import (
    MAX_AMOUNT,
    Conflict,
    InvalidInput,
    NotInLiveStore,
    Outcome,
    Provisioning,
    UnknownAccountError,
    allowance_bucket,
    check_account,
    check_bucket,
    check_identity,
    check_topup,
    period_bounds,
)
from billing.tariff_store import install_tariff, load_catalog
from rating_core.money import parse_money
from rating_core.tariff import Plan

DEMO_TARIFF = Path(__file__).resolve().parents[2] / "config" / "tariffs" / "demo.toml"
NOW = datetime(2025, 6, 17, 12, 30, tzinfo=UTC)
# the database tests run at the real time: the demo plan must be in force and buckets unexpired
STARTED = datetime.now(UTC)


def new_id() -> str:
    return "acct-" + uuid.uuid4().hex[:12]


# --- pure: validation and allowance periods -------------------------------------------------------
def test_allowance_periods_end_at_the_next_utc_period() -> None:
    assert period_bounds("monthly", NOW) == ("2025-06", datetime(2025, 7, 1, tzinfo=UTC))
    assert period_bounds("monthly", datetime(2025, 12, 31, 23, 59, tzinfo=UTC)) == (
        "2025-12",
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert period_bounds("daily", NOW) == ("2025-06-17", datetime(2025, 6, 18, tzinfo=UTC))
    # an instant given in another zone belongs to its UTC day
    late = datetime(2025, 6, 18, 1, 0, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    assert period_bounds("daily", late)[0] == "2025-06-18"


def test_allowance_bucket_id_is_the_same_for_the_same_period() -> None:
    a = allowance_bucket("A1", "data", 1000, "monthly", NOW)
    b = allowance_bucket("A1", "data", 1000, "monthly", NOW + timedelta(days=5))
    assert a == b
    assert a.bucket_id == "A1:data:2025-06"
    assert allowance_bucket("A1", "data", 1000, "daily", NOW).bucket_id == "A1:data:2025-06-17"


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        (
            AccountRecord(account_id="bad id", kind=AccountKind.PREPAID, currency="EUR", plan="p"),
            "account ID",
        ),
        (
            AccountRecord(account_id="x" * 65, kind=AccountKind.PREPAID, currency="EUR", plan="p"),
            "account ID",
        ),
        (AccountRecord(account_id="a", kind=AccountKind.PREPAID, currency="EURO", plan="p"), "currency"),
        (
            AccountRecord(account_id="a", kind=AccountKind.PREPAID, currency="EUR", plan="p", credit_limit=1),
            "postpaid",
        ),
        (
            AccountRecord(
                account_id="a", kind=AccountKind.POSTPAID, currency="EUR", plan="p", credit_limit=-1
            ),
            "credit limit",
        ),
    ],
)
def test_account_checks(record: AccountRecord, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        check_account(record)


def test_account_id_alphabet() -> None:
    check_account(AccountRecord(account_id="a.b_c@d+e-f", kind=AccountKind.PREPAID, currency="EUR", plan="p"))


@pytest.mark.parametrize(
    ("kind", "value", "secret", "fragment"),
    [
        ("msisdn", "+46700000001", None, "digits"),
        ("msisdn", "4670 000", None, "digits"),
        ("imsi", "12345", None, "digits"),
        ("imsi", "2400712345678901", None, "digits"),
        ("sip_uri", "alice@example.com", None, "SIP URI"),
        ("sip_uri", "sip:alice bob@example.com", None, "SIP URI"),
        ("radius_user", "bob", None, "needs a password"),
        ("radius_user", "bob", "", "password"),
        ("radius_user", "", "pw", "user name"),
        ("msisdn", "46700000001", "pw", "only a RADIUS user"),
        ("email", "a@b", None, "unknown identity kind"),
    ],
)
def test_identity_checks(kind: str, value: str, secret: str | None, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment) as caught:
        check_identity(IdentityRow(kind=kind, value=value, account_id="a", secret=secret))
    if secret:
        assert secret not in str(caught.value)


def test_identity_secret_is_not_in_repr() -> None:
    assert "s3cret" not in repr(IdentityRow(kind="radius_user", value="bob", account_id="a", secret="s3cret"))


def test_bucket_and_topup_checks() -> None:
    future = NOW + timedelta(days=1)
    with pytest.raises(InvalidInput, match="not in the future"):
        check_bucket(BucketRecord(bucket_id="b", service="data", units=1, expires_at=NOW), NOW)
    with pytest.raises(InvalidInput, match="units"):
        check_bucket(BucketRecord(bucket_id="b", service="data", units=0, expires_at=future), NOW)
    with pytest.raises(InvalidInput, match="UTC offset"):
        check_bucket(
            BucketRecord(bucket_id="b", service="data", units=1, expires_at=datetime(2099, 1, 1)), NOW
        )
    with pytest.raises(InvalidInput, match="greater than 0"):
        check_topup("a", 0, "r")
    with pytest.raises(InvalidInput, match="greater than 0"):
        check_topup("a", MAX_AMOUNT + 1, "r")
    with pytest.raises(InvalidInput, match="reference"):
        check_topup("a", 1, "has space")


# --- PostgreSQL + Redis ---------------------------------------------------------------------------
@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(database_url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    s = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def demo(conn: asyncpg.Connection) -> Plan:
    """The demo plan, installed once per database."""
    if await conn.fetchval("select 1 from tariff_versions where plan = 'demo' limit 1") is None:
        await install_tariff(conn, DEMO_TARIFF.read_text(encoding="utf-8"), DEMO_TARIFF.name)
    plan: Plan = (await load_catalog(conn)).plan("demo", at=datetime.now(UTC))
    return plan


@pytest.fixture
def prov(conn: asyncpg.Connection, store: BalanceStore) -> Provisioning:
    return Provisioning(conn, store)


def account(tariff: Plan, account_id: str | None = None, **changes: object) -> AccountRecord:
    fields: dict[str, object] = {
        "account_id": account_id or new_id(),
        "kind": AccountKind.PREPAID,
        "currency": tariff.currency,
        "plan": tariff.name,
    }
    fields.update(changes)
    return AccountRecord(**fields)  # type: ignore[arg-type]


async def forget_everything(redis_url: str, key_prefix: str) -> None:
    """Lose every Redis key of this test, as a flushed or replaced Redis would."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{key_prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_create_account_writes_postgres_and_redis(
    prov: Provisioning, store: BalanceStore, conn: asyncpg.Connection, demo: Plan
) -> None:
    now = datetime.now(UTC)
    record = account(demo)
    result = await prov.create_account(record, now=now)
    assert result.outcome is Outcome.CREATED
    assert result.account == record
    assert await conn.fetchval("select plan from accounts where account_id = $1", record.account_id) == "demo"
    view = await store.query(record.account_id)
    assert view.account == record
    assert view.balance == 0
    # this period's allowances, in both stores
    assert len(result.buckets) == len(demo.allowances)
    assert {b.bucket_id for b in view.buckets} == {b.bucket_id for b in result.buckets}
    for allowance, bucket in zip(demo.allowances, result.buckets, strict=True):
        assert bucket == allowance_bucket(
            record.account_id, allowance.service, allowance.units, allowance.period, now
        )


async def test_create_again_is_exists_and_grants_nothing_twice(
    prov: Provisioning, store: BalanceStore, demo: Plan
) -> None:
    now = datetime.now(UTC)
    record = account(demo)
    await prov.create_account(record, now=now)
    # the allowance is used up (the store drops an exhausted bucket)
    (allowance,) = demo.allowances
    used = await store.event(
        wire.EventStep(
            k="use-it-all",
            now=int(now.timestamp() * 1000),
            ittl=60,
            aid=record.account_id,
            plan="demo",
            s=allowance.service,
            i=allowance.service,
            u=allowance.units,
            c=-1,
            m=0,
        )
    )
    assert isinstance(used, EventApplied) and used.reply.bu == allowance.units
    assert (await store.query(record.account_id)).buckets == ()
    again = await prov.create_account(record, now=now)
    assert again.outcome is Outcome.EXISTS
    assert (await store.query(record.account_id)).buckets == ()


async def test_create_with_other_attributes_is_a_conflict(prov: Provisioning, demo: Plan) -> None:
    record = account(demo, kind=AccountKind.POSTPAID, credit_limit=parse_money("50"))
    await prov.create_account(record, now=STARTED)
    with pytest.raises(Conflict, match=re.escape("credit limit 50.00 (not 20.00)")):
        await prov.create_account(
            account(demo, record.account_id, kind=AccountKind.POSTPAID, credit_limit=20_000_000), now=STARTED
        )
    with pytest.raises(Conflict, match="kind postpaid"):
        await prov.create_account(account(demo, record.account_id), now=STARTED)


async def test_create_refuses_unknown_plan_and_foreign_currency(prov: Provisioning, demo: Plan) -> None:
    with pytest.raises(InvalidInput, match="unknown plan"):
        await prov.create_account(account(demo, plan="no-such-plan"), now=STARTED)
    other = "XTS" if demo.currency != "XTS" else "XXX"
    with pytest.raises(InvalidInput, match="charges in"):
        await prov.create_account(account(demo, currency=other), now=STARTED)


async def test_create_rerun_restores_an_account_redis_lost(
    prov: Provisioning, store: BalanceStore, redis_url: str, key_prefix: str, demo: Plan
) -> None:
    record = account(demo)
    await prov.create_account(record, now=STARTED)
    await prov.topup(record.account_id, parse_money("5"), "r1", now=STARTED)
    await forget_everything(redis_url, key_prefix)
    again = await prov.create_account(record, now=STARTED)
    assert again.outcome is Outcome.EXISTS
    # not started at zero: the balance PostgreSQL explains
    assert (await store.query(record.account_id)).balance == parse_money("5")


async def test_set_status_survives_a_create_rerun(
    prov: Provisioning, store: BalanceStore, demo: Plan
) -> None:
    record = account(demo)
    await prov.create_account(record, now=STARTED)
    assert await prov.set_status(record.account_id, AccountStatus.SUSPENDED, now=STARTED) is Outcome.UPDATED
    assert await prov.set_status(record.account_id, AccountStatus.SUSPENDED, now=STARTED) is Outcome.EXISTS
    await prov.create_account(record, now=STARTED)
    assert (await store.query(record.account_id)).account.status is AccountStatus.SUSPENDED
    with pytest.raises(UnknownAccountError):
        await prov.set_status(new_id(), AccountStatus.ACTIVE, now=STARTED)


async def test_topup_with_repeated_reference_credits_once(
    prov: Provisioning, store: BalanceStore, conn: asyncpg.Connection, demo: Plan
) -> None:
    record = account(demo)
    await prov.create_account(record, now=STARTED)
    first = await prov.topup(record.account_id, parse_money("10.00"), "pay-1", now=STARTED)
    second = await prov.topup(record.account_id, parse_money("10.00"), "pay-1", now=STARTED)
    assert (first.duplicate, first.balance) == (False, 10_000_000)
    assert (second.duplicate, second.balance) == (True, 10_000_000)
    assert (await store.query(record.account_id)).balance == 10_000_000
    rows = await conn.fetchval("select count(*) from topups where account_id = $1", record.account_id)
    assert rows == 1
    with pytest.raises(Conflict, match=re.escape("reference 'pay-1' was used for a top-up of 10.00")):
        await prov.topup(record.account_id, parse_money("11.00"), "pay-1", now=STARTED)
    with pytest.raises(UnknownAccountError):
        await prov.topup(new_id(), 1, "pay-1", now=STARTED)


async def test_topup_repeated_after_the_store_forgot_the_key_credits_nothing(
    prov: Provisioning, store: BalanceStore, redis_url: str, key_prefix: str, demo: Plan
) -> None:
    record = account(demo)
    await prov.create_account(record, now=STARTED)
    await prov.topup(record.account_id, 3_000_000, "pay-old", now=STARTED)
    # idempotency keys live for idempotency_ttl_s; drop this one as its expiry would
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{key_prefix}:*:i:{record.account_id}:*")]
        assert keys
        await client.delete(*keys)
    finally:
        await client.aclose()
    again = await prov.topup(record.account_id, 3_000_000, "pay-old", now=STARTED)
    assert again.duplicate
    assert (await store.query(record.account_id)).balance == 3_000_000


async def test_topup_whose_redis_step_failed_is_completed_by_the_retry(
    prov: Provisioning, store: BalanceStore, conn: asyncpg.Connection, demo: Plan
) -> None:
    record = account(demo)
    await prov.create_account(record, now=STARTED)
    # what a run that died between the PostgreSQL commit and the Redis credit leaves behind
    await conn.execute(
        "insert into topups (account_id, reference, amount) values ($1, 'pay-2', 7000000)", record.account_id
    )
    retry = await prov.topup(record.account_id, 7_000_000, "pay-2", now=STARTED)
    assert (retry.duplicate, retry.balance) == (False, 7_000_000)
    credited = await conn.fetchval(
        "select credited_at is not null from topups where account_id = $1 and reference = 'pay-2'",
        record.account_id,
    )
    assert credited


async def test_identities(
    prov: Provisioning, store: BalanceStore, conn: asyncpg.Connection, demo: Plan
) -> None:
    a, b = account(demo), account(demo)
    await prov.create_account(a, now=STARTED)
    await prov.create_account(b, now=STARTED)
    msisdn = IdentityRow(
        kind="msisdn", value=str(46_700_000_000 + uuid.uuid4().int % 10**8), account_id=a.account_id
    )
    assert await prov.add_identity(msisdn, now=STARTED) is Outcome.CREATED
    assert await prov.add_identity(msisdn, now=STARTED) is Outcome.EXISTS
    assert await store.resolve_identity("msisdn", msisdn.value) == (a.account_id, None)
    with pytest.raises(Conflict, match=f"belongs to account '{a.account_id}'"):
        await prov.add_identity(
            IdentityRow(kind="msisdn", value=msisdn.value, account_id=b.account_id), now=STARTED
        )
    user = "u" + uuid.uuid4().hex[:8]
    radius = IdentityRow(kind="radius_user", value=user, account_id=a.account_id, secret="first")
    assert await prov.add_identity(radius, now=STARTED) is Outcome.CREATED
    changed = IdentityRow(kind="radius_user", value=user, account_id=a.account_id, secret="second")
    assert await prov.add_identity(changed, now=STARTED) is Outcome.UPDATED
    assert await store.resolve_identity("radius_user", user) == (a.account_id, "second")
    with pytest.raises(UnknownAccountError):
        await prov.add_identity(
            IdentityRow(kind="imsi", value="240071234567890", account_id=new_id()), now=STARTED
        )


async def test_bucket_add_is_idempotent_and_never_regrants(
    prov: Provisioning, store: BalanceStore, redis_url: str, key_prefix: str, demo: Plan
) -> None:
    now = datetime.now(UTC)
    record = account(demo)
    await prov.create_account(record, now=now)
    bucket = BucketRecord(
        bucket_id=f"{record.account_id}:promo", service="data", units=5000, expires_at=now + timedelta(days=3)
    )
    assert await prov.add_bucket(record.account_id, bucket, now=now) is Outcome.CREATED
    assert await prov.add_bucket(record.account_id, bucket, now=now) is Outcome.EXISTS
    views = {b.bucket_id: b for b in (await store.query(record.account_id)).buckets}
    assert views[bucket.bucket_id].units == 5000
    with pytest.raises(Conflict, match="different attributes"):
        bigger = BucketRecord(
            bucket_id=bucket.bucket_id, service="data", units=9000, expires_at=bucket.expires_at
        )
        await prov.add_bucket(record.account_id, bigger, now=now)
    with pytest.raises(InvalidInput, match="not in the future"):
        await prov.add_bucket(
            record.account_id,
            BucketRecord(bucket_id="old", service="data", units=1, expires_at=now - timedelta(seconds=1)),
            now=now,
        )


async def test_rebuild_restores_balance_identities_and_buckets(
    prov: Provisioning,
    store: BalanceStore,
    conn: asyncpg.Connection,
    redis_url: str,
    key_prefix: str,
    demo: Plan,
) -> None:
    now = datetime.now(UTC)
    record = account(demo, kind=AccountKind.POSTPAID, credit_limit=parse_money("25"))
    await prov.create_account(record, now=now)
    await prov.topup(record.account_id, parse_money("10"), "pay-a", now=now)
    await prov.topup(record.account_id, parse_money("2.5"), "pay-b", now=now)
    # what the charge sink writes: the top-ups once more (kind topup, not counted twice) and a debit
    await Ledger(conn).ensure_partitions([date(now.year, now.month, 1)])
    await conn.executemany(
        "insert into ledger_entries (entry_id, account_id, kind, service, units, amount, occurred_at)"
        " values ($1, $2, $3, $4, $5, $6, $7)",
        [
            (uuid.uuid4().hex, record.account_id, "topup", None, None, parse_money("10"), now),
            (uuid.uuid4().hex, record.account_id, "charge", "voice", 60, -parse_money("1.25"), now),
        ],
    )
    user = "u" + uuid.uuid4().hex[:8]
    await prov.add_identity(
        IdentityRow(kind="radius_user", value=user, account_id=record.account_id, secret="pw"), now=now
    )
    promo = BucketRecord(
        bucket_id=f"{record.account_id}:p", service="sms", units=10, expires_at=now + timedelta(days=1)
    )
    gone = BucketRecord(
        bucket_id=f"{record.account_id}:g", service="sms", units=10, expires_at=now + timedelta(seconds=1)
    )
    await prov.add_bucket(record.account_id, promo, now=now)
    await prov.add_bucket(record.account_id, gone, now=now)

    await forget_everything(redis_url, key_prefix)
    assert not await store.has_account(record.account_id)
    later = now + timedelta(seconds=2)  # the second bucket has expired by now
    result = await prov.rebuild(now=later)
    assert result.restored == result.accounts >= 1  # this prefix had nothing: every account came back

    view = await store.query(record.account_id)
    assert view.account == record
    assert view.balance == parse_money("11.25")
    ids = {b.bucket_id for b in view.buckets}
    assert promo.bucket_id in ids and gone.bucket_id not in ids
    assert await store.resolve_identity("radius_user", user) == (record.account_id, "pw")

    again = await prov.rebuild(now=later)
    assert again.restored == 0
    # the restored balance holds the top-ups: repeating one now credits nothing
    assert (await prov.topup(record.account_id, parse_money("10"), "pay-a", now=later)).duplicate
    assert (await store.query(record.account_id)).balance == parse_money("11.25")


async def test_operations_on_an_account_redis_lacks_say_so(
    prov: Provisioning, redis_url: str, key_prefix: str, demo: Plan
) -> None:
    record = account(demo)
    await prov.create_account(record, now=STARTED)
    await forget_everything(redis_url, key_prefix)
    with pytest.raises(NotInLiveStore, match="occ redis rebuild"):
        await prov.topup(record.account_id, 1_000_000, "x", now=STARTED)
    with pytest.raises(NotInLiveStore):
        await prov.set_status(record.account_id, AccountStatus.BLOCKED, now=STARTED)
