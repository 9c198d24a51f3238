"""Independent RADIUS clients against the real daemon: `occ serve` with real Redis and PostgreSQL, RADIUS over
real UDP on 127.0.0.1.

FreeRADIUS's radclient (Debian's ``freeradius-utils``, with its own dictionaries) authenticates with PAP and
CHAP, is rejected with a wrong password, and runs an accounting Start / Interim-Update / Stop whose charge is
checked in Redis to the micro-unit (demo data: 0.01 EUR per MiB). pyrad, a second client with its own codec,
checks the Response Authenticator and the Message-Authenticator of an Access-Accept and gets its
Accounting-Requests answered. Without radclient the radclient tests are skipped.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pyrad.client
import pyrad.dictionary
import pyrad.packet
import pytest

from balance.records import AccountKind, AccountRecord
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from billing.tariff_store import install_tariff
from tests.occ.test_daemon import DaemonProcess, MakeDaemon, make_daemon, render  # noqa: F401  (make_daemon is a fixture)

pytestmark = pytest.mark.timeout(120)

RADCLIENT = shutil.which("radclient")
SECRET = "testing123"
EUR = 1_000_000
MIB = 1 << 20
PER_MIB = EUR // 100  # demo data price
GRANT = 10 * MIB  # [balance.default_grants] data
OPENING = 10 * EUR
RADCLIENT_TIMEOUT_S = 30.0

# config_text ends with "[radius]\nauth_port = 0\nacct_port = 0\n": the first lines below still belong to
# that table (TOML cannot open [radius] twice), the rest are its sub-tables and the balance grants.
RADIUS_EXTRA = f"""listen = ["127.0.0.1"]
interim_interval_s = 300

[[radius.clients]]
address = "127.0.0.1"
secret = "{SECRET}"
name = "localhost"
coa_port = 0
profile = "mikrotik"
require_message_authenticator = false

[radius.plans.demo]
rate_limit = "10M/10M"
framed_pool = ""
idle_timeout_s = 600

[radius.profiles.generic]
reply = {{}}

[radius.profiles.mikrotik]
reply = {{ "Mikrotik-Rate-Limit" = "{{rate_limit}}" }}
data_quota = "Mikrotik-Total-Limit"
data_quota_gigawords = "Mikrotik-Total-Limit-Gigawords"

[balance.default_grants]
voice = 300
data = {GRANT}
sms = 1
"""


@dataclass
class Radius:
    auth_port: int
    acct_port: int
    store: BalanceStore
    daemon: DaemonProcess


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    """The daemon's store: the same Redis URL and key prefix make_daemon gives it."""
    s = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    yield s
    await s.close()


@pytest.fixture
async def radius(make_daemon: MakeDaemon, store: BalanceStore, database_url: str) -> Radius:  # noqa: F811
    conn = await asyncpg.connect(database_url)
    try:
        await install_tariff(conn, Path("config/tariffs/demo.toml").read_text(), "demo.toml")
    finally:
        await conn.close()
    daemon = make_daemon("radius")
    daemon.rewrite(render(daemon, extra=RADIUS_EXTRA))
    daemon.start()
    line = await asyncio.to_thread(daemon.wait_log, r'msg="RADIUS listening"')
    found = re.search(r"listen=(\S+) auth_port=(\d+) acct_port=(\d+) clients=(\d+)", line)
    assert found, line
    assert found.group(1) == "127.0.0.1" and found.group(4) == "1", line
    await asyncio.to_thread(daemon.wait_log, r"msg=ready")
    return Radius(int(found.group(2)), int(found.group(3)), store, daemon)


async def subscriber(store: BalanceStore, account: str, user: str, password: str) -> None:
    await store.put_account(
        AccountRecord(account_id=account, kind=AccountKind.PREPAID, currency="EUR", plan="demo")
    )
    await store.credit(account, OPENING, key=f"{account}-opening", reason="topup", now=datetime.now(UTC))
    await store.put_identity("radius_user", user, account, password)


async def money(store: BalanceStore, account: str) -> tuple[int, int]:
    """(spent, reserved) in micro-units since the opening top-up."""
    view = await store.query(account)
    return OPENING - view.balance - view.reserved, view.reserved


# ---- radclient ----------------------------------------------------------------------------------------


async def radclient(port: int, kind: str, attributes: str, secret: str = SECRET) -> str:
    """One request through radclient (-x: both packets printed); its whole output."""
    if RADCLIENT is None:
        pytest.skip("radclient is not installed (Debian: apt-get install -y freeradius-utils)")
    proc = await asyncio.create_subprocess_exec(
        RADCLIENT, "-x", "-t", "5", "-r", "1", f"127.0.0.1:{port}", kind, secret,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(attributes.encode()), RADCLIENT_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"radclient {kind} still running after {RADCLIENT_TIMEOUT_S}s")
    return out.decode(errors="replace")


