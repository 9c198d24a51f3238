"""Settings slice of the Diameter stack: listener, our identity, the peers we accept, the watchdog.

``[diameter]`` in the configuration file. The credit-control application's own settings are the
``[diameter.credit_control]`` sub-table (:mod:`occ.diameter.cc_settings`).
"""

from __future__ import annotations

import msgspec

from occ.diameter.cc_settings import CreditControlSettings


class AllowedPeer(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Shell-style patterns (fnmatch, case-insensitive) matched against the Origin-Host and Origin-Realm
    # of the peer's CER; "*" matches anything.
    host: str = "*"
    realm: str = "*"


class TlsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # PEM files. TLS is on (on the listen port itself, RFC 6733 §2.1 "TLS/TCP") when cert_file is set.
    cert_file: str = ""
    key_file: str = ""
    # When set, peers must present a certificate signed by this CA (mutual TLS).
    ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


class DiameterSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Address and TCP port the server accepts connections on (it never initiates any).
    # Port 0 binds an ephemeral port (tests).
    listen: str = "127.0.0.1"
    port: int = 3868
    # Our DiameterIdentity and realm, sent in every answer and request.
    origin_host: str = "occ.localdomain"
    origin_realm: str = "localdomain"
    # Further realms served here. Requests are answered when Destination-Host is origin_host, or when
    # it is absent and Destination-Realm is origin_realm or one of these; otherwise 3002 / 3003.
    served_realms: list[str] = msgspec.field(default_factory=list)
    # Host-IP-Address values of the CEA. Empty: the listen address (127.0.0.1 when it is a wildcard).
    host_ip_addresses: list[str] = msgspec.field(default_factory=list)
    # Vendor-Id of this implementation in the CEA (0: none/IETF).
    vendor_id: int = 0
    product_name: str = "occ"
    firmware_revision: int = 1
    # Peers whose CER is accepted (Origin-Host and Origin-Realm both match one entry); others get
    # 3010 DIAMETER_UNKNOWN_PEER. Empty: nobody. The default, any peer, is a demo setting that only
    # suits the loopback listen address (the server warns when it listens elsewhere with it).
    allowed_peers: list[AllowedPeer] = msgspec.field(default_factory=lambda: [AllowedPeer()])
    # Tw, seconds (RFC 3539): a DWR goes out after this much silence (jittered by up to ±2 s); no
    # answer within another Tw closes the connection. RFC 3539 asks for at least 6 s.
    watchdog_s: float = 30.0
    # Longest message accepted, bytes; a longer one closes the connection.
    max_message_length: int = 65536
    # Requests of one connection being worked on at once; beyond it, reading pauses (back-pressure).
    max_in_flight: int = 1024
    tls: TlsSettings = msgspec.field(default_factory=TlsSettings)
    credit_control: CreditControlSettings = msgspec.field(default_factory=CreditControlSettings)
