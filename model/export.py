"""Inference graphs: one task's tower with the shared parts it needs, as a SavedModel.

The hard-only graph is what the paper serves: it costs what the single-task model cost, and it
holds no variable of the soft tower. It is written in TF Serving's layout
(``<model_dir>/<version>/saved_model.pb`` and ``variables/``) with a ``serving_default``
signature that takes raw feature values and returns ``pcvr``, so a TF Serving fleet can load it
as well as rarecvr's replicas.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

import rarecvr
from model.dcn import MultiTaskDCN

SIGNATURE = "serving_default"
OUTPUT = "pcvr"
ARCHITECTURE = Path("assets.extra") / "architecture.json"
#: what decides the computation a graph performs; the rest of ModelConfig only changes weights
GRAPH_FIELDS = ("features", "hash_buckets", "embedding_dim", "shared_layers", "tower_units",
                "tasks", "extra")  # fmt: skip


class TaskGraph(tf.Module):
    """The trunk and the towers of ``tasks``, and nothing else: what gets saved is what is here.

    One task gives one output, ``pcvr``; several (the full model, for comparison) give
    ``pcvr_<task>`` each.
    """

    def __init__(self, model: MultiTaskDCN, tasks: tuple[str, ...]):
        super().__init__(name=f"{'_'.join(tasks)}_graph")
        spec = model.config.features
        self.tasks = tasks
        self.trunk = model.trunk
        self.towers = [model.towers[model.config.tasks.index(task)] for task in tasks]
        signature = {name: tf.TensorSpec([None], tf.string, name=name) for name in spec.categorical}
        signature |= {name: tf.TensorSpec([None], tf.float32, name=name) for name in spec.numeric}
        self.serve = tf.function(self._serve, input_signature=[signature])

    def _serve(self, inputs):
        h = self.trunk(inputs)
        probs = [tf.sigmoid(tower(h)[:, 0]) for tower in self.towers]
        if len(probs) == 1:
            return {OUTPUT: probs[0]}
        return {f"{OUTPUT}_{task}": p for task, p in zip(self.tasks, probs, strict=True)}


def export(model: MultiTaskDCN, task: str | tuple[str, ...], version_dir: Path) -> Path:
    """Save the graph of ``task`` (or of several) to ``version_dir`` (``<model_dir>/<version>``)."""
    tasks = (task,) if isinstance(task, str) else tuple(task)
    for name in tasks:
        if name not in model.config.tasks:
            raise ValueError(f"the model has no {name!r} tower; its tasks are {model.config.tasks}")
    graph = TaskGraph(model, tasks)
    version_dir = Path(version_dir)
    tf.saved_model.save(graph, str(version_dir), signatures={SIGNATURE: graph.serve})
    (version_dir / ARCHITECTURE).parent.mkdir(exist_ok=True)
    (version_dir / ARCHITECTURE).write_text(json.dumps(architecture(model, tasks), sort_keys=True))
    return version_dir


def export_version(model: MultiTaskDCN, version_dir: Path) -> None:
    """A model version's graphs: the hard-only graph, and the soft tower's beside it in
    ``soft/`` (what replicas route soft candidates to)."""
    export(model, "hard", version_dir)
    export(model, "soft", Path(version_dir) / "soft")


def architecture(model: MultiTaskDCN, tasks: tuple[str, ...]) -> dict:
    """What two graphs must share for one's weights to be loaded into the other
    (``assets.extra/architecture.json``, a file TF Serving ignores): the configuration fields
    that shape the computation, the exported towers and the code that built them."""
    config = model.config.to_dict()
    return {"config": {k: config[k] for k in GRAPH_FIELDS}, "towers": list(tasks),
            "rarecvr": rarecvr.__version__, "tensorflow": tf.__version__}  # fmt: skip


def read_architecture(version_dir: Path) -> str | None:
    """The architecture file's text, or None for a graph exported without one."""
    path = Path(version_dir) / ARCHITECTURE
    return path.read_text() if path.exists() else None


def load(version_dir: Path):
    """Load a saved graph; returns a callable from feature arrays to ``pcvr`` (a numpy array;
    a dict of them for a graph of several towers)."""
    loaded = tf.saved_model.load(str(version_dir))
    serve = loaded.signatures[SIGNATURE]

    def predict(inputs: dict):
        tensors = {
            name: tf.constant(inputs[name], dtype=spec.dtype)
            for name, spec in serve.structured_input_signature[1].items()
        }
        out = serve(**tensors)
        if OUTPUT in out:
            return out[OUTPUT].numpy()
        return {name: value.numpy() for name, value in out.items()}

    predict.loaded = loaded
    return predict
