"""Prometheus metrics of a scoring replica, served at ``/metrics``."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("rarecvr_serving_requests_total", "Scoring requests by HTTP status.", ["status"])
LATENCY = Histogram(
    "rarecvr_serving_request_seconds",
    "Time to answer a scoring request.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
CANDIDATES = Counter("rarecvr_serving_candidates_total", "Candidates scored, by task.", ["task"])
SWAPS = Counter(
    "rarecvr_serving_swaps_total",
    "Model versions swapped in, by load: full, or weights read into a spare slot.",
    ["load"],
)
LOAD_SECONDS = Histogram(
    "rarecvr_serving_load_seconds",
    "Time to verify, load and probe a version before its swap.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REFUSED = Counter(
    "rarecvr_serving_refused_versions_total", "Versions refused, by reason.", ["reason"]
)
VERSION = Gauge("rarecvr_serving_model_version", "The model version serving now.")
EPOCH = Gauge("rarecvr_serving_assignment_epoch", "Highest task-assignment epoch seen.")
