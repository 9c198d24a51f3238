"""The RADIUS server over real UDP sockets on real Redis: authentication, Access-Accept contents, accounting
charged to the micro-unit, Disconnect-Request when the money runs out, duplicates, and every reason a
datagram is dropped.

The demo tariff charges data at 0.01 EUR per MiB (per started KiB); the access service is ``data`` with a
default grant of 10 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import msgspec
import pytest
from prometheus_client import REGISTRY

from aaa import codec, mschap
from aaa.attributes import Attrs
from aaa.server import RadiusServer, build_context
from aaa.settings import ClientSettings, PlanAccess, ProfileSettings, RadiusSettings
from balance.records import AccountKind, AccountRecord, AccountStatus
from balance.service import ChargingService
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from rating_core.tariff import Catalog
from rating_core.tariff_file import load_tariff_file

SECRET = b"testing123"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EUR = 1_000_000
MIB = 1 << 20
PER_MIB = EUR // 100  # the demo data price
GRANT = 10 * MIB
PROFILES = {
    "generic": ProfileSettings(),
    "mikrotik": ProfileSettings(
        reply={"Mikrotik-Rate-Limit": "{rate_limit}"},
        data_quota="Mikrotik-Total-Limit",
        data_quota_gigawords="Mikrotik-Total-Limit-Gigawords",
    ),
}


def radius_settings(coa_port: int, **changes: object) -> RadiusSettings:
    base = RadiusSettings(
        listen=["127.0.0.1"],
        auth_port=0,
        acct_port=0,
        clients=[
            ClientSettings(address="127.0.0.1", secret=SECRET.decode(), coa_port=coa_port, profile="mikrotik")
        ],
        interim_interval_s=60,
        coa_timeout_s=0.2,
        coa_retries=1,
        plans={
            "demo": PlanAccess(rate_limit="10M/10M", idle_timeout_s=600),
            "demo-plus": PlanAccess(rate_limit="50M/50M"),
        },
        profiles=PROFILES,
    )
    return msgspec.structs.replace(base, **changes)


class Nas:
    """A NAS: sends requests to the server's auth/acct ports, and takes Disconnect-Requests on its own."""

    def __init__(
        self, server: RadiusServer, attrs: Attrs, secret: bytes = SECRET, source: str = "127.0.0.1"
    ) -> None:
        self.server = server
        self.a = attrs
        self.secret = secret
        self.source = source
        self.identifier = 0

    def port(self, kind: str) -> int:
        return self.server.ports[(kind, "127.0.0.1")]

    async def exchange(self, data: bytes, kind: str, timeout: float = 2.0) -> bytes | None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, reply: bytes, addr: tuple[str, int]) -> None:
                if not answer.done():
                    answer.set_result(reply)

        transport, _ = await loop.create_datagram_endpoint(
            Protocol, local_addr=(self.source, 0), remote_addr=("127.0.0.1", self.port(kind))
        )
        try:
            transport.sendto(data)
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            return None
        finally:
            transport.close()

    async def exchange_twice(self, data: bytes, kind: str) -> tuple[bytes, bytes]:
        """Send ``data``, await the reply, send it again from the same port: a NAS retransmitting."""
        loop = asyncio.get_running_loop()
        replies: asyncio.Queue[bytes] = asyncio.Queue()

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, reply: bytes, addr: tuple[str, int]) -> None:
                replies.put_nowait(reply)

        transport, _ = await loop.create_datagram_endpoint(
            Protocol, local_addr=(self.source, 0), remote_addr=("127.0.0.1", self.port(kind))
        )
        try:
            transport.sendto(data)
            first = await asyncio.wait_for(replies.get(), 2)
            transport.sendto(data)
            return first, await asyncio.wait_for(replies.get(), 2)
        finally:
            transport.close()

    def next_id(self) -> int:
        self.identifier = (self.identifier + 1) & 0xFF
        return self.identifier

    def access_request(
        self,
        user: str,
        *,
        password: str | None = None,
        extra: Sequence[tuple[int, bytes]] = (),
        ma: bool = True,
    ) -> bytes:
        authenticator = os.urandom(16)
        attributes = [(self.a.user_name, user.encode()), *extra]
        if password is not None:
            attributes.append(
                (self.a.user_password, codec.hide_password(password.encode(), self.secret, authenticator))
            )
        return codec.sign_request(
            codec.ACCESS_REQUEST,
            self.next_id(),
            attributes,
            self.secret,
            self.a.framing,
            authenticator=authenticator,
            message_authenticator=ma,
        )

    async def access(self, user: str, **kwargs: object) -> codec.Packet | None:
        request = self.access_request(user, **kwargs)  # type: ignore[arg-type]
        reply = await self.exchange(request, "auth")
        if reply is None:
            return None
        assert codec.response_ok(reply, request[4:20], self.secret)
        assert codec.message_authenticator_ok(reply, self.secret, self.a.framing, request[4:20]) is True
        return codec.decode(reply, self.a.framing)

    def accounting_request(self, status: int, session: str, user: str = "alice", **values: int) -> bytes:
        a = self.a
        attributes = [
            (a.acct_status_type, status.to_bytes(4)),
            (a.acct_session_id, session.encode()),
            (a.user_name, user.encode()),
            (a.nas_ip_address, bytes((127, 0, 0, 1))),
        ]
        for name, value in values.items():
            attributes.append((getattr(a, name), value.to_bytes(4)))
        return codec.sign_request(
            codec.ACCOUNTING_REQUEST,
            self.next_id(),
            attributes,
            self.secret,
            a.framing,
            message_authenticator=False,
        )

    async def account(self, status: int, session: str, **values: int) -> bool:
        request = self.accounting_request(status, session, **values)
        reply = await self.exchange(request, "acct")
        if reply is None:
            return False
        assert reply[0] == codec.ACCOUNTING_RESPONSE
        assert codec.response_ok(reply, request[4:20], self.secret)
        return True


