"""Interop: a real freeDiameterd (Debian ``freediameterd`` + ``freediameter-extensions``) relays credit
control between a gateway and our server, on loopback, with real Redis and the demo tariff.

    gateway (DiameterClient)  --TCP-->  freeDiameterd "fd.relay.test"  --TCP-->  DiameterServer "occ.test"
    "gw.test", realm test               relay; dict_nasreq, dict_dcca,           realm localdomain
                                        dict_dcca_3gpp, rt_default

freeDiameterd dials our server (ConnectPeer) and exchanges capabilities with it; the gateway dials
freeDiameterd. freeDiameterd only accepts an incoming CER from a peer it has a ConnectPeer entry for, so the
gateway has one whose port is bound but never listening (its own dial attempts are refused at once).
rt_default sends requests for Destination-Realm ``localdomain`` to ``occ.test`` (its rules cannot name an
application; freeDiameterd itself only routes a request to a peer that advertised the request's
application, credit control 4, or the relay id).

Quirks of freeDiameterd 1.2.1: it needs TLS certificate files even when TLS is off (a throwaway
self-signed pair is made with ``openssl`` in a temporary directory); it ignores loopback addresses in
``ListenOn`` and then listens on every address. So the tests run inside a private network namespace
(``unshare --net``, with a private Redis), where freeDiameterd listens on 192.0.2.1 on the namespace's own
loopback interface: nothing listens beyond loopback on the machine. Its log is printed at teardown
(pytest shows it on failure). The traffic between
freeDiameterd and our server is captured with ``dumpcap`` on ``lo`` and decoded by ``tshark``. Every wait
is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from balance.records import AccountKind, AccountRecord
from balance.service import ChargingService
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from occ.diameter import dictionary as d
from occ.diameter.application import PeerHandle
from occ.diameter.cc_settings import CreditControlSettings, RatingGroupSettings
from occ.diameter.client import DiameterClient, MsccSpec, UnitsSpec, build_ccr
from occ.diameter.codec import Avp, Message, avp_grouped, avp_utf8, find
from occ.diameter.credit_control import CreditControlApplication
from occ.diameter.server import DiameterServer
from occ.diameter.settings import AllowedPeer, DiameterSettings
from rating_core.tariff import Catalog
from rating_core.tariff_file import load_tariff_file

# freeDiameterd 1.2.1 listens on every address whatever ListenOn says. The project listens on loopback
# only, so these tests run inside a private network namespace whose one interface is lo (with a private
# Redis there): test_the_interop_tests_run_in_a_private_network_namespace below starts them.
IN_NAMESPACE = os.environ.get("OCC_TEST_NETNS") == "1"
RELAY_ADDRESS = "192.0.2.1"  # TEST-NET-1, on the loopback interface of the private namespace only
pytestmark = pytest.mark.skipif(
    shutil.which("freeDiameterd") is None,
    reason="freeDiameterd is not installed (Debian package freediameterd)",
)
inside_namespace = pytest.mark.skipif(not IN_NAMESPACE, reason="runs inside a private network namespace")


def test_the_interop_tests_run_in_a_private_network_namespace(tmp_path: Path) -> None:
    if IN_NAMESPACE:
        pytest.skip("already inside the namespace")
    missing = [tool for tool in ("unshare", "ip", "redis-server", "redis-cli") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (util-linux, iproute2, redis-server)")
    module = Path(__file__).resolve()
    script = (
        "set -e; ip link set lo up; "
        # freeDiameterd wants a non-127 local address: one on this namespace's own lo, routed nowhere
        f"ip addr add {RELAY_ADDRESS}/32 dev lo; "
        "redis-server --port 6399 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes "
        f"--dir {shlex.quote(str(tmp_path))} --pidfile {shlex.quote(str(tmp_path / 'redis.pid'))} "
        f"--logfile {shlex.quote(str(tmp_path / 'redis.log'))}; "
        "for i in $(seq 50); do redis-cli -p 6399 ping >/dev/null 2>&1 && break; sleep 0.1; done; "
        f"rc=0; {shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider {shlex.quote(str(module))} "
        "|| rc=$?; "
        "redis-cli -p 6399 shutdown nosave >/dev/null 2>&1 || true; exit $rc"
    )
    env = {**os.environ, "OCC_TEST_NETNS": "1", "OCC_TEST_REDIS_URL": "redis://127.0.0.1:6399/0"}
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        env=env,
        cwd=module.parents[2],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot create a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("3 passed"), done.stdout[-2000:]  # every interop test ran inside


PEAK = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
EUR = 1_000_000
MSISDN = "447700900001"
LONDON = "tel:+442079460000"
INITIAL, UPDATE, TERMINATE = (
    d.CC_REQUEST_TYPE_INITIAL_REQUEST,
    d.CC_REQUEST_TYPE_UPDATE_REQUEST,
    d.CC_REQUEST_TYPE_TERMINATION_REQUEST,
)
SERVER_HOST, SERVER_REALM = "occ.test", "localdomain"
RELAY_HOST, RELAY_REALM = "fd.relay.test", "relay.test"
GATEWAY_HOST, GATEWAY_REALM = "gw.test", "test"
CC_SETTINGS = CreditControlSettings(
    rating_groups={"10": RatingGroupSettings(service="data")},
    validity_time_s=900,
    session_timeout_s=600,
    request_timeout_s=2.0,
)
# What a proxy before freeDiameterd would have added: our server must echo it, freeDiameterd relay it.
PROXY_INFO = avp_grouped(
    d.AVP_PROXY_INFO, avp_utf8(d.AVP_PROXY_HOST, "proxy.test"), avp_utf8(d.AVP_PROXY_STATE, "opaque-42")
)
OPEN = re.compile(rf"-> 'STATE_OPEN'\s+'{re.escape(SERVER_HOST)}'")  # freeDiameterd's log line
STARTUP_S = 20.0  # freeDiameterd start, both capabilities exchanges
EXIT_S = 10.0  # freeDiameterd's DPR/DPA on SIGTERM, then exit

FREEDIAMETER_CONF = """\
Identity = "{relay_host}";
Realm = "{relay_realm}";
Port = {relay_port};
SecPort = 0;
ListenOn = "{relay_address}";  # 1.2.1 needs a non-loopback address (the namespace's dummy one)
No_SCTP;
No_IPv6;
TwTimer = 30;
TcTimer = 30;
AppServThreads = 2;
TLS_Cred = "{dir}/cert.pem", "{dir}/key.pem";
TLS_CA = "{dir}/cert.pem";
LoadExtension = "dict_nasreq.fdx";
LoadExtension = "dict_dcca.fdx";
LoadExtension = "dict_dcca_3gpp.fdx";
LoadExtension = "rt_default.fdx" : "{dir}/rt_default.conf";
ConnectPeer = "{server_host}" {{ ConnectTo = "127.0.0.1"; Port = {server_port}; No_TLS; }};
ConnectPeer = "{gateway_host}" {{ ConnectTo = "127.0.0.1"; Port = {gateway_port}; No_TLS; }};
"""
RT_DEFAULT_CONF = """\
# credit-control requests (and anything else) for our server's realm go to our server
DR="{server_realm}" : "{server_host}" += 100 ;
"""


def free_port() -> int:
    """A TCP port free on every address (freeDiameterd 1.2.1 binds the wildcard address)."""
    with socket.socket() as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway self-signed certificate and key (freeDiameterd insists on TLS files)."""
    if shutil.which("openssl") is None:
        pytest.fail("freeDiameterd needs TLS certificate files; openssl is needed to make throwaway ones")
    directory = tmp_path_factory.mktemp("fd-tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", f"/CN={RELAY_HOST}", "-keyout", str(directory / "key.pem"),
         "-out", str(directory / "cert.pem")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return directory


class Recorder:
    """The credit-control application as the server sees it, keeping each request it gets."""

    def __init__(self, app: CreditControlApplication) -> None:
        self.app = app
        self.requests: list[tuple[Message, str]] = []

    @property
    def application_id(self) -> int:
        return self.app.application_id

    @property
    def commands(self) -> frozenset[int]:
        return self.app.commands

    async def handle(self, request: Message, peer: PeerHandle) -> bytes:
        self.requests.append((request, peer.peer_host))
        return await self.app.handle(request, peer)

    def peer_opened(self, peer: PeerHandle) -> None:
        self.app.peer_opened(peer)

    def peer_closed(self, peer: PeerHandle) -> None:
        self.app.peer_closed(peer)


@dataclass
class FreeDiameterd:
    process: subprocess.Popen[bytes]
    log_file: Path
    port: int

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def excerpt(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self, timeout: float = EXIT_S) -> int | None:
        """SIGTERM (freeDiameterd sends DPR to its peers and exits), SIGKILL when it takes too long."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            return None


@dataclass
class Capture:
    """dumpcap on lo, filtered to one TCP port, into a pcapng file."""

    path: Path
    process: subprocess.Popen[bytes] | None = None
    stderr: Path | None = None
    problem: str = ""

    def start(self, port: int, timeout: float = 10.0) -> None:
        tool = shutil.which("dumpcap") or shutil.which("tshark")
        if tool is None or shutil.which("tshark") is None:
            self.problem = "tshark/dumpcap not installed"
            return
        self.stderr = self.path.with_suffix(".stderr")
        with self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [tool, "-q", "-i", "lo", "-f", f"tcp port {port}", "-w", str(self.path)],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stderr.read_text(errors="replace")
            if "Capturing on" in text:
                return
            if self.process.poll() is not None:
                self.problem = f"{tool} cannot capture on lo: {text.strip()}"
                return
            time.sleep(0.05)
        self.stop()
        self.problem = f"{tool} did not start capturing on lo within {timeout} s"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        time.sleep(0.3)  # let the last segments reach the capture
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None


@dataclass
class Relay:
    server: DiameterServer
    recorder: Recorder
    store: BalanceStore
    fd: FreeDiameterd
    capture: Capture
    client: DiameterClient | None = None
    numbers: dict[str, int] = field(default_factory=dict)

    async def ccr(
        self,
        session: str,
        kind: int,
        mscc: MsccSpec,
        *,
        called: str | None = None,
        extra: bytes = b"",
        timeout: float = 5.0,
    ) -> Message:
        assert self.client is not None
        number = self.numbers.get(session, -1) + 1
        self.numbers[session] = number
        hbh, e2e = self.client.next_ids()
        data = build_ccr(
            session,
            kind,
            number,
            origin_host=GATEWAY_HOST,
            origin_realm=GATEWAY_REALM,
            destination_realm=SERVER_REALM,
            hop_by_hop=hbh,
            end_to_end=e2e,
            subscription=(d.SUBSCRIPTION_ID_TYPE_END_USER_E164, MSISDN),
            msccs=[mscc],
            called_party=called,
            extra=extra,
        )
        try:
            answer = await self.client.send(data, hbh, timeout)
        except (TimeoutError, ConnectionError) as exc:
            raise AssertionError(
                f"no CCA through freeDiameterd for {session} #{number}: {exc!r}\n{self.fd.excerpt()}"
            ) from exc
        assert answer.hop_by_hop == hbh and answer.end_to_end == e2e  # restored by the relay
        return answer

    async def shutdown(self) -> None:
        """Gateway DPR, freeDiameterd SIGTERM (its DPR to our server), stop the capture. Idempotent."""
        if self.client is not None:
            await self.client.close(2.0)
        await asyncio.to_thread(self.fd.terminate)
        await asyncio.to_thread(self.capture.stop)


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    s = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    yield s
    await s.close()


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A loopback port bound but never listening: a connection to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


async def wait_for(
    condition: str, check: Callable[[], object], fd: FreeDiameterd, timeout: float = STARTUP_S
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if not fd.alive():
            raise AssertionError(
                f"freeDiameterd exited ({fd.process.returncode}) before {condition}:\n{fd.log()}"
            )
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"{condition} did not happen within {timeout} s; freeDiameterd log:\n{fd.log()}"
            )
        await asyncio.sleep(0.05)


async def connect_gateway(fd: FreeDiameterd) -> DiameterClient:
    """Our client's CER to freeDiameterd; retried only while freeDiameterd is not listening yet."""
    deadline = asyncio.get_running_loop().time() + STARTUP_S
    while True:
        try:
            return await DiameterClient.connect(
                RELAY_ADDRESS,
                fd.port,
                origin_host=GATEWAY_HOST,
                origin_realm=GATEWAY_REALM,
                destination_realm=SERVER_REALM,
            )
        except ConnectionRefusedError:
            if not fd.alive() or asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"freeDiameterd is not listening on {fd.port}:\n{fd.log()}") from None
            await asyncio.sleep(0.1)
        except (ConnectionError, TimeoutError) as exc:
            raise AssertionError(f"freeDiameterd refused our CER: {exc!r}\n{fd.log()}") from exc


