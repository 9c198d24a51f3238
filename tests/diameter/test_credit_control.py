"""Gy/Ro credit control over real TCP, on real Redis, priced by the demo tariff to the micro-unit.

The demo voice rate to London (4420) is 0.08/min peak with 60/60 increments; data is 0.01/MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from balance.link import FastLink
from balance.records import AccountKind, AccountRecord, AccountStatus
from balance.service import ChargingService
from balance.settings import BalanceSettings, RedisSettings
from balance.store import BalanceStore
from occ.diameter import dictionary as d
from occ.diameter.cc_settings import CreditControlSettings, RatingGroupSettings
from occ.diameter.client import DiameterClient, MsccSpec, UnitsSpec, build_ccr
from occ.diameter.codec import Avp, Message, avp_u32, find, find_all
from occ.diameter.credit_control import CreditControlApplication
from occ.diameter.server import DiameterServer
from occ.diameter.settings import AllowedPeer, DiameterSettings
from rating_core.tariff import Catalog
from rating_core.tariff_file import load_tariff_file

PEAK = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MSISDN = "447700900001"
E164 = d.SUBSCRIPTION_ID_TYPE_END_USER_E164
INITIAL, UPDATE, TERMINATE, EVENT = (
    d.CC_REQUEST_TYPE_INITIAL_REQUEST,
    d.CC_REQUEST_TYPE_UPDATE_REQUEST,
    d.CC_REQUEST_TYPE_TERMINATION_REQUEST,
    d.CC_REQUEST_TYPE_EVENT_REQUEST,
)
EUR = 1_000_000
CC_SETTINGS = CreditControlSettings(
    rating_groups={
        "10": RatingGroupSettings(service="data"),
        "20": RatingGroupSettings(
            service="data", final_unit_action="REDIRECT", redirect_url="http://topup.example/"
        ),
    },
    validity_time_s=900,
    session_timeout_s=600,
    request_timeout_s=2.0,
)


class Gateway:
    """A PGW/IMS node: one connection, sessions numbered as RFC 4006 wants."""

    def __init__(self, client: DiameterClient) -> None:
        self.client = client
        self.numbers: dict[str, int] = {}

    async def ccr(
        self,
        session: str,
        kind: int,
        *,
        number: int | None = None,
        subscriber: str | None = MSISDN,
        msccs: Sequence[MsccSpec] = (),
        requested: UnitsSpec | None = None,
        used: UnitsSpec | None = None,
        action: int | None = None,
        called: str | None = None,
        retransmit: bool = False,
        hop_by_hop: int | None = None,
        context: str = "32251@3gpp.org",
    ) -> Message:
        if number is None:
            number = self.numbers.get(session, -1) + 1
        self.numbers[session] = number
        hbh, e2e = self.client.next_ids()
        if hop_by_hop is not None:
            hbh = hop_by_hop
        data = build_ccr(
            session,
            kind,
            number,
            origin_host=self.client.origin_host,
            origin_realm=self.client.origin_realm,
            destination_realm="localdomain",
            hop_by_hop=hbh,
            end_to_end=e2e,
            subscription=(E164, subscriber) if subscriber else None,
            msccs=msccs,
            requested=requested,
            used=used,
            requested_action=action,
            called_party=called,
            retransmit=retransmit,
            service_context=context,
        )
        return await self.client.send(data, hbh)


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[BalanceStore]:
    s = await BalanceStore.connect(RedisSettings(url=redis_url, key_prefix=key_prefix), BalanceSettings())
    yield s
    await s.close()


@contextlib.asynccontextmanager
async def serving(app: CreditControlApplication) -> AsyncIterator[Gateway]:
    settings = DiameterSettings(
        listen="127.0.0.1",
        port=0,
        origin_host="occ.test",
        origin_realm="localdomain",
        allowed_peers=[AllowedPeer(host="*", realm="*")],
    )
    server = DiameterServer(settings, [app])
    await server.start()
    client = await DiameterClient.connect("127.0.0.1", server.port)
    try:
        yield Gateway(client)
    finally:
        await client.close()
        await asyncio.wait_for(server.stop(1.0), 5)
        await app.stop()


@pytest.fixture
async def gateway(store: BalanceStore) -> AsyncIterator[Gateway]:
    catalog = Catalog(load_tariff_file("config/tariffs/demo.toml"))
    charging = ChargingService(store, catalog, BalanceSettings(), clock=lambda: PEAK)
    app = CreditControlApplication(charging, CC_SETTINGS, clock=lambda: PEAK)
    await subscriber(store, "alice", 10 * EUR)
    async with serving(app) as gw:
        yield gw


async def subscriber(store: BalanceStore, account: str, money: int, msisdn: str = MSISDN) -> None:
    await store.put_account(
        AccountRecord(account_id=account, kind=AccountKind.PREPAID, currency="EUR", plan="demo")
    )
    if money:
        await store.credit(account, money, key=f"{account}-opening", reason="topup", now=PEAK)
    await store.put_identity("msisdn", msisdn, account)


async def subscribed(store: BalanceStore) -> None:
    """Wait (bounded) until the application listens to balance notifications."""
    for _ in range(100):
        _, count = await store.link.execute("PUBSUB", "NUMSUB", store.keys.notifications)
        if count:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the application never subscribed to balance notifications")


def result(message: Message | Avp) -> int:
    avps = message.avps if isinstance(message, Message) else message.grouped()
    found = find(avps, d.AVP_RESULT_CODE)
    assert found is not None
    return found.u32()


def msccs(answer: Message) -> list[Avp]:
    return answer.find_all(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)


def granted(avp: Avp, code: int) -> int | None:
    gsu = find(avp.grouped(), d.AVP_GRANTED_SERVICE_UNIT)
    if gsu is None:
        return None
    value = find(gsu.grouped(), code)
    return None if value is None else (value.u32() if code == d.AVP_CC_TIME else value.u64())


def voice(requested: int | None = None, used: int | None = None) -> MsccSpec:
    return MsccSpec(
        requested=None if requested is None else UnitsSpec(time=requested),
        used=None if used is None else UnitsSpec(time=used),
    )


LONDON = "tel:+442079460000"


def answered(kind: str, code: int) -> float:
    value = REGISTRY.get_sample_value(
        "occ_diameter_cc_requests_total", {"type": kind, "result_code": str(code)}
    )
    return value or 0.0


def held() -> tuple[float, float]:
    money = REGISTRY.get_sample_value("occ_diameter_cc_reserved_money_micro") or 0.0
    seconds = REGISTRY.get_sample_value("occ_diameter_cc_reserved_units", {"service": "voice"}) or 0.0
    return money, seconds


async def test_a_voice_call_is_granted_charged_and_closed_to_the_micro_unit(
    gateway: Gateway, store: BalanceStore
) -> None:
    initial_ok = answered("initial", 2001)
    money_held, seconds_held = held()
    cca = await gateway.ccr("call-1", INITIAL, msccs=[voice(300)], called=LONDON)
    assert answered("initial", 2001) == initial_ok + 1
    assert result(cca) == d.DIAMETER_SUCCESS
    (m,) = msccs(cca)
    assert (result(m), granted(m, d.AVP_CC_TIME)) == (d.DIAMETER_SUCCESS, 300)
    assert find(m.grouped(), d.AVP_VALIDITY_TIME).u32() == 900  # type: ignore[union-attr]
    assert (await store.query("alice")).reserved == 400_000  # 5 min at 0.08
    assert held() == (money_held + 400_000, seconds_held + 300)  # what /metrics shows as held
    cca = await gateway.ccr("call-1", UPDATE, msccs=[voice(300, used=125)], called=LONDON)
    assert granted(msccs(cca)[0], d.AVP_CC_TIME) == 300
    cca = await gateway.ccr("call-1", TERMINATE, msccs=[voice(used=35)], called=LONDON)
    assert result(cca) == d.DIAMETER_SUCCESS and granted(msccs(cca)[0], d.AVP_CC_TIME) is None
    assert held() == (money_held, seconds_held)
    view = await store.query("alice")
    # 160 s -> 3 started minutes = 0.24
    assert (view.balance, view.reserved) == (10 * EUR - 240_000, 0)
    assert cca.find(d.AVP_CC_REQUEST_NUMBER).u32() == 2  # type: ignore[union-attr]


async def test_several_rating_groups_get_their_own_result_and_grant(
    gateway: Gateway, store: BalanceStore
) -> None:
    cca = await gateway.ccr(
        "pdp-1",
        INITIAL,
        msccs=[MsccSpec(rating_group=10), MsccSpec(rating_group=20, requested=UnitsSpec(total=2_097_152))],
    )
    by_group = {find(m.grouped(), d.AVP_RATING_GROUP).u32(): m for m in msccs(cca)}  # type: ignore[union-attr]
    # RG 10 without Requested-Service-Unit still gets the default data grant (10 MiB)
    assert granted(by_group[10], d.AVP_CC_TOTAL_OCTETS) == 10_485_760
    assert granted(by_group[20], d.AVP_CC_TOTAL_OCTETS) == 2_097_152
    assert all(result(m) == d.DIAMETER_SUCCESS for m in by_group.values())
    cca = await gateway.ccr(
        "pdp-1",
        UPDATE,
        msccs=[
            MsccSpec(
                rating_group=10, used=UnitsSpec(input=1_048_576, output=1_048_576), requested=UnitsSpec()
            ),
            MsccSpec(rating_group=20, used=UnitsSpec(total=1_048_576)),
        ],
    )
    groups = {
        find(m.grouped(), d.AVP_RATING_GROUP).u32(): granted(m, d.AVP_CC_TOTAL_OCTETS) for m in msccs(cca)
    }  # type: ignore[union-attr]
    assert groups == {10: 10_485_760, 20: None}  # RG 20 asked for nothing more
    view = await store.query("alice")
    assert view.balance + view.reserved == 10 * EUR - 30_000  # 3 MiB at 0.01


async def test_the_last_affordable_grant_carries_final_unit_indication_then_4012(
    store: BalanceStore, gateway: Gateway
) -> None:
    await subscriber(store, "bob", 500_000, msisdn="447700900002")
    cca = await gateway.ccr("low", INITIAL, subscriber="447700900002", msccs=[voice(300)], called=LONDON)
    assert find(msccs(cca)[0].grouped(), d.AVP_FINAL_UNIT_INDICATION) is None
    cca = await gateway.ccr(
        "low", UPDATE, subscriber="447700900002", msccs=[voice(300, used=300)], called=LONDON
    )
    (m,) = msccs(cca)
    assert granted(m, d.AVP_CC_TIME) == 60  # 0.10 left buys one minute
    fui = find(m.grouped(), d.AVP_FINAL_UNIT_INDICATION)
    assert (
        fui is not None
        and find(fui.grouped(), d.AVP_FINAL_UNIT_ACTION).u32() == d.FINAL_UNIT_ACTION_TERMINATE
    )  # type: ignore[union-attr]
    cca = await gateway.ccr(
        "low", UPDATE, subscriber="447700900002", msccs=[voice(300, used=60)], called=LONDON
    )
    assert result(msccs(cca)[0]) == d.DIAMETER_CREDIT_LIMIT_REACHED
    assert (await store.query("bob")).balance == 20_000


async def test_final_unit_action_redirect_names_the_top_up_portal(
    store: BalanceStore, gateway: Gateway
) -> None:
    await subscriber(store, "carol", 15_000, msisdn="447700900003")  # 1.5 MiB of data
    cca = await gateway.ccr(
        "redirect",
        INITIAL,
        subscriber="447700900003",
        msccs=[MsccSpec(rating_group=20, requested=UnitsSpec(total=10_485_760))],
    )
    (m,) = msccs(cca)
    assert granted(m, d.AVP_CC_TOTAL_OCTETS) == 1_572_864
    fui = find(m.grouped(), d.AVP_FINAL_UNIT_INDICATION)
    assert fui is not None
    server = find(fui.grouped(), d.AVP_REDIRECT_SERVER)
    assert server is not None
    assert find(server.grouped(), d.AVP_REDIRECT_SERVER_ADDRESS).utf8() == "http://topup.example/"  # type: ignore[union-attr]


async def test_a_retransmission_gets_the_same_answer_and_charges_once(
    gateway: Gateway, store: BalanceStore
) -> None:
    await gateway.ccr("dup", INITIAL, msccs=[voice(300)], called=LONDON)
    first = await gateway.ccr("dup", UPDATE, msccs=[voice(300, used=60)], called=LONDON)
    balance = (await store.query("alice")).balance
    again = await gateway.ccr(
        "dup", UPDATE, number=1, msccs=[voice(300, used=60)], called=LONDON, retransmit=True
    )
    assert again.avps == first.avps and again.flags == first.flags
    assert (await store.query("alice")).balance == balance
    await gateway.ccr("dup", UPDATE, number=3, msccs=[voice(300, used=60)], called=LONDON)
    balance = (await store.query("alice")).balance
    late = await gateway.ccr("dup", UPDATE, number=2, msccs=[voice(300, used=60)], called=LONDON)
    assert result(late) == d.DIAMETER_UNABLE_TO_COMPLY  # out of order: refused, nothing moved
    assert (await store.query("alice")).balance == balance


async def test_unknown_subscriber_suspended_account_and_unknown_session(
    gateway: Gateway, store: BalanceStore
) -> None:
    assert (
        result(await gateway.ccr("u", INITIAL, subscriber="19995550100", msccs=[voice(60)]))
        == d.DIAMETER_USER_UNKNOWN
    )
    await store.set_status("alice", AccountStatus.SUSPENDED)
    cca = await gateway.ccr("s", INITIAL, msccs=[voice(60)], called=LONDON)
    assert result(cca) == d.DIAMETER_END_USER_SERVICE_DENIED
    assert result(msccs(cca)[0]) == d.DIAMETER_END_USER_SERVICE_DENIED
    unknown = await gateway.ccr("never-started", UPDATE, subscriber=None, msccs=[voice(60, used=10)])
    assert result(unknown) == d.DIAMETER_UNKNOWN_SESSION_ID


async def test_events_debit_refund_check_balance_and_price_enquiry(
    gateway: Gateway, store: BalanceStore
) -> None:
    sms = MsccSpec(requested=UnitsSpec(specific=1))
    debit = await gateway.ccr(
        "sms-1", EVENT, msccs=[sms], action=d.REQUESTED_ACTION_DIRECT_DEBITING, context="32274@3gpp.org"
    )
    assert result(debit) == d.DIAMETER_SUCCESS
    assert (await store.query("alice")).balance == 10 * EUR - 50_000  # an SMS (the SMS context) at 0.05
    price = await gateway.ccr(
        "q-1", EVENT, msccs=[voice(120)], called=LONDON, action=d.REQUESTED_ACTION_PRICE_ENQUIRY
    )
    cost = price.find(d.AVP_COST_INFORMATION)
    assert cost is not None
    unit = find(cost.grouped(), d.AVP_UNIT_VALUE)
    assert unit is not None
    digits = find(unit.grouped(), d.AVP_VALUE_DIGITS)
    exponent = find(unit.grouped(), d.AVP_EXPONENT)
    assert digits is not None and exponent is not None
    assert digits.i64() * 10 ** (exponent.i32() + 6) == 160_000  # 2 min at 0.08
    assert find(cost.grouped(), d.AVP_CURRENCY_CODE).u32() == 978  # type: ignore[union-attr]
    check = await gateway.ccr(
        "c-1", EVENT, msccs=[voice(600)], called=LONDON, action=d.REQUESTED_ACTION_CHECK_BALANCE
    )
    assert check.find(d.AVP_CHECK_BALANCE_RESULT).u32() == d.CHECK_BALANCE_RESULT_ENOUGH_CREDIT  # type: ignore[union-attr]
    refund = await gateway.ccr(
        "r-1", EVENT, msccs=[voice(120)], called=LONDON, action=d.REQUESTED_ACTION_REFUND_ACCOUNT
    )
    assert result(refund) == d.DIAMETER_SUCCESS
    assert (await store.query("alice")).balance == 10 * EUR - 50_000 + 160_000


async def test_malformed_requests_are_answered_with_their_error(gateway: Gateway) -> None:
    client = gateway.client
    hbh, e2e = client.next_ids()
    missing = build_ccr(
        "bad-1",
        INITIAL,
        0,
        origin_host="gw.test",
        origin_realm="test",
        destination_realm="localdomain",
        hop_by_hop=hbh,
        end_to_end=e2e,
    )
    # drop Service-Context-Id (code 461): 5005 with an example of it in Failed-AVP
    from occ.diameter.codec import decode_message, encode_message

    request = decode_message(missing)
    kept = b"".join(a.encoded() for a in request.avps if a.code != d.AVP_SERVICE_CONTEXT_ID)
    answer = await client.send(
        encode_message(request.flags, request.code, request.application_id, hbh, e2e, kept), hbh
    )
    assert result(answer) == d.DIAMETER_MISSING_AVP
    failed = answer.find(d.AVP_FAILED_AVP)
    assert failed is not None and failed.grouped()[0].code == d.AVP_SERVICE_CONTEXT_ID
    hbh, e2e = client.next_ids()
    unknown = build_ccr(
        "bad-2",
        INITIAL,
        0,
        origin_host="gw.test",
        origin_realm="test",
        destination_realm="localdomain",
        hop_by_hop=hbh,
        end_to_end=e2e,
        extra=avp_u32(99999, 7),
    )
    answer = await client.send(unknown, hbh)
    assert result(answer) == d.DIAMETER_AVP_UNSUPPORTED
    assert answer.find(d.AVP_FAILED_AVP).grouped()[0].code == 99999  # type: ignore[union-attr]


async def test_redis_unreachable_is_answered_too_busy(store: BalanceStore) -> None:
    dead = BalanceStore(FastLink("redis://127.0.0.1:1/0", timeout=0.5), RedisSettings(), BalanceSettings())
    catalog = Catalog(load_tariff_file("config/tariffs/demo.toml"))
    app = CreditControlApplication(ChargingService(dead, catalog, BalanceSettings()), CC_SETTINGS)
    async with serving(app) as gw:
        cca = await gw.ccr("busy", INITIAL, msccs=[voice(60)])
        assert result(cca) == d.DIAMETER_TOO_BUSY
        assert cca.is_error


async def test_a_top_up_re_authorizes_starved_sessions_and_suspension_aborts_them(
    gateway: Gateway, store: BalanceStore
) -> None:
    await subscriber(store, "dave", 100_000, msisdn="447700900004")
    cca = await gateway.ccr("starved", INITIAL, subscriber="447700900004", msccs=[voice(300)], called=LONDON)
    assert find(msccs(cca)[0].grouped(), d.AVP_FINAL_UNIT_INDICATION) is not None
    await subscribed(store)
    await store.credit("dave", 5 * EUR, key="bank-9", reason="topup", now=PEAK)
    rar = await asyncio.wait_for(gateway.client.server_requests.get(), 5)
    assert rar.code == d.CMD_RE_AUTH and rar.find(d.AVP_SESSION_ID).utf8() == "starved"  # type: ignore[union-attr]
    await store.set_status("dave", AccountStatus.BLOCKED)
    asr = await asyncio.wait_for(gateway.client.server_requests.get(), 5)
    assert asr.code == d.CMD_ABORT_SESSION and asr.find(d.AVP_SESSION_ID).utf8() == "starved"  # type: ignore[union-attr]


def test_answers_list_the_mscc_avps_in_the_order_rfc_4006_gives() -> None:
    # guard against an accidental reorder of the builder: GSU before Result-Code inside an MSCC
    from occ.diameter.cc_answer import Grant, mscc
    from occ.diameter.codec import decode_message, encode_message

    encoded = mscc(Grant(result_code=2001, rating_group=10, granted=5, validity_time=60))
    message = decode_message(encode_message(0, 272, 4, 1, 1, encoded))
    codes = [a.code for a in message.avps[0].grouped()]
    assert codes == [d.AVP_GRANTED_SERVICE_UNIT, d.AVP_VALIDITY_TIME, d.AVP_RATING_GROUP, d.AVP_RESULT_CODE]
    assert find_all(message.avps, d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL)


async def test_a_session_silent_longer_than_tcc_has_its_reservation_returned(
    gateway: Gateway, store: BalanceStore
) -> None:
    from datetime import timedelta

    await gateway.ccr("quiet", INITIAL, msccs=[voice(300)], called=LONDON)
    assert (await store.query("alice")).reserved == 400_000
    # Tcc (session_timeout_s) is 600 s here: the reaper leaves the session alone before, returns it after
    assert await store.reap(PEAK + timedelta(seconds=590)) == 0
    assert await store.reap(PEAK + timedelta(seconds=610)) == 1
    view = await store.query("alice")
    assert (view.balance, view.reserved) == (10 * EUR, 0)


async def test_a_rating_group_reported_final_gets_no_new_grant(gateway: Gateway, store: BalanceStore) -> None:
    await gateway.ccr("rg-final", INITIAL, msccs=[MsccSpec(rating_group=10)])
    done = MsccSpec(
        rating_group=10,
        used=UnitsSpec(total=1_048_576),
        requested=UnitsSpec(),
        reporting_reason=d.REPORTING_REASON_FINAL,
    )
    cca = await gateway.ccr("rg-final", UPDATE, msccs=[done])
    (m,) = msccs(cca)
    assert (result(m), granted(m, d.AVP_CC_TOTAL_OCTETS)) == (d.DIAMETER_SUCCESS, None)
    view = await store.query("alice")
    assert (view.balance, view.reserved) == (10 * EUR - 10_000, 0)  # 1 MiB charged, nothing held


async def test_a_multi_service_client_without_mscc_gets_no_phantom_grant(
    gateway: Gateway, store: BalanceStore
) -> None:
    client = gateway.client
    hbh, e2e = client.next_ids()
    from occ.diameter.codec import avp_u32 as u32

    data = build_ccr(
        "msi",
        INITIAL,
        0,
        origin_host="gw.test",
        origin_realm="test",
        destination_realm="localdomain",
        hop_by_hop=hbh,
        end_to_end=e2e,
        subscription=(E164, MSISDN),
        extra=u32(d.AVP_MULTIPLE_SERVICES_INDICATOR, 1),
    )
    cca = await client.send(data, hbh)
    assert result(cca) == d.DIAMETER_SUCCESS
    assert cca.find(d.AVP_GRANTED_SERVICE_UNIT) is None and not msccs(cca)
    assert (await store.query("alice")).reserved == 0
    # the rating groups it then asks for get the money
    cca = await gateway.ccr("msi", UPDATE, number=1, msccs=[MsccSpec(rating_group=10, requested=UnitsSpec())])
    assert result(msccs(cca)[0]) == d.DIAMETER_SUCCESS


async def test_a_replay_with_reordered_msccs_keeps_each_grant_with_its_rating_group(gateway: Gateway) -> None:
    data_rg = MsccSpec(rating_group=10, requested=UnitsSpec(total=1_048_576))
    other_rg = MsccSpec(rating_group=20, requested=UnitsSpec(total=2_097_152))
    await gateway.ccr("order", INITIAL, msccs=[data_rg, other_rg])
    replay = await gateway.ccr("order", INITIAL, number=0, msccs=[other_rg, data_rg], retransmit=True)
    grants = {
        find(m.grouped(), d.AVP_RATING_GROUP).u32(): granted(m, d.AVP_CC_TOTAL_OCTETS)  # type: ignore[union-attr]
        for m in msccs(replay)
    }
    assert grants == {10: 1_048_576, 20: 2_097_152}


async def test_rar_goes_to_the_client_behind_a_relay_not_to_the_relay(
    gateway: Gateway, store: BalanceStore
) -> None:
    await subscriber(store, "erin", 100_000, msisdn="447700900005")
    client = gateway.client
    hbh, e2e = client.next_ids()
    data = build_ccr(
        "behind-relay",
        INITIAL,
        0,
        origin_host="pgw.far",
        origin_realm="far.example",
        destination_realm="localdomain",
        hop_by_hop=hbh,
        end_to_end=e2e,
        subscription=(E164, "447700900005"),
        msccs=[voice(300)],
        called_party=LONDON,
    )
    cca = await client.send(data, hbh)
    assert find(msccs(cca)[0].grouped(), d.AVP_FINAL_UNIT_INDICATION) is not None
    await subscribed(store)
    await store.credit("erin", 5 * EUR, key="bank-10", reason="topup", now=PEAK)
    rar = await asyncio.wait_for(client.server_requests.get(), 5)
    assert rar.find(d.AVP_DESTINATION_HOST).utf8() == "pgw.far"  # type: ignore[union-attr]
    assert rar.find(d.AVP_DESTINATION_REALM).utf8() == "far.example"  # type: ignore[union-attr]


async def test_an_sms_event_with_several_msccs_debits_each_and_answers_each(
    gateway: Gateway, store: BalanceStore
) -> None:
    one = MsccSpec(service_identifier=1, requested=UnitsSpec(specific=1))
    three = MsccSpec(service_identifier=2, requested=UnitsSpec(specific=3))
    cca = await gateway.ccr(
        "sms-batch",
        EVENT,
        msccs=[one, three],
        action=d.REQUESTED_ACTION_DIRECT_DEBITING,
        context="32274@3gpp.org",
    )
    assert [(result(m), granted(m, d.AVP_CC_SERVICE_SPECIFIC_UNITS)) for m in msccs(cca)] == [
        (d.DIAMETER_SUCCESS, 1),
        (d.DIAMETER_SUCCESS, 3),
    ]
    assert (await store.query("alice")).balance == 10 * EUR - 4 * 50_000


async def test_refunds_above_the_limit_and_balance_checks_of_stopped_accounts_are_refused(
    gateway: Gateway, store: BalanceStore
) -> None:
    from datetime import timedelta

    from balance.records import BucketRecord

    huge = await gateway.ccr(
        "r-big",
        EVENT,
        msccs=[MsccSpec(requested=UnitsSpec(specific=1_000))],
        action=d.REQUESTED_ACTION_REFUND_ACCOUNT,
        context="32274@3gpp.org",
    )
    assert result(huge) == d.DIAMETER_UNABLE_TO_COMPLY  # 50.00 of SMS: above max_refund (10.00)
    assert (await store.query("alice")).balance == 10 * EUR
    # 300 SMS cost 15.00 > 10.00, but a bucket of 500 SMS covers them
    await store.add_bucket(
        "alice", BucketRecord(bucket_id="sms", service="sms", units=500, expires_at=PEAK + timedelta(days=1))
    )
    check = await gateway.ccr(
        "c-sms",
        EVENT,
        msccs=[MsccSpec(requested=UnitsSpec(specific=300))],
        action=d.REQUESTED_ACTION_CHECK_BALANCE,
        context="32274@3gpp.org",
    )
    assert check.find(d.AVP_CHECK_BALANCE_RESULT).u32() == d.CHECK_BALANCE_RESULT_ENOUGH_CREDIT  # type: ignore[union-attr]
    await store.set_status("alice", AccountStatus.SUSPENDED)
    check = await gateway.ccr("c-2", EVENT, msccs=[voice(60)], action=d.REQUESTED_ACTION_CHECK_BALANCE)
    assert result(check) == d.DIAMETER_END_USER_SERVICE_DENIED


async def test_the_sessions_a_worker_tracks_are_invisible_to_the_cyclic_collector(
    store: BalanceStore,
) -> None:
    # 100,000 open sessions as tracked objects cost each full collection 17-19 ms: a stall in every
    # request's latency on a busy gateway
    catalog = Catalog(load_tariff_file("config/tariffs/demo.toml"))
    charging = ChargingService(store, catalog, BalanceSettings(), clock=lambda: PEAK)
    app = CreditControlApplication(charging, CC_SETTINGS, clock=lambda: PEAK)
    await subscriber(store, "alice", 10 * EUR)
    async with serving(app) as gateway:
        await gateway.ccr("gc-1", INITIAL, msccs=[voice(300)], called=LONDON)
        await gateway.ccr("gc-1", UPDATE, msccs=[voice(300, used=60)], called=LONDON)
        (tracked,) = app._tables.sessions.values()
        assert tracked.held and tracked.peer.is_open
        for entry in (app._tables.sessions, tracked, tracked.held, *tracked.held.values()):
            assert not gc.is_tracked(entry), entry
        assert not any(gc.is_tracked(ids) for ids in app._tables.by_account.values())
        assert held()[1] > 0  # and the gauges still see what the session holds
