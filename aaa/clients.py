"""The NAS client table: which source addresses may talk to the server, and with which shared secret."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from aaa.settings import ClientSettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class NasClient:
    name: str
    network: IPNetwork
    secret: bytes
    coa_port: int
    profile: str
    require_message_authenticator: bool

    def __repr__(self) -> str:  # never the secret
        return f"NasClient({self.name!r}, {self.network})"


class ClientTable:
    """Longest-prefix match of a source address against the configured clients, answers cached."""

    def __init__(self, clients: Sequence[ClientSettings]) -> None:
        entries = []
        for c in clients:
            network = ipaddress.ip_network(c.address, strict=False)
            entries.append(
                NasClient(
                    name=c.name or str(network),
                    network=network,
                    secret=c.secret.encode(),
                    coa_port=c.coa_port,
                    profile=c.profile,
                    require_message_authenticator=c.require_message_authenticator,
                )
            )
        self._entries = sorted(entries, key=lambda e: e.network.prefixlen, reverse=True)
        self._cache: dict[str, NasClient | None] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, host: str) -> NasClient | None:
        found = self._cache.get(host, False)
        if found is not False:
            return found  # type: ignore[return-value]
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        match = next((e for e in self._entries if address in e.network), None)
        if len(self._cache) > 65_536:
            self._cache.clear()
        self._cache[host] = match
        return match
