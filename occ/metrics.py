"""The daemon's own metrics, all in this one module (other packages keep theirs in their own module).

Everything registers in prometheus_client's default registry, which ``/metrics`` exposes.
"""

from __future__ import annotations

import platform
from importlib import metadata

from prometheus_client import Counter, Gauge, Info


def _version() -> str:
    try:
        return metadata.version("occ")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


VERSION = _version()

BUILD_INFO = Info("occ_build", "Version of the running occ server.")
BUILD_INFO.info({"version": VERSION, "python": platform.python_version()})

START_TIME = Gauge("occ_start_time_seconds", "Unix time at which the daemon finished starting.")

CONFIG_RELOADS = Counter(
    "occ_config_reloads",
    "Configuration reloads (SIGHUP, occ reload) by outcome: ok = applied, rejected = old configuration kept.",
    ["result"],
)
RELOAD_OK = CONFIG_RELOADS.labels(result="ok")
RELOAD_REJECTED = CONFIG_RELOADS.labels(result="rejected")

CONFIG_LAST_RELOAD_TIME = Gauge(
    "occ_config_last_reload_timestamp_seconds", "Unix time of the last successful configuration load."
)
CONFIG_LAST_RELOAD_OK = Gauge(
    "occ_config_last_reload_successful", "1 if the last configuration reload was applied, 0 if rejected."
)

UP = Gauge(
    "occ_up",
    "1 if a dependency (redis, postgres) answered its last probe or a component is running, else 0.",
    ["component"],
)

TARIFF_PLANS = Gauge("occ_tariff_plans", "Tariff plans in the catalog the daemon is rating with.")

HTTP_REQUESTS = Counter(
    "occ_http_requests",
    "Requests to the metrics/health endpoint by path (unknown paths as 'other') and status code.",
    ["path", "code"],
)
