"""A model version in memory: its hard-only and soft graphs, verified, loaded and warmed.

``GraphLoader.load`` refuses a version whose files do not match its manifest, that cannot be
loaded, or whose graphs give a non-finite output on a probe batch: the caller keeps serving the
graphs it has. Loading happens off the request path; the swap is one reference assignment.

Loading a SavedModel costs seconds of Python work under the GIL (requests wait) and memory that
TensorFlow does not give back. Successive versions from one trainer share their architecture,
so the loader keeps the slot of the version it replaced as a spare and, when the new version's
architecture file matches, reads only the new variables into it (``weights.WeightsReader``: off the
GIL, one variable at a time; no new memory). Any other version is loaded in full.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from deploy.serving.weights import WeightsReader
from model.export import SIGNATURE, SOFT, predictor, read_architecture
from rarecvr.registry import Registry
from rarecvr.schema import FeatureSchema


class RefusedVersion(Exception):
    """A version that must not serve; ``reason`` is a short label for metrics."""

    def __init__(self, version: int, reason: str, detail: str):
        super().__init__(f"version {version} refused ({reason}): {detail}")
        self.version, self.reason = version, reason


class Slot:
    """Loaded hard and soft graphs, counted while requests use them so that their variables are
    only overwritten when nothing runs on them."""

    def __init__(self, loaded, version_dir: Path):
        self.loaded, self.architecture = loaded, read_architecture(version_dir)
        self.weights = WeightsReader(loaded, version_dir)
        self.hard, self.soft = predictor(loaded, SIGNATURE), predictor(loaded, SOFT)
        signature = loaded.signatures[SIGNATURE].structured_input_signature[1]
        self.inputs = {
            n: ("string" if s.dtype.name == "string" else "float") for n, s in signature.items()
        }
        #: The version's feature schema, as its graph's inputs declare it.
        self.schema = FeatureSchema(
            tuple(n for n, k in self.inputs.items() if k == "string"),
            tuple(n for n, k in self.inputs.items() if k == "float"),
        )
        self._users = 0
        self._idle = threading.Condition()

    @classmethod
    def load(cls, version_dir: Path) -> Slot:
        return cls(tf.saved_model.load(str(version_dir)), version_dir)

    def acquire(self) -> None:
        with self._idle:
            self._users += 1

    def release(self) -> None:
        with self._idle:
            self._users -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._users == 0, timeout)

    def read_weights(self, version_dir: Path) -> None:
        """Overwrite every variable with the version's; fails unless the checkpoint and the
        graph match one to one."""
        self.weights.read(version_dir)


@dataclass(frozen=True)
class Graphs:
    version: int
    slot: Slot
    manifest_sha256: str
    load: str  #: "full", or "weights" when read into the slot of a replaced version
    loaded_at: float

    @property
    def inputs(self) -> dict:
        """Input name -> "string" or "float"."""
        return self.slot.inputs

    @property
    def schema(self) -> FeatureSchema:
        return self.slot.schema


def probe(inputs: dict, rows: int = 32) -> dict:
    """A batch of arbitrary feature values to warm a graph and check its outputs."""
    rng = np.random.default_rng(0)
    batch = {}
    for name, kind in inputs.items():
        if kind == "string":
            batch[name] = np.array([f"probe{i}".encode() for i in rng.integers(0, 1000, rows)])
        else:
            batch[name] = rng.random(rows).astype(np.float32)
    return batch


class GraphLoader:
    """Loads versions from a registry, reusing the slot of the last version replaced."""

    def __init__(self, registry: Registry, idle_timeout_s: float = 5.0):
        self.registry = registry
        self.idle_timeout_s = idle_timeout_s
        self._spare: Slot | None = None

    def retire(self, graphs: Graphs | None) -> None:
        """``graphs`` no longer serves: its slot may take a later version's weights."""
        if graphs is not None:
            self._spare = graphs.slot

    def reserve(self, graphs: Graphs) -> None:
        """Load a spare slot now, beside the first version, so that memory is taken at start
        and not at the first swap, and every swap of the same architecture reads weights only."""
        if self._spare is None:
            self._spare = Slot.load(self.registry.path(graphs.version))

    def load(self, version: int, expected_sha: str | None = None) -> Graphs:
        try:
            self.registry.verify(version)
            sha = self.registry.manifest_sha256(version)
        except Exception as error:  # noqa: BLE001 - any unreadable version is refused
            raise RefusedVersion(version, "checksum", str(error)) from None
        if expected_sha is not None and sha != expected_sha:
            raise RefusedVersion(version, "checksum", "manifest differs from the announced one")
        directory = self.registry.path(version)
        spare, self._spare = self._spare, None  # a failed read leaves it half-written: dropped
        try:
            architecture = read_architecture(directory)
            if (
                spare is not None
                and architecture is not None
                and spare.architecture == architecture
                and spare.wait_idle(self.idle_timeout_s)
            ):
                spare.read_weights(directory)
                slot, how = spare, "weights"
            else:
                slot, how = Slot.load(directory), "full"
        except Exception as error:  # noqa: BLE001
            raise RefusedVersion(version, "unloadable", str(error).splitlines()[0][:300]) from None
        batch = probe(slot.inputs)
        for name, graph in (("hard", slot.hard), ("soft", slot.soft)):
            out = np.asarray(graph(batch))
            if not np.isfinite(out).all():
                raise RefusedVersion(version, "non_finite", f"the {name} graph outputs NaN or inf")
        return Graphs(version, slot, sha, how, time.time())
