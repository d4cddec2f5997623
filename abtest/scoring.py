"""An arm's pCVR as a scoring replica computes it: hard-routed candidates through the model
version's hard-only graph (``serving_default``), the others through its ``soft`` signature.

A model trained in this process and a version loaded from the registry score the same way
(``model.export.version_graph`` is the graph ``export_version`` saves). A single-task model's one
tower serves both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from model.dcn import MultiTaskDCN
from model.export import OUTPUT, SIGNATURE, SOFT, version_graph

#: Candidates per graph call.
BATCH = 32_768


class Scorer:
    """pCVR of candidate feature arrays, each routed to the hard or the soft graph."""

    def __init__(self, functions, name: str):
        self.hard_graph, self.soft_graph = functions[SIGNATURE], functions[SOFT]
        self.name = name

    @classmethod
    def of_model(cls, model: MultiTaskDCN, name: str) -> Scorer:
        return cls(version_graph(model).functions, name)

    @classmethod
    def of_version(cls, version_dir: Path, name: str | None = None) -> Scorer:
        """A model version from the registry (a TF Serving version directory)."""
        loaded = tf.saved_model.load(str(version_dir))
        functions = {sig: _keyword(loaded.signatures[sig]) for sig in (SIGNATURE, SOFT)}
        scorer = cls(functions, name or str(version_dir))
        scorer._loaded = loaded  # the signatures hold no reference to their variables
        return scorer

    def __call__(self, inputs: dict[str, np.ndarray], hard: np.ndarray) -> np.ndarray:
        out = np.empty(hard.size)
        for graph, rows in ((self.hard_graph, np.flatnonzero(hard)), (self.soft_graph, None)):
            rows = np.flatnonzero(~hard) if rows is None else rows
            for start in range(0, rows.size, BATCH):
                part = rows[start : start + BATCH]
                out[part] = graph({k: tf.constant(v[part]) for k, v in inputs.items()})[
                    OUTPUT
                ].numpy()
        return out


def _keyword(signature):
    """A loaded signature called like the in-memory graph: with one dict of features."""
    return lambda features: signature(**features)
