"""Weights and optimizer state of a model between windows, in one file written atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from model.dcn import MultiTaskDCN
from rarecvr.files import atomic_write


def save(model: MultiTaskDCN, path: Path) -> Path:
    """Write the model's weights and its optimizer's variables (moments, step) to ``path``."""
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays |= {f"o{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())
    return path


def restore(model: MultiTaskDCN, path: Path) -> MultiTaskDCN:
    """Load ``path`` into a built model of the same configuration (warm start)."""
    with np.load(path) as data:
        weights = [data[f"w{i}"] for i in range(sum(k.startswith("w") for k in data.files))]
        optimizer = [data[f"o{i}"] for i in range(sum(k.startswith("o") for k in data.files))]
    model.set_weights(weights)
    model.optimizer.build(model.trainable_variables)
    if len(optimizer) != len(model.optimizer.variables):
        have = len(model.optimizer.variables)
        raise ValueError(
            f"{path} holds {len(optimizer)} optimizer variables, the model has "
            f"{have}: a different configuration"
        )
    for variable, value in zip(model.optimizer.variables, optimizer, strict=True):
        variable.assign(value)
    return model


def remove_older(directory: Path, keep: set[Path]) -> None:
    for path in directory.glob("ckpt-*.npz"):
        if path not in keep:
            os.unlink(path)
