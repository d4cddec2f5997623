"""Data for offline research: simulator traffic or a user's log, split and assigned to tasks.

Either way the result is a :class:`Study`: train and test inputs, labels and each row's task
(hard when the setup's historical CVR, from earlier rows only, is at most alpha).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model.tasks import TaskRule, decayed_cvr_asof, setup_cvr_from
from rarecvr.logfile import millis, read_table, setup_ids
from rarecvr.schema import FeatureSchema, encode_table, infer
from rarecvr.units import DAY_MS


@dataclass
class Split:
    inputs: dict
    labels: np.ndarray
    hard: np.ndarray
    true_p: np.ndarray | None = None

    def __len__(self) -> int:
        return self.labels.size


@dataclass
class Study:
    """A prepared data set: features, a train and a test split, and where it came from."""

    spec: FeatureSchema
    train: Split
    test: Split
    about: dict = field(default_factory=dict)


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    encoded = pc.dictionary_encode(column.combine_chunks().cast(pa.string()))
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def simulated(market, rule: TaskRule, test_share: float = 0.25) -> Study:
    """Simulator traffic split by time; each row's task from its setup's decayed CVR, counting
    conversions at the time they arrived (delayed feedback, as online)."""
    from simulator.tables import CATEGORICAL_FEATURES, NUMERIC_FEATURES, Vocab, clicks_table
    from simulator.traffic import generate

    vocab = Vocab(market)
    table = pa.concat_tables(clicks_table(chunk, vocab) for chunk in generate(market))
    t = table["ts_ms"].to_numpy()
    converted_at = table["conversion_ts_ms"].to_numpy(zero_copy_only=False).astype(np.float64)
    setup = _codes(table["setup_id"])
    labels = table["converted"].to_numpy().astype(np.float32)
    cvr = decayed_cvr_asof(
        setup,
        t,
        converted_at,
        setup,
        t,
        rule.half_life_days * DAY_MS,
        rule.prior(labels),
        rule.prior_strength,
    )
    hard = cvr <= rule.alpha
    spec = FeatureSchema(CATEGORICAL_FEATURES, NUMERIC_FEATURES)
    cut = int(np.searchsorted(t, np.quantile(t, 1 - test_share)))
    inputs = encode_table(table, spec)
    true_p = table["true_p"].to_numpy()
    about = {
        "source": "simulator",
        "clicks": table.num_rows,
        "seed": market.cfg.seed,
        "shared_strength": market.cfg.shared_strength,
        "split": "by time",
        "hard_share_train": float(hard[:cut].mean()),
    }
    return Study(spec, *_split(inputs, labels, hard, true_p, cut), about=about)


def _split(inputs, labels, hard, true_p, cut):
    def part(sl):
        return Split(
            {k: v[sl] for k, v in inputs.items()},
            labels[sl],
            hard[sl],
            None if true_p is None else true_p[sl],
        )

    return part(slice(0, cut)), part(slice(cut, None))


def label_array(table: pa.Table, label: str, positive: str | None) -> np.ndarray:
    """0/1 labels: ``column == positive`` if given, else a numeric column's value > 0."""
    column = table[label]
    if positive is not None:
        values = pc.utf8_trim_whitespace(column.cast(pa.string()))
        return pc.equal(values, positive.strip()).to_numpy(zero_copy_only=False).astype(np.float32)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        sample = sorted(set(column.slice(0, 1000).to_pylist()))[:5]
        raise ValueError(
            f"label column {label!r} is not numeric (values like {sample}); "
            "say which value is a conversion with --positive VALUE"
        )
    return (column.fill_null(0).to_numpy() > 0).astype(np.float32)


def from_file(
    path: Path,
    label: str,
    setup: list[str],
    features: list[str],
    rule: TaskRule,
    time: str | None = None,
    positive: str | None = None,
    columns: list[str] | None = None,
    categorical: list[str] = (),
    test_share: float = 0.25,
    seed: int = 0,
    half_life_ms: float | None = None,
    numeric: list[str] = (),
    unit: str = "auto",
) -> Study:
    """A user's log as a study, its features' kinds inferred (``rarecvr.schema.infer``, the
    notes in ``about``). With ``time`` (any form ``rarecvr.logfile.millis`` reads): sorted,
    split by time, each row's task from earlier rows (``half_life_ms`` default a quarter of the
    span). Without: a seeded random split, setup CVRs from the training part only."""
    table = read_table(path, columns)
    missing = [
        c
        for c in [label, *setup, *features, *([time] if time else [])]
        if c not in table.column_names
    ]
    if missing:
        raise KeyError(f"{path} has no column(s) {missing}; it has {table.column_names}")
    labels = label_array(table, label, positive)
    table = table.append_column("setup_id", setup_ids(table, setup))
    inferred, notes = infer(table, features, tuple(categorical), tuple(numeric))
    spec = FeatureSchema(("setup_id", *inferred.categorical), inferred.numeric)
    codes = _codes(table["setup_id"])
    prior = rule.prior(labels)
    if time:
        t = millis(table[time], unit, time)
        if np.isnan(t).any():
            row = int(np.flatnonzero(np.isnan(t))[0])
            raise ValueError(f"{path}: row {row} has no time in column {time!r}")
        order = np.argsort(t, kind="stable")
        table, labels, codes, t = table.take(order), labels[order], codes[order], t[order]
        converted_at = np.where(labels > 0, t, np.nan)
        half_life_ms = half_life_ms or max(t[-1] - t[0], 1.0) / 4
        cvr = decayed_cvr_asof(
            codes, t, converted_at, codes, t, half_life_ms, prior, rule.prior_strength
        )
        hard = cvr <= rule.alpha
        cut = int(labels.size * (1 - test_share))
        split = "by time"
    else:
        order = np.random.default_rng(seed).permutation(labels.size)
        table, labels, codes = table.take(order), labels[order], codes[order]
        cut = int(labels.size * (1 - test_share))
        cvr = setup_cvr_from(codes[:cut], labels[:cut], prior, rule.prior_strength)
        cvr = np.concatenate([cvr, np.full(max(0, codes.max() + 1 - cvr.size), prior)])
        hard = cvr[codes] <= rule.alpha
        split = f"random (seed {seed}), setup CVR from the training part"
    inputs = encode_table(table, spec)
    about = {
        "source": str(path),
        "rows": table.num_rows,
        "label": label,
        "setup": setup,
        "split": split,
        "hard_share_train": float(hard[:cut].mean()),
        "base_rate": prior,
        "schema": spec.summary(),
        "schema_notes": notes,
    }
    return Study(spec, *_split(inputs, labels, hard, None, cut), about=about)


def with_seed(study: Study, seed: int) -> Study:
    return replace(study, about=study.about | {"seed": seed})
