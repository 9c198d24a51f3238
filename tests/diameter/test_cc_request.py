"""The CCR parser: every Multiple-Services-Credit-Control field a gateway sends comes out typed, and each
malformed unit AVP is refused with the Result-Code and Failed-AVP RFC 4006 / RFC 6733 ask for."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from occ.diameter import dictionary as d
from occ.diameter.cc_request import MAX_UNITS, CcError, Units, parse_ccr
from occ.diameter.client import MsccSpec, UnitsSpec, build_ccr
from occ.diameter.codec import avp_grouped, avp_u32, avp_u64, decode_message

TGPP = d.VENDOR_3GPP
UPDATE = d.CC_REQUEST_TYPE_UPDATE_REQUEST


def ccr(*msccs: MsccSpec, extra: bytes = b"") -> bytes:
    return build_ccr(
        "pgw.test;1;1",
        UPDATE,
        1,
        origin_host="pgw.test",
        origin_realm="test",
        destination_realm="occ.test",
        hop_by_hop=1,
        end_to_end=1,
        msccs=msccs,
        extra=extra,
    )


def raw_mscc(*children: bytes) -> bytes:
    return avp_grouped(d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, *children)


def units(spec: UnitsSpec | None) -> Units | None:
    if spec is None:
        return None
    return Units(
        time=spec.time, total=spec.total, input=spec.input, output=spec.output, specific=spec.specific
    )


counts = st.none() | st.integers(0, MAX_UNITS)
unit_specs = st.builds(
    UnitsSpec,
    time=st.none() | st.integers(0, 2**32 - 1),
    total=counts,
    input=counts,
    output=counts,
    specific=counts,
)
msccs = st.builds(
    MsccSpec,
    rating_group=st.none() | st.integers(0, 2**32 - 1),
    service_identifier=st.none() | st.integers(0, 2**32 - 1),
    requested=st.none() | unit_specs,
    used=st.none() | unit_specs,
    reporting_reason=st.none() | st.integers(0, 7),
)


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(msccs, max_size=4, unique_by=lambda m: (m.rating_group, m.service_identifier)))
def test_every_mscc_field_comes_out_as_sent(specs: list[MsccSpec]) -> None:
    parsed = parse_ccr(decode_message(ccr(*specs)))
    assert len(parsed.controls) == len(specs)
    for control, spec in zip(parsed.controls, specs, strict=True):
        assert control.rating_group == spec.rating_group
        assert control.service_identifier == spec.service_identifier
        assert control.requested == units(spec.requested)
        assert control.used == ((units(spec.used),) if spec.used is not None else ())
        assert control.reporting_reasons == (
            (spec.reporting_reason,) if spec.reporting_reason is not None else ()
        )


def test_reporting_reasons_inside_used_units_count_and_the_first_of_a_repeated_unit_wins() -> None:
    mscc = raw_mscc(
        avp_u32(d.AVP_RATING_GROUP, 10),
        avp_grouped(
            d.AVP_USED_SERVICE_UNIT,
            avp_u64(d.AVP_CC_TOTAL_OCTETS, 1000),
            avp_u64(d.AVP_CC_TOTAL_OCTETS, 5),
            avp_u32(d.AVP_REPORTING_REASON, d.REPORTING_REASON_FINAL, vendor=TGPP),
        ),
        avp_grouped(d.AVP_USED_SERVICE_UNIT, avp_u32(d.AVP_CC_TIME, 30)),
        avp_u32(d.AVP_REPORTING_REASON, d.REPORTING_REASON_VALIDITY_TIME, vendor=TGPP),
    )
    (control,) = parse_ccr(decode_message(ccr(extra=mscc))).controls
    assert control.used == (Units(total=1000), Units(time=30))
    assert sorted(control.reporting_reasons) == sorted(
        [d.REPORTING_REASON_FINAL, d.REPORTING_REASON_VALIDITY_TIME]
    )


@pytest.mark.parametrize(
    ("child", "code"),
    [
        (avp_grouped(d.AVP_CC_MONEY, avp_u64(d.AVP_VALUE_DIGITS, 1)), d.DIAMETER_INVALID_AVP_VALUE),
        (avp_u64(d.AVP_CC_TOTAL_OCTETS, MAX_UNITS + 1), d.DIAMETER_INVALID_AVP_VALUE),
        (avp_u32(d.AVP_CC_TOTAL_OCTETS, 5), d.DIAMETER_INVALID_AVP_LENGTH),
        (avp_u32(9999, 1), d.DIAMETER_AVP_UNSUPPORTED),
    ],
    ids=["cc-money", "beyond-exact-count", "wrong-length", "unknown-mandatory"],
)
def test_a_bad_unit_avp_is_refused_with_its_code_and_failed_avp(child: bytes, code: int) -> None:
    mscc = raw_mscc(avp_u32(d.AVP_RATING_GROUP, 10), avp_grouped(d.AVP_REQUESTED_SERVICE_UNIT, child))
    with pytest.raises(CcError) as refused:
        parse_ccr(decode_message(ccr(extra=mscc)))
    assert refused.value.result_code == code
    assert refused.value.failed_avp


def test_the_failed_avp_of_an_oversized_count_is_the_unit_avp_that_holds_it() -> None:
    rsu = avp_grouped(d.AVP_REQUESTED_SERVICE_UNIT, avp_u64(d.AVP_CC_INPUT_OCTETS, MAX_UNITS + 1))
    with pytest.raises(CcError) as refused:
        parse_ccr(decode_message(ccr(extra=raw_mscc(rsu))))
    assert refused.value.failed_avp == rsu
