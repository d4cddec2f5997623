"""A model version in memory: its hard-only and soft graphs, verified, loaded and warmed.

``load_version`` refuses a version whose files do not match its manifest, that cannot be
loaded, or whose graphs give a non-finite output on a probe batch: the caller keeps serving the
graphs it has. Loading happens off the request path; the swap is one reference assignment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from model.export import load
from trainer.registry import Registry


class RefusedVersion(Exception):
    """A version that must not serve; ``reason`` is a short label for metrics."""

    def __init__(self, version: int, reason: str, detail: str):
        super().__init__(f"version {version} refused ({reason}): {detail}")
        self.version, self.reason = version, reason


@dataclass(frozen=True)
class Graphs:
    version: int
    hard: object  #: callable: feature arrays -> pCVR
    soft: object
    inputs: dict  #: input name -> "string" or "float"
    manifest_sha256: str
    loaded_at: float

    def features(self) -> set[str]:
        return set(self.inputs)


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


def load_version(registry: Registry, version: int, expected_sha: str | None = None) -> Graphs:
    try:
        registry.verify(version)
        sha = registry.manifest_sha256(version)
    except Exception as error:  # noqa: BLE001 - any unreadable version is refused
        raise RefusedVersion(version, "checksum", str(error)) from None
    if expected_sha is not None and sha != expected_sha:
        raise RefusedVersion(version, "checksum", "manifest differs from the announced one")
    try:
        hard = load(registry.path(version))
        soft = load(registry.path(version) / "soft")
    except Exception as error:  # noqa: BLE001
        raise RefusedVersion(version, "unloadable", str(error).splitlines()[0][:300]) from None
    signature = hard.loaded.signatures["serving_default"].structured_input_signature[1]
    inputs = {n: ("string" if s.dtype.name == "string" else "float") for n, s in signature.items()}
    batch = probe(inputs)
    for name, graph in (("hard", hard), ("soft", soft)):
        out = np.asarray(graph(batch))
        if not np.isfinite(out).all():
            raise RefusedVersion(version, "non_finite", f"the {name} graph outputs NaN or inf")
    return Graphs(version, hard, soft, inputs, sha, time.time())