def received(output: str, code: str) -> dict[str, str]:
    """The attributes radclient printed for the reply ``code`` (name -> value as printed)."""
    _, found, rest = output.partition(f"Received {code} ")
    assert found, f"no {code} in radclient output:\n{output}"
    attributes: dict[str, str] = {}
    for line in rest.splitlines()[1:]:
        if not line.startswith("\t"):
            break
        name, _, value = line.strip().partition(" = ")
        attributes[name] = value
    return attributes


def class_text(printed: str) -> str:
    """Class as radclient prints it (0x + hex octets), decoded."""
    assert printed.startswith("0x"), printed
    return bytes.fromhex(printed[2:]).decode()


@pytest.mark.skipif(RADCLIENT is None, reason="radclient is not installed (apt-get install freeradius-utils)")
async def test_radclient_pap_chap_and_a_reject(radius: Radius) -> None:
    await subscriber(radius.store, "rc-auth", "rc-user", "rc-password")

    # PAP, with a Message-Authenticator radclient computes (the server verifies it)
    out = await radclient(
        radius.auth_port,
        "auth",
        'User-Name = "rc-user"\nUser-Password = "rc-password"\nMessage-Authenticator = 0x00\n'
        "NAS-IP-Address = 127.0.0.1\n",
    )
    accept = received(out, "Access-Accept")
    assert accept["Mikrotik-Rate-Limit"] == '"10M/10M"', out
    assert class_text(accept["Class"]) == "occ:rc-auth", out
    assert accept["Mikrotik-Total-Limit"] == str(1000 * MIB), out  # 10.00 EUR buy 1000 MiB
    assert accept["Acct-Interim-Interval"] == "300", out
    assert accept["Idle-Timeout"] == "600", out
    assert "Message-Authenticator" in accept, out
    assert "Received Access-Reject" not in out

    # CHAP: radclient turns the cleartext CHAP-Password into CHAP ident + MD5 (the authenticator as challenge)
    out = await radclient(radius.auth_port, "auth", 'User-Name = "rc-user"\nCHAP-Password = "rc-password"\n')
    accept = received(out, "Access-Accept")
    assert accept["Mikrotik-Rate-Limit"] == '"10M/10M"', out
    assert class_text(accept["Class"]) == "occ:rc-auth", out

    out = await radclient(radius.auth_port, "auth", 'User-Name = "rc-user"\nUser-Password = "not-it"\n')
    reject = received(out, "Access-Reject")
    assert reject["Reply-Message"] == '"wrong password"', out
    assert "Received Access-Accept" not in out

    out = await radclient(radius.auth_port, "auth", 'User-Name = "rc-user"\nCHAP-Password = "not-it"\n')
    assert received(out, "Access-Reject")["Reply-Message"] == '"wrong password"', out


