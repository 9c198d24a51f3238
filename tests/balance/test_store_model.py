"""The Lua money scripts against a plain-Python reference model (hypothesis stateful), on real Redis.

After every step: balance + open reservations == opening + credits - debits (conservation); the charge
stream accounts for every micro-unit that moved (the debit and its record are one atomic step); unit
buckets hold what the model says; prepaid reservations never take the balance below zero and postpaid
ones never below the credit limit.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from balance import wire
from balance.records import AccountKind, AccountRecord, AccountStatus, BucketRecord
from balance.settings import BalanceSettings, RedisSettings
from balance.store import (
    BalanceStore,
    EventApplied,
    EventNeedsView,
    StepApplied,
    StepNeedsQuote,
    StepNeedsView,
)
from tests.balance.helpers import item, step
from tests.conftest import REDIS_URL

SESSIONS = ("s1", "s2", "s3")
NOW_MS = 1_800_000_000_000
NOW = datetime.fromtimestamp(NOW_MS / 1000, UTC)
ITEMS = ("10", "20")
money = st.integers(min_value=0, max_value=1_000_000)


class StoreModel(RuleBasedStateMachine):
    """Model: the account's money, each open session's reservations, every key already used."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = "tm" + uuid.uuid4().hex[:10]
        self.store = self.run(
            BalanceStore.connect(RedisSettings(url=REDIS_URL, key_prefix=self.prefix), BalanceSettings())
        )
        self.limit = 0
        self.sms_units = 0  # unit bucket of the "sms" service
        self.bucket_count = 0
        self.balance = 0
        self.credits = 0
        self.debits = 0
        self.status = AccountStatus.ACTIVE
        self.sessions: dict[str, dict[str, int]] = {}  # session -> item -> reserved money
        self.versions: dict[str, int] = {}
        self.kept: set[str] = set()  # reaped sessions kept for continuation, not due again yet
        self.answers: dict[str, object] = {}
        self.counter = 0

    @initialize(postpaid=st.booleans(), limit=st.integers(0, 2_000_000))
    def open_account(self, postpaid: bool, limit: int) -> None:
        self.limit = limit if postpaid else 0
        kind = AccountKind.POSTPAID if postpaid else AccountKind.PREPAID
        record = AccountRecord(
            account_id="acct", kind=kind, currency="EUR", plan="demo", credit_limit=self.limit
        )
        self.run(self.store.put_account(record))

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        keys = self.run(self.store.link.execute("KEYS", f"{self.prefix}:*"))
        if keys:
            self.run(self.store.link.execute("DEL", *keys))
        self.run(self.store.close())
        self.loop.close()

    def key(self) -> str:
        self.counter += 1
        return f"k{self.counter}"

    @property
    def reserved(self) -> int:
        return sum(sum(items.values()) for items in self.sessions.values())

    @rule(amount=st.integers(min_value=1, max_value=5_000_000))
    def top_up(self, amount: int) -> None:
        key = self.key()
        result = self.run(self.store.credit("acct", amount, key=key, reason="topup", now=datetime.now(UTC)))
        assert not result.duplicate
        self.balance += amount
        self.credits += amount
        assert result.balance == self.balance
        again = self.run(self.store.credit("acct", amount, key=key, reason="topup", now=datetime.now(UTC)))
        assert again.duplicate and again.balance == self.balance

    @rule(
        session=st.sampled_from(SESSIONS),
        terminate=st.booleans(),
        plans=st.lists(
            st.tuples(st.sampled_from(ITEMS), st.integers(0, 600), money, st.integers(0, 600), money),
            min_size=1,
            max_size=len(ITEMS),
            unique_by=lambda t: t[0],
        ),
    )
    def session_step(
        self, session: str, terminate: bool, plans: list[tuple[str, int, int, int, int]]
    ) -> None:
        version = self.versions.get(session, 0)
        op = "T" if terminate else ("U" if session in self.sessions else "I")
        items = [
            item(i, used=u, money=m, reserve=0 if terminate else r, reserve_money=rm, following=1)
            for i, u, m, r, rm in plans
        ]
        key = self.key()
        outcome = self.run(self.store.session_step(step(key, session, op, version, items)))
        open_items = dict(self.sessions.get(session, {}))
        balance = self.balance
        expected_quote = False
        for i, _u, m, r, rm in plans:
            held = open_items.pop(i, 0)
            balance += held - m
            if not terminate and r > 0 and self.status is AccountStatus.ACTIVE:
                room = balance + self.limit
                if room < 0:
                    pass  # below the smallest grant (0 here): NO_MONEY, no quote round trip
                elif rm <= room:
                    balance -= rm
                    open_items[i] = rm
                else:
                    expected_quote = True
        if expected_quote:
            assert isinstance(outcome, StepNeedsQuote), outcome
            return
        assert isinstance(outcome, StepApplied), outcome
        assert not outcome.duplicate
        self.debits += sum(m for _, _, m, _, _ in plans)
        if terminate:
            # releases also the items the request did not mention
            balance += sum(open_items.values())
            self.sessions.pop(session, None)
            self.versions.pop(session, None)
            self.kept.discard(session)
        else:
            self.sessions[session] = open_items
            self.versions[session] = version + 1
            self.kept.discard(session)  # the step renewed its expiry
        self.balance = balance
        assert outcome.reply.bal == self.balance
        assert outcome.reply.rsv == self.reserved
        # the same key again: the first answer, nothing moved
        replay = self.run(self.store.session_step(step(key, session, op, version, items)))
        assert isinstance(replay, StepApplied) and replay.duplicate and replay.reply == outcome.reply

    @rule(units=st.integers(1, 3))
    def add_sms_bucket(self, units: int) -> None:
        self.bucket_count += 1
        bucket = BucketRecord(
            bucket_id=f"b{self.bucket_count}", service="sms", units=units, expires_at=NOW + timedelta(days=1)
        )
        assert self.run(self.store.add_bucket("acct", bucket))
        self.sms_units += units

    @rule(units=st.integers(1, 3), price=st.integers(0, 400_000))
    def sms_event(self, units: int, price: int) -> None:
        """Direct debit: buckets first; a partial cover is re-priced for the rest, as the service does."""
        key = self.key()

        def event(cover: int, money: int) -> wire.EventStep:
            return wire.EventStep(
                k=key,
                now=NOW_MS,
                ittl=600,
                aid="acct",
                plan="demo",
                s="sms",
                i="sms",
                u=units,
                c=cover,
                m=money,
            )

        outcome = self.run(self.store.event(event(-1, price * units)))
        cover = min(units, self.sms_units)
        money = 0 if cover == units else price * (units - cover)
        if 0 < cover < units:
            assert isinstance(outcome, EventNeedsView) and outcome.cover == cover
            outcome = self.run(self.store.event(event(cover, money)))
        assert isinstance(outcome, EventApplied) and not outcome.duplicate
        if self.status is not AccountStatus.ACTIVE:
            assert outcome.reply.code == "DENIED"
        elif money > self.balance + self.limit:
            assert outcome.reply.code == "NO_MONEY"
        else:
            assert (outcome.reply.code, outcome.reply.m, outcome.reply.bu) == ("OK", money, cover)
            self.sms_units -= cover
            self.balance -= money
            self.debits += money
        assert outcome.reply.bal == self.balance

    @rule(session=st.sampled_from(SESSIONS))
    def stale_view_moves_nothing(self, session: str) -> None:
        outcome = self.run(
            self.store.session_step(step(self.key(), session, "U", 999, [item("10", used=5, money=7)]))
        )
        assert isinstance(outcome, StepNeedsView)
        assert outcome.view.v == self.versions.get(session, 0)

    @precondition(lambda self: bool(self.sessions))
    @rule()
    def reaper_returns_expired_reservations(self) -> None:
        """Due sessions holding money get it back and keep their continuation; the others are deleted."""
        far = datetime.fromtimestamp(1_800_000_000 + 3600, UTC)
        reaped = self.run(self.store.reap(far))
        due = [s for s in self.sessions if s not in self.kept]
        holding = [s for s in due if any(self.sessions[s].values())]
        assert reaped == len(holding)
        for session in due:
            self.balance += sum(self.sessions[session].values())
            if session in holding:
                self.sessions[session] = {}
                self.kept.add(session)
            else:
                del self.sessions[session]
                self.versions.pop(session, None)

    # mostly active, so that reservations happen often enough to meet every other rule
    @rule(
        status=st.sampled_from(
            [AccountStatus.ACTIVE] * 4 + [s for s in AccountStatus if s is not AccountStatus.ACTIVE]
        )
    )
    def set_status(self, status: AccountStatus) -> None:
        self.run(self.store.set_status("acct", status))
        self.status = status

    @invariant()
    def conservation(self) -> None:
        view = self.run(self.store.query("acct"))
        assert view.balance == self.balance
        assert view.reserved == self.reserved
        assert view.balance + view.reserved == self.credits - self.debits
        assert sum(r.money for r in view.reservations) == view.reserved
        assert sum(b.units for b in view.buckets if b.service == "sms") == self.sms_units

    @invariant()
    def every_micro_unit_that_moved_has_its_charge_record(self) -> None:
        entries = self.run(
            self.store.link.execute("XRANGE", self.store.keys.account("acct").stream, "-", "+")
        )
        moved = 0
        for _, fields in entries:
            record = {fields[i]: fields[i + 1] for i in range(0, len(fields), 2)}
            moved += int(record[b"m"])
        assert moved == self.credits - self.debits


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