def octets(total: int) -> dict[str, int]:
    return {"acct_input_octets": total & 0xFFFFFFFF, "acct_input_gigawords": total >> 32}


@contextlib.asynccontextmanager
async def connected_store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    """The store the RADIUS tests charge: a 10 MiB default grant for data."""
    s = await BalanceStore.connect(
        RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings(default_grants={"data": GRANT})
    )
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    async with connected_store(redis_url, key_prefix) as s:
        yield s


class DisconnectListener(asyncio.DatagramProtocol):
    """The NAS's Disconnect/CoA port: queues each request and answers it (ACK, or NAK with Error-Cause)."""

    def __init__(self, attrs: Attrs) -> None:
        self.a = attrs
        self.received: asyncio.Queue[codec.Packet] = asyncio.Queue()
        self.answer = codec.DISCONNECT_ACK
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert codec.request_digest_ok(data, SECRET)
        answer = self.answer if data[0] == codec.DISCONNECT_REQUEST else codec.COA_ACK
        assert codec.message_authenticator_ok(data, SECRET, self.a.framing) is True
        packet = codec.decode(data, self.a.framing)
        self.received.put_nowait(packet)
        extra = (
            []
            if answer in (codec.DISCONNECT_ACK, codec.COA_ACK)
            else [(self.a.error_cause, (503).to_bytes(4))]
        )
        assert self.transport is not None
        self.transport.sendto(codec.sign_response(answer, packet, extra, SECRET, self.a.framing), addr)


@contextlib.asynccontextmanager
async def serving(store: BalanceStore, **changes: object) -> AsyncIterator[tuple[Nas, DisconnectListener]]:
    catalog = Catalog(load_tariff_file("config/tariffs/demo.toml"))
    charging = ChargingService(store, catalog, store.settings, clock=lambda: NOW)
    loop = asyncio.get_running_loop()
    probe = build_context(radius_settings(0), charging)
    listener = DisconnectListener(probe.attrs)
    nas_transport, _ = await loop.create_datagram_endpoint(lambda: listener, local_addr=("127.0.0.1", 0))
    coa_port = nas_transport.get_extra_info("sockname")[1]
    ctx = build_context(radius_settings(coa_port, **changes), charging, clock=lambda: NOW)
    server = RadiusServer(ctx)
    await server.start()
    try:
        yield Nas(server, ctx.attrs), listener
    finally:
        await server.stop(1.0)
        nas_transport.close()


