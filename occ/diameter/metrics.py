"""Prometheus metrics of the Diameter stack (base protocol and transport), all in this one module.

Commands are labelled by their short request/answer names (``CCR``, ``CEA``...; unknown codes by number).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_NAMES: dict[int, str] = {
    257: "CE",
    258: "RA",
    271: "AC",
    272: "CC",
    274: "AS",
    275: "ST",
    280: "DW",
    282: "DP",
}


def request_name(code: int) -> str:
    # Command codes come from peers: unknown ones share one label, so no peer can grow the label set.
    name = _NAMES.get(code)
    return f"{name}R" if name else "other"


def answer_name(code: int) -> str:
    name = _NAMES.get(code)
    return f"{name}A" if name else "other"


REQUESTS = Counter(
    "occ_diameter_requests",
    "Diameter requests by command and direction (in: received from peers, out: sent by us).",
    ["command", "direction"],
)
ANSWERS = Counter(
    "occ_diameter_answers",
    "Diameter answers by command, Result-Code and direction (out: sent by us, in: received).",
    ["command", "result_code", "direction"],
)
PEERS = Gauge("occ_diameter_peers", "Connections by peer state machine state.", ["state"])
CONNECTIONS_CLOSED = Counter("occ_diameter_connections_closed", "Connections closed, by reason.", ["reason"])
DISCARDED = Counter(
    "occ_diameter_discarded", "Received messages dropped without an answer, by reason.", ["reason"]
)
REQUEST_SECONDS = Histogram(
    "occ_diameter_request_seconds",
    "Time from an application request's arrival to its answer being written, per command.",
    ["command"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
SERVER_REQUEST_FAILURES = Counter(
    "occ_diameter_server_request_failures",
    "Server-initiated requests (RAR, ASR) without an answer, by reason (timeout, closed).",
    ["command", "reason"],
)


# Labelled children, cached: ``labels()`` costs more than the increment on the per-request path.
_children: dict[tuple[int, int, int, str], Any] = {}


def request_in(code: int) -> None:
    key = (0, code, 0, "in")
    child = _children.get(key)
    if child is None:
        child = _children[key] = REQUESTS.labels(request_name(code), "in")
    child.inc()


def answer(code: int, result_code: int | None, direction: str) -> None:
    key = (1, code, -1 if result_code is None else result_code, direction)
    child = _children.get(key)
    if child is None:
        child = _children[key] = ANSWERS.labels(answer_name(code), str(result_code), direction)
    child.inc()


def request_seconds(code: int, seconds: float) -> None:
    key = (2, code, 0, "")
    child = _children.get(key)
    if child is None:
        child = _children[key] = REQUEST_SECONDS.labels(request_name(code))
    child.observe(seconds)


# --- credit-control application ---------------------------------------------------------------------
CC_TYPES = {1: "initial", 2: "update", 3: "termination", 4: "event"}
CC_REQUESTS = Counter(
    "occ_diameter_cc_requests",
    "Credit-control requests answered, by CC-Request-Type and the answer's Result-Code.",
    ["type", "result_code"],
)
CC_SECONDS = Histogram(
    "occ_diameter_cc_seconds",
    "Time from a parsed CCR to its encoded CCA, by CC-Request-Type.",
    ["type"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
)
CC_SESSIONS = Gauge("occ_diameter_cc_sessions", "Credit-control sessions open on this worker (for RAR/ASR).")
CC_SERVER_REQUESTS = Counter(
    "occ_diameter_cc_server_requests",
    "Server-initiated requests of the credit-control application (RAR, ASR), by command and outcome.",
    ["command", "outcome"],
)


class HeldTotals:
    """What one application's open sessions hold: plain integers, updated per request at the cost of an
    addition (a prometheus_client gauge takes a lock per update) and exported at scrape time."""

    def __init__(self) -> None:
        self.money = 0
        self.units: dict[str, int] = {}


class _HeldCollector(Collector):
    """``occ_diameter_cc_reserved_money_micro`` and ``occ_diameter_cc_reserved_units{service}``: the
    totals of every live credit-control application of this worker, summed when scraped."""

    def __init__(self) -> None:
        self.sources: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        money = 0
        units: dict[str, int] = {}
        for source in list(self.sources):
            totals: HeldTotals = source.held
            money += totals.money
            for service, count in totals.units.items():
                units[service] = units.get(service, 0) + count
        yield GaugeMetricFamily(
            "occ_diameter_cc_reserved_money_micro",
            "Money (micro-units, all currencies together) held by the grants of this worker's open sessions.",
            value=money,
        )
        family = GaugeMetricFamily(
            "occ_diameter_cc_reserved_units",
            "Units (seconds, bytes or events) granted to this worker's open sessions, by service.",
            labels=["service"],
        )
        for service, count in sorted(units.items()):
            family.add_metric([service], count)
        yield family


HELD = _HeldCollector()
REGISTRY.register(HELD)


@lru_cache(maxsize=256)
def cc_requests(kind: str, result_code: int) -> Counter:
    return CC_REQUESTS.labels(type=kind, result_code=str(result_code))


@lru_cache(maxsize=16)
def cc_seconds(kind: str) -> Histogram:
    return CC_SECONDS.labels(type=kind)
