"""Which feature schema a trainer trains on, kept beside its state.

A trainer's model is built from one schema, chosen when its state directory is new: a file
(``rarecvr train --schema``) or the schema the stream's producer published (``rarecvr replay``
and the simulator publish it on the feature-schema topic). It is saved as ``schema.json`` in
the state directory and wins at every restart, because the checkpoints were trained on it.

Evolution: a later published schema that differs is reported on every window (a log line, the
window's ``schema_drift`` entry, a metric), never applied under a running model. A dropped
feature is fed as empty (categorical) or 0 (numeric), so nothing breaks; an added or retyped one
is used once the trainer starts over with a new state directory (with ``--history`` to fit
version 1 on the new features at once).

>>> old = FeatureSchema(("setup_id", "os"), ("spend",))
>>> drift_message(old, FeatureSchema(("setup_id", "os", "channel"), ("spend",)))[:55]
'the stream adds channel; this trainer keeps its own sch'
>>> drift_message(old, old) is None
True
"""

from __future__ import annotations

import json
from pathlib import Path

from rarecvr.files import atomic_write
from rarecvr.schema import FeatureSchema

FILE = "schema.json"


class NoSchema(Exception):
    """No schema to build a model from: none kept, none given, none published."""


def choose(
    state_dir: Path, given: FeatureSchema | None, published: FeatureSchema | None
) -> FeatureSchema:
    """The schema kept in ``state_dir``, else ``given``, else ``published`` (then kept)."""
    path = Path(state_dir) / FILE
    if path.exists():
        return FeatureSchema.from_json(json.loads(path.read_text()))
    schema = given or published
    if schema is None:
        raise NoSchema(
            "no feature schema: none was published on the feature-schema topic (`rarecvr "
            "replay` publishes its log's, the simulator its own) and none given with --schema"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(schema.to_json(), indent=1).encode())
    return schema


def drift_message(own: FeatureSchema, published: FeatureSchema | None) -> str | None:
    """What a published schema changes against the trainer's, in words; None if nothing."""
    if published is None:
        return None
    diff = own.difference(published)
    verbs = {"added": "adds", "dropped": "drops", "changed": "retypes"}
    parts = [f"{verbs[key]} {', '.join(names)}" for key, names in diff.items() if names]
    if not parts:
        return None
    return (
        f"the stream {'; '.join(parts)}; this trainer keeps its own schema "
        f"({', '.join(own.names)}): start it with a new --state-dir to train on the new one"
    )
