"""Attribute values by dictionary data type: configured text -> wire bytes, wire bytes -> numbers/text."""

from __future__ import annotations

import ipaddress

from aaa.dictionary import AttributeDef


def u32(value: int) -> bytes:
    return (value & 0xFFFFFFFF).to_bytes(4)


def read_u32(value: bytes | None) -> int | None:
    return int.from_bytes(value) if value is not None and len(value) == 4 else None


def read_text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


def encode_value(definition: AttributeDef, text: str) -> bytes:
    """``text`` as the attribute's type wants it; ValueError names the attribute when it does not fit."""
    kind = definition.type
    try:
        if kind == "string":
            return text.encode()
        if kind == "octets":
            return bytes.fromhex(text[2:]) if text.startswith("0x") else text.encode()
        if kind in ("integer", "date", "signed"):
            number = definition.values.get(text)
            value = number if number is not None else int(text, 0)
            return value.to_bytes(4, signed=kind == "signed")
        if kind == "integer64":
            return int(text, 0).to_bytes(8)
        if kind == "short":
            return int(text, 0).to_bytes(2)
        if kind == "byte":
            return int(text, 0).to_bytes(1)
        if kind == "ipaddr":
            return ipaddress.IPv4Address(text).packed
        if kind == "ipv6addr":
            return ipaddress.IPv6Address(text).packed
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{definition.name}: {text!r} is not a valid {kind}: {exc}") from None
    raise ValueError(f"{definition.name}: values of type {kind} cannot be configured")
