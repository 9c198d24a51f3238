"""The Diameter daemon component and its settings slice: start (bind, port taken), reload without
dropping connections, stop with DPR; [diameter] decoding and validation."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from occ.components import DaemonContext
from occ.daemon import keep_restart_only
from occ.diameter import dictionary as d
from occ.diameter.application import Application
from occ.diameter.codec import FLAG_REQUEST, avp_u32, avp_utf8, decode_message, encode_message
from occ.diameter.server import ApplicationFactory, DiameterComponent, peer_config
from occ.diameter.settings import AllowedPeer, DiameterSettings
from occ.settings import ConfigError, Settings, settings_from_dict
from rating_core.tariff import Catalog

pytestmark = pytest.mark.timeout(60)
WAIT = 5.0


class StubApp:
    application_id = d.APP_CREDIT_CONTROL
    commands = frozenset({d.CMD_CREDIT_CONTROL})

    def __init__(self) -> None:
        self.reloaded: list[DaemonContext] = []
        self.stopped = False

    async def handle(self, request: Any, peer: Any) -> bytes:
        raise NotImplementedError

    def peer_opened(self, peer: Any) -> None:
        pass

    def peer_closed(self, peer: Any) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True


def context(**diameter: Any) -> DaemonContext:
    base: dict[str, Any] = {"port": 0, "allowed_peers": [AllowedPeer(host="*", realm="*")]}
    base.update(diameter)
    settings = Settings(diameter=DiameterSettings(**base))
    catalog: Any = Catalog.__new__(Catalog)
    nothing: Any = None  # the component itself touches neither Redis nor PostgreSQL
    return DaemonContext(
        settings=settings, config_path=Path("x.toml"), store=nothing, pool=nothing, catalog=catalog
    )


def cer(host: str = "gw.test") -> bytes:
    avps = avp_utf8(d.AVP_ORIGIN_HOST, host) + avp_utf8(d.AVP_ORIGIN_REALM, "test")
    avps += avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL)
    return encode_message(FLAG_REQUEST, d.CMD_CAPABILITIES_EXCHANGE, 0, 1, 1, avps)


async def exchange(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    writer.write(data)
    head = await asyncio.wait_for(reader.readexactly(20), WAIT)
    body = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[1:4], "big") - 20), WAIT)
    answer = decode_message(head + body)
    code = answer.find(d.AVP_RESULT_CODE)
    assert code is not None
    return reader, writer, code.u32()


async def test_component_lifecycle() -> None:
    apps: list[StubApp] = []

    def build(ctx: DaemonContext) -> Application:
        apps.append(StubApp())
        return apps[-1]

    def reload(app: StubApp, ctx: DaemonContext) -> None:
        app.reloaded.append(ctx)

    component = DiameterComponent([ApplicationFactory(build, reload)])
    assert component.name == "diameter"
    ctx = context()
    await component.start(ctx)
    assert component.server is not None
    port = component.server.port
    reader, writer, code = await exchange(port, cer())
    assert code == d.DIAMETER_SUCCESS

    # reload: the peer list changes for new CERs; the open connection stays
    new = dataclasses.replace(
        ctx, settings=Settings(diameter=DiameterSettings(port=0, allowed_peers=[AllowedPeer(host="other")]))
    )
    component.reload(new)
    assert apps[0].reloaded == [new]
    _, other_writer, code = await exchange(port, cer())
    assert code == d.DIAMETER_UNKNOWN_PEER
    other_writer.close()
    assert component.server.peer("gw.test") is not None

    # a second server on the same port cannot start
    second = DiameterComponent([ApplicationFactory(build)])
    with pytest.raises(OSError, match="Diameter cannot listen"):
        await second.start(context(port=port))

    # stop: DPR to the open peer, which answers; then the application stops
    stopping = asyncio.ensure_future(component.stop(2.0))
    head = await asyncio.wait_for(reader.readexactly(20), WAIT)
    body = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[1:4], "big") - 20), WAIT)
    dpr = decode_message(head + body)
    assert dpr.code == d.CMD_DISCONNECT_PEER and dpr.is_request
    writer.write(
        encode_message(
            0,
            d.CMD_DISCONNECT_PEER,
            0,
            dpr.hop_by_hop,
            dpr.end_to_end,
            avp_u32(d.AVP_RESULT_CODE, 2001) + avp_utf8(d.AVP_ORIGIN_HOST, "gw.test"),
        )
    )
    await asyncio.wait_for(stopping, WAIT)
    assert apps[0].stopped
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()


def test_peer_config_from_settings() -> None:
    config = peer_config(DiameterSettings(listen="0.0.0.0"), [StubApp()], origin_state_id=5)
    assert config.host_ip_addresses == ("127.0.0.1",)
    assert config.vendor_specific_applications == ((d.VENDOR_3GPP, d.APP_CREDIT_CONTROL),)
    assert config.applications == {d.APP_CREDIT_CONTROL: frozenset({d.CMD_CREDIT_CONTROL})}
    assert config.allowed_peers == (("*", "*"),)  # the demo default (loopback listen address)
    config = peer_config(DiameterSettings(listen="10.1.2.3", host_ip_addresses=["192.0.2.1"]), [], 5)
    assert config.host_ip_addresses == ("192.0.2.1",)


def test_shipped_config_has_a_documented_diameter_section() -> None:
    from occ.settings import load_settings

    s = load_settings(Path(__file__).resolve().parents[2] / "config" / "occ.toml", environ={})
    assert (s.diameter.listen, s.diameter.port) == ("127.0.0.1", 3868)
    assert (s.diameter.origin_host, s.diameter.origin_realm) == ("occ.localdomain", "localdomain")
    assert s.diameter.allowed_peers == [AllowedPeer(host="*", realm="*")]
    assert not s.diameter.tls.enabled


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"port": 70000}, "diameter.port"),
        ({"origin_host": ""}, "diameter.origin_host"),
        ({"host_ip_addresses": ["not-an-ip"]}, "diameter.host_ip_addresses[0]"),
        ({"watchdog_s": 0}, "diameter.watchdog_s"),
        ({"max_message_length": 10}, "diameter.max_message_length"),
        ({"tls": {"cert_file": "c.pem"}}, "diameter.tls"),
        ({"allowed_peers": [{"host": ""}]}, "diameter.allowed_peers[0]"),
        ({"nonsense": 1}, "diameter.nonsense"),
    ],
)
def test_invalid_diameter_settings_are_rejected(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        settings_from_dict({"diameter": section}, "t.toml", {})


def test_listener_and_identity_need_a_restart() -> None:
    running = Settings()
    loaded = Settings(diameter=DiameterSettings(port=3869, origin_host="new.host", watchdog_s=6.0))
    effective, held = keep_restart_only(running, loaded)
    assert effective.diameter.port == 3868 and effective.diameter.origin_host == "occ.localdomain"
    assert effective.diameter.watchdog_s == 6.0
    assert set(held) == {"diameter.port", "diameter.origin_host"}
