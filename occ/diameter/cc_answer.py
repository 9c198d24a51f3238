"""Credit-Control-Answer (RFC 4006 §3.2) and the server-initiated RAR / ASR. Pure: no I/O.

Answers are deterministic in the request and the charging decision, so a retransmitted request whose
decision is replayed from the store gets the same answer content byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from occ.diameter import dictionary as d
from occ.diameter.cc_request import CreditControlRequest
from occ.diameter.codec import (
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    Message,
    avp_grouped,
    avp_i32,
    avp_i64,
    avp_u32,
    avp_u64,
    avp_utf8,
    encode_message,
    find,
    find_all,
)

TGPP = d.VENDOR_3GPP
FINAL_UNIT_ACTIONS = {
    "TERMINATE": d.FINAL_UNIT_ACTION_TERMINATE,
    "REDIRECT": d.FINAL_UNIT_ACTION_REDIRECT,
    "RESTRICT_ACCESS": d.FINAL_UNIT_ACTION_RESTRICT_ACCESS,
}
FAILURE_HANDLING = {
    "TERMINATE": d.CREDIT_CONTROL_FAILURE_HANDLING_TERMINATE,
    "CONTINUE": d.CREDIT_CONTROL_FAILURE_HANDLING_CONTINUE,
    "RETRY_AND_TERMINATE": d.CREDIT_CONTROL_FAILURE_HANDLING_RETRY_AND_TERMINATE,
}


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """What one MSCC (or the top level) of an answer says."""

    result_code: int
    rating_group: int | None = None
    service_identifier: int | None = None
    unit: str = "byte"  # second | byte | event: which Granted-Service-Unit field carries `granted`
    granted: int = 0
    validity_time: int = 0
    final_action: str = ""  # "" when this is not the final grant; else a FINAL_UNIT_ACTIONS key
    redirect_url: str = ""
    filter_id: str = ""
    volume_threshold: int = 0
    time_threshold: int = 0
    quota_holding_time: int = 0


class Cost(msgspec.Struct, frozen=True, kw_only=True):
    micro: int  # amount in micro-units
    currency: int  # ISO 4217 numeric code
    unit: str = ""


def _units(unit: str, amount: int) -> bytes:
    if unit == "second":
        child = avp_u32(d.AVP_CC_TIME, amount)
    elif unit == "event":
        child = avp_u64(d.AVP_CC_SERVICE_SPECIFIC_UNITS, amount)
    else:
        child = avp_u64(d.AVP_CC_TOTAL_OCTETS, amount)
    return avp_grouped(d.AVP_GRANTED_SERVICE_UNIT, child)


def _final_unit(grant: Grant) -> bytes:
    parts = [avp_u32(d.AVP_FINAL_UNIT_ACTION, FINAL_UNIT_ACTIONS[grant.final_action])]
    if grant.final_action == "REDIRECT" and grant.redirect_url:
        parts.append(
            avp_grouped(
                d.AVP_REDIRECT_SERVER,
                avp_u32(d.AVP_REDIRECT_ADDRESS_TYPE, d.REDIRECT_ADDRESS_TYPE_URL),
                avp_utf8(d.AVP_REDIRECT_SERVER_ADDRESS, grant.redirect_url),
            )
        )
    if grant.final_action == "RESTRICT_ACCESS" and grant.filter_id:
        parts.append(avp_utf8(d.AVP_FILTER_ID, grant.filter_id))
    return avp_grouped(d.AVP_FINAL_UNIT_INDICATION, *parts)


def _grant_body(grant: Grant) -> list[bytes]:
    body = []
    if grant.granted:
        body.append(_units(grant.unit, grant.granted))
    if grant.validity_time and grant.granted:
        body.append(avp_u32(d.AVP_VALIDITY_TIME, grant.validity_time))
    if grant.final_action:
        body.append(_final_unit(grant))
    return body


def mscc(grant: Grant) -> bytes:
    parts = _grant_body(grant)
    if grant.service_identifier is not None:
        parts.append(avp_u32(d.AVP_SERVICE_IDENTIFIER, grant.service_identifier))
    if grant.rating_group is not None:
        parts.append(avp_u32(d.AVP_RATING_GROUP, grant.rating_group))
    parts.append(avp_u32(d.AVP_RESULT_CODE, grant.result_code))
    if grant.granted and grant.unit == "byte" and grant.volume_threshold:
        parts.append(avp_u32(d.AVP_VOLUME_QUOTA_THRESHOLD, grant.volume_threshold, vendor=TGPP))
    if grant.granted and grant.unit == "second" and grant.time_threshold:
        parts.append(avp_u32(d.AVP_TIME_QUOTA_THRESHOLD, grant.time_threshold, vendor=TGPP))
    if grant.granted and grant.quota_holding_time:
        parts.append(avp_u32(d.AVP_QUOTA_HOLDING_TIME, grant.quota_holding_time, vendor=TGPP))
    return avp_grouped(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, *parts)


def cost_information(cost: Cost) -> bytes:
    digits, exponent = cost.micro, -6
    while digits and digits % 10 == 0 and exponent < 0:
        digits //= 10
        exponent += 1
    if digits == 0:
        exponent = 0
    parts = [
        avp_grouped(d.AVP_UNIT_VALUE, avp_i64(d.AVP_VALUE_DIGITS, digits), avp_i32(d.AVP_EXPONENT, exponent)),
        avp_u32(d.AVP_CURRENCY_CODE, cost.currency),
    ]
    if cost.unit:
        parts.append(avp_utf8(d.AVP_COST_UNIT, cost.unit))
    return avp_grouped(d.AVP_COST_INFORMATION, *parts)


def credit_control_answer(
    request: Message,
    ccr: CreditControlRequest,
    *,
    origin_host: str,
    origin_realm: str,
    result_code: int,
    grants: Iterable[Grant] = (),
    top: Grant | None = None,
    cost: Cost | None = None,
    check_balance: int | None = None,
    failure_handling: str = "",
) -> bytes:
    """A CCA in RFC 4006 §3.2 order: MSCCs for MSCC requests, a top-level grant otherwise."""
    parts = [
        avp_utf8(d.AVP_SESSION_ID, ccr.session_id),
        avp_u32(d.AVP_RESULT_CODE, result_code),
        avp_utf8(d.AVP_ORIGIN_HOST, origin_host),
        avp_utf8(d.AVP_ORIGIN_REALM, origin_realm),
        avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL),
        avp_u32(d.AVP_CC_REQUEST_TYPE, ccr.request_type),
        avp_u32(d.AVP_CC_REQUEST_NUMBER, ccr.request_number),
    ]
    if top is not None and top.granted:
        parts.append(_units(top.unit, top.granted))
    parts.extend(mscc(g) for g in grants)
    if cost is not None:
        parts.append(cost_information(cost))
    if top is not None and top.final_action:
        parts.append(_final_unit(top))
    if check_balance is not None:
        parts.append(avp_u32(d.AVP_CHECK_BALANCE_RESULT, check_balance))
    if failure_handling:
        parts.append(avp_u32(d.AVP_CREDIT_CONTROL_FAILURE_HANDLING, FAILURE_HANDLING[failure_handling]))
    if top is not None and top.validity_time and top.granted:
        parts.append(avp_u32(d.AVP_VALIDITY_TIME, top.validity_time))
    parts.extend(ccr.proxy_infos)
    return encode_message(
        FLAG_PROXIABLE,
        d.CMD_CREDIT_CONTROL,
        d.APP_CREDIT_CONTROL,
        request.hop_by_hop,
        request.end_to_end,
        b"".join(parts),
    )


def error_answer(
    request: Message,
    *,
    origin_host: str,
    origin_realm: str,
    result_code: int,
    failed_avp: bytes | None = None,
    message: str = "",
) -> bytes:
    """An answer to a request that could not be served: 3xxx set the E bit (RFC 6733 §7.1)."""
    parts = []
    session = find(request.avps, d.AVP_SESSION_ID)
    if session is not None:
        parts.append(session.encoded())
    parts += [
        avp_u32(d.AVP_RESULT_CODE, result_code),
        avp_utf8(d.AVP_ORIGIN_HOST, origin_host),
        avp_utf8(d.AVP_ORIGIN_REALM, origin_realm),
    ]
    if request.application_id == d.APP_CREDIT_CONTROL:
        parts.append(avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL))
        for code in (d.AVP_CC_REQUEST_TYPE, d.AVP_CC_REQUEST_NUMBER):
            found = find(request.avps, code)
            if found is not None:
                parts.append(found.encoded())
    if message:
        parts.append(avp_utf8(d.AVP_ERROR_MESSAGE, message[:200], mandatory=False))
    if failed_avp is not None:
        parts.append(avp_grouped(d.AVP_FAILED_AVP, failed_avp))
    parts.extend(p.encoded() for p in find_all(request.avps, d.AVP_PROXY_INFO))
    flags = FLAG_PROXIABLE | (FLAG_ERROR if 3000 <= result_code < 4000 else 0)
    return encode_message(
        flags, request.code, request.application_id, request.hop_by_hop, request.end_to_end, b"".join(parts)
    )


def _session_request(
    command: int,
    session_id: str,
    extra: bytes,
    *,
    origin_host: str,
    origin_realm: str,
    destination_host: str,
    destination_realm: str,
    hop_by_hop: int,
    end_to_end: int,
) -> bytes:
    body = b"".join(
        (
            avp_utf8(d.AVP_SESSION_ID, session_id),
            avp_utf8(d.AVP_ORIGIN_HOST, origin_host),
            avp_utf8(d.AVP_ORIGIN_REALM, origin_realm),
            avp_utf8(d.AVP_DESTINATION_REALM, destination_realm),
            avp_utf8(d.AVP_DESTINATION_HOST, destination_host),
            avp_u32(d.AVP_AUTH_APPLICATION_ID, d.APP_CREDIT_CONTROL),
            extra,
        )
    )
    return encode_message(
        FLAG_REQUEST | FLAG_PROXIABLE, command, d.APP_CREDIT_CONTROL, hop_by_hop, end_to_end, body
    )


def re_auth_request(session_id: str, **peer: Any) -> bytes:
    """RAR (RFC 4006 §5.5): the client should ask for credit again now (AUTHORIZE_ONLY).

    ``peer``: origin_host, origin_realm, destination_host, destination_realm, hop_by_hop, end_to_end.
    """
    extra = avp_u32(d.AVP_RE_AUTH_REQUEST_TYPE, d.RE_AUTH_REQUEST_TYPE_AUTHORIZE_ONLY)
    return _session_request(d.CMD_RE_AUTH, session_id, extra, **peer)


def abort_session_request(session_id: str, **peer: Any) -> bytes:
    """ASR (RFC 6733 §8.5.1): the client must end the session (account suspended or blocked)."""
    return _session_request(d.CMD_ABORT_SESSION, session_id, b"", **peer)
