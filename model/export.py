"""Inference graphs: one task's tower with the shared parts it needs, as a SavedModel.

The hard-only graph is what the paper serves: it costs what the single-task model cost, and it
holds no variable of the soft tower. It is written in TF Serving's layout
(``<model_dir>/<version>/saved_model.pb`` and ``variables/``) with a ``serving_default``
signature that takes raw feature values and returns ``pcvr``, so a TF Serving fleet can load it
as well as rarecvr's replicas.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from model.dcn import MultiTaskDCN

SIGNATURE = "serving_default"
OUTPUT = "pcvr"


class TaskGraph(tf.Module):
    """The trunk and one tower of a model, and nothing else: what gets saved is what is here."""

    def __init__(self, model: MultiTaskDCN, task: str):
        super().__init__(name=f"{task}_graph")
        spec = model.config.features
        self.task = task
        self.trunk = model.trunk
        self.tower = model.towers[model.config.tasks.index(task)]
        signature = {name: tf.TensorSpec([None], tf.string, name=name) for name in spec.categorical}
        signature |= {name: tf.TensorSpec([None], tf.float32, name=name) for name in spec.numeric}
        self.serve = tf.function(self._serve, input_signature=[signature])

    def _serve(self, inputs):
        logit = self.tower(self.trunk(inputs))[:, 0]
        return {OUTPUT: tf.sigmoid(logit)}


def export(model: MultiTaskDCN, task: str, version_dir: Path) -> Path:
    """Save ``task``'s graph to ``version_dir`` (e.g. ``<model_dir>/<version>``)."""
    if task not in model.config.tasks:
        raise ValueError(f"the model has no {task!r} tower; its tasks are {model.config.tasks}")
    graph = TaskGraph(model, task)
    version_dir = Path(version_dir)
    tf.saved_model.save(graph, str(version_dir), signatures={SIGNATURE: graph.serve})
    return version_dir


def load(version_dir: Path):
    """Load a saved graph; returns a callable from feature arrays to ``pcvr`` as a numpy array."""
    loaded = tf.saved_model.load(str(version_dir))
    serve = loaded.signatures[SIGNATURE]

    def predict(inputs: dict):
        tensors = {
            name: tf.constant(inputs[name], dtype=spec.dtype)
            for name, spec in serve.structured_input_signature[1].items()
        }
        return serve(**tensors)[OUTPUT].numpy()

    predict.loaded = loaded
    return predict
