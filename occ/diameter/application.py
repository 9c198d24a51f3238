"""The contract between the Diameter transport (peers) and the applications it serves.

The transport owns connections and the base protocol (CER/CEA, DWR/DWA, DPR/DPA, generic error
answers); an application owns one Application-Id and answers its requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from occ.diameter.codec import Message


class PeerHandle(Protocol):
    """The connection a request arrived on: who the peer is, who we are, and a way to ask it things."""

    @property
    def peer_host(self) -> str:
        """The peer's Origin-Host from its CER."""
        ...

    @property
    def peer_realm(self) -> str: ...

    @property
    def origin_host(self) -> str:
        """Our Origin-Host, for answers and server-initiated requests."""
        ...

    @property
    def origin_realm(self) -> str: ...

    @property
    def is_open(self) -> bool: ...

    async def send_request(self, build: Callable[[int, int], bytes], timeout: float) -> Message:
        """Send a request built by ``build(hop_by_hop, end_to_end)`` on this connection; await its answer.

        Raises TimeoutError when no answer arrives in time and ConnectionError when the peer is gone.
        """
        ...


class Application(Protocol):
    """A Diameter application (e.g. credit control, Application-Id 4)."""

    @property
    def application_id(self) -> int: ...

    @property
    def commands(self) -> frozenset[int]:
        """Command codes of requests this application answers; others get 3001 from the transport."""
        ...

    async def handle(self, request: Message, peer: PeerHandle) -> bytes:
        """The encoded answer to ``request`` (always an answer: errors are answered, never dropped)."""
        ...

    def peer_opened(self, peer: PeerHandle) -> None:
        """A peer finished the capabilities exchange (server-initiated requests may now use it)."""
        ...

    def peer_closed(self, peer: PeerHandle) -> None: ...
