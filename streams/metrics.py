"""Prometheus metrics of a stream worker, served at its web port's ``/metrics``."""

from prometheus_client import Counter, Gauge

EVENTS = Counter("rarecvr_stream_events_total", "Events consumed, by type.", ["type"])
DEAD_LETTERS = Counter(
    "rarecvr_stream_dead_letters_total",
    "Malformed events sent to the dead-letter topic.",
    ["reason"],
)
OUTCOMES = Counter(
    "rarecvr_stream_outcomes_total",
    "Duplicates, late, orphan and out-of-window events, and replays after a restart.",
    ["outcome"],
)
LATE = Counter("rarecvr_stream_late_events_total", "Events beyond the allowed lateness.", ["type"])
LABELS = Counter("rarecvr_stream_labels_total", "Labeled examples emitted.", ["label"])
CVR_UPDATES = Counter(
    "rarecvr_stream_cvr_updates_total", "Setup CVR deltas applied or skipped.", ["result"]
)
WATERMARK_DELAY = Gauge(
    "rarecvr_stream_watermark_delay_seconds",
    "Event time between the latest event and the watermark, by partition.",
    ["partition"],
)
PENDING = Gauge(
    "rarecvr_stream_pending_states", "Click states awaiting a label or expiry.", ["partition"]
)
SETUPS = Counter(
    "rarecvr_stream_new_setups_total",
    "Setups given CVR state by this worker since it started (counted, not scanned per scrape).",
)
LAG = Gauge(
    "rarecvr_stream_consumer_lag",
    "Records not yet consumed, by topic and partition.",
    ["topic", "partition"],
)
RESEEKS = Counter(
    "rarecvr_stream_partition_reseeks_total",
    "Partitions read again from their committed offset after a record was never acknowledged.",
    ["topic"],
)
