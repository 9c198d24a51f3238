"""Prometheus metrics of the balance package (the one place they are defined)."""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import Counter, Histogram

SCRIPT_SECONDS = Histogram(
    "occ_balance_script_seconds",
    "Latency of one Lua script call, as seen by the caller",
    ["script"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
REDIS_ERRORS = Counter("occ_balance_redis_errors_total", "Redis calls that failed", ["kind"])
RESERVATIONS_REAPED = Counter(
    "occ_balance_reservations_reaped_total", "Sessions whose expired reservations the reaper returned"
)
REPLANS = Counter(
    "occ_balance_replans_total",
    "Charging requests priced again because the store's state differed from the view used",
    ["reason"],
)
CHARGING_REQUESTS = Counter(
    "occ_balance_charging_requests_total",
    "Charging service requests by operation and outcome",
    ["op", "outcome"],
)


# Looking a labelled child up costs microseconds; the hot path asks these cached ones instead.
@lru_cache(maxsize=64)
def script_seconds(script: str) -> Histogram:
    return SCRIPT_SECONDS.labels(script=script)


@lru_cache(maxsize=64)
def charging_requests(op: str, outcome: str) -> Counter:
    return CHARGING_REQUESTS.labels(op=op, outcome=outcome)
