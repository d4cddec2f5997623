"""Version 1 from a log of past clicks (``rarecvr train --history``), before the first live window.

Where conversions are rare, one live window of a few thousand clicks holds a handful of hard
conversions: a model trained from random weights on it cannot beat a constant, and the gate's
floor refuses it. The paper's model was trained on months of logs before it went online; here a
log of past clicks (the format ``rarecvr replay`` and ``rarecvr research`` read: one row per
click, an empty conversion time when it did not convert) is labeled as the stream worker labels
(a conversion within the attribution window of its click), each click takes its task from its
setup's decayed CVR as of the click (``model.tasks``, conversions counted when they arrived),
and the latest ``tail_share`` by click time is held out for the gate. The model is fitted for
up to ``epochs`` passes, the pass picked on the end of the training part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from model.dcn import ModelConfig
from model.tasks import TaskRule, decayed_cvr_asof
from model.training import auto_epochs, fit
from rarecvr.logfile import HistoryLog, advertiser_ids, millis, read_table, setup_ids
from rarecvr.schema import TOP_LEVEL, encode_table
from rarecvr.units import DAY_MS


def stream_rule(alpha: float = 0.01) -> TaskRule:
    """The offline rule closest to the stream's stabilizer for a setup without peers: hard when
    its decayed CVR, shrunk towards alpha by 20 pseudo-clicks (``PolicyParams.default_prior``),
    is at most alpha. (The research rule shrinks towards the overall rate by 200 clicks, which
    keeps most small setups soft: 3% of a simulated history hard, against about 40% of the
    stream's clicks.)"""
    return TaskRule(alpha=alpha, prior_strength=20.0, prior_mean=alpha)


@dataclass
class History:
    """A history log as model inputs, labels and tasks, by click time, split for the gate."""

    inputs: dict
    labels: np.ndarray
    hard: np.ndarray
    cut: int  #: rows before it train; the rest is the held-out tail
    end_ms: int  #: the latest click time
    setup_id: np.ndarray  #: each row's setup (str), to task the tail by the stream later
    click_ts_ms: np.ndarray

    def part(self, rows: slice) -> tuple[dict, np.ndarray, np.ndarray]:
        return {k: v[rows] for k, v in self.inputs.items()}, self.labels[rows], self.hard[rows]


def load(
    log: HistoryLog,
    model: ModelConfig,
    attribution_window_ms: int,
    rule: TaskRule,
    tail_share: float,
) -> History:
    """Read, label and split a history log; KeyError or ValueError name what is wrong with it."""
    table = read_table(log.path)
    spec = model.features
    needed = [
        log.click_time,
        log.conversion_time,
        *log.setup,
        *filter(None, [log.advertiser]),
        *(n for n in spec.names if n not in TOP_LEVEL),
    ]
    missing = sorted({c for c in needed if c and c not in table.column_names})
    if missing:
        raise KeyError(
            f"{log.path} has no column(s) {missing} (the model's features are "
            f"{list(spec.names)}); it has {table.column_names}"
        )
    setups = setup_ids(table, list(log.setup))
    advertisers = advertiser_ids(table, log.advertiser, setups)
    table = table.drop_columns([c for c in TOP_LEVEL if c in table.column_names])
    table = table.append_column("setup_id", setups).append_column("advertiser_id", advertisers)
    clicks = millis(table[log.click_time], log.unit, log.click_time)
    if np.isnan(clicks).any():
        row = int(np.flatnonzero(np.isnan(clicks))[0])
        raise ValueError(f"{log.path}: row {row} has no click time in {log.click_time!r}")
    order = np.argsort(clicks, kind="stable")
    table, clicks = table.take(order), clicks[order]
    converted = millis(table[log.conversion_time], log.unit, log.conversion_time)
    delay = converted - clicks
    labels = ((delay >= 0) & (delay <= attribution_window_ms)).astype(np.float32)
    arrived = np.where(labels > 0, converted, np.nan)
    setup = pc.dictionary_encode(table["setup_id"].combine_chunks()).indices
    setup = setup.to_numpy(zero_copy_only=False).astype(np.int64)
    cvr = decayed_cvr_asof(
        setup,
        clicks,
        arrived,
        setup,
        clicks,
        rule.half_life_days * DAY_MS,
        rule.prior(labels),
        rule.prior_strength,
    )
    cut = int(len(labels) * (1 - tail_share))
    setup_of_row = table["setup_id"].to_numpy(zero_copy_only=False).astype(object)
    return History(
        encode_table(table, spec),
        labels,
        cvr <= rule.alpha,
        cut,
        int(clicks[-1]),
        setup_of_row,
        clicks.astype(np.int64),
    )


def train(history: History, model: ModelConfig, batch: int, epochs: int | None = None):
    """Fit the model on the history less its tail; the end of the training part picks the pass."""
    inputs, labels, hard = history.part(slice(0, history.cut))
    pick = int(labels.size * 0.9)
    validation = ({k: v[pick:] for k, v in inputs.items()}, labels[pick:], hard[pick:])
    inputs, labels, hard = {k: v[:pick] for k, v in inputs.items()}, labels[:pick], hard[:pick]
    return fit(
        model,
        inputs,
        labels,
        hard,
        epochs=epochs or auto_epochs(labels.size),
        batch=batch,
        validation=validation,
    )
