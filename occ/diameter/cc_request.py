"""Credit-Control-Request (RFC 4006 §3.1, 3GPP TS 32.299) -> a typed request, or an error that carries
its Result-Code and Failed-AVP. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from occ.diameter import dictionary as d
from occ.diameter.codec import Avp, AvpError, Message, avp_raw, find, find_all

TGPP = d.VENDOR_3GPP


class CcError(Exception):
    """A request the application refuses on the wire: the answer carries ``result_code`` and Failed-AVP."""

    def __init__(self, result_code: int, message: str, failed_avp: bytes | None = None) -> None:
        super().__init__(message)
        self.result_code = result_code
        self.failed_avp = failed_avp


class Units(msgspec.Struct, frozen=True, kw_only=True):
    """A Requested-, Granted- or Used-Service-Unit; None where the AVP was absent."""

    time: int | None = None
    total: int | None = None
    input: int | None = None
    output: int | None = None
    specific: int | None = None

    def octets(self) -> int | None:
        if self.total is not None:
            return self.total
        if self.input is None and self.output is None:
            return None
        return (self.input or 0) + (self.output or 0)


class ServiceControl(msgspec.Struct, frozen=True, kw_only=True):
    """One Multiple-Services-Credit-Control of a request (or the request's own top-level units)."""

    rating_group: int | None = None
    service_identifier: int | None = None
    requested: Units | None = None  # None: no Requested-Service-Unit; Units(): present but empty
    used: tuple[Units, ...] = ()
    reporting_reasons: tuple[int, ...] = ()


class CreditControlRequest(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    origin_host: str
    origin_realm: str
    destination_realm: str
    request_type: int  # d.CC_REQUEST_TYPE_*
    request_number: int
    service_context_id: str
    subscription_ids: tuple[tuple[int, str], ...] = ()  # (Subscription-Id-Type, Subscription-Id-Data)
    requested_action: int | None = None
    controls: tuple[ServiceControl, ...] = ()  # MSCCs
    top: ServiceControl | None = None  # units outside any MSCC (single-service clients)
    called_party: str = ""  # IMS Called-Party-Address or SMS recipient, as a digit string
    multiple_services: bool = False  # Multiple-Services-Indicator MULTIPLE_SERVICES_SUPPORTED
    ims: bool = False  # Service-Information/IMS-Information present: a voice call
    sms: bool = False  # Service-Information/SMS-Information present
    event_timestamp: int | None = None
    proxy_infos: tuple[bytes, ...] = ()  # encoded Proxy-Info AVPs, echoed in order


_KNOWN = frozenset(d.AVPS)
MAX_UNITS = 2**53 - 1  # beyond this the charging store cannot count exactly

# CCR AVPs that must be present (RFC 4006 §3.1); Auth-Application-Id is checked by value below.
_REQUIRED = (
    (d.AVP_ORIGIN_HOST, "Origin-Host"),
    (d.AVP_ORIGIN_REALM, "Origin-Realm"),
    (d.AVP_DESTINATION_REALM, "Destination-Realm"),
    (d.AVP_AUTH_APPLICATION_ID, "Auth-Application-Id"),
    (d.AVP_SERVICE_CONTEXT_ID, "Service-Context-Id"),
    (d.AVP_CC_REQUEST_TYPE, "CC-Request-Type"),
    (d.AVP_CC_REQUEST_NUMBER, "CC-Request-Number"),
)


def missing(code: int, name: str) -> CcError:
    """5005: Failed-AVP holds an example of the missing AVP with zero-filled data (RFC 6733 §7.5)."""
    size = 4 if code != d.AVP_SESSION_ID else 0
    return CcError(d.DIAMETER_MISSING_AVP, f"missing {name}", avp_raw(code, bytes(size)))


def invalid(avp: Avp, why: str) -> CcError:
    return CcError(d.DIAMETER_INVALID_AVP_VALUE, why, avp.encoded())


def _check_known(avps: Sequence[Avp]) -> None:
    for avp in avps:
        if avp.mandatory and (avp.code, avp.vendor) not in _KNOWN:
            raise CcError(d.DIAMETER_AVP_UNSUPPORTED, f"unknown AVP {avp.code} with the M bit", avp.encoded())


_UNIT_FIELDS = {
    d.AVP_CC_TIME: "time",
    d.AVP_CC_TOTAL_OCTETS: "total",
    d.AVP_CC_INPUT_OCTETS: "input",
    d.AVP_CC_OUTPUT_OCTETS: "output",
    d.AVP_CC_SERVICE_SPECIFIC_UNITS: "specific",
}


def _units(avp: Avp, reasons: list[int] | None = None) -> Units:
    """The units of a *-Service-Unit AVP (the first of each kind counts); the 3GPP Reporting-Reasons
    inside a Used-Service-Unit are appended to ``reasons``."""
    children = avp.grouped()
    _check_known(children)
    found: dict[str, int] = {}
    for child in children:
        code = child.code
        if child.vendor:
            if reasons is not None and code == d.AVP_REPORTING_REASON and child.vendor == TGPP:
                reasons.append(child.u32())
            continue
        name = _UNIT_FIELDS.get(code)
        if name is not None:
            if name in found:
                continue
            if code == d.AVP_CC_TIME:
                found[name] = child.u32()
            else:
                value = found[name] = child.u64()
                if value > MAX_UNITS:
                    raise invalid(avp, f"more than {MAX_UNITS} units")
        elif code == d.AVP_CC_MONEY:
            raise invalid(child, "CC-Money service units are not supported")
    return Units(**found)


def _control(avps: Sequence[Avp]) -> ServiceControl:
    rsu: Avp | None = None
    rg: Avp | None = None
    si: Avp | None = None
    reasons: list[int] = []
    used: list[Units] = []
    for avp in avps:
        code = avp.code
        if avp.vendor:
            if code == d.AVP_REPORTING_REASON and avp.vendor == TGPP:
                reasons.append(avp.u32())
        elif code == d.AVP_USED_SERVICE_UNIT:
            used.append(_units(avp, reasons))
        elif code == d.AVP_REQUESTED_SERVICE_UNIT and rsu is None:
            rsu = avp
        elif code == d.AVP_RATING_GROUP and rg is None:
            rg = avp
        elif code == d.AVP_SERVICE_IDENTIFIER and si is None:
            si = avp
    return ServiceControl(
        rating_group=None if rg is None else rg.u32(),
        service_identifier=None if si is None else si.u32(),
        requested=None if rsu is None else _units(rsu),
        used=tuple(used),
        reporting_reasons=tuple(reasons),
    )


def _digits(address: str) -> str:
    """'tel:+44 20 7946 0000', 'sip:+442079460000@ims.example;user=phone' -> '442079460000'."""
    text = address.strip()
    for scheme in ("tel:", "sip:", "sips:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    text = text.split("@", 1)[0].split(";", 1)[0]
    return "".join(ch for ch in text if ch.isdigit())


def _service_information(avp: Avp) -> tuple[str, bool, bool]:
    """(called party digits, is IMS, is SMS) from 3GPP Service-Information."""
    children = avp.grouped()
    called, ims, sms = "", False, False
    ims_info = find(children, d.AVP_IMS_INFORMATION, TGPP)
    if ims_info is not None:
        ims = True
        party = find(ims_info.grouped(), d.AVP_CALLED_PARTY_ADDRESS, TGPP)
        if party is not None:
            called = _digits(party.utf8())
    sms_info = find(children, d.AVP_SMS_INFORMATION, TGPP)
    if sms_info is not None:
        sms = True
        for recipient in find_all(sms_info.grouped(), d.AVP_RECIPIENT_INFO, TGPP):
            for address in find_all(recipient.grouped(), d.AVP_RECIPIENT_ADDRESS, TGPP):
                data = find(address.grouped(), d.AVP_ADDRESS_DATA, TGPP)
                if data is not None and not called:
                    called = _digits(data.utf8())
    return called, ims, sms


def _index(avps: Sequence[Avp]) -> tuple[dict[tuple[int, int], Avp], dict[tuple[int, int], list[Avp]]]:
    """One pass over the AVPs: the first of each (code, vendor), and all of the repeated kinds we read;
    an unknown AVP with the M bit is refused on the way (5001)."""
    first: dict[tuple[int, int], Avp] = {}
    repeated: dict[tuple[int, int], list[Avp]] = {}
    for avp in avps:
        key = (avp.code, avp.vendor)
        if key not in _KNOWN and avp.mandatory:
            raise CcError(d.DIAMETER_AVP_UNSUPPORTED, f"unknown AVP {avp.code} with the M bit", avp.encoded())
        first.setdefault(key, avp)
        if key in _REPEATED:
            repeated.setdefault(key, []).append(avp)
    return first, repeated


_REPEATED = frozenset(
    {
        (d.AVP_SUBSCRIPTION_ID, 0),
        (d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, 0),
        (d.AVP_PROXY_INFO, 0),
    }
)
_REQUEST_TYPES = frozenset(
    {
        d.CC_REQUEST_TYPE_INITIAL_REQUEST,
        d.CC_REQUEST_TYPE_UPDATE_REQUEST,
        d.CC_REQUEST_TYPE_TERMINATION_REQUEST,
        d.CC_REQUEST_TYPE_EVENT_REQUEST,
    }
)
_ACTIONS = frozenset(
    {
        d.REQUESTED_ACTION_DIRECT_DEBITING,
        d.REQUESTED_ACTION_REFUND_ACCOUNT,
        d.REQUESTED_ACTION_CHECK_BALANCE,
        d.REQUESTED_ACTION_PRICE_ENQUIRY,
    }
)


def parse_ccr(message: Message) -> CreditControlRequest:
    """The typed request; raises CcError with the answer's Result-Code (and Failed-AVP)."""
    try:
        first, repeated = _index(message.avps)
        session = first.get((d.AVP_SESSION_ID, 0))
        if session is None:
            raise missing(d.AVP_SESSION_ID, "Session-Id")
        for code, name in _REQUIRED:
            if (code, 0) not in first:
                raise missing(code, name)
        app = first[(d.AVP_AUTH_APPLICATION_ID, 0)]
        if app.u32() != d.APP_CREDIT_CONTROL:
            raise invalid(app, "Auth-Application-Id must be 4 (credit control)")
        kind = first[(d.AVP_CC_REQUEST_TYPE, 0)]
        request_type = kind.u32()
        if request_type not in _REQUEST_TYPES:
            raise invalid(kind, f"CC-Request-Type {request_type} is not defined")
        action = first.get((d.AVP_REQUESTED_ACTION, 0))
        requested_action = None if action is None else action.u32()
        if action is not None and requested_action not in _ACTIONS:
            raise invalid(action, f"Requested-Action {requested_action} is not defined")
        if request_type == d.CC_REQUEST_TYPE_EVENT_REQUEST and requested_action is None:
            requested_action = d.REQUESTED_ACTION_DIRECT_DEBITING  # RFC 4006 §8.41 default
        subscription_ids = []
        for sub in repeated.get((d.AVP_SUBSCRIPTION_ID, 0), ()):
            children = sub.grouped()
            sub_type = find(children, d.AVP_SUBSCRIPTION_ID_TYPE)
            sub_data = find(children, d.AVP_SUBSCRIPTION_ID_DATA)
            if sub_type is None:
                raise missing(d.AVP_SUBSCRIPTION_ID_TYPE, "Subscription-Id-Type")
            if sub_data is None:
                raise missing(d.AVP_SUBSCRIPTION_ID_DATA, "Subscription-Id-Data")
            subscription_ids.append((sub_type.u32(), sub_data.utf8()))
        controls = []
        seen: set[tuple[int | None, int | None]] = set()
        for mscc in repeated.get((d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, 0), ()):
            children = mscc.grouped()
            _check_known(children)
            control = _control(children)
            key = (control.rating_group, control.service_identifier)
            if key in seen:
                raise invalid(mscc, "two Multiple-Services-Credit-Control for one rating group and service")
            seen.add(key)
            controls.append(control)
        top = None
        if (d.AVP_REQUESTED_SERVICE_UNIT, 0) in first or (d.AVP_USED_SERVICE_UNIT, 0) in first:
            top = _control(message.avps)
        called, ims, sms = "", False, False
        info = first.get((d.AVP_SERVICE_INFORMATION, TGPP))
        if info is not None:
            called, ims, sms = _service_information(info)
        stamp = first.get((d.AVP_EVENT_TIMESTAMP, 0))
        indicator = first.get((d.AVP_MULTIPLE_SERVICES_INDICATOR, 0))
        if not session.data:
            raise invalid(session, "Session-Id must not be empty")
        return CreditControlRequest(
            multiple_services=indicator is not None and indicator.u32() == 1,
            session_id=session.utf8(),
            origin_host=first[(d.AVP_ORIGIN_HOST, 0)].utf8(),
            origin_realm=first[(d.AVP_ORIGIN_REALM, 0)].utf8(),
            destination_realm=first[(d.AVP_DESTINATION_REALM, 0)].utf8(),
            request_type=request_type,
            request_number=first[(d.AVP_CC_REQUEST_NUMBER, 0)].u32(),
            service_context_id=first[(d.AVP_SERVICE_CONTEXT_ID, 0)].utf8(),
            subscription_ids=tuple(subscription_ids),
            requested_action=requested_action,
            controls=tuple(controls),
            top=top,
            called_party=called,
            ims=ims,
            sms=sms,
            event_timestamp=None if stamp is None else stamp.time(),
            proxy_infos=tuple(p.encoded() for p in repeated.get((d.AVP_PROXY_INFO, 0), ())),
        )
    except AvpError as exc:
        raise CcError(exc.result_code, str(exc), exc.failed_avp) from None
