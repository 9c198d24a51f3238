"""The Lua scripts of ``balance/lua``: each file is prefixed with ``lib.lua`` and called by EVALSHA."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from importlib import resources


class Status(enum.IntEnum):
    """First element of every money script's reply (see lib.lua)."""

    OK = 0
    DUPLICATE = 1
    NEED_VIEW = 2
    NEED_QUOTE = 3
    UNKNOWN_ACCOUNT = 4
    REFUSED = 5


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: bytes
    sha: str


def _read(name: str) -> str:
    return resources.files("balance").joinpath("lua", name).read_text(encoding="utf-8")


def load(name: str) -> Script:
    text = _read(name)
    if name != "lib.lua":
        text = _read("lib.lua") + "\n" + text
    source = text.encode()
    return Script(name=name.removesuffix(".lua"), source=source, sha=hashlib.sha1(source).hexdigest())


SESSION = load("session.lua")
EVENT = load("event.lua")
CREDIT = load("credit.lua")
FEE = load("fee.lua")
REAP = load("reap.lua")
ACCOUNT = load("account.lua")
BUCKET = load("bucket.lua")
QUERY = load("query.lua")
CLOSING = load("closing.lua")
ALL = (SESSION, EVENT, CREDIT, FEE, REAP, ACCOUNT, BUCKET, QUERY, CLOSING)