async def subscriber(store: BalanceStore, account: str, money: int, **record: object) -> None:
    await store.put_account(
        AccountRecord(account_id=account, kind=AccountKind.PREPAID, currency="EUR", plan="demo", **record)  # type: ignore[arg-type]
    )
    if money:
        await store.credit(account, money, key=f"{account}-opening", reason="topup", now=NOW)
    await store.put_identity("radius_user", account, account, f"{account}-secret")


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("occ_radius_dropped_total", {"reason": reason}) or 0.0


async def spent(store: BalanceStore, account: str, opening: int) -> tuple[int, int]:
    view = await store.query(account)
    return opening - view.balance - view.reserved, view.reserved


# ---- authentication and authorization -----------------------------------------------------------------


async def test_pap_chap_and_mschapv2_accept_with_the_plan_and_balance_in_the_reply(
    store: BalanceStore,
) -> None:
    await subscriber(store, "alice", 10 * EUR)
    async with serving(store) as (nas, _):
        a = nas.a
        accept = await nas.access("alice", password="alice-secret")
        assert accept is not None and accept.code == codec.ACCESS_ACCEPT
        assert accept.get(a.class_) == b"occ:alice"
        assert accept.get(a.acct_interim_interval) == (60).to_bytes(4)
        assert accept.get(a.idle_timeout) == (600).to_bytes(4)
        d = nas.server.ctx.dictionary
        assert accept.get(d.key("Mikrotik-Rate-Limit")) == b"10M/10M"
        # 10.00 EUR buy 1000 MiB at 0.01 per MiB
        assert accept.get(d.key("Mikrotik-Total-Limit")) == (1000 * MIB).to_bytes(4)
        assert accept.get(d.key("Mikrotik-Total-Limit-Gigawords")) is None

        challenge = os.urandom(16)
        chap = b"\x05" + hashlib.md5(b"\x05alice-secret" + challenge).digest()
        accept = await nas.access("alice", extra=[(a.chap_password, chap), (a.chap_challenge, challenge)])
        assert accept is not None and accept.code == codec.ACCESS_ACCEPT

        auth_challenge, peer_challenge = os.urandom(16), os.urandom(16)
        nt = mschap.generate_nt_response(auth_challenge, peer_challenge, "alice", "alice-secret")
        response = b"\x01\x00" + peer_challenge + bytes(8) + nt
        request = nas.access_request(
            "alice", extra=[(a.ms_chap_challenge, auth_challenge), (a.ms_chap2_response, response)]
        )
        reply = await nas.exchange(request, "auth")
        assert reply is not None
        accept = codec.decode(reply, a.framing)
        assert accept.code == codec.ACCESS_ACCEPT
        expected = mschap.authenticator_response("alice-secret", nt, peer_challenge, auth_challenge, "alice")
        assert accept.get(a.ms_chap2_success) == b"\x01" + expected.encode()
        send_key = accept.get(a.ms_mppe_send_key)
        assert send_key is not None
        key = mschap.decrypt_mppe_key(SECRET, request[4:20], send_key)
        master = mschap.master_key(mschap.hash_nt_password_hash(mschap.nt_password_hash("alice-secret")), nt)
        assert key == mschap.asymmetric_start_key(master, 16, is_send=True, is_server=True)


async def test_a_time_rated_service_gets_the_session_timeout_the_balance_affords(store: BalanceStore) -> None:
    await subscriber(store, "alice", EUR)
    async with serving(store, service="voice") as (nas, _):
        accept = await nas.access("alice", password="alice-secret")
        assert accept is not None and accept.code == codec.ACCESS_ACCEPT
        # peak voice to anywhere: 0.20 setup + 0.50 per started minute, so 1.00 EUR buys one minute
        assert accept.get(nas.a.session_timeout) == (60).to_bytes(4)
        assert accept.get(nas.server.ctx.dictionary.key("Mikrotik-Total-Limit")) is None


