"""Generate occ/diameter/dictionary.py from python-diameter's AVP definitions.

    .venv/bin/python scripts/gen_diameter_dictionary.py            # rewrite occ/diameter/dictionary.py
    .venv/bin/python scripts/gen_diameter_dictionary.py -o FILE    # write elsewhere (the up-to-date test)

The source is the installed python-diameter: ``diameter.message.avp.dictionary`` (AVP_DICTIONARY and
AVP_VENDOR_DICTIONARY: name, type class, M flag per (code, vendor)) and ``diameter.message.constants``
(command codes, application ids, Result-Code and enumeration values; an ``E_*`` value belongs to the
``AVP_*`` assignment above it in that file). This script only chooses: a curated list of the names the
server uses becomes named constants, and every AVP python-diameter knows goes into ``AVPS``. The few values
python-diameter lacks or gets wrong are in ``SUPPLEMENT_*`` / ``CORRECTIONS`` below, each citing its spec.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import inspect
import sys
from pathlib import Path

from diameter.message import constants
from diameter.message.avp import avp as avp_types
from diameter.message.avp.dictionary import AVP_DICTIONARY, AVP_VENDOR_DICTIONARY

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "occ" / "diameter" / "dictionary.py"

VENDOR_3GPP = 10415

# python-diameter type class -> RFC 6733 §4.2/§4.3 data format name. Enumerated is an alias of
# Integer32 there, so an AVP becomes "Enumerated" when python-diameter lists values for it.
TYPE_NAMES: dict[type, str] = {
    avp_types.AvpOctetString: "OctetString",
    avp_types.AvpUtf8String: "UTF8String",
    avp_types.AvpAddress: "Address",
    avp_types.AvpTime: "Time",
    avp_types.AvpUnsigned32: "Unsigned32",
    avp_types.AvpUnsigned64: "Unsigned64",
    avp_types.AvpInteger32: "Integer32",
    avp_types.AvpInteger64: "Integer64",
    avp_types.AvpFloat32: "Float32",
    avp_types.AvpFloat64: "Float64",
    avp_types.AvpGrouped: "Grouped",
    avp_types.Avp: "OctetString",
}


def words(text: str) -> list[str]:
    return text.split()


# --- curated: the AVPs the server names (spelling after CORRECTIONS; vendor 0)
BASE_AVPS = words("""
Session-Id Origin-Host Origin-Realm Destination-Host Destination-Realm Result-Code Experimental-Result
Experimental-Result-Code Failed-AVP Error-Message Error-Reporting-Host Host-IP-Address Vendor-Id Product-Name
Firmware-Revision Origin-State-Id Auth-Application-Id Acct-Application-Id Vendor-Specific-Application-Id
Supported-Vendor-Id Inband-Security-Id Disconnect-Cause Route-Record Proxy-Info Proxy-Host Proxy-State
Re-Auth-Request-Type Termination-Cause User-Name Event-Timestamp Auth-Session-State Redirect-Host
Redirect-Host-Usage Redirect-Max-Cache-Time Class Session-Timeout Authorization-Lifetime Auth-Grace-Period
Multi-Round-Time-Out Session-Binding Session-Server-Failover Called-Station-Id Framed-IP-Address Filter-Id
CC-Correlation-Id CC-Input-Octets CC-Money CC-Output-Octets CC-Request-Number CC-Request-Type
CC-Service-Specific-Units CC-Session-Failover CC-Sub-Session-Id CC-Time CC-Total-Octets Check-Balance-Result
Cost-Information Cost-Unit Currency-Code Credit-Control Credit-Control-Failure-Handling
Direct-Debiting-Failure-Handling Exponent Final-Unit-Indication Granted-Service-Unit Rating-Group
Redirect-Address-Type Redirect-Server Redirect-Server-Address Requested-Action Requested-Service-Unit
Restriction-Filter-Rule Service-Identifier Service-Parameter-Info Service-Parameter-Type
Service-Parameter-Value Subscription-Id Subscription-Id-Data Subscription-Id-Type Unit-Value
Used-Service-Unit Value-Digits
Validity-Time Final-Unit-Action Tariff-Time-Change Tariff-Change-Usage G-S-U-Pool-Identifier
G-S-U-Pool-Reference CC-Unit-Type Multiple-Services-Indicator Multiple-Services-Credit-Control
User-Equipment-Info User-Equipment-Info-Type User-Equipment-Info-Value Service-Context-Id
User-Equipment-Info-Extension Redirect-Server-Extension Redirect-Address-IPAddress Redirect-Address-URL
Redirect-Address-SIP-URI QoS-Final-Unit-Indication
Subscription-Id-Extension Subscription-Id-E164 Subscription-Id-IMSI Subscription-Id-SIP-URI
Subscription-Id-NAI Subscription-Id-Private SIP-Method
""")

# --- curated: 3GPP TS 32.299 / TS 29.061 AVPs (vendor 10415)
TGPP_AVPS = words("""
Reporting-Reason Volume-Quota-Threshold Time-Quota-Threshold Unit-Quota-Threshold Quota-Holding-Time
Quota-Consumption-Time Trigger Trigger-Type Envelope-Reporting Time-Quota-Mechanism Time-Quota-Type
Base-Time-Interval Offline-Charging Low-Balance-Indication Remaining-Balance AoC-Request-Type
Service-Information IMS-Information PS-Information SMS-Information Service-Specific-Info Service-Specific-Data
Service-Specific-Type Called-Party-Address Calling-Party-Address Called-Asserted-Identity
Requested-Party-Address Event-Type Role-Of-Node Node-Functionality IMS-Charging-Identifier
Inter-Operator-Identifier
Time-Stamps SIP-Request-Timestamp SIP-Response-Timestamp Application-Server-Information
Recipient-Address Recipient-Info Address-Data Address-Type Address-Domain Originator-Address
Originator-Received-Address SMS-Node SMSC-Address Data-Coding-Scheme SM-Message-Type Originator-SCCP-Address
Recipient-SCCP-Address Client-Address Reply-Path-Requested SM-Service-Type
3GPP-Charging-Id 3GPP-PDP-Type PDP-Address 3GPP-SGSN-MCC-MNC 3GPP-GGSN-MCC-MNC 3GPP-IMSI-MCC-MNC
3GPP-RAT-Type 3GPP-User-Location-Info 3GPP-MS-TimeZone 3GPP-Selection-Mode 3GPP-Charging-Characteristics
3GPP-NSAPI SGSN-Address GGSN-Address PDN-Connection-Charging-ID Charging-Rule-Base-Name Serving-Node-Type
User-CSG-Information Start-Time Stop-Time
""")

# --- curated: enumerations, keyed by our AVP name -> python-diameter's AVP_* constant
ENUMS: dict[str, str] = {
    "CC-Request-Type": "AVP_CC_REQUEST_TYPE",
    "Requested-Action": "AVP_REQUESTED_ACTION",
    "Subscription-Id-Type": "AVP_SUBSCRIPTION_ID_TYPE",
    "Final-Unit-Action": "AVP_FINAL_UNIT_ACTION",
    "Redirect-Address-Type": "AVP_REDIRECT_ADDRESS_TYPE",
    "Reporting-Reason": "AVP_TGPP_3GPP_REPORTING_REASON",
    "Disconnect-Cause": "AVP_DISCONNECT_CAUSE",
    "Re-Auth-Request-Type": "AVP_RE_AUTH_REQUEST_TYPE",
    "Termination-Cause": "AVP_TERMINATION_CAUSE",
    "Multiple-Services-Indicator": "AVP_MULTIPLE_SERVICES_INDICATOR",
    "Credit-Control-Failure-Handling": "AVP_CREDIT_CONTROL_FAILURE_HANDLING",
    "Direct-Debiting-Failure-Handling": "AVP_DIRECT_DEBITING_FAILURE_HANDLING",
    "Check-Balance-Result": "AVP_CHECK_BALANCE_RESULT",
    "Auth-Session-State": "AVP_AUTH_SESSION_STATE",
    "Inband-Security-Id": "AVP_INBAND_SECURITY_ID",
    "CC-Session-Failover": "AVP_CC_SESSION_FAILOVER",
    "CC-Unit-Type": "AVP_CC_UNIT_TYPE",
    "Tariff-Change-Usage": "AVP_TARIFF_CHANGE_USAGE",
    "User-Equipment-Info-Type": "AVP_USER_EQUIPMENT_INFO_TYPE",
    "Trigger-Type": "AVP_TGPP_TRIGGER_TYPE",
}

# --- curated: Result-Code values (RFC 6733 §7.1, RFC 4006/8506 §9)
RESULT_CODES = [1001, 2001, 2002, *range(3001, 3012), 4001, 4002, 4003, 4010, 4011, 4012, *range(5001, 5018)]
RESULT_CODES += [5030, 5031]

COMMANDS = {
    "CMD_CAPABILITIES_EXCHANGE": constants.CMD_CAPABILITIES_EXCHANGE,
    "CMD_DEVICE_WATCHDOG": constants.CMD_DEVICE_WATCHDOG,
    "CMD_DISCONNECT_PEER": constants.CMD_DISCONNECT_PEER,
    "CMD_CREDIT_CONTROL": constants.CMD_CREDIT_CONTROL,
    "CMD_RE_AUTH": constants.CMD_RE_AUTH,
    "CMD_ABORT_SESSION": constants.CMD_ABORT_SESSION,
    "CMD_SESSION_TERMINATION": constants.CMD_SESSION_TERMINATION,
}
APPLICATIONS = {
    "APP_COMMON": constants.APP_DIAMETER_COMMON_MESSAGES,
    "APP_CREDIT_CONTROL": constants.APP_DIAMETER_CREDIT_CONTROL_APPLICATION,
    "APP_RELAY": constants.APP_RELAY,
}

# --- what python-diameter lacks or names differently
# (name, code, vendor, type, M flag) — RFC 8506 §8.58-§8.63 (Subscription-Id-Extension and its choices). The M
# flag follows python-diameter's other RFC 8506 extension AVPs (665-669: not set).
SUPPLEMENT_AVPS: list[tuple[str, int, int, str, bool]] = [
    ("Subscription-Id-Extension", 659, 0, "Grouped", False),
    ("Subscription-Id-E164", 660, 0, "UTF8String", False),
    ("Subscription-Id-IMSI", 661, 0, "UTF8String", False),
    ("Subscription-Id-SIP-URI", 662, 0, "UTF8String", False),
    ("Subscription-Id-NAI", 663, 0, "UTF8String", False),
    ("Subscription-Id-Private", 664, 0, "UTF8String", False),
]
# (code, vendor) -> (name, type): where python-diameter's entry disagrees with the specification.
CORRECTIONS: dict[tuple[int, int], tuple[str, str]] = {
    # TS 32.299 names AVP 872 "Reporting-Reason" (Enumerated); python-diameter calls it 3GPP-Reporting-Reason.
    (872, VENDOR_3GPP): ("Reporting-Reason", "Enumerated"),
    # TS 29.061 §16.4.7.2: 3GPP-Charging-Id is Unsigned32 in Diameter (python-diameter: OctetString).
    (2, VENDOR_3GPP): ("3GPP-Charging-Id", "Unsigned32"),
    # RFC 6733 §7.1, §8.9, §8.17, §6.10: Unsigned32 (python-diameter: Integer32; same wire form below 2^31).
    (268, 0): ("Result-Code", "Unsigned32"),
    (291, 0): ("Authorization-Lifetime", "Unsigned32"),
    (270, 0): ("Session-Binding", "Unsigned32"),
    (299, 0): ("Inband-Security-Id", "Unsigned32"),
}
# enumeration values python-diameter lacks: our AVP name -> [(value name, value)]
SUPPLEMENT_ENUMS: dict[str, list[tuple[str, int]]] = {
    # TS 32.299, Reporting-Reason AVP (872): UNUSED_QUOTA_TIMER (9) came after python-diameter's source.
    "Reporting-Reason": [("UNUSED_QUOTA_TIMER", 9)],
}


def const_name(avp_name: str) -> str:
    return avp_name.upper().replace("-", "_")


def enum_groups() -> dict[str, list[str]]:
    """python-diameter ``AVP_*`` constant -> the ``E_*`` constants assigned below it in constants.py."""
    tree = ast.parse(inspect.getsource(constants))
    groups: dict[str, list[str]] = {}
    current: str | None = None
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name):
            continue
        if target.id.startswith("AVP_"):
            current = target.id
            groups.setdefault(current, [])
        elif target.id.startswith("E_") and current is not None:
            groups[current].append(target.id)
    return groups


def collect_avps() -> dict[tuple[int, int], tuple[str, str, bool]]:
    """Every AVP python-diameter knows, (code, vendor) -> (name, type, M flag), with our supplements."""
    groups = enum_groups()
    # python-diameter spells a constant AVP_[<VENDOR>_]<NAME>: match both the code and the name's tail
    enumerated = {(getattr(constants, name), name) for name, values in groups.items() if values}
    found: dict[tuple[int, int], tuple[str, str, bool]] = {}
    tables = [(0, AVP_DICTIONARY), *sorted(AVP_VENDOR_DICTIONARY.items())]
    for dict_vendor, table in tables:
        for code, info in table.items():
            vendor = info.get("vendor", dict_vendor)
            kind = TYPE_NAMES[info["type"]]
            tail = "_" + const_name(info["name"])
            if kind == "Integer32" and any(c == code and n.endswith(tail) for c, n in enumerated):
                kind = "Enumerated"
            found[(code, vendor)] = (info["name"], kind, bool(info.get("mandatory", False)))
    for name, code, vendor, kind, mandatory in SUPPLEMENT_AVPS:
        if (code, vendor) in found:
            raise SystemExit(f"supplement {name} ({code}, {vendor}) is now in python-diameter: drop it")
        found[(code, vendor)] = (name, kind, mandatory)
    for key, (name, kind) in CORRECTIONS.items():
        found[key] = (name, kind, found[key][2])
    return found


def lookup(avps: dict[tuple[int, int], tuple[str, str, bool]], vendor: int, names: list[str]) -> list[int]:
    by_name = {name: code for (code, v), (name, _, _) in avps.items() if v == vendor}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise SystemExit(f"python-diameter has no AVP {missing} (vendor {vendor})")
    return [by_name[name] for name in names]


def render() -> str:
    version = importlib.metadata.version("python-diameter")
    avps = collect_avps()
    groups = enum_groups()
    out: list[str] = []
    emit = out.append
    emit(f"# GENERATED by scripts/gen_diameter_dictionary.py from python-diameter {version} — do not edit")
    emit('"""Diameter dictionary: vendor, application, command, AVP codes, Result-Codes, enumerations, AVPS.')
    emit("")
    emit("Regenerate with ``.venv/bin/python scripts/gen_diameter_dictionary.py``; a test fails when")
    emit("this file is stale. The 3GPP AVPs below must be looked up with ``vendor=VENDOR_3GPP``.")
    emit('"""')
    emit("")
    emit("from __future__ import annotations")
    emit("")
    emit("from typing import Final, NamedTuple")
    emit("")
    emit("")
    emit("class AvpDef(NamedTuple):")
    emit('    """What the dictionary knows of one AVP: its name, RFC 6733 data format and M flag."""')
    emit("")
    emit("    name: str")
    emit("    type: str")
    emit("    mandatory: bool")
    emit("")
    emit("")
    emit(f"VENDOR_3GPP: Final = {VENDOR_3GPP}")
    emit("")
    emit("# Application-Ids")
    for name, value in APPLICATIONS.items():
        emit(f"{name}: Final = 0x{value:X}" if value > 0xFFFF else f"{name}: Final = {value}")
    emit("")
    emit("# Command-Codes")
    for name, value in COMMANDS.items():
        emit(f"{name}: Final = {value}")

    def emit_avps(title: str, vendor: int, names: list[str]) -> None:
        emit("")
        emit(title)
        for code in lookup(avps, vendor, names):
            name, kind, _ = avps[(code, vendor)]
            emit(f"AVP_{const_name(name)}: Final = {code}  # {kind}")

    emit_avps("# AVP codes, base protocol (RFC 6733), credit control (RFC 4006/8506); vendor 0", 0, BASE_AVPS)
    emit_avps("# AVP codes, 3GPP (TS 32.299, TS 29.061); vendor VENDOR_3GPP", VENDOR_3GPP, TGPP_AVPS)

    emit("")
    emit("# Result-Code values (RFC 6733 §7.1, RFC 4006 §9)")
    by_value = {
        getattr(constants, n): n.removeprefix("E_RESULT_CODE_")
        for n in dir(constants)
        if n.startswith("E_RESULT_CODE_")
    }
    for code in RESULT_CODES:
        if code not in by_value:
            raise SystemExit(f"python-diameter has no Result-Code {code}")
        emit(f"{by_value[code]}: Final = {code}")

    emit("")
    emit("# Enumerations: <AVP>_<VALUE>")
    for our_name, pd_const in ENUMS.items():
        prefix = "E_" + pd_const.removeprefix("AVP_").removeprefix("TGPP_") + "_"
        values: list[tuple[str, int]] = []
        for e_name in groups[pd_const]:
            if not e_name.startswith(prefix):
                raise SystemExit(f"{e_name} does not start with {prefix}")
            values.append((e_name.removeprefix(prefix), getattr(constants, e_name)))
        for supplement in SUPPLEMENT_ENUMS.get(our_name, []):
            if supplement[1] in {value for _, value in values}:
                raise SystemExit(f"supplement {our_name} {supplement} is now in python-diameter: drop it")
            values.append(supplement)
        if not values:
            raise SystemExit(f"python-diameter lists no values for {our_name}")
        for value_name, value in sorted(values, key=lambda item: item[1]):
            emit(f"{const_name(our_name)}_{value_name}: Final = {value}")

    emit("")
    emit("# Every AVP python-diameter knows (all vendors): decides 'unknown AVP with the M bit' (5001).")
    emit("AVPS: Final[dict[tuple[int, int], AvpDef]] = {")
    for (code, vendor), (name, kind, mandatory) in sorted(avps.items(), key=lambda item: item[0][::-1]):
        if '"' in name or "\\" in name:
            raise SystemExit(f"unexpected AVP name {name!r}")
        emit(f'    ({code}, {vendor}): AvpDef("{name}", "{kind}", {mandatory}),')
    emit("}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("-o", "--output", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    text = render()
    names = [line.split(":")[0] for line in text.splitlines() if line[:1].isupper() and ": Final" in line]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SystemExit(f"constant names collide: {duplicates}")
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text.splitlines())} lines)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
