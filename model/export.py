"""Inference graphs: one task's tower with the shared parts it needs, as a SavedModel.

The hard-only graph is what the paper serves: it costs what the single-task model cost
(``export(model, "hard", ...)`` holds no variable of the soft tower). A model version is written
in TF Serving's layout (``<model_dir>/<version>/saved_model.pb`` and ``variables/``) with a
``serving_default`` signature, the hard-only graph, that takes raw feature values and returns
``pcvr``, and a ``soft`` signature for the soft tower over the same stored trunk, so a TF Serving
fleet can load it as well as rarecvr's replicas.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

import rarecvr
from model.dcn import SINGLE_TASK, MultiTaskDCN

SIGNATURE = "serving_default"
SOFT = "soft"  #: the soft tower's signature in a model version
OUTPUT = "pcvr"
ARCHITECTURE = Path("assets.extra") / "architecture.json"
#: what decides the computation a graph performs; the rest of ModelConfig only changes weights
GRAPH_FIELDS = (
    "features",
    "hash_buckets",
    "embedding_dim",
    "shared_layers",
    "tower_units",
    "tasks",
    "extra",
)


class TaskGraph(tf.Module):
    """The trunk and the towers of ``tasks``, and nothing else: what gets saved is what is here.

    ``signatures`` names, per signature, the towers it computes (default: one signature,
    ``serving_default``, of every tower in ``tasks``). A signature of one tower gives one output,
    ``pcvr``; of several (the full model, for comparison), ``pcvr_<task>`` each. Each signature
    runs only the towers it names: the variables are shared, the computations are not.
    """

    def __init__(
        self,
        model: MultiTaskDCN,
        tasks: tuple[str, ...],
        signatures: dict[str, tuple[str, ...]] | None = None,
    ):
        super().__init__(name=f"{'_'.join(tasks)}_graph")
        spec = model.config.features
        for name in tasks:
            if name not in model.config.tasks:
                raise ValueError(
                    f"the model has no {name!r} tower; its tasks are {model.config.tasks}"
                )
        self.tasks = tasks
        self.trunk = model.trunk
        self.towers = [model.towers[model.config.tasks.index(task)] for task in tasks]
        inputs = {name: tf.TensorSpec([None], tf.string, name=name) for name in spec.categorical}
        inputs |= {name: tf.TensorSpec([None], tf.float32, name=name) for name in spec.numeric}
        signatures = signatures or {SIGNATURE: tasks}
        self.functions = {
            name: self._signature(towers, inputs) for name, towers in signatures.items()
        }

    def _signature(self, tasks: tuple[str, ...], inputs: dict):
        return tf.function(lambda features: self._serve(features, tasks), input_signature=[inputs])

    def _serve(self, inputs, tasks: tuple[str, ...]):
        h = self.trunk(inputs)
        probs = [tf.sigmoid(self.towers[self.tasks.index(t)](h)[:, 0]) for t in tasks]
        if len(probs) == 1:
            return {OUTPUT: probs[0]}
        return {f"{OUTPUT}_{task}": p for task, p in zip(tasks, probs, strict=True)}


def export(
    model: MultiTaskDCN,
    task: str | tuple[str, ...],
    version_dir: Path,
    signatures: dict[str, tuple[str, ...]] | None = None,
) -> Path:
    """Save the graph of ``task`` (or of several) to ``version_dir`` (``<model_dir>/<version>``),
    with ``signatures`` as in ``TaskGraph``."""
    tasks = (task,) if isinstance(task, str) else tuple(task)
    graph = TaskGraph(model, tasks, signatures)
    version_dir = Path(version_dir)
    tf.saved_model.save(graph, str(version_dir), signatures=graph.functions)
    (version_dir / ARCHITECTURE).parent.mkdir(exist_ok=True)
    (version_dir / ARCHITECTURE).write_text(json.dumps(architecture(model, tasks), sort_keys=True))
    return version_dir


def export_version(model: MultiTaskDCN, version_dir: Path) -> None:
    """A model version: one SavedModel whose ``serving_default`` signature is the hard-only
    graph and whose ``soft`` signature is the soft tower's (what replicas route soft candidates
    to). The trunk's variables, nearly all of the bytes, are stored, checked and loaded once.
    A single-task model's one tower serves both signatures."""
    tasks, signatures = version_signatures(model.config)
    export(model, tasks, version_dir, signatures)


def version_graph(model: MultiTaskDCN) -> TaskGraph:
    """The graph of a model version in memory: ``functions[SIGNATURE]`` and ``functions[SOFT]``
    compute what a replica loading the saved version does."""
    return TaskGraph(model, *version_signatures(model.config))


def version_signatures(config) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """The towers of a model version and its signatures (hard-only and soft)."""
    if config.tasks == SINGLE_TASK:
        return SINGLE_TASK, {SIGNATURE: SINGLE_TASK, SOFT: SINGLE_TASK}
    return ("hard", "soft"), {SIGNATURE: ("hard",), SOFT: ("soft",)}


def architecture(model: MultiTaskDCN, tasks: tuple[str, ...]) -> dict:
    """What two graphs must share for one's weights to be loaded into the other
    (``assets.extra/architecture.json``, a file TF Serving ignores): the configuration fields
    that shape the computation, the exported towers and the code that built them."""
    config = model.config.to_dict()
    return {
        "config": {k: config[k] for k in GRAPH_FIELDS},
        "towers": list(tasks),
        "rarecvr": rarecvr.__version__,
        "tensorflow": tf.__version__,
    }


def read_architecture(version_dir: Path) -> str | None:
    """The architecture file's text, or None for a graph exported without one."""
    path = Path(version_dir) / ARCHITECTURE
    return path.read_text() if path.exists() else None


def load(version_dir: Path, signature: str = SIGNATURE):
    """Load a saved graph; returns a callable from feature arrays to ``pcvr`` (a numpy array;
    a dict of them for a graph of several towers)."""
    return predictor(tf.saved_model.load(str(version_dir)), signature)


def predictor(loaded, signature: str = SIGNATURE):
    """The callable of one signature of a loaded SavedModel."""
    serve = loaded.signatures[signature]

    def predict(inputs: dict):
        tensors = {
            name: tf.constant(inputs[name], dtype=spec.dtype)
            for name, spec in serve.structured_input_signature[1].items()
        }
        out = serve(**tensors)
        if OUTPUT in out:
            return out[OUTPUT].numpy()
        return {name: value.numpy() for name, value in out.items()}

    return predict
