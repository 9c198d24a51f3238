"""The catalog of plan versions (defined in :mod:`rating_core.tariff`, importable from here too)."""

from rating_core.tariff import Catalog

__all__ = ["Catalog"]
