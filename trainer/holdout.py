"""The gate's evaluation set: hard examples of the latest held-out tails, which no model trains on.

One window's tail holds a handful of hard conversions, too few to show that a model beats a
constant. The tails of consecutive windows are never trained on (a candidate warm-starts from
the last good checkpoint, which never saw them either), so together they are a fair holdout
for every candidate and for the serving model alike. The newest ``limit`` examples are kept,
in one file in the trainer's state directory, written before the state file that counts them.

Before there are live tails, the holdout is the history log's tail (``set_history``), every
click of it: its hard clicks are those of the history's rule until the stream's assignments
are known, and from then on, for each setup the stabilizer has judged on its own evidence, the
stream's task (``rows(assignments)``), so the gate judges candidates on the population they
serve, not on the rule's idea of it. It leaves the holdout when the live tails fill ``limit``.

>>> import numpy as np
>>> h = Holdout(limit=4)
>>> h.set_history({"f": np.array([b"x", b"y"])}, np.array([1.0, 0.0]),
...               setup_id=np.array(["s1", "s2"]), click_ts_ms=np.array([5, 6]),
...               hard=np.array([True, False]))
>>> h.add({"f": np.array([b"a", b"b"])}, np.array([0.0, 1.0]))
>>> h.rows()[0]["f"].tolist()  # the history's hard click (by its rule), then the live tails
[b'x', b'a', b'b']
>>> h.add({"f": np.array([b"c", b"d", b"e"])}, np.array([0.0, 0.0, 1.0]))
>>> h.rows()[0]["f"].tolist(), h.rows()[1].tolist()  # live tails fill it: the newest stay
([b'b', b'c', b'd', b'e'], [1.0, 0.0, 0.0, 1.0])
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from rarecvr.files import atomic_write

HISTORY = "history:"  #: prefix of the history tail's arrays in the saved file


class Holdout:
    def __init__(self, limit: int):
        self.limit = limit
        self.inputs: dict[str, np.ndarray] = {}
        self.labels = np.zeros(0, np.float32)

        self.history: dict[str, np.ndarray] = {}  #: the history's tail: inputs and meta

    def __len__(self) -> int:
        return self.labels.size + (int(self.history["hard"].sum()) if self.history else 0)

    def set_history(
        self,
        inputs: dict,
        labels: np.ndarray,
        setup_id: np.ndarray,
        click_ts_ms: np.ndarray,
        hard: np.ndarray,
    ) -> None:
        """The history log's tail, every click, with its tasks by the history's rule."""
        self.history = {f"input:{k}": v for k, v in inputs.items()} | {
            "label": labels.astype(np.float32),
            "setup_id": np.asarray(setup_id, dtype=str),
            "click_ts_ms": click_ts_ms.astype(np.int64),
            "hard": hard.astype(bool),
        }

    def rows(self, assignments=None) -> tuple[dict, np.ndarray]:
        """The hard examples to judge on: the history tail's (tasked by ``assignments``, an
        assignment reader or view, where given) while the live tails leave room, then the
        live tails'."""
        if not self.history or self.labels.size >= self.limit:
            return self.inputs, self.labels
        hard = self.history["hard"]
        if assignments is not None:
            hard = self._judged_hard(assignments)
        old = {
            k.split(":", 1)[1]: v[hard] for k, v in self.history.items() if k.startswith("input:")
        }
        if self.inputs and set(old) != set(self.inputs):
            return self.inputs, self.labels
        inputs = {
            k: np.concatenate([v, self.inputs[k]]) if self.inputs else v for k, v in old.items()
        }
        return inputs, np.concatenate([self.history["label"][hard], self.labels])

    def add(self, inputs: dict[str, np.ndarray], labels: np.ndarray) -> None:
        """Append examples; the oldest go beyond ``limit``."""
        if not labels.size:
            return
        if self.inputs and set(inputs) != set(self.inputs):
            self.inputs, self.labels = {}, np.zeros(0, np.float32)  # the features changed
        joined = {
            k: np.concatenate([self.inputs[k], v]) if self.inputs else v for k, v in inputs.items()
        }
        labels = np.concatenate([self.labels, labels.astype(np.float32)])
        keep = slice(max(0, labels.size - self.limit), None)
        self.inputs, self.labels = {k: v[keep] for k, v in joined.items()}, labels[keep]

    def _judged_hard(self, assignments) -> np.ndarray:
        """The history tail's hard flags: the stream's task where the stabilizer has judged the
        setup on its own evidence (``judged``), the history rule's elsewhere."""
        setups, which = np.unique(self.history["setup_id"], return_inverse=True)
        tasks = [assignments.judged(str(setup)) for setup in setups]
        judged = np.array([task is not None for task in tasks])
        hard = np.array([task == "hard" for task in tasks])
        return np.where(judged[which], hard[which], self.history["hard"])

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        arrays = {
            f"input:{k}": v.astype("S") if v.dtype == object else v for k, v in self.inputs.items()
        }  # fixed-width bytes: no pickles on disk
        history = {
            HISTORY + k: v.astype("S") if v.dtype == object else v for k, v in self.history.items()
        }
        np.savez(buffer, labels=self.labels, **arrays, **history)
        atomic_write(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path, limit: int) -> Holdout:
        holdout = cls(limit)
        if path.exists():
            with np.load(path) as data:
                holdout.labels = data["labels"]
                holdout.inputs = {
                    k.split(":", 1)[1]: _column(data[k])
                    for k in data.files
                    if k.startswith("input:")
                }
                holdout.history = {
                    k[len(HISTORY) :]: _column(data[k]) for k in data.files if k.startswith(HISTORY)
                }
        return holdout


def _column(values: np.ndarray) -> np.ndarray:
    """Bytes columns as the trainer holds them (objects), numeric ones as stored."""
    return values.astype(object) if values.dtype.kind == "S" else values