@pytest.fixture
async def relay(store: BalanceStore, certificate: Path, tmp_path: Path) -> AsyncIterator[Relay]:
    catalog = Catalog(load_tariff_file("config/tariffs/demo.toml"))
    charging = ChargingService(store, catalog, BalanceSettings(), clock=lambda: PEAK)
    app = CreditControlApplication(charging, CC_SETTINGS, clock=lambda: PEAK)
    await store.put_account(
        AccountRecord(account_id="alice", kind=AccountKind.PREPAID, currency="EUR", plan="demo")
    )
    await store.credit("alice", 10 * EUR, key="alice-opening", reason="topup", now=PEAK)
    await store.put_identity("msisdn", MSISDN, "alice")

    recorder = Recorder(app)
    settings = DiameterSettings(
        listen="127.0.0.1",
        port=0,
        origin_host=SERVER_HOST,
        origin_realm=SERVER_REALM,
        allowed_peers=[AllowedPeer(host=RELAY_HOST, realm=RELAY_REALM)],
    )
    server = DiameterServer(settings, [recorder])
    await server.start()
    capture = Capture(tmp_path / "relay-server.pcapng")
    fd: FreeDiameterd | None = None
    relay: Relay | None = None
    with reserved_port() as gateway_port:
        try:
            await asyncio.to_thread(capture.start, server.port)
            (tmp_path / "rt_default.conf").write_text(
                RT_DEFAULT_CONF.format(server_realm=SERVER_REALM, server_host=SERVER_HOST)
            )
            for name in ("cert.pem", "key.pem"):
                shutil.copy(certificate / name, tmp_path / name)
            relay_port = free_port()
            conf = tmp_path / "freeDiameter.conf"
            conf.write_text(
                FREEDIAMETER_CONF.format(
                    relay_host=RELAY_HOST,
                    relay_realm=RELAY_REALM,
                    relay_port=relay_port,
                    relay_address=RELAY_ADDRESS,
                    dir=tmp_path,
                    server_host=SERVER_HOST,
                    server_port=server.port,
                    gateway_host=GATEWAY_HOST,
                    gateway_port=gateway_port,
                )
            )
            log_file = tmp_path / "freeDiameterd.log"
            with log_file.open("wb") as log:
                process = subprocess.Popen(
                    ["freeDiameterd", "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            fd = FreeDiameterd(process, log_file, relay_port)
            relay = Relay(server, recorder, store, fd, capture)
            await wait_for("freeDiameterd's CER to our server", lambda: server.peer(RELAY_HOST), fd)
            # and freeDiameterd took our CEA (it routes nothing to a peer before that)
            await wait_for(
                "freeDiameterd's peer state OPEN with our server", lambda: OPEN.search(fd.log()), fd
            )
            relay.client = await connect_gateway(fd)
            yield relay
        finally:
            if relay is not None:
                await relay.shutdown()
            elif fd is not None:
                await asyncio.to_thread(fd.terminate)
            await asyncio.to_thread(capture.stop)
            await asyncio.wait_for(server.stop(1.0), 5)
            await app.stop()
            if fd is not None:
                print(f"---- freeDiameterd log ({fd.log_file}) ----\n{fd.log()}")


def result(avps: Message | Avp) -> int:
    found = find(avps.avps if isinstance(avps, Message) else avps.grouped(), d.AVP_RESULT_CODE)
    assert found is not None
    return found.u32()


def only_mscc(answer: Message) -> Avp:
    (mscc,) = answer.find_all(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)
    return mscc


def granted(mscc: Avp, code: int) -> int | None:
    gsu = find(mscc.grouped(), d.AVP_GRANTED_SERVICE_UNIT)
    if gsu is None:
        return None
    value = find(gsu.grouped(), code)
    return None if value is None else (value.u32() if code == d.AVP_CC_TIME else value.u64())


async def run_sessions(relay: Relay) -> None:
    """A voice call to London (IMS information) and a data session on RG 10, relayed by freeDiameterd."""
    voice = "gw.test;interop;voice"
    cca = await relay.ccr(voice, INITIAL, MsccSpec(requested=UnitsSpec(time=300)), called=LONDON)
    assert result(cca) == d.DIAMETER_SUCCESS, cca
    assert cca.find(d.AVP_ORIGIN_HOST).utf8() == SERVER_HOST  # type: ignore[union-attr]
    assert cca.find(d.AVP_SESSION_ID).utf8() == voice  # type: ignore[union-attr]
    mscc = only_mscc(cca)
    assert (result(mscc), granted(mscc, d.AVP_CC_TIME)) == (d.DIAMETER_SUCCESS, 300)
    assert (await relay.store.query("alice")).reserved == 400_000  # 5 min at 0.08
    # Proxy-Info added before freeDiameterd: our server echoes it, freeDiameterd relays it back unchanged
    cca = await relay.ccr(
        voice, UPDATE, MsccSpec(requested=UnitsSpec(time=300), used=UnitsSpec(time=125)), called=LONDON,
        extra=PROXY_INFO,
    )  # fmt: skip
    assert result(cca) == d.DIAMETER_SUCCESS
    assert granted(only_mscc(cca), d.AVP_CC_TIME) == 300
    assert [p.encoded() for p in cca.find_all(d.AVP_PROXY_INFO)] == [PROXY_INFO]
    cca = await relay.ccr(voice, TERMINATE, MsccSpec(used=UnitsSpec(time=35)), called=LONDON)
    assert result(cca) == d.DIAMETER_SUCCESS
    assert granted(only_mscc(cca), d.AVP_CC_TIME) is None
    assert cca.find(d.AVP_CC_REQUEST_NUMBER).u32() == 2  # type: ignore[union-attr]

    data = "gw.test;interop;data"
    cca = await relay.ccr(data, INITIAL, MsccSpec(rating_group=10))
    assert result(cca) == d.DIAMETER_SUCCESS
    assert granted(only_mscc(cca), d.AVP_CC_TOTAL_OCTETS) == 10_485_760  # the default data grant
    cca = await relay.ccr(
        data, UPDATE,
        MsccSpec(rating_group=10, requested=UnitsSpec(), used=UnitsSpec(input=1_048_576, output=1_048_576)),
    )  # fmt: skip
    assert result(cca) == d.DIAMETER_SUCCESS
    assert granted(only_mscc(cca), d.AVP_CC_TOTAL_OCTETS) == 10_485_760
    cca = await relay.ccr(data, TERMINATE, MsccSpec(rating_group=10, used=UnitsSpec(total=1_048_576)))
    assert result(cca) == d.DIAMETER_SUCCESS and granted(only_mscc(cca), d.AVP_CC_TOTAL_OCTETS) is None

    view = await relay.store.query("alice")
    # voice: 125 + 35 s = 3 started minutes at 0.08; data: 3 MiB at 0.01
    assert (view.balance, view.reserved) == (10 * EUR - 240_000 - 30_000, 0)


@inside_namespace
async def test_capabilities_are_exchanged_on_both_sides_of_the_relay(relay: Relay) -> None:
    handle = relay.server.peer(RELAY_HOST)
    assert handle is not None and handle.is_open
    assert handle.peer_realm == RELAY_REALM
    assert [p.peer_host for p in relay.server.open_peers()] == [RELAY_HOST]
    # the gateway's CER to freeDiameterd was answered 2001 (DiameterClient.connect raises otherwise)
    assert relay.client is not None and not relay.client.closed.is_set()
    assert relay.fd.alive()


@inside_namespace
async def test_a_relayed_voice_call_and_data_session_are_charged_to_the_micro_unit(relay: Relay) -> None:
    await run_sessions(relay)
    # every request reached the server through freeDiameterd, stamped with the gateway's Route-Record
    assert len(relay.recorder.requests) == 6
    for request, via in relay.recorder.requests:
        assert via == RELAY_HOST
        assert request.find(d.AVP_ORIGIN_HOST).utf8() == GATEWAY_HOST  # type: ignore[union-attr]
        assert [r.utf8() for r in request.find_all(d.AVP_ROUTE_RECORD)] == [GATEWAY_HOST]
    assert relay.server.peer(RELAY_HOST) is not None  # the relay connection survived it all
    # freeDiameterd found nothing wrong in what it relayed (it logs parse and routing failures as ERROR)
    problems = [line for line in relay.fd.log().splitlines() if "ERROR" in line or "FATAL" in line]
    assert not problems, relay.fd.log()


@inside_namespace
async def test_tshark_decodes_every_message_between_freediameterd_and_our_server(relay: Relay) -> None:
    if relay.capture.problem:
        pytest.skip(f"no capture of the relay's traffic: {relay.capture.problem}")
    await run_sessions(relay)
    await relay.shutdown()  # gateway DPR, freeDiameterd's DPR to our server on SIGTERM, capture stopped
    port = relay.server.port
    run = await asyncio.to_thread(
        subprocess.run,
        ["tshark", "-n", "-r", str(relay.capture.path), "-d", f"tcp.port=={port},diameter",
         "-o", "tcp.desegment_tcp_streams:TRUE", "-Y", "diameter || _ws.malformed || _ws.expert",
         "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|", "-e", "frame.number",
         "-e", "diameter.cmd.code", "-e", "diameter.flags.request", "-e", "_ws.expert.severity",
         "-e", "_ws.malformed", "-e", "_ws.expert.message"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen: Counter[tuple[str, bool]] = Counter()
    empty_grouped = 0
    names = {"257": "CE", "272": "CC", "280": "DW", "282": "DP"}
    for line in run.stdout.splitlines():
        frame, codes, requests, severities, malformed, texts = (line.split("\t") + [""] * 6)[:6]
        assert malformed == "", f"malformed Diameter in frame {frame}: {line}"
        for code, is_request in zip(codes.split("|"), requests.split("|"), strict=True):
            if code:
                seen[(names.get(code, code), is_request in ("1", "True"))] += 1
        # Wireshark severities: 0x00600000 warning, 0x00800000 error (notes and chats are fine)
        for severity, text in zip(severities.split("|"), texts.split("|"), strict=False):
            if severity not in ("6291456", "8388608"):
                continue
            # docs/diameter.md: the empty Requested-Service-Unit {} RFC 4006 allows
            if severity == "6291456" and text.startswith("Data is empty"):
                empty_grouped += 1
                continue
            raise AssertionError(f"tshark expert {severity} in frame {frame}: {text} ({line})")
    expected = {
        ("CE", True): 1,  # freeDiameterd's CER
        ("CE", False): 1,  # our CEA
        ("CC", True): 6,
        ("CC", False): 6,
        ("DP", True): 1,  # freeDiameterd's DPR on SIGTERM
        ("DP", False): 1,  # our DPA
    }
    watchdog = {k: seen.pop(k) for k in [("DW", True), ("DW", False)] if k in seen}
    assert dict(seen) == expected, (seen, watchdog, run.stdout)
    assert empty_grouped == 1  # the data CCR-U's Requested-Service-Unit {}, nothing else
