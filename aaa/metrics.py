"""Prometheus metrics of the RADIUS server, all in this one module."""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("occ_radius_requests", "RADIUS requests received from known clients, by type.", ["type"])
REPLIES = Counter(
    "occ_radius_replies",
    "RADIUS replies sent, by type and outcome (accept, reject reasons, recorded, duplicate...).",
    ["type", "outcome"],
)
DROPPED = Counter(
    "occ_radius_dropped",
    "RADIUS datagrams dropped without a reply, by reason: unknown_client, bad_authenticator, "
    "missing_message_authenticator, malformed, duplicate (one still being worked on), unexpected_code, "
    "store_unavailable (accounting not recorded: the NAS retries).",
    ["reason"],
)
SECONDS = Histogram(
    "occ_radius_request_seconds",
    "Time from a verified request to its reply, by request type.",
    ["type"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
)
SESSIONS = Gauge(
    "occ_radius_sessions", "RADIUS accounting sessions this worker started and has not seen stop."
)
DYNAUTH = Counter(
    "occ_radius_dynauth",
    "Disconnect-Request and CoA-Request (RFC 5176) sent to NASes, by kind and outcome "
    "(sent, ack, nak, timeout).",
    ["kind", "outcome"],
)


@lru_cache(maxsize=64)
def requests(kind: str) -> Counter:
    return REQUESTS.labels(type=kind)


@lru_cache(maxsize=256)
def replies(kind: str, outcome: str) -> Counter:
    return REPLIES.labels(type=kind, outcome=outcome)


@lru_cache(maxsize=32)
def dropped(reason: str) -> Counter:
    return DROPPED.labels(reason=reason)


@lru_cache(maxsize=64)
def seconds(kind: str) -> Histogram:
    return SECONDS.labels(type=kind)


@lru_cache(maxsize=16)
def dynauth(kind: str, outcome: str) -> Counter:
    return DYNAUTH.labels(kind=kind, outcome=outcome)
