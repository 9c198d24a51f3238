"""Settings slice of the RADIUS server: ``[radius]`` in the configuration file.

NAS clients, the dictionaries, how access sessions are charged, and what an Access-Accept carries per tariff
plan and per NAS vendor profile. Attribute names are dictionary names, never numbers.
"""

from __future__ import annotations

import msgspec


class ClientSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # One address or a CIDR block the NAS sends from; the most specific entry wins.
    address: str
    secret: str
    name: str = ""
    # Where Disconnect-Request and CoA-Request go (RFC 5176 names 3799); 0: never sent to this NAS.
    coa_port: int = 3799
    # Key of [radius.profiles]: the vendor attributes of its Access-Accepts.
    profile: str = "generic"
    # Access-Requests without a valid Message-Authenticator are dropped (RFC 3579, BlastRADIUS).
    require_message_authenticator: bool = False


class PlanAccess(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What an Access-Accept carries for a tariff plan (values the vendor profiles put into attributes)."""

    rate_limit: str = ""  # e.g. "10M/10M" (rx/tx as the NAS's syntax wants it)
    framed_pool: str = ""
    idle_timeout_s: int = 0


class ProfileSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A NAS vendor's way of receiving limits: attribute names from the dictionaries."""

    # attribute -> value template; "{rate_limit}" is the plan's rate limit (attributes with an empty
    # result are left out)
    reply: dict[str, str] = msgspec.field(default_factory=dict)
    # Attributes for the data the balance affords (bytes) when the service is charged by volume: the low
    # 32 bits go into data_quota, the rest into data_quota_gigawords.
    data_quota: str = ""
    data_quota_gigawords: str = ""


class RadiusSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    # Addresses to listen on (IPv4 and IPv6), each with an auth and an accounting socket.
    listen: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])
    auth_port: int = 1812
    acct_port: int = 1813
    dictionary: str = "config/dictionaries/dictionary"
    clients: list[ClientSettings] = msgspec.field(default_factory=list)
    # The tariff service access sessions are charged as (a plan service counted in bytes or seconds).
    service: str = "data"
    # Acct-Interim-Interval in every Access-Accept, seconds.
    interim_interval_s: int = 300
    # A session without accounting for this many interim intervals is closed: its reservation expires
    # and the reaper returns it.
    stale_intervals: int = 3
    # Receive buffer of each socket, bytes: room for a burst while the server is busy (the kernel's
    # default, ~200 KiB, overflows in milliseconds under load and the NAS must retransmit). Capped by
    # net.core.rmem_max unless the process may raise it (CAP_NET_ADMIN).
    receive_buffer_bytes: int = 4_194_304
    # Seconds a reply is kept to answer a retransmission (RFC 5080 §2.2.2).
    duplicate_window_s: float = 30.0
    # Disconnect-/CoA-Request: first wait for an answer, seconds, doubled per retry.
    coa_timeout_s: float = 2.0
    coa_retries: int = 3
    plans: dict[str, PlanAccess] = msgspec.field(default_factory=dict)
    profiles: dict[str, ProfileSettings] = msgspec.field(
        default_factory=lambda: {"generic": ProfileSettings()}
    )

    @property
    def stale_s(self) -> int:
        """Seconds without accounting after which a session counts as gone."""
        return self.interim_interval_s * self.stale_intervals
