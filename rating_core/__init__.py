"""Pure rating: money in integer micro-units, tariff plans and time bands, and the rating of usage. No I/O.

The only function here that touches a file is :func:`load_tariff_file`; everything else is computation on
values, so the charging service, the CLI and the tests all rate the same way.
"""

from rating_core.bands import TimeBands, Window
from rating_core.money import MICRO, Money, Rounding, div_round, format_money, parse_money
from rating_core.rating import Quote, Rated, Segment, Usage, price_of, quote, units_for
from rating_core.tariff import (
    Allowance,
    Catalog,
    Fee,
    NoRate,
    Period,
    Plan,
    Problem,
    Rate,
    Service,
    TariffError,
    Tier,
    Unit,
    UnknownPlan,
)
from rating_core.tariff_file import TariffSet, check_tariff, combine_sets, load_tariff_file, parse_tariff

__all__ = [
    "MICRO",
    "Allowance",
    "Catalog",
    "Fee",
    "Money",
    "NoRate",
    "Period",
    "Plan",
    "Problem",
    "Quote",
    "Rate",
    "Rated",
    "Rounding",
    "Segment",
    "Service",
    "TariffError",
    "TariffSet",
    "Tier",
    "TimeBands",
    "Unit",
    "UnknownPlan",
    "Usage",
    "Window",
    "check_tariff",
    "combine_sets",
    "div_round",
    "format_money",
    "load_tariff_file",
    "parse_money",
    "parse_tariff",
    "price_of",
    "quote",
    "units_for",
]
