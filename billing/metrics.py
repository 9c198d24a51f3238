"""Prometheus metrics of the billing package (the one place they are defined)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SINK_RECORDS = Counter(
    "occ_sink_records_total",
    "Charge records the sink handled, by outcome: stored (new to the ledger), duplicate (already there,"
    " a replayed batch) or rejected (not a charge record, kept in ledger_rejects)",
    ["outcome"],
)
SINK_BATCHES = Counter("occ_sink_batches_total", "Batches the sink committed to PostgreSQL")
SINK_ERRORS = Counter(
    "occ_sink_errors_total", "Failed sink operations, retried; by the service that failed", ["service"]
)
SINK_COMMIT_SECONDS = Histogram(
    "occ_sink_commit_seconds",
    "Time to store one batch in PostgreSQL",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SINK_LAG_ENTRIES = Gauge(
    "occ_sink_lag_entries", "Charge records in the Redis streams not yet stored and acknowledged"
)
SINK_LAG_SECONDS = Gauge(
    "occ_sink_lag_seconds", "Age of the oldest charge record not yet stored and acknowledged (0: none)"
)
