"""Prometheus metrics of the stabilizer, served by the worker it runs in."""

from prometheus_client import Counter, Gauge, Histogram

FLIPS = Counter(
    "rarecvr_stabilizer_flips_total", "Task changes of known setups, by direction.", ["direction"]
)
COLD_STARTS = Counter(
    "rarecvr_stabilizer_cold_starts_total",
    "Setups assigned for the first time (from their peers' prior).",
)
HARD_SHARE = Gauge("rarecvr_stabilizer_hard_share", "Share of this worker's setups that are hard.")
DWELL = Histogram(
    "rarecvr_stabilizer_dwell_hours",
    "Event time a setup kept its task before it changed.",
    buckets=(6, 12, 24, 48, 96, 168, 336, 672),
)
