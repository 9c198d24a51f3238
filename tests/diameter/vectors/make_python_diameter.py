"""How ``python_diameter.txt`` was produced: each vector is built with python-diameter's own message classes.

    .venv/bin/python tests/diameter/vectors/make_python_diameter.py   # rewrite python_diameter.txt

The stored hex is frozen; ``test_codec_vectors.py`` decodes it with our codec, re-encodes the same content
with our encoders, and (with python-diameter 0.9.0, the version that wrote the file) checks that this script
still produces exactly the stored bytes.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from diameter.message import Message
from diameter.message.avp.grouped import (
    FinalUnitIndication,
    GrantedServiceUnit,
    MultipleServicesCreditControl,
    PsInformation,
    RecipientAddress,
    RecipientInfo,
    RequestedServiceUnit,
    ServiceInformation,
    SmsInformation,
    SubscriptionId,
    UsedServiceUnit,
    UserEquipmentInfo,
    VendorSpecificApplicationId,
)
from diameter.message.commands import (
    CapabilitiesExchangeAnswer,
    CapabilitiesExchangeRequest,
    CreditControlAnswer,
    CreditControlRequest,
    DeviceWatchdogAnswer,
    DeviceWatchdogRequest,
)

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "python_diameter.txt"

SESSION = "pgw.example.net;1700000000;42"
EVENT_TIME = datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)  # Unix 1700000000


def _ids(message: Message, hop_by_hop: int, end_to_end: int, proxiable: bool, app: int = 0) -> None:
    message.header.application_id = app
    message.header.hop_by_hop_identifier = hop_by_hop
    message.header.end_to_end_identifier = end_to_end
    message.header.is_proxyable = proxiable


def _wire(message: Message) -> bytes:
    wire: bytes = message.as_bytes()
    return wire


def cer() -> bytes:
    m = CapabilitiesExchangeRequest()
    _ids(m, 0x10000001, 0x20000001, False)
    m.origin_host = b"pgw.example.net"
    m.origin_realm = b"example.net"
    m.host_ip_address = ["192.0.2.10", "2001:db8::10"]
    m.vendor_id = 10415
    m.product_name = "occ-test-pgw"
    m.origin_state_id = 1700000000
    m.supported_vendor_id = [10415]
    m.auth_application_id = [4]
    m.inband_security_id = [0]
    m.vendor_specific_application_id = [VendorSpecificApplicationId(vendor_id=10415, auth_application_id=4)]
    m.firmware_revision = 1
    return _wire(m)


def cea() -> bytes:
    m = CapabilitiesExchangeAnswer()
    _ids(m, 0x10000001, 0x20000001, False)
    m.result_code = 2001
    m.origin_host = b"ocs.example.net"
    m.origin_realm = b"example.net"
    m.host_ip_address = ["198.51.100.7"]
    m.vendor_id = 0
    m.product_name = "occ"
    m.origin_state_id = 1700000123
    m.auth_application_id = [4]
    m.vendor_specific_application_id = [VendorSpecificApplicationId(vendor_id=10415, auth_application_id=4)]
    m.firmware_revision = 100
    return _wire(m)


def dwr() -> bytes:
    m = DeviceWatchdogRequest()
    _ids(m, 0x10000002, 0x20000002, False)
    m.origin_host = b"pgw.example.net"
    m.origin_realm = b"example.net"
    m.origin_state_id = 1700000000
    return _wire(m)


def dwa() -> bytes:
    m = DeviceWatchdogAnswer()
    _ids(m, 0x10000002, 0x20000002, False)
    m.result_code = 2001
    m.origin_host = b"ocs.example.net"
    m.origin_realm = b"example.net"
    m.origin_state_id = 1700000123
    return _wire(m)


def _ccr(request_type: int, number: int, hop_by_hop: int) -> CreditControlRequest:
    m = CreditControlRequest()
    _ids(m, hop_by_hop, 0x30000000 + number, True, 4)
    m.session_id = SESSION
    m.origin_host = b"pgw.example.net"
    m.origin_realm = b"example.net"
    m.destination_realm = b"ocs.example.net"
    m.auth_application_id = 4
    m.service_context_id = "32251@3gpp.org"
    m.cc_request_type = request_type
    m.cc_request_number = number
    m.event_timestamp = EVENT_TIME
    m.subscription_id = [
        SubscriptionId(subscription_id_type=0, subscription_id_data="447700900123"),
        SubscriptionId(subscription_id_type=1, subscription_id_data="234150999999999"),
    ]
    return m


def ccr_initial() -> bytes:
    m = _ccr(1, 0, 0x10000010)
    m.multiple_services_indicator = 1
    m.multiple_services_credit_control = [
        MultipleServicesCreditControl(requested_service_unit=RequestedServiceUnit(), rating_group=10)
    ]
    m.user_equipment_info = UserEquipmentInfo(
        user_equipment_info_type=0, user_equipment_info_value=b"3534560123456701"
    )
    m.service_information = ServiceInformation(
        ps_information=PsInformation(
            tgpp_charging_id=b"\x00\x00\x30\x39",
            tgpp_pdp_type=0,
            pdp_address=["10.45.0.7"],
            tgpp_sgsn_mcc_mnc="23415",
            called_station_id="internet",
        )
    )
    return _wire(m)


def ccr_update() -> bytes:
    m = _ccr(2, 1, 0x10000011)
    m.multiple_services_credit_control = [
        MultipleServicesCreditControl(
            requested_service_unit=RequestedServiceUnit(),
            used_service_unit=[
                UsedServiceUnit(
                    cc_time=60,
                    cc_total_octets=1048576,
                    cc_input_octets=262144,
                    cc_output_octets=786432,
                    reporting_reason=3,
                )
            ],
            service_identifier=[1],
            rating_group=10,
        )
    ]
    return _wire(m)


def ccr_termination() -> bytes:
    m = _ccr(3, 2, 0x10000012)
    m.termination_cause = 1
    m.multiple_services_credit_control = [
        MultipleServicesCreditControl(
            used_service_unit=[
                UsedServiceUnit(
                    cc_time=17,
                    cc_total_octets=5000000000,
                    cc_input_octets=1000000000,
                    cc_output_octets=4000000000,
                    reporting_reason=2,
                )
            ],
            rating_group=10,
        )
    ]
    return _wire(m)


def ccr_event_sms() -> bytes:
    m = _ccr(4, 0, 0x10000013)
    m.requested_action = 0
    m.multiple_services_credit_control = [
        MultipleServicesCreditControl(
            requested_service_unit=RequestedServiceUnit(cc_service_specific_units=1), service_identifier=[3]
        )
    ]
    m.service_information = ServiceInformation(
        sms_information=SmsInformation(
            recipient_info=[
                RecipientInfo(
                    recipient_address=[RecipientAddress(address_type=1, address_data="447700900456")]
                )
            ],
        )
    )
    return _wire(m)


def cca_update() -> bytes:
    m = CreditControlAnswer()
    _ids(m, 0x10000011, 0x30000001, True, 4)
    m.session_id = SESSION
    m.result_code = 2001
    m.origin_host = b"ocs.example.net"
    m.origin_realm = b"example.net"
    m.auth_application_id = 4
    m.cc_request_type = 2
    m.cc_request_number = 1
    m.multiple_services_credit_control = [
        MultipleServicesCreditControl(
            granted_service_unit=GrantedServiceUnit(cc_total_octets=10485760),
            rating_group=10,
            validity_time=3600,
            result_code=2001,
            final_unit_indication=FinalUnitIndication(final_unit_action=0),
            volume_quota_threshold=1048576,
            quota_holding_time=300,
        )
    ]
    return _wire(m)


VECTORS = [
    (
        "cer",
        "Capabilities-Exchange-Request: IPv4 + IPv6 Host-IP-Address, Vendor-Specific-Application-Id",
        cer,
    ),
    ("cea", "Capabilities-Exchange-Answer: DIAMETER_SUCCESS, Auth-Application-Id 4", cea),
    ("dwr", "Device-Watchdog-Request with Origin-State-Id", dwr),
    ("dwa", "Device-Watchdog-Answer: DIAMETER_SUCCESS", dwa),
    (
        "ccr-i",
        "CCR INITIAL: two Subscription-Id, MSCC {RSU, RG 10}, UE-Info, 3GPP PS-Information",
        ccr_initial,
    ),
    ("ccr-u", "CCR UPDATE: MSCC {RSU, USU {time, octets, 3GPP Reporting-Reason}, SI 1, RG 10}", ccr_update),
    ("ccr-t", "CCR TERMINATION: Termination-Cause, MSCC {USU {Unsigned64 > 2^32}, RG 10}", ccr_termination),
    (
        "ccr-e",
        "CCR EVENT (SMS): DIRECT_DEBITING, RSU {1 unit}, 3GPP SMS-Information recipient",
        ccr_event_sms,
    ),
    ("cca-u", "CCA UPDATE: MSCC {GSU, RG, Validity-Time, Result-Code, FUI, 3GPP thresholds}", cca_update),
]


def build() -> list[tuple[str, str, bytes]]:
    return [(name, description, make()) for name, description, make in VECTORS]


def render(vectors: list[tuple[str, str, bytes]]) -> str:
    lines = [
        "# Diameter messages built by python-diameter 0.9.0: tests/diameter/vectors/make_python_diameter.py",
        "# Format: 'vector NAME DESCRIPTION', then the message hex (16 bytes a line), then a blank line.",
        "",
    ]
    for name, description, data in vectors:
        lines.append(f"vector {name} {description}")
        lines += [data[i : i + 16].hex(" ") for i in range(0, len(data), 16)]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    OUTPUT.write_text(render(build()), encoding="utf-8")
    print(f"wrote {OUTPUT}")
