"""Fit a model on arrays in memory and score it: the loop research and benchmarks share."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from model.dcn import SINGLE_TASK, ModelConfig, MultiTaskDCN, build


def dataset(
    inputs: dict,
    labels: np.ndarray,
    task: np.ndarray,
    batch: int,
    clicked: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches of (inputs, {label, task}) in the given order (and ``click``, for impressions).

    Each batch is one slice of the whole arrays: ``from_tensor_slices(...).batch()`` would make
    an element of every row and copy them into batches one by one, work that competes with
    training for the same cores (15-25% of the rate on 2 cores; see BENCHMARKS.md).
    """
    targets = {"label": labels.astype(np.float32), "task": task.astype(np.int32)}
    if clicked is not None:
        targets["click"] = clicked.astype(np.float32)
    return _sliced(tf.nest.map_structure(tf.constant, (inputs, targets)), batch).prefetch(2)


def _sliced(tensors, batch: int) -> tf.data.Dataset:
    """Consecutive slices of ``batch`` rows of a structure of tensors (the last may be short)."""
    n = tf.shape(tensors[1]["label"], out_type=tf.int64)[0]

    def rows(start):
        return tf.nest.map_structure(lambda t: t[start : start + batch], tensors)

    return tf.data.Dataset.range(tf.constant(0, tf.int64), n, batch).map(rows)


def auto_epochs(rows: int, examples: int = 500_000, most: int = 10) -> int:
    """Passes over ``rows`` examples that see about ``examples`` in all (1 to ``most``): small
    data sets need several passes, and the validation split picks the best.

    >>> auto_epochs(2_000_000), auto_epochs(120_000), auto_epochs(1_000)
    (1, 5, 10)
    """
    return max(1, min(most, -(-examples // max(rows, 1))))


def _task(config: ModelConfig, hard: np.ndarray) -> np.ndarray:
    """Each example's task index: its own, or 0 for every example of a single-task model."""
    return np.zeros(hard.size, np.int32) if config.tasks == SINGLE_TASK else hard.astype(np.int32)


def fit(
    config: ModelConfig,
    inputs: dict,
    labels: np.ndarray,
    hard: np.ndarray,
    epochs: int = 1,
    batch: int = 4096,
    model: MultiTaskDCN | None = None,
    validation: tuple[dict, np.ndarray, np.ndarray] | None = None,
    clicked: np.ndarray | None = None,
) -> MultiTaskDCN:
    """Train (a new model, or warm-start ``model``) on shuffled examples; ``hard`` is each
    example's task. A single-task model trains one tower on all of them.

    With ``validation`` (inputs, labels, hard), ``epochs`` is a maximum: training stops when the
    validation loss (each tower's log loss on its own task's rows, weighted as in training)
    stops improving, and the best epoch's weights are kept (a validation split of clicks).

    With ``clicked`` the rows are impressions (1 where clicked; ``labels`` 1 where a click
    converted) and the model trains as its entire-space weights say (``MultiTaskDCN
    .impression_loss``).
    """
    task = _task(config, hard)
    if model is None:
        click = np.ones(labels.size, dtype=bool) if clicked is None else clicked > 0
        rates = {
            name: labels[(task == k) & click].mean()
            for k, name in enumerate(config.tasks)
            if ((task == k) & click).any()
        }
        if config.has_ctr and clicked is not None:
            rates["ctr"] = click.mean()
        model = build(config, inputs, rates)
    order = np.random.default_rng(config.seed).permutation(labels.size)
    shuffled = {k: v[order] for k, v in inputs.items()}
    data = dataset(
        shuffled, labels[order], task[order], batch, None if clicked is None else clicked[order]
    )
    if validation is None:
        model.fit(data, epochs=epochs, verbose=0, shuffle=False)
        return model
    best, best_weights = float("inf"), None
    for _ in range(epochs):
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        loss = validation_loss(model, config, *validation)
        if loss >= best:
            break
        best, best_weights = loss, model.get_weights()
    if best_weights is not None:
        model.set_weights(best_weights)
    return model


def fit_chunks(
    config: ModelConfig, model: MultiTaskDCN, chunks: Iterable[tuple], batch: int = 4096
) -> MultiTaskDCN:
    """Train ``model`` in one pass over ``chunks`` of (inputs, labels, hard) as they come (the
    iterator may wait for the next one), each chunk shuffled.

    One ``model.fit`` for all of them: a ``fit`` per chunk starts its input pipeline and
    training loop again each time, and trained 20-45% slower on 2 cores (BENCHMARKS.md).
    """
    stream = iter(chunks)
    first = next(stream, None)
    if first is None:
        return model
    rng = np.random.default_rng(config.seed)

    def shuffled():
        for inputs, labels, hard in itertools.chain([first], stream):
            order = rng.permutation(labels.size)
            task = _task(config, hard)[order]
            targets = {"label": labels[order].astype(np.float32), "task": task}
            yield {k: v[order] for k, v in inputs.items()}, targets

    inputs = first[0]
    spec = (
        {k: tf.TensorSpec((None, *v.shape[1:]), v.dtype) for k, v in inputs.items()},
        {"label": tf.TensorSpec((None,), tf.float32), "task": tf.TensorSpec((None,), tf.int32)},
    )
    chunks = tf.data.Dataset.from_generator(shuffled, output_signature=spec)
    model.fit(chunks.flat_map(lambda x, y: _sliced((x, y), batch)).prefetch(2), verbose=0)
    return model


def validation_loss(model, config: ModelConfig, inputs, labels, hard) -> float:
    """The training objective on held-out rows: weighted log loss of each task's own rows."""
    from model.metrics import log_loss

    out = predict(model, inputs)
    if config.tasks == SINGLE_TASK:
        return log_loss(labels, out["all"])
    total = 0.0
    for task, weight in zip(config.tasks, config.loss_weights, strict=True):
        rows = hard if task == "hard" else ~hard
        if weight > 0 and rows.any():
            total += weight * log_loss(labels[rows], out[task][rows])
    return total


def predict(model: MultiTaskDCN, inputs: dict, batch: int = 16384) -> dict[str, np.ndarray]:
    """Each tower's probability for every example."""
    n = len(next(iter(inputs.values())))
    parts: dict[str, list] = {}
    for start in range(0, n, batch):
        out = model({k: v[start : start + batch] for k, v in inputs.items()})
        for task, p in out.items():
            parts.setdefault(task, []).append(p.numpy())
    return {task: np.concatenate(p) for task, p in parts.items()}


def predict_tasks(model: MultiTaskDCN, inputs: dict) -> dict[str, np.ndarray]:
    """The ``hard`` and ``soft`` predictions of every example: each task's tower, or the single
    tower's for both (a single-task model in a loop that routes by task)."""
    out = predict(model, inputs)
    return {task: out[head_for(model.config, task)] for task in ("hard", "soft")}


def head_for(config: ModelConfig, population: str) -> str:
    """The output that scores a population: its own tower, or the single tower."""
    return "all" if config.tasks == SINGLE_TASK else population
