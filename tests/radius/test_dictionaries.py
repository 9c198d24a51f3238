"""The RADIUS dictionaries in config/dictionaries load with pyrad and say what the RFCs and vendors say.

The tables below are written from the RFCs and vendor documentation, not from the dictionary files: a
wrong code, vendor number, type or value in either place fails a test.
"""

from __future__ import annotations

import logging
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from pyrad import packet
from pyrad.dictionary import Dictionary

REPO_ROOT = Path(__file__).resolve().parents[2]
DICT_DIR = REPO_ROOT / "config" / "dictionaries"
MAIN = DICT_DIR / "dictionary"
RELATIVE_MAIN = "config/dictionaries/dictionary"  # the [radius] dictionary setting

# (name, code, vendor id, pyrad data type); vendor 0 is the standard attribute space.
ATTRIBUTES: list[tuple[str, int, int, str]] = [
    # RFC 2865
    ("User-Name", 1, 0, "string"),
    ("User-Password", 2, 0, "string"),
    ("CHAP-Password", 3, 0, "octets"),
    ("NAS-IP-Address", 4, 0, "ipaddr"),
    ("NAS-Port", 5, 0, "integer"),
    ("Service-Type", 6, 0, "integer"),
    ("Framed-Protocol", 7, 0, "integer"),
    ("Framed-IP-Address", 8, 0, "ipaddr"),
    ("Filter-Id", 11, 0, "string"),
    ("Reply-Message", 18, 0, "string"),
    ("State", 24, 0, "octets"),
    ("Class", 25, 0, "octets"),
    ("Vendor-Specific", 26, 0, "octets"),
    ("Session-Timeout", 27, 0, "integer"),
    ("Idle-Timeout", 28, 0, "integer"),
    ("Termination-Action", 29, 0, "integer"),
    ("Called-Station-Id", 30, 0, "string"),
    ("Calling-Station-Id", 31, 0, "string"),
    ("NAS-Identifier", 32, 0, "string"),
    ("Proxy-State", 33, 0, "octets"),
    ("CHAP-Challenge", 60, 0, "octets"),
    ("NAS-Port-Type", 61, 0, "integer"),
    # RFC 2866
    ("Acct-Status-Type", 40, 0, "integer"),
    ("Acct-Delay-Time", 41, 0, "integer"),
    ("Acct-Input-Octets", 42, 0, "integer"),
    ("Acct-Output-Octets", 43, 0, "integer"),
    ("Acct-Session-Id", 44, 0, "string"),
    ("Acct-Authentic", 45, 0, "integer"),
    ("Acct-Session-Time", 46, 0, "integer"),
    ("Acct-Input-Packets", 47, 0, "integer"),
    ("Acct-Output-Packets", 48, 0, "integer"),
    ("Acct-Terminate-Cause", 49, 0, "integer"),
    ("Acct-Multi-Session-Id", 50, 0, "string"),
    ("Acct-Link-Count", 51, 0, "integer"),
    # RFC 2868
    ("Tunnel-Type", 64, 0, "integer"),
    ("Tunnel-Medium-Type", 65, 0, "integer"),
    ("Tunnel-Password", 69, 0, "string"),
    ("Tunnel-Private-Group-Id", 81, 0, "string"),
    # RFC 2869 / 3579
    ("Acct-Input-Gigawords", 52, 0, "integer"),
    ("Acct-Output-Gigawords", 53, 0, "integer"),
    ("Event-Timestamp", 55, 0, "date"),
    ("Connect-Info", 77, 0, "string"),
    ("EAP-Message", 79, 0, "octets"),
    ("Message-Authenticator", 80, 0, "octets"),
    ("Acct-Interim-Interval", 85, 0, "integer"),
    ("NAS-Port-Id", 87, 0, "string"),
    ("Framed-Pool", 88, 0, "string"),
    # RFC 4372, 3162, 5176, 4072, 4818, 5580, 6911
    ("Chargeable-User-Identity", 89, 0, "octets"),
    ("NAS-IPv6-Address", 95, 0, "ipv6addr"),
    ("Framed-Interface-Id", 96, 0, "ifid"),
    ("Framed-IPv6-Prefix", 97, 0, "ipv6prefix"),
    ("Framed-IPv6-Pool", 100, 0, "string"),
    ("Error-Cause", 101, 0, "integer"),
    ("EAP-Key-Name", 102, 0, "octets"),
    ("Delegated-IPv6-Prefix", 123, 0, "ipv6prefix"),
    ("Operator-Name", 126, 0, "string"),
    ("Framed-IPv6-Address", 168, 0, "ipv6addr"),
    ("DNS-Server-IPv6-Address", 169, 0, "ipv6addr"),
    ("Delegated-IPv6-Prefix-Pool", 171, 0, "string"),
    # Microsoft, RFC 2548
    ("MS-CHAP-Response", 1, 311, "octets"),
    ("MS-CHAP-Error", 2, 311, "string"),
    ("MS-CHAP-CPW-1", 3, 311, "octets"),
    ("MS-CHAP-CPW-2", 4, 311, "octets"),
    ("MS-CHAP-LM-Enc-PW", 5, 311, "octets"),
    ("MS-CHAP-NT-Enc-PW", 6, 311, "octets"),
    ("MS-MPPE-Encryption-Policy", 7, 311, "integer"),
    ("MS-MPPE-Encryption-Types", 8, 311, "integer"),
    ("MS-CHAP-Domain", 10, 311, "string"),
    ("MS-CHAP-Challenge", 11, 311, "octets"),
    ("MS-CHAP-MPPE-Keys", 12, 311, "octets"),
    ("MS-MPPE-Send-Key", 16, 311, "octets"),
    ("MS-MPPE-Recv-Key", 17, 311, "octets"),
    ("MS-CHAP2-Response", 25, 311, "octets"),
    ("MS-CHAP2-Success", 26, 311, "octets"),
    ("MS-CHAP2-CPW", 27, 311, "octets"),
    ("MS-Primary-DNS-Server", 28, 311, "ipaddr"),
    # MikroTik
    ("Mikrotik-Recv-Limit", 1, 14988, "integer"),
    ("Mikrotik-Xmit-Limit", 2, 14988, "integer"),
    ("Mikrotik-Group", 3, 14988, "string"),
    ("Mikrotik-Rate-Limit", 8, 14988, "string"),
    ("Mikrotik-Realm", 9, 14988, "string"),
    ("Mikrotik-Host-IP", 10, 14988, "ipaddr"),
    ("Mikrotik-Recv-Limit-Gigawords", 14, 14988, "integer"),
    ("Mikrotik-Xmit-Limit-Gigawords", 15, 14988, "integer"),
    ("Mikrotik-Total-Limit", 17, 14988, "integer"),
    ("Mikrotik-Total-Limit-Gigawords", 18, 14988, "integer"),
    ("Mikrotik-Address-List", 19, 14988, "string"),
    ("Mikrotik-Delegated-IPv6-Pool", 22, 14988, "string"),
    # Cisco
    ("Cisco-AVPair", 1, 9, "string"),
    ("Cisco-NAS-Port", 2, 9, "string"),
    ("h323-conf-id", 24, 9, "string"),
    ("h323-credit-amount", 101, 9, "string"),
    ("Cisco-Account-Info", 250, 9, "string"),
    ("Cisco-Service-Info", 251, 9, "string"),
    ("Cisco-Command-Code", 252, 9, "string"),
    ("Cisco-Control-Info", 253, 9, "string"),
    # Juniper (Junos) and ERX (JUNOSe / MX subscriber management)
    ("Juniper-Local-User-Name", 1, 2636, "string"),
    ("Juniper-Allow-Commands", 2, 2636, "string"),
    ("Juniper-Deny-Commands", 3, 2636, "string"),
    ("Juniper-Allow-Configuration", 4, 2636, "string"),
    ("Juniper-Deny-Configuration", 5, 2636, "string"),
    ("ERX-Virtual-Router-Name", 1, 4874, "string"),
    ("ERX-Address-Pool-Name", 2, 4874, "string"),
    ("ERX-Primary-Dns", 4, 4874, "ipaddr"),
    ("ERX-Ingress-Policy-Name", 10, 4874, "string"),
    ("ERX-Egress-Policy-Name", 11, 4874, "string"),
    ("ERX-Qos-Profile-Name", 26, 4874, "string"),
    ("ERX-Service-Bundle", 31, 4874, "string"),
    ("ERX-Input-Gigapkts", 42, 4874, "integer"),
    ("ERX-Output-Gigapkts", 43, 4874, "integer"),
    ("ERX-Service-Activate", 65, 4874, "string"),
    ("ERX-Service-Deactivate", 66, 4874, "string"),
    ("ERX-IPv6-Delegated-Pool-Name", 161, 4874, "string"),
    # WISPr
    ("WISPr-Location-ID", 1, 14122, "string"),
    ("WISPr-Location-Name", 2, 14122, "string"),
    ("WISPr-Logoff-URL", 3, 14122, "string"),
    ("WISPr-Redirection-URL", 4, 14122, "string"),
    ("WISPr-Bandwidth-Min-Up", 5, 14122, "integer"),
    ("WISPr-Bandwidth-Min-Down", 6, 14122, "integer"),
    ("WISPr-Bandwidth-Max-Up", 7, 14122, "integer"),
    ("WISPr-Bandwidth-Max-Down", 8, 14122, "integer"),
    ("WISPr-Session-Terminate-Time", 9, 14122, "string"),
    ("WISPr-Session-Terminate-End-Of-Day", 10, 14122, "string"),
    ("WISPr-Billing-Class-Of-Service", 11, 14122, "string"),
]

