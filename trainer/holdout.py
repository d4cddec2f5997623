"""The gate's evaluation set: hard examples of the latest held-out tails, which no model trains on.

One window's tail holds a handful of hard conversions, too few to show that a model beats a
constant. The tails of consecutive windows are never trained on (a candidate warm-starts from
the last good checkpoint, which never saw them either), so together they are a fair holdout
for every candidate and for the serving model alike. The newest ``limit`` examples are kept,
in one file in the trainer's state directory, written before the state file that counts them.

>>> import numpy as np
>>> h = Holdout(limit=3)
>>> h.add({"f": np.array([b"a", b"b"])}, np.array([0.0, 1.0]))
>>> h.add({"f": np.array([b"c", b"d"])}, np.array([0.0, 0.0]))
>>> h.inputs["f"].tolist(), h.labels.tolist()
([b'b', b'c', b'd'], [1.0, 0.0, 0.0])
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from trainer.files import atomic_write


class Holdout:
    def __init__(self, limit: int):
        self.limit = limit
        self.inputs: dict[str, np.ndarray] = {}
        self.labels = np.zeros(0, np.float32)

    def __len__(self) -> int:
        return self.labels.size

    def add(self, inputs: dict[str, np.ndarray], labels: np.ndarray) -> None:
        """Append examples; the oldest go beyond ``limit``."""
        if not labels.size:
            return
        if self.inputs and set(inputs) != set(self.inputs):
            self.inputs, self.labels = {}, np.zeros(0, np.float32)  # the features changed
        joined = {k: np.concatenate([self.inputs[k], v]) if self.inputs else v
                  for k, v in inputs.items()}  # fmt: skip
        labels = np.concatenate([self.labels, labels.astype(np.float32)])
        keep = slice(max(0, labels.size - self.limit), None)
        self.inputs, self.labels = {k: v[keep] for k, v in joined.items()}, labels[keep]

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        arrays = {
            f"input:{k}": v.astype("S") if v.dtype == object else v for k, v in self.inputs.items()
        }  # fixed-width bytes: no pickles on disk
        np.savez(buffer, labels=self.labels, **arrays)
        atomic_write(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path, limit: int) -> Holdout:
        holdout = cls(limit)
        if path.exists():
            with np.load(path) as data:
                holdout.labels = data["labels"]
                holdout.inputs = {k.split(":", 1)[1]: _column(data[k]) for k in data.files
                                  if k.startswith("input:")}  # fmt: skip
        return holdout


def _column(values: np.ndarray) -> np.ndarray:
    """Bytes columns as the trainer holds them (objects), numeric ones as stored."""
    return values.astype(object) if values.dtype.kind == "S" else values
