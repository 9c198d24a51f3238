"""Settings slice of the credit-control application (RFC 4006 / 3GPP TS 32.299 Gy/Ro)."""

from __future__ import annotations

import msgspec


class RatingGroupSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Service (as named in the tariff plans) that a Rating-Group is charged as.
    service: str
    # Final-Unit-Action when this grant is the last one: TERMINATE | REDIRECT | RESTRICT_ACCESS.
    final_unit_action: str = "TERMINATE"
    # REDIRECT: where the gateway sends the subscriber (Redirect-Server-Address, a URL).
    redirect_url: str = ""
    # RESTRICT_ACCESS: Filter-Id installed on the gateway.
    filter_id: str = ""


class CreditControlSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Rating-Group (as a decimal string) -> how it is charged. Requests without MSCC are charged as
    # `default_service`; MSCCs whose Rating-Group is not listed are charged as `data`.
    rating_groups: dict[str, RatingGroupSettings] = msgspec.field(
        default_factory=lambda: {"10": RatingGroupSettings(service="data")}
    )
    default_service: str = "data"
    # Service used for IMS voice (Service-Information/IMS-Information present) and SMS events.
    voice_service: str = "voice"
    sms_service: str = "sms"
    # Validity-Time sent with each grant (seconds); the gateway reports back within it.
    validity_time_s: int = 3600
    # Tcc: a session silent this long is closed and its reservation returned (RFC 4006 §13).
    session_timeout_s: int = 7200
    # Quota thresholds sent with grants (3GPP): ask for more when this many units are left.
    volume_quota_threshold: int = 0
    time_quota_threshold_s: int = 0
    # Quota-Holding-Time (3GPP): the gateway returns an unused quota after this many idle seconds; 0 = unset.
    quota_holding_time_s: int = 0
    # Credit-Control-Failure-Handling sent to clients: TERMINATE | CONTINUE | RETRY_AND_TERMINATE.
    failure_handling: str = "RETRY_AND_TERMINATE"
    # Seconds a server-initiated RAR/ASR waits for its answer.
    request_timeout_s: float = 5.0
    # Largest refund (REFUND_ACCOUNT) one request may credit, in the account's currency.
    max_refund: str = "10.00"

    @property
    def max_refund_micro(self) -> int:
        from rating_core.money import parse_money

        return parse_money(self.max_refund)