VENDORS = {"Cisco": 9, "Microsoft": 311, "Juniper": 2636, "ERX": 4874, "WISPr": 14122, "Mikrotik": 14988}

# (attribute, value name, number)
VALUES: list[tuple[str, str, int]] = [
    ("Acct-Status-Type", "Start", 1),
    ("Acct-Status-Type", "Stop", 2),
    ("Acct-Status-Type", "Interim-Update", 3),
    ("Acct-Status-Type", "Accounting-On", 7),
    ("Acct-Status-Type", "Accounting-Off", 8),
    ("Acct-Status-Type", "Failed", 15),
    ("Service-Type", "Login-User", 1),
    ("Service-Type", "Framed-User", 2),
    ("Service-Type", "Administrative-User", 6),
    ("Service-Type", "Call-Check", 10),
    ("Service-Type", "Authorize-Only", 17),
    ("Framed-Protocol", "PPP", 1),
    ("NAS-Port-Type", "Async", 0),
    ("NAS-Port-Type", "Virtual", 5),
    ("NAS-Port-Type", "Ethernet", 15),
    ("NAS-Port-Type", "Wireless-802.11", 19),
    ("NAS-Port-Type", "PPPoEoVLAN", 33),
    ("NAS-Port-Type", "PPPoEoQinQ", 34),
    ("Termination-Action", "RADIUS-Request", 1),
    ("Acct-Authentic", "RADIUS", 1),
    ("Acct-Terminate-Cause", "User-Request", 1),
    ("Acct-Terminate-Cause", "Lost-Carrier", 2),
    ("Acct-Terminate-Cause", "Idle-Timeout", 4),
    ("Acct-Terminate-Cause", "Session-Timeout", 5),
    ("Acct-Terminate-Cause", "Admin-Reset", 6),
    ("Acct-Terminate-Cause", "NAS-Request", 10),
    ("Acct-Terminate-Cause", "Host-Request", 18),
    ("Acct-Terminate-Cause", "Port-Disabled", 22),
    ("Tunnel-Type", "L2TP", 3),
    ("Tunnel-Type", "VLAN", 13),
    ("Tunnel-Medium-Type", "IEEE-802", 6),
    ("Error-Cause", "Residual-Session-Context-Removed", 201),
    ("Error-Cause", "Residual-Context-Removed", 201),
    ("Error-Cause", "Invalid-EAP-Packet", 202),
    ("Error-Cause", "Unsupported-Attribute", 401),
    ("Error-Cause", "Missing-Attribute", 402),
    ("Error-Cause", "NAS-Identification-Mismatch", 403),
    ("Error-Cause", "Invalid-Request", 404),
    ("Error-Cause", "Unsupported-Service", 405),
    ("Error-Cause", "Unsupported-Extension", 406),
    ("Error-Cause", "Invalid-Attribute-Value", 407),
    ("Error-Cause", "Administratively-Prohibited", 501),
    ("Error-Cause", "Proxy-Request-Not-Routable", 502),
    ("Error-Cause", "Session-Context-Not-Found", 503),
    ("Error-Cause", "Session-Context-Not-Removable", 504),
    ("Error-Cause", "Proxy-Processing-Error", 505),
    ("Error-Cause", "Resources-Unavailable", 506),
    ("Error-Cause", "Request-Initiated", 507),
    ("Error-Cause", "Multiple-Session-Selection-Unsupported", 508),
    ("MS-MPPE-Encryption-Policy", "Encryption-Allowed", 1),
    ("MS-MPPE-Encryption-Policy", "Encryption-Required", 2),
    ("MS-MPPE-Encryption-Types", "RC4-40bit-Allowed", 2),
    ("MS-MPPE-Encryption-Types", "RC4-128bit-Allowed", 4),
    ("MS-MPPE-Encryption-Types", "RC4-40or128-bit-Allowed", 6),
]

