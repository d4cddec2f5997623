"""Prometheus metrics of a trainer (``rarecvr train --metrics-port``)."""

from prometheus_client import Counter, Gauge

STATE = Gauge("rarecvr_trainer_state", "Next window number and last published version.", ["what"])
PROGRESSIVE = Gauge(
    "rarecvr_trainer_progressive",
    "The serving model scored on a window before training on it, by task and metric.",
    ["task", "metric"],
)
EXAMPLES = Counter("rarecvr_trainer_examples_total", "Examples trained on, by task.", ["task"])
TRAIN_RATE = Gauge("rarecvr_trainer_train_examples_per_second", "Training speed, last window.")
REJECTIONS = Counter(
    "rarecvr_trainer_gate_rejections_total", "Candidates refused, by reason.", ["reason"]
)
MALFORMED = Counter(
    "rarecvr_trainer_malformed_examples_total",
    "Labeled-example records sent to the dead-letter topic.",
)
BUFFERED = Gauge("rarecvr_trainer_buffered_examples", "Examples read into the open window.")
BELOW_CONSTANT = Gauge(
    "rarecvr_trainer_serving_below_constant",
    "1 when the serving version lost to a constant on the last window.",
)
SCHEMA_DRIFT = Gauge(
    "rarecvr_trainer_schema_drift",
    "1 when the stream's published feature schema differs from the model's (see the log).",
)
HISTORY_SKIPPED = Counter(
    "rarecvr_trainer_history_examples_skipped_total",
    "Examples clicked before the history log's end, which version 1 already covers.",
)
SERVED_DRIFT = Gauge(
    "rarecvr_trainer_served_loss_drift",
    "1 when ADWIN found the served model's hard log loss drifting up in the last window.",
)
SERVED_DRIFTS = Counter(
    "rarecvr_trainer_served_loss_drifts_total",
    "Windows in which ADWIN found the served model's hard log loss drifting up.",
)
