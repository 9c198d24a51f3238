"""The live money store: Redis keys, atomic Lua scripts, typed results.

Nothing outside ``balance`` touches Redis keys or Lua; callers go through this class or the charging
service built on it (``balance.service``). Every method that moves money runs one script call carrying an
idempotency key: a repeated key returns the first answer and moves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from balance import metrics, scripts, wire
from balance.keys import KeySpace
from balance.link import ConnectionLost, RedisError, RedisLink, open_link, redact
from balance.records import (
    AccountKind,
    AccountRecord,
    AccountStatus,
    AccountView,
    BucketRecord,
    BucketView,
    CreditResult,
    ReservationView,
)
from balance.scripts import Script, Status
from balance.settings import BalanceSettings, RedisSettings

MAX_MONEY = 2**53 - 1  # Lua numbers are doubles: amounts beyond this lose digits


class StoreUnavailable(Exception):
    """Redis cannot be reached or failed; the idempotency key makes a retry safe."""


class UnknownAccount(Exception):
    """The account does not exist in the live store."""


class Refused(ValueError):
    """The store refused a request as invalid (negative or duplicate items, numbers out of range)."""


class StepApplied(msgspec.Struct, frozen=True):
    reply: wire.StepReply
    duplicate: bool


class StepNeedsView(msgspec.Struct, frozen=True):
    view: wire.SessionView


class StepNeedsQuote(msgspec.Struct, frozen=True):
    available: dict[str, int]  # item -> money the item could still use


class StepOutOfOrder(msgspec.Struct, frozen=True):
    """The request's sequence number is not above the session's last one: refused, nothing moved."""


StepOutcome = StepApplied | StepNeedsView | StepNeedsQuote | StepOutOfOrder


class EventApplied(msgspec.Struct, frozen=True):
    reply: wire.EventReply
    duplicate: bool


class EventNeedsView(msgspec.Struct, frozen=True):
    plan: str
    status: str
    cover: int  # bucket units that will cover part of the event
    counter: int  # the tier counter of the event's service (0 when not asked)


class Notification(msgspec.Struct, frozen=True):
    kind: str  # credit | status
    account_id: str
    status: str = ""

    @classmethod
    def parse(cls, data: bytes) -> Notification | None:
        parts = data.decode(errors="replace").split("|")
        if parts[0] == "credit" and len(parts) == 2:
            return cls(kind="credit", account_id=parts[1])
        if parts[0] == "status" and len(parts) == 3:
            return cls(kind="status", account_id=parts[1], status=parts[2])
        return None


_SUMMARY_FIELDS = ("kind", "cur", "plan", "st", "lim", "bal", "rsv", "bkt")


def _view(
    account_id: str,
    fields: dict[str, bytes],
    reservations: tuple[ReservationView, ...],
    counters: dict[str, int],
) -> AccountView:
    record = AccountRecord(
        account_id=account_id,
        kind=AccountKind(fields["kind"].decode()),
        currency=fields["cur"].decode(),
        plan=fields["plan"].decode(),
        status=AccountStatus(fields["st"].decode()),
        credit_limit=int(fields["lim"]),
    )
    buckets = [
        BucketView(
            bucket_id=str(bucket_id),
            service=b["s"],
            units=b["n"],
            reserved=b["r"],
            expires_at_ms=b["e"],
            priority=b["p"],
        )
        for bucket_id, b in wire.mapping(msgspec.msgpack.decode(fields.get("bkt", b"\x80"))).items()
    ]
    buckets.sort(key=lambda b: (b.priority, b.expires_at_ms, b.bucket_id))
    return AccountView(
        account=record,
        balance=int(fields["bal"]),
        reserved=int(fields["rsv"]),
        buckets=tuple(buckets),
        reservations=reservations,
        counters=counters,
    )


async def cancel_listener(task: asyncio.Task[Any], timeout: float = 2.0) -> bool:
    """Cancel a task consuming :meth:`BalanceStore.notifications` and wait, at most ``timeout`` seconds,
    until it is done. redis-py can swallow a cancellation that lands while it connects, so the task is
    cancelled again until it ends. False when it did not end in time."""
    for _ in range(max(1, int(timeout / 0.05))):
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
        if task.done():
            return True
    return False


async def _close_pubsub(pubsub: Any, client: Any) -> None:
    await pubsub.aclose()
    await client.aclose()


def _closed(value: bytes | None) -> tuple[int, int] | None:
    """A closed-session mark "<total>|<start>" as (total, start)."""
    if value is None:
        return None
    total, _, started = value.decode().partition("|")
    return int(total), int(started or 0)


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class BalanceStore:
    def __init__(self, link: RedisLink, redis: RedisSettings, balance: BalanceSettings) -> None:
        self.link = link
        self.keys = KeySpace(redis.key_prefix, redis.partitions)
        self.settings = balance
        self._redis = redis
        self._url = redact(redis.url)

    @classmethod
    async def connect(
        cls, redis: RedisSettings, balance: BalanceSettings, *, link: RedisLink | None = None
    ) -> BalanceStore:
        """Connect and load the scripts; raises StoreUnavailable with a one-line reason."""
        if link is None:
            link = open_link(redis.url, cluster=redis.cluster, timeout=redis.connect_timeout_s)
        store = cls(link, redis, balance)
        try:
            await store.ping()
            if not redis.cluster:
                for script in scripts.ALL:
                    await link.execute("SCRIPT", "LOAD", script.source)
        except StoreUnavailable:
            await link.close()
            raise
        except RedisError as exc:
            await link.close()
            raise StoreUnavailable(str(exc)) from None
        return store

    async def close(self) -> None:
        await self.link.close()

    async def ping(self) -> None:
        try:
            await self.link.execute("PING")
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from None

    async def _script(self, script: Script, keys: Sequence[str], args: Sequence[bytes | str | int]) -> Any:
        started = time.perf_counter()
        try:
            reply = await self.link.run_script(script, keys, args)
        except ConnectionLost as exc:
            metrics.REDIS_ERRORS.labels(kind="connection").inc()
            raise StoreUnavailable(str(exc)) from None
        except RedisError as exc:
            metrics.REDIS_ERRORS.labels(kind="reply").inc()
            raise StoreUnavailable(f"Redis failed script {script.name}: {exc}") from None
        metrics.script_seconds(script.name).observe(time.perf_counter() - started)
        return reply

    # --- money scripts -------------------------------------------------------------------------
    async def session_step(self, step: wire.SessionStep) -> StepOutcome:
        """Commit used units and reserve the next grants of every item of one session, atomically."""
        k = self.keys.account(step.aid)
        status, payload = await self._script(
            scripts.SESSION,
            (k.account, k.reaper, k.idempotency(f"s:{step.sid}", step.k), k.stream),
            (wire.encode_request(step),),
        )
        if status == Status.OK or status == Status.DUPLICATE:
            return StepApplied(wire.decode_step_reply(payload), status == Status.DUPLICATE)
        if status == Status.NEED_VIEW:
            return StepNeedsView(wire.decode_session_view(payload))
        if status == Status.NEED_QUOTE:
            return StepNeedsQuote(wire.decode_quotes(payload))
        if status == Status.UNKNOWN_ACCOUNT:
            raise UnknownAccount(step.aid)
        if status == Status.REFUSED:
            if payload == b"order":
                return StepOutOfOrder()
            raise Refused(f"session step refused: {payload.decode()}")
        raise StoreUnavailable(f"session script answered status {status}")

    async def event(self, step: wire.EventStep) -> EventApplied | EventNeedsView:
        k = self.keys.account(step.aid)
        status, payload = await self._script(
            scripts.EVENT, (k.account, k.idempotency("e", step.k), k.stream), (wire.encode_request(step),)
        )
        if status == Status.OK or status == Status.DUPLICATE:
            return EventApplied(wire.decode_event_reply(payload), status == Status.DUPLICATE)
        if status == Status.NEED_VIEW:
            view = msgspec.msgpack.decode(payload)
            return EventNeedsView(
                plan=view["plan"], status=view["st"], cover=view["cover"], counter=view["cy"]
            )
        if status == Status.UNKNOWN_ACCOUNT:
            raise UnknownAccount(step.aid)
        if status == Status.REFUSED:
            raise Refused(f"event refused: {payload.decode()}")
        raise StoreUnavailable(f"event script answered status {status}")

    async def credit(
        self,
        account_id: str,
        amount: int,
        *,
        key: str,
        reason: str,
        now: datetime,
        service: str = "",
        reference: str = "",
    ) -> CreditResult:
        """Money in (top-up, refund, adjustment) with its charge record; a repeated key credits once."""
        if not 0 < amount <= MAX_MONEY:
            raise ValueError(f"credit amount must be between 1 and {MAX_MONEY} micro-units, got {amount}")
        if reason not in ("topup", "refund", "adjustment", "billed"):
            raise ValueError(f"unknown credit reason {reason!r}")
        k = self.keys.account(account_id)
        step = wire.CreditStep(
            k=key,
            now=to_ms(now),
            ittl=0,  # kept for good
            aid=account_id,
            kind=reason,
            m=amount,
            s=service,
            ref=reference or key,
        )
        return await self._move_money(
            account_id,
            scripts.CREDIT,
            (k.account, k.idempotency("c", key), k.stream),
            (wire.encode_request(step), self.keys.notifications),
            lambda _: f"credit refused: the balance would exceed {MAX_MONEY} micro-units",
        )

    async def debit_fee(
        self, account_id: str, amount: int, *, key: str, reference: str, now: datetime
    ) -> CreditResult:
        """A fee out of the account with its charge record (kind "fee"); a repeated key debits once.
        Raises Refused when the available money plus the credit limit cannot pay it (nothing moves)."""
        if not 0 < amount <= MAX_MONEY:
            raise ValueError(f"fee must be between 1 and {MAX_MONEY} micro-units, got {amount}")
        k = self.keys.account(account_id)
        step = wire.CreditStep(
            k=key, now=to_ms(now), ittl=0, aid=account_id, kind="fee", m=amount, s="fees", ref=reference
        )
        return await self._move_money(
            account_id,
            scripts.FEE,
            (k.account, k.idempotency("f", key), k.stream),
            (wire.encode_request(step),),
            lambda why: "insufficient funds" if why == b"funds" else "fee out of range",
        )

    async def _move_money(
        self,
        account_id: str,
        script: Script,
        keys: tuple[str, str, str],
        args: tuple[bytes | str, ...],
        refused: Callable[[bytes], str],
    ) -> CreditResult:
        """Run a credit or fee script (keys: account, idempotency key, stream); ``refused`` words a
        refusal from the script's reason."""
        status, payload = await self._script(script, keys, args)
        if status == Status.UNKNOWN_ACCOUNT:
            raise UnknownAccount(account_id)
        if status == Status.REFUSED:
            raise Refused(refused(payload))
        reply = wire.decode_credit_reply(payload)
        return CreditResult(balance=reply.bal, duplicate=status == Status.DUPLICATE)

    async def reap(self, now: datetime, *, limit: int = 500) -> int:
        """Return reservations whose time ran out, in every partition; the number of sessions reaped."""
        now_ms = to_ms(now)
        reaped = 0
        for partition in range(self.keys.partitions):
            index = self.keys.reaper(partition)
            due = await self._execute("ZRANGEBYSCORE", index, "-inf", now_ms, "LIMIT", 0, limit)
            by_account: dict[str, list[str]] = {}
            for member in due:
                account_id, _, session_id = member.decode().partition("|")
                by_account.setdefault(account_id, []).append(session_id)
            for account_id, sessions in by_account.items():
                k = self.keys.account(account_id)
                reaped += int(
                    await self._script(
                        scripts.REAP,
                        (k.account, k.reaper, k.stream),
                        (now_ms, account_id, self.settings.session_keep_s * 1000, *sessions),
                    )
                )
        if reaped:
            metrics.RESERVATIONS_REAPED.inc(reaped)
        return reaped

    async def _execute(self, *args: bytes | str | int) -> Any:
        try:
            return await self.link.execute(*args)
        except RedisError as exc:
            metrics.REDIS_ERRORS.labels(
                kind="connection" if isinstance(exc, ConnectionLost) else "reply"
            ).inc()
            raise StoreUnavailable(str(exc)) from None

    # --- provisioning ---------------------------------------------------------------------------
    async def _account_script(self, mode: str, record: AccountRecord, balance: int = 0) -> int:
        if not 0 <= record.credit_limit <= MAX_MONEY or abs(balance) > MAX_MONEY:
            raise ValueError("money out of range")
        k = self.keys.account(record.account_id)
        result = await self._script(
            scripts.ACCOUNT,
            (k.account,),
            (
                mode,
                record.kind.value,
                record.currency,
                record.plan,
                record.status.value,
                record.credit_limit,
                balance,
                self.keys.notifications,
                record.account_id,
            ),
        )
        return int(result)

    async def put_account(self, record: AccountRecord) -> None:
        """Create the account (balance 0) or update its attributes; never moves money."""
        await self._account_script("put", record)

    async def restore_account(self, record: AccountRecord, balance: int) -> bool:
        """Create the account with a given balance only if absent (``occ redis rebuild``); True if created."""
        return await self._account_script("restore", record, balance) == 1

    async def has_account(self, account_id: str) -> bool:
        return bool(await self._execute("EXISTS", self.keys.account(account_id).account))

    async def set_status(self, account_id: str, status: AccountStatus) -> None:
        k = self.keys.account(account_id)
        done = await self._script(
            scripts.ACCOUNT,
            (k.account,),
            ("status", "", "", "", status.value, 0, 0, self.keys.notifications, account_id),
        )
        if int(done) == 0:
            raise UnknownAccount(account_id)

    async def add_bucket(self, account_id: str, bucket: BucketRecord) -> bool:
        """Add a unit bucket; idempotent by bucket_id (False when it already existed)."""
        if bucket.units <= 0:
            raise ValueError("a bucket needs a positive number of units")
        k = self.keys.account(account_id)
        added = int(
            await self._script(
                scripts.BUCKET,
                (k.account,),
                (bucket.bucket_id, bucket.service, bucket.units, to_ms(bucket.expires_at), bucket.priority),
            )
        )
        if added < 0:
            raise UnknownAccount(account_id)
        return added == 1

    async def query(self, account_id: str) -> AccountView:
        """One consistent snapshot of money, buckets and open reservations; raises UnknownAccount."""
        k = self.keys.account(account_id)
        flat = await self._script(scripts.QUERY, (k.account,), ())
        if not flat:
            raise UnknownAccount(account_id)
        fields: dict[str, bytes] = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
        reservations = []
        for field, value in sorted(fields.items()):
            if not field.startswith("s:"):
                continue
            state = wire.decode_session_state(value)
            for item_id, item in sorted(state.it.items()):
                if item.g or item.rm or item.rb:
                    reservations.append(
                        ReservationView(
                            session_id=field[2:],
                            item=item_id,
                            service=item.s,
                            money=item.rm,
                            units=item.g,
                            bucket_units=item.rb,
                            expires_at_ms=state.exp,
                        )
                    )
        counters = {f: int(v) for f, v in fields.items() if f.startswith("cy:")}
        return _view(account_id, fields, tuple(reservations), counters)

    async def summary(self, account_id: str) -> AccountView:
        """The account's attributes, money and buckets without its sessions (``reservations`` and
        ``counters`` empty): one HMGET however many sessions the account keeps, for per-request checks
        such as RADIUS authorization. Raises UnknownAccount."""
        values = await self._execute("HMGET", self.keys.account(account_id).account, *_SUMMARY_FIELDS)
        if values[0] is None:
            raise UnknownAccount(account_id)
        fields = {
            name: value for name, value in zip(_SUMMARY_FIELDS, values, strict=True) if value is not None
        }
        return _view(account_id, fields, (), {})

    # --- sessions of a protocol front: which account a session id belongs to -------------------------
    async def put_session_owner(self, session_id: str, account_id: str, ttl_s: int) -> None:
        await self._execute("SET", self.keys.session_owner(session_id), account_id, "EX", ttl_s)

    async def session_owner(self, session_id: str) -> str | None:
        owner = await self._execute("GET", self.keys.session_owner(session_id))
        return None if owner is None else str(owner.decode())

    # --- the sessions a RADIUS NAS holds (Accounting-On/Off closes them all) -------------------------
    async def put_nas_session(self, nas: str, session_id: str, value: str, ttl_s: int) -> None:
        """Remember an open session of ``nas``; the index lives ``ttl_s`` past its latest change."""
        key = self.keys.nas_sessions(nas)
        # one round trip: the link pipelines commands issued together
        await asyncio.gather(
            self._execute("HSET", key, session_id, value), self._execute("EXPIRE", key, ttl_s)
        )

    async def nas_sessions(self, nas: str) -> dict[str, str]:
        raw = await self._execute("HGETALL", self.keys.nas_sessions(nas))
        if isinstance(raw, dict):  # redis-py's links parse HGETALL into a dict
            items = list(raw.items())
        else:
            flat = iter(raw or ())
            items = list(zip(flat, flat, strict=False))
        return {k.decode(): v.decode() for k, v in items}

    async def drop_nas_session(self, nas: str, session_id: str) -> None:
        await self._execute("HDEL", self.keys.nas_sessions(nas), session_id)

    # --- closed sessions of clients that report running totals ---------------------------------------
    async def mark_closed(self, session_id: str, total: int, started: int, ttl_s: int) -> None:
        """Remember the last running total of a session that ended, and when it started (Unix seconds),
        for ``ttl_s``: a report of it arriving later is charged only for what it adds."""
        await self._execute("SET", self.keys.closed_session(session_id), f"{total}|{started}", "EX", ttl_s)

    async def closed_total(self, session_id: str) -> tuple[int, int] | None:
        """(last total, start) of a session that ended, or None."""
        return _closed(await self._execute("GET", self.keys.closed_session(session_id)))

    async def mark_closed_first(
        self, session_id: str, total: int, started: int, ttl_s: int
    ) -> tuple[int, int] | None:
        """:meth:`mark_closed` unless a mark is there already: then that mark's (last total, start) and
        nothing written; None once the mark is written."""
        found = await self._script(
            scripts.CLOSING, (self.keys.closed_session(session_id),), (f"{total}|{started}", ttl_s)
        )
        return _closed(found)

    async def clear_closed(self, session_id: str) -> None:
        """A new session begins under a reused id."""
        await self._execute("DEL", self.keys.closed_session(session_id))

    async def session_state(self, account_id: str, session_id: str) -> wire.SessionState | None:
        """What the store holds for an open (or kept) session: its start, its items' running counts."""
        raw = await self._execute("HGET", self.keys.account(account_id).account, f"s:{session_id}")
        return None if raw is None else wire.decode_session_state(raw)

    async def notifications(self) -> AsyncIterator[Notification]:
        """Credits and status changes as the scripts publish them (for RAR/ASR and Disconnect).

        Runs until cancelled; reconnects after Redis errors. Delivery is at most once: a server that was
        disconnected learns nothing of what happened meanwhile.
        """
        import redis.asyncio as aioredis
        import redis.exceptions

        while True:
            client = aioredis.Redis.from_url(self._redis.url.split(",")[0])
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.keys.notifications)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    notice = Notification.parse(message["data"])
                    if notice is not None:
                        yield notice
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                await asyncio.sleep(1.0)
            finally:
                # redis-py's close can wait forever when cancelled mid-subscribe: bound it
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(_close_pubsub(pubsub, client), 1.0)

    # --- identities (not money: plain keys outside the account partitions) ---------------------------
    async def put_identity(self, kind: str, value: str, account_id: str, secret: str | None = None) -> None:
        key = self.keys.identity(kind, value)
        if secret is None:
            await self._execute("HSET", key, "account", account_id)
            await self._execute("HDEL", key, "secret")
        else:
            await self._execute("HSET", key, "account", account_id, "secret", secret)

    async def resolve_identity(self, kind: str, value: str) -> tuple[str, str | None] | None:
        """(account_id, secret) for an identity, or None."""
        account, secret = await self._execute("HMGET", self.keys.identity(kind, value), "account", "secret")
        if account is None:
            return None
        return account.decode(), secret.decode() if secret is not None else None