@pytest.mark.skipif(RADCLIENT is None, reason="radclient is not installed (apt-get install freeradius-utils)")
async def test_radclient_accounting_charges_the_session(radius: Radius) -> None:
    store = radius.store
    await subscriber(store, "rc-acct", "rc-acct-user", "rc-acct-password")
    out = await radclient(
        radius.auth_port, "auth", 'User-Name = "rc-acct-user"\nUser-Password = "rc-acct-password"\n'
    )
    class_value = received(out, "Access-Accept")["Class"]  # echoed by the NAS in its accounting
    assert class_text(class_value) == "occ:rc-acct"
    session = uuid.uuid4().hex[:16]
    common = (
        f'User-Name = "rc-acct-user"\nAcct-Session-Id = "{session}"\nNAS-IP-Address = 127.0.0.1\n'
        f"NAS-Port = 7\nFramed-IP-Address = 10.0.0.7\nClass = {class_value}\n"
    )

    out = await radclient(radius.acct_port, "acct", common + "Acct-Status-Type = Start\n")
    assert received(out, "Accounting-Response") == {}, out
    assert await money(store, "rc-acct") == (0, GRANT // MIB * PER_MIB)  # the Start reserved 10 MiB

    out = await radclient(
        radius.acct_port,
        "acct",
        common + "Acct-Status-Type = Interim-Update\nAcct-Input-Octets = 20971520\nAcct-Input-Gigawords = 0\n"
        "Acct-Output-Octets = 0\nAcct-Session-Time = 60\n",
    )
    received(out, "Accounting-Response")
    assert await money(store, "rc-acct") == (20 * PER_MIB, GRANT // MIB * PER_MIB)

    out = await radclient(
        radius.acct_port,
        "acct",
        common + "Acct-Status-Type = Stop\nAcct-Input-Octets = 20971520\nAcct-Input-Gigawords = 0\n"
        "Acct-Output-Octets = 0\nAcct-Session-Time = 65\nAcct-Terminate-Cause = User-Request\n",
    )
    received(out, "Accounting-Response")
    view = await store.query("rc-acct")
    assert (view.balance, view.reserved) == (OPENING - 200_000, 0)  # exactly 0.20 EUR, nothing held
    assert view.reservations == ()


# ---- pyrad --------------------------------------------------------------------------------------------


def pyrad_client(radius: Radius) -> pyrad.client.Client:
    return pyrad.client.Client(
        server="127.0.0.1",
        authport=radius.auth_port,
        acctport=radius.acct_port,
        secret=SECRET.encode(),
        dict=pyrad.dictionary.Dictionary("config/dictionaries/dictionary"),
        retries=1,
        timeout=5,
        enforce_ma=True,
    )


async def test_pyrad_verifies_the_accept_and_gets_accounting_answered(radius: Radius) -> None:
    store = radius.store
    await subscriber(store, "py-sub", "py-user", "py-password")
    client = pyrad_client(radius)

    request = client.CreateAuthPacket(code=pyrad.packet.AccessRequest, User_Name="py-user")
    request["User-Password"] = request.PwCrypt("py-password")
    reply = await asyncio.to_thread(client.SendPacket, request)  # blocking; bounded by retries x timeout
    assert reply.code == pyrad.packet.AccessAccept
    assert reply.message_authenticator
    raw = reply.raw_packet
    assert raw[20] == 80  # Message-Authenticator first (BlastRADIUS)
    assert request.VerifyReply(reply, raw, enforce_ma=True)
    assert reply.verify_message_authenticator(
        secret=SECRET.encode(), original_authenticator=request.authenticator, original_code=request.code
    )
    assert reply["Mikrotik-Rate-Limit"] == ["10M/10M"]
    assert reply["Class"] == [b"occ:py-sub"]
    assert reply["Mikrotik-Total-Limit"] == [1000 * MIB]
    # the checks can fail: one altered octet of the rate limit breaks both authenticators
    at = raw.index(b"10M/10M")
    forged = raw[:at] + b"90" + raw[at + 2 :]
    forged_reply = request.CreateReply(packet=forged)
    assert not request.VerifyReply(forged_reply, forged, enforce_ma=True)
    assert not forged_reply.verify_message_authenticator(
        secret=SECRET.encode(), original_authenticator=request.authenticator, original_code=request.code
    )

    wrong = client.CreateAuthPacket(code=pyrad.packet.AccessRequest, User_Name="py-user")
    wrong["User-Password"] = wrong.PwCrypt("nope")
    reject = await asyncio.to_thread(client.SendPacket, wrong)
    assert reject.code == pyrad.packet.AccessReject
    assert reject["Reply-Message"] == ["wrong password"]

    session = uuid.uuid4().hex[:16]
    for status, octets in (("Start", None), ("Interim-Update", 5 * MIB), ("Stop", 5 * MIB)):
        acct = client.CreateAcctPacket(
            User_Name="py-user",
            Acct_Status_Type=status,
            Acct_Session_Id=session,
            NAS_IP_Address="127.0.0.1",
            Class=b"occ:py-sub",
        )
        if octets is not None:
            acct["Acct-Input-Octets"] = octets
            acct["Acct-Session-Time"] = 30
        answer = await asyncio.to_thread(client.SendPacket, acct)
        assert answer.code == pyrad.packet.AccountingResponse
        assert acct.VerifyReply(answer, answer.raw_packet)
        if status == "Start":
            assert await money(store, "py-sub") == (0, GRANT // MIB * PER_MIB)
    assert await money(store, "py-sub") == (5 * PER_MIB, 0)


@pytest.mark.skipif(RADCLIENT is None, reason="radclient is not installed (apt-get install freeradius-utils)")
async def test_reload_rotates_the_nas_secret_and_refuses_a_broken_dictionary(radius: Radius) -> None:
    await subscriber(radius.store, "rc-reload", "rc-reload", "pw")
    request = 'User-Name = "rc-reload"\nUser-Password = "pw"\n'
    daemon = radius.daemon
    rotated = RADIUS_EXTRA.replace(f'secret = "{SECRET}"', 'secret = "rotated-secret"')
    daemon.rewrite(render(daemon, extra=rotated))
    daemon.signal(signal.SIGHUP)
    await asyncio.to_thread(daemon.wait_log, r'msg="configuration reloaded"')
    assert "Received Access-Accept" in await radclient(radius.auth_port, "auth", request, "rotated-secret")
    # the old secret: the Message-Authenticator radclient adds does not verify, the request is dropped
    stale = await radclient(radius.auth_port, "auth", request + "Message-Authenticator = 0x00\n")
    assert "Received" not in stale, stale

    broken = rotated.replace('listen = ["127.0.0.1"]', 'listen = ["127.0.0.1"]\ndictionary = "/nonexistent"')
    daemon.rewrite(render(daemon, extra=broken))
    daemon.signal(signal.SIGHUP)
    line = await asyncio.to_thread(daemon.wait_log, r"msg=\"reload rejected")
    assert "/nonexistent" in line, line
    assert "Received Access-Accept" in await radclient(radius.auth_port, "auth", request, "rotated-secret")
