"""Fit a model on arrays in memory and score it: the loop research and benchmarks share."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from model.dcn import SINGLE_TASK, ModelConfig, MultiTaskDCN, build


def dataset(inputs: dict, labels: np.ndarray, task: np.ndarray, batch: int) -> tf.data.Dataset:
    """Batches of (inputs, {label, task}) in the given order."""
    targets = {"label": labels.astype(np.float32), "task": task.astype(np.int32)}
    return tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(batch).prefetch(2)


def fit(
    config: ModelConfig,
    inputs: dict,
    labels: np.ndarray,
    hard: np.ndarray,
    epochs: int = 1,
    batch: int = 4096,
    model: MultiTaskDCN | None = None,
) -> MultiTaskDCN:
    """Train (a new model, or warm-start ``model``) on shuffled examples; ``hard`` is each
    example's task. A single-task model trains one tower on all of them."""
    task = np.zeros(labels.size, np.int32) if config.tasks == SINGLE_TASK else hard.astype(np.int32)
    if model is None:
        rates = {name: labels[task == k].mean() for k, name in enumerate(config.tasks)
                 if (task == k).any()}  # fmt: skip
        model = build(config, inputs, rates)
    order = np.random.default_rng(config.seed).permutation(labels.size)
    shuffled = {k: v[order] for k, v in inputs.items()}
    model.fit(dataset(shuffled, labels[order], task[order], batch), epochs=epochs, verbose=0)
    return model


def predict(model: MultiTaskDCN, inputs: dict, batch: int = 16384) -> dict[str, np.ndarray]:
    """Each tower's probability for every example."""
    n = len(next(iter(inputs.values())))
    parts: dict[str, list] = {}
    for start in range(0, n, batch):
        out = model({k: v[start : start + batch] for k, v in inputs.items()})
        for task, p in out.items():
            parts.setdefault(task, []).append(p.numpy())
    return {task: np.concatenate(p) for task, p in parts.items()}


def head_for(config: ModelConfig, population: str) -> str:
    """The output that scores a population: its own tower, or the single tower."""
    return "all" if config.tasks == SINGLE_TASK else population