@pytest.mark.parametrize(
    ("user", "password", "status", "money", "message"),
    [
        ("alice", "wrong", AccountStatus.ACTIVE, 10 * EUR, b"wrong password"),
        ("nobody", "x", AccountStatus.ACTIVE, 10 * EUR, b"unknown user"),
        ("alice", "alice-secret", AccountStatus.SUSPENDED, 10 * EUR, b"account suspended"),
        ("alice", "alice-secret", AccountStatus.ACTIVE, 0, b"no credit"),
    ],
    ids=["wrong-password", "unknown-user", "suspended", "no-money"],
)
async def test_rejects_say_why(
    store: BalanceStore, user: str, password: str, status: AccountStatus, money: int, message: bytes
) -> None:
    await subscriber(store, "alice", money, status=status)
    async with serving(store) as (nas, _):
        reject = await nas.access(user, password=password)
        assert reject is not None and reject.code == codec.ACCESS_REJECT
        assert reject.get(nas.a.reply_message) == message


# ---- accounting --------------------------------------------------------------------------------------


async def test_a_prepaid_data_session_is_charged_to_the_micro_unit_then_disconnected(
    store: BalanceStore,
) -> None:
    await subscriber(store, "alice", EUR // 2)  # 0.50 EUR: 50 MiB
    async with serving(store) as (nas, nas_port):
        a = nas.a
        assert await nas.account(a.status_start, "s1")
        assert await spent(store, "alice", EUR // 2) == (0, GRANT // MIB * PER_MIB)
        assert await nas.account(a.status_interim, "s1", **octets(20 * MIB), acct_session_time=60)
        assert (await spent(store, "alice", EUR // 2))[0] == 20 * PER_MIB
        assert await nas.account(a.status_interim, "s1", **octets(45 * MIB), acct_session_time=120)
        assert (await spent(store, "alice", EUR // 2))[0] == 45 * PER_MIB
        assert nas_port.received.empty()
        # 5 MiB of money left: the grant shrinks to it; past it, nothing more can be granted
        assert await nas.account(a.status_interim, "s1", **octets(50 * MIB), acct_session_time=180)
        cut = await asyncio.wait_for(nas_port.received.get(), 5)
        assert cut.code == codec.DISCONNECT_REQUEST
        assert cut.get(a.acct_session_id) == b"s1" and cut.get(a.user_name) == b"alice"
        assert await nas.account(a.status_stop, "s1", **octets(51 * MIB), acct_session_time=190)
        # usage beyond the balance is still charged (and flagged), never dropped; nothing stays reserved
        assert await spent(store, "alice", EUR // 2) == (51 * PER_MIB, 0)
    await asyncio.sleep(0.3)
    assert (
        REGISTRY.get_sample_value("occ_radius_dynauth_total", {"kind": "disconnect", "outcome": "ack"}) or 0
    ) >= 1


async def test_gigawords_count_and_repeated_or_late_reports_charge_nothing_more(store: BalanceStore) -> None:
    await subscriber(store, "alice", 100 * EUR)
    async with serving(store) as (nas, _):
        a = nas.a
        assert await nas.account(a.status_start, "s2")
        total = 4 * 1024 * MIB + 3 * MIB  # past 2^32 octets: Acct-Input-Gigawords 1
        interim = nas.accounting_request(a.status_interim, "s2", **octets(total), acct_session_time=60)
        replayed = (
            REGISTRY.get_sample_value(
                "occ_radius_replies_total", {"type": "Accounting-Response", "outcome": "duplicate"}
            )
            or 0.0
        )
        first, again = await nas.exchange_twice(interim, "acct")  # a retransmission: same reply, no work
        assert first is not None and first == again
        assert (
            REGISTRY.get_sample_value(
                "occ_radius_replies_total", {"type": "Accounting-Response", "outcome": "duplicate"}
            )
            == replayed + 1
        )
        assert (await spent(store, "alice", 100 * EUR))[0] == total // MIB * PER_MIB
        # the NAS retried with a new Acct-Delay-Time (a new packet), then a late smaller total arrived
        assert await nas.account(
            a.status_interim, "s2", **octets(total), acct_session_time=60, acct_delay_time=5
        )
        assert await nas.account(a.status_interim, "s2", **octets(MIB), acct_session_time=30)
        assert (await spent(store, "alice", 100 * EUR))[0] == total // MIB * PER_MIB
        assert await nas.account(a.status_stop, "s2", **octets(total), acct_session_time=70)
        assert await spent(store, "alice", 100 * EUR) == (total // MIB * PER_MIB, 0)


async def test_accounting_on_closes_every_session_of_the_nas(store: BalanceStore) -> None:
    await subscriber(store, "alice", 10 * EUR)
    async with serving(store) as (nas, _):
        a = nas.a
        for session in ("s3", "s4"):
            assert await nas.account(a.status_start, session)
            assert await nas.account(a.status_interim, session, **octets(2 * MIB), acct_session_time=60)
        assert await spent(store, "alice", 10 * EUR) == (4 * PER_MIB, 2 * GRANT // MIB * PER_MIB)
        assert await nas.account(a.status_accounting_on, "")
        assert await spent(store, "alice", 10 * EUR) == (4 * PER_MIB, 0)


async def subscribed(store: BalanceStore) -> None:
    """Wait (bounded) until the server listens to balance notifications."""
    for _ in range(100):
        _, count = await store.link.execute("PUBSUB", "NUMSUB", store.keys.notifications)
        if count:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the server never subscribed to balance notifications")


async def test_a_top_up_pushes_a_coa_with_the_new_quota_and_a_suspension_disconnects(
    store: BalanceStore,
) -> None:
    await subscriber(store, "alice", EUR // 10)  # 0.10 EUR: 10 MiB
    async with serving(store) as (nas, nas_port):
        a = nas.a
        assert await nas.account(a.status_start, "s7")
        await subscribed(store)
        await store.credit("alice", EUR, key="bank-1", reason="topup", now=NOW)
        coa = await asyncio.wait_for(nas_port.received.get(), 5)
        assert coa.code == codec.COA_REQUEST and coa.get(a.acct_session_id) == b"s7"
        # a session-long limit, as in the Access-Accept: the 10 MiB the session holds plus the 100 MiB the
        # rest of the 1.10 EUR buys
        quota = nas.server.ctx.dictionary.key("Mikrotik-Total-Limit")
        assert coa.get(quota) == (110 * MIB).to_bytes(4)
        rate_limit = nas.server.ctx.dictionary.key("Mikrotik-Rate-Limit")
        assert coa.get(rate_limit) == b"10M/10M"
        # a plan change re-authorizes the session with the new plan's limits
        await store.put_account(
            AccountRecord(account_id="alice", kind=AccountKind.PREPAID, currency="EUR", plan="demo-plus")
        )
        coa = await asyncio.wait_for(nas_port.received.get(), 5)
        assert coa.code == codec.COA_REQUEST and coa.get(rate_limit) == b"50M/50M"
        nas_port.answer = codec.DISCONNECT_NAK
        naks = (
            REGISTRY.get_sample_value("occ_radius_dynauth_total", {"kind": "disconnect", "outcome": "nak"})
            or 0
        )
        await store.set_status("alice", AccountStatus.SUSPENDED)
        cut = await asyncio.wait_for(nas_port.received.get(), 5)
        assert cut.code == codec.DISCONNECT_REQUEST and cut.get(a.acct_session_id) == b"s7"
        for _ in range(100):  # the NAK (Error-Cause 503) is counted once the sender reads it
            if REGISTRY.get_sample_value(
                "occ_radius_dynauth_total", {"kind": "disconnect", "outcome": "nak"}
            ):
                break
            await asyncio.sleep(0.02)
        nak = REGISTRY.get_sample_value("occ_radius_dynauth_total", {"kind": "disconnect", "outcome": "nak"})
        assert nak == naks + 1


async def test_no_accounting_response_while_the_store_is_down(redis_url: str, key_prefix: str) -> None:
    dead = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    async with serving(dead) as (nas, _):
        await dead.link.close()
        dead.link = type(dead.link)("redis://127.0.0.1:1/0", timeout=0.2)  # type: ignore[call-arg]
        before = dropped("store_unavailable")
        request = nas.accounting_request(nas.a.status_start, "s5")
        assert await nas.exchange(request, "acct", timeout=1.0) is None
        assert dropped("store_unavailable") == before + 1


# ---- what is dropped ---------------------------------------------------------------------------------


async def test_bad_authenticators_unknown_clients_and_missing_message_authenticators_are_dropped(
    store: BalanceStore,
) -> None:
    await subscriber(store, "alice", 10 * EUR)
    async with serving(store) as (nas, _):
        liar = Nas(nas.server, nas.a, secret=b"not-the-secret")
        before = dropped("bad_authenticator")
        assert await liar.exchange(liar.accounting_request(nas.a.status_start, "s6"), "acct", 0.5) is None
        assert await liar.exchange(liar.access_request("alice", password="alice-secret"), "auth", 0.5) is None
        assert dropped("bad_authenticator") == before + 2

        strict = radius_settings(
            0,
            clients=[
                ClientSettings(address="127.0.0.1", secret="testing123", require_message_authenticator=True)
            ],
        )
        nas.server.reload(build_context(strict, nas.server.ctx.charging, clock=lambda: NOW))
        before = dropped("missing_message_authenticator")
        assert await nas.access("alice", password="alice-secret", ma=False) is None
        assert dropped("missing_message_authenticator") == before + 1
        accept = await nas.access("alice", password="alice-secret")
        assert accept is not None and accept.code == codec.ACCESS_ACCEPT

        elsewhere = radius_settings(0, clients=[ClientSettings(address="10.0.0.0/8", secret="x")])
        nas.server.reload(build_context(elsewhere, nas.server.ctx.charging, clock=lambda: NOW))
        before = dropped("unknown_client")
        assert await nas.access("alice", password="alice-secret") is None
        assert dropped("unknown_client") == before + 1

        before = dropped("malformed")
        nas.server.reload(build_context(radius_settings(0), nas.server.ctx.charging, clock=lambda: NOW))
        assert await nas.exchange(b"\x01\x02\x00\x30" + bytes(16), "auth", 0.5) is None
        assert dropped("malformed") == before + 1


async def test_sockets_get_the_configured_receive_buffer(store: BalanceStore) -> None:
    """Bursts wait in the socket instead of being dropped by the kernel (the default is ~200 KiB)."""
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    async with serving(store, receive_buffer_bytes=4 << 20) as (nas, _):
        for transport in nas.server._transports:
            sock = transport.get_extra_info("socket")
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # Linux reports twice the request
            assert got >= min(4 << 20, rmem_max) * 2 if os.geteuid() else got >= 8 << 20


async def test_status_server_is_answered_on_both_ports_only_when_signed(store: BalanceStore) -> None:
    async with serving(store) as (nas, _):
        for kind, code in (("auth", codec.ACCESS_ACCEPT), ("acct", codec.ACCOUNTING_RESPONSE)):
            request = codec.sign_request(codec.STATUS_SERVER, nas.next_id(), [], SECRET, nas.a.framing)
            reply = await nas.exchange(request, kind)
            assert reply is not None and reply[0] == code
            assert codec.response_ok(reply, request[4:20], SECRET)
            assert codec.message_authenticator_ok(reply, SECRET, nas.a.framing, request[4:20]) is True
        before = dropped("missing_message_authenticator")
        unsigned = codec.sign_request(
            codec.STATUS_SERVER, nas.next_id(), [], SECRET, nas.a.framing, message_authenticator=False
        )
        assert await nas.exchange(unsigned, "auth", 0.5) is None  # RFC 5997 §3
        assert dropped("missing_message_authenticator") == before + 1


async def test_requests_that_cannot_be_answered_correctly_are_dropped_and_counted(
    store: BalanceStore,
) -> None:
    await subscriber(store, "alice", 10 * EUR)
    async with serving(store) as (nas, _):
        a = nas.a
        # 4000 octets of Proxy-State to echo: the Access-Accept would pass 4096 octets
        states = [(a.framing.proxy_state, bytes(250))] * 16
        before = dropped("reply_too_large")
        assert await nas.access("alice", password="alice-secret", extra=states) is None
        assert dropped("reply_too_large") == before + 1
        # a running total the store cannot count exactly: nothing recorded, nothing acknowledged
        before = dropped("invalid_request")
        assert await nas.account(a.status_start, "big")
        assert not await nas.account(a.status_interim, "big", acct_input_gigawords=1 << 21)
        assert dropped("invalid_request") == before + 1


async def test_mschapv2_users_may_give_their_windows_domain(store: BalanceStore) -> None:
    await subscriber(store, "alice", 10 * EUR)
    async with serving(store) as (nas, _):
        a = nas.a
        auth_challenge, peer_challenge = os.urandom(16), os.urandom(16)
        nt = mschap.generate_nt_response(auth_challenge, peer_challenge, "alice", "alice-secret")
        response = b"\x01\x00" + peer_challenge + bytes(8) + nt
        extra = [(a.ms_chap_challenge, auth_challenge), (a.ms_chap2_response, response)]
        reply = await nas.exchange(nas.access_request("CORP\\alice", extra=extra), "auth")
        assert reply is not None and reply[0] == codec.ACCESS_ACCEPT


async def test_a_quota_without_a_gigawords_attribute_stops_at_4_gib(store: BalanceStore) -> None:
    await subscriber(store, "alice", 100 * EUR)  # 10,000 MiB
    profiles = {**PROFILES, "mikrotik": ProfileSettings(data_quota="Mikrotik-Total-Limit")}
    async with serving(store, profiles=profiles) as (nas, _):
        accept = await nas.access("alice", password="alice-secret")
        assert accept is not None
        assert accept.get(nas.server.ctx.dictionary.key("Mikrotik-Total-Limit")) == b"\xff\xff\xff\xff"


async def test_ipv6_sockets_are_ipv6_only_so_wildcards_of_both_families_can_share_a_port(
    store: BalanceStore,
) -> None:
    # binding "::" next to "0.0.0.0" needs IPV6_V6ONLY; the tests listen on loopback, so look at the flag
    async with serving(store, listen=["127.0.0.1", "::1"]) as (nas, _):
        six = [
            t.get_extra_info("socket")
            for t in nas.server._transports
            if ":" in t.get_extra_info("sockname")[0]
        ]
        assert len(six) == 2
        assert all(s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1 for s in six)


async def test_a_host_without_ipv6_still_serves_ipv4(
    store: BalanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped listen list names ::1; a container without IPv6 must not fail to start over it."""
    import aaa.server

    monkeypatch.setattr(aaa.server, "_ipv6_available", lambda address: False)
    await subscriber(store, "alice", 10 * EUR)
    async with serving(store, listen=["127.0.0.1", "::1"]) as (nas, _):
        assert sorted(nas.server.ports) == [("acct", "127.0.0.1"), ("auth", "127.0.0.1")]
        accept = await nas.access("alice", password="alice-secret")
        assert accept is not None and accept.code == codec.ACCESS_ACCEPT


async def test_more_than_256_disconnects_to_one_nas_wait_for_an_identifier(store: BalanceStore) -> None:
    """The Identifier is one octet: request 257 waits for one of the first 256 to end, it is not lost."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a NAS that never answers
    silent.bind(("127.0.0.1", 0))
    try:
        async with serving(store, coa_timeout_s=0.2, coa_retries=0) as (nas, _):
            client = dataclasses.replace(
                nas.server.ctx.clients.lookup("127.0.0.1"), coa_port=silent.getsockname()[1]
            )
            sent = [
                nas.server.dynauth.disconnect(client, "127.0.0.1", f"s{n}", "alice", None, "test")
                for n in range(300)
            ]
            outcomes = await asyncio.wait_for(asyncio.gather(*sent), 5)
            assert {o.outcome for o in outcomes} == {"timeout"}
    finally:
        silent.close()


async def test_the_daemon_component_starts_on_a_host_without_ipv6(
    store: BalanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import aaa.server
    from occ.radius import RadiusComponent
    from occ.settings import Settings

    monkeypatch.setattr(aaa.server, "_ipv6_available", lambda address: False)
    settings = msgspec.structs.replace(
        Settings(), radius=radius_settings(0, listen=["127.0.0.1", "::1"]), balance=store.settings
    )
    catalog = Catalog(load_tariff_file("config/tariffs/demo.toml"))
    component = RadiusComponent()
    await component.start(types.SimpleNamespace(settings=settings, store=store, catalog=catalog))  # type: ignore[arg-type]
    try:
        assert component.server is not None and ("auth", "::1") not in component.server.ports
    finally:
        await component.stop(1.0)