# A number that has several names decodes to this one.
CANONICAL_VALUE_NAMES: list[tuple[str, int, str]] = [
    ("Acct-Status-Type", 3, "Interim-Update"),
    ("Error-Cause", 201, "Residual-Context-Removed"),
    ("Tunnel-Medium-Type", 1, "IPv4"),
]


def _load(path: str) -> Dictionary:
    return Dictionary(path)


def _value(dictionary: Dictionary, attribute: str, name: str) -> int:
    encoded: bytes = dictionary.attributes[attribute].values.GetForward(name)
    return int.from_bytes(encoded, "big")


def _included_files() -> list[Path]:
    """The files the main dictionary $INCLUDEs, in order (the optional dictionary.local excluded)."""
    files = []
    for line in MAIN.read_text().splitlines():
        tokens = line.split("#", 1)[0].split()
        if tokens and tokens[0] == "$INCLUDE":
            files.append(DICT_DIR / tokens[1])
    return files


@pytest.fixture(scope="module")
def dictionary() -> Dictionary:
    """The dictionary as the server loads it: the relative path of the setting, from the repository root."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO_ROOT)
        return _load(RELATIVE_MAIN)


def _summary(dictionary: Dictionary) -> dict[str, tuple[Any, ...]]:
    return {
        name: (a.code, a.vendor, a.type, a.encrypt, a.has_tag, dict(a.values.forward))
        for name, a in dictionary.attributes.items()
    }


def test_loads_from_the_repository_root_without_skipping_anything(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pyrad"), pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO_ROOT)
        loaded = _load(RELATIVE_MAIN)
    # every definition is one pyrad can encode: no "skipping attribute", no "unknown attribute" for a VALUE
    assert loaded.skipped_attributes == set()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.DEBUG] == []
    assert len(loaded.attributes) > 400


def test_loads_the_same_from_another_working_directory(
    dictionary: Dictionary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _summary(_load(str(MAIN))) == _summary(dictionary)


def test_includes_resolve_against_the_including_file_not_the_working_directory(
    dictionary: Dictionary, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT / "tests")
    assert _summary(_load("../config/dictionaries/dictionary")) == _summary(dictionary)


def test_vendors(dictionary: Dictionary) -> None:
    assert dict(dictionary.vendors.forward) == {"": 0, **VENDORS}


@pytest.mark.parametrize(
    ("name", "code", "vendor_id", "datatype"), ATTRIBUTES, ids=[name for name, *_ in ATTRIBUTES]
)
def test_attribute(dictionary: Dictionary, name: str, code: int, vendor_id: int, datatype: str) -> None:
    attribute = dictionary.attributes[name]
    assert (attribute.code, dictionary.vendors.GetForward(attribute.vendor), attribute.type) == (
        code,
        vendor_id,
        datatype,
    )
    # the key pyrad uses on the wire maps back to this name (no other name shares the code)
    key = (vendor_id, code) if vendor_id else code
    assert dictionary.attrindex.GetForward(name) == key
    assert dictionary.attrindex.GetBackward(key) == name


def test_the_attribute_table_has_no_duplicates() -> None:
    assert len({a[0] for a in ATTRIBUTES}) == len(ATTRIBUTES)
    assert len({(a[2], a[1]) for a in ATTRIBUTES}) == len(ATTRIBUTES)


@pytest.mark.parametrize(("attribute", "name", "number"), VALUES, ids=[f"{a}={n}" for a, n, _ in VALUES])
def test_value(dictionary: Dictionary, attribute: str, name: str, number: int) -> None:
    assert _value(dictionary, attribute, name) == number


@pytest.mark.parametrize(("attribute", "number", "name"), CANONICAL_VALUE_NAMES)
def test_a_number_with_several_names_decodes_to_one(
    dictionary: Dictionary, attribute: str, number: int, name: str
) -> None:
    assert dictionary.attributes[attribute].values.GetBackward(struct.pack("!I", number)) == name


def test_acct_terminate_cause_has_every_value_of_rfc_2866_and_3580(dictionary: Dictionary) -> None:
    encoded = dictionary.attributes["Acct-Terminate-Cause"].values.backward
    numbers = {int.from_bytes(value, "big") for value in encoded}
    assert numbers == set(range(1, 23))


def test_no_two_attributes_of_one_vendor_share_a_code(dictionary: Dictionary) -> None:
    names_by_key: dict[tuple[str, int], list[str]] = defaultdict(list)
    for name, attribute in dictionary.attributes.items():
        names_by_key[(attribute.vendor, attribute.code)].append(name)
    assert {key: names for key, names in names_by_key.items() if len(names) > 1} == {}


def test_no_attribute_is_defined_twice() -> None:
    """pyrad lets a later definition of a name silently replace an earlier one: the files must not."""
    seen: dict[str, str] = {}
    duplicates = []
    for path in _included_files():
        for line in path.read_text().splitlines():
            tokens = line.split("#", 1)[0].split()
            if tokens and tokens[0] == "ATTRIBUTE":
                if tokens[1] in seen:
                    duplicates.append((tokens[1], seen[tokens[1]], path.name))
                seen[tokens[1]] = path.name
    assert duplicates == []


def test_every_dictionary_file_is_included_and_documented() -> None:
    on_disk = {
        path
        for path in DICT_DIR.iterdir()
        if path.name.startswith("dictionary.") and path.name != "dictionary.local"
    }
    assert set(_included_files()) == on_disk
    for path in [MAIN, *on_disk]:
        assert path.read_text().startswith("# occ RADIUS dictionary: "), path.name


def test_encryption_and_tag_flags(dictionary: Dictionary) -> None:
    attrs = dictionary.attributes
    assert attrs["User-Password"].encrypt == 1
    assert (attrs["Tunnel-Password"].encrypt, attrs["Tunnel-Password"].has_tag) == (2, True)
    assert attrs["MS-MPPE-Send-Key"].encrypt == 2
    assert attrs["MS-MPPE-Recv-Key"].encrypt == 2
    assert attrs["MS-CHAP-MPPE-Keys"].encrypt == 1
    assert attrs["Tunnel-Private-Group-Id"].has_tag
    assert attrs["ERX-Service-Activate"].has_tag
    assert attrs["User-Name"].encrypt == 0
    assert not attrs["User-Name"].has_tag
    flagged = {name for name, a in attrs.items() if a.encrypt == 1}
    assert flagged == {"User-Password", "MS-CHAP-MPPE-Keys"}


def test_vendor_attributes_on_the_wire(dictionary: Dictionary) -> None:
    request = packet.AcctPacket(dict=dictionary, secret=b"testing123", id=7)
    request["Acct-Status-Type"] = "Interim-Update"
    request["Acct-Input-Gigawords"] = 2
    request["Mikrotik-Rate-Limit"] = "10M/20M"
    request["Cisco-AVPair"] = "subscriber:accounting-list=occ"
    request["WISPr-Bandwidth-Max-Down"] = 20_000_000
    raw = request.RequestPacket()

    # RFC 2865 section 5.26: type 26, length, vendor id, vendor type, vendor length, value
    assert struct.pack("!BBIBB", 26, 15, 14988, 8, 9) + b"10M/20M" in raw
    assert struct.pack("!BBIBB", 26, 12, 14122, 8, 6) + struct.pack("!I", 20_000_000) in raw
    assert struct.pack("!BBI", 40, 6, 3) in raw
    assert struct.pack("!BBI", 52, 6, 2) in raw

    decoded = packet.AcctPacket(dict=dictionary, secret=b"testing123", packet=raw)
    assert decoded["Acct-Status-Type"] == ["Interim-Update"]
    assert decoded["Mikrotik-Rate-Limit"] == ["10M/20M"]
    assert decoded["Cisco-AVPair"] == ["subscriber:accounting-list=occ"]
    assert decoded["WISPr-Bandwidth-Max-Down"] == [20_000_000]


def test_salt_encrypted_mppe_key_round_trips(dictionary: Dictionary) -> None:
    request = packet.AuthPacket(dict=dictionary, secret=b"testing123", id=9)
    request["User-Name"] = "alice"
    request.RequestPacket()
    reply = request.CreateReply()
    key = bytes(range(32))
    reply["MS-MPPE-Send-Key"] = key
    raw = reply.ReplyPacket()
    # the key is not on the wire in the clear
    assert key not in raw

    decoded = packet.AuthPacket(dict=dictionary, secret=b"testing123", packet=raw)
    decoded.request_authenticator = request.authenticator
    assert decoded["MS-MPPE-Send-Key"] == [key]
