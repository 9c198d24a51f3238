"""RADIUS dictionaries in FreeRADIUS format, read with pyrad's parser, as the lookup tables the codec and the
server use: attribute name -> (vendor, type, data type), and named values.

Attributes are addressed by one integer *key*: the attribute type for standard attributes, ``vendor << 8 |
type`` for vendor-specific ones (every vendor file in ``config/dictionaries`` uses one-byte vendor types).
No attribute number is written in code: the server resolves the names it needs here at start and reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyrad.dictionary


class DictionaryError(Exception):
    """A dictionary file is unreadable or lacks something the server needs; the message is one line."""


def key_of(vendor: int, code: int) -> int:
    return vendor << 8 | code if vendor else code


@dataclass(frozen=True, slots=True)
class AttributeDef:
    name: str
    vendor: int  # 0: standard
    code: int
    type: str  # FreeRADIUS data type: string, octets, integer, ipaddr, date, ...
    encrypt: int = 0  # 1: User-Password style hiding, 2: Tunnel-Password (salt) style
    has_tag: bool = False
    values: Mapping[str, int] = field(default_factory=dict)

    @property
    def key(self) -> int:
        return key_of(self.vendor, self.code)


@dataclass(frozen=True, slots=True)
class Dictionary:
    path: str
    by_name: Mapping[str, AttributeDef]

    def attribute(self, name: str) -> AttributeDef:
        found = self.by_name.get(name)
        if found is None:
            raise DictionaryError(f"{self.path}: no attribute {name!r}")
        return found

    def key(self, name: str) -> int:
        return self.attribute(name).key

    def value(self, attribute: str, name: str) -> int:
        found = self.attribute(attribute).values.get(name)
        if found is None:
            raise DictionaryError(f"{self.path}: attribute {attribute!r} has no value {name!r}")
        return found


def load(path: str | Path) -> Dictionary:
    """Parse ``path`` (with its ``$INCLUDE``s); DictionaryError names the file and line on a bad file."""
    text = str(path)
    try:
        parsed = pyrad.dictionary.Dictionary(text)
    except pyrad.dictionary.ParseError as exc:
        where = f"{exc.file or text}:{exc.line}" if exc.line >= 0 else exc.file or text
        raise DictionaryError(f"{where}: {exc.msg}") from None
    except OSError as exc:
        raise DictionaryError(f"{text}: {exc.strerror or exc}") from None
    vendors = {str(name): int(parsed.vendors.GetForward(name)) for name in parsed.vendors.forward}
    by_name: dict[str, AttributeDef] = {}
    for name, attribute in parsed.attributes.items():
        vendor = vendors.get(attribute.vendor, 0) if attribute.vendor else 0
        code = attribute.code
        if isinstance(code, tuple):  # a TLV sub-attribute: not addressed by the server
            continue
        # pyrad keeps VALUEs in their wire form
        values = {
            str(k): int.from_bytes(v) if isinstance(v, bytes) else int(v)
            for k, v in attribute.values.forward.items()
        }
        definition = AttributeDef(
            name=str(name),
            vendor=vendor,
            code=int(code),
            type=str(attribute.type),
            encrypt=int(attribute.encrypt or 0),
            has_tag=bool(attribute.has_tag),
            values=values,
        )
        by_name[definition.name] = definition
    return Dictionary(path=text, by_name=by_name)
