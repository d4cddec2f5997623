"""Reading a new version's weights into a loaded SavedModel of the same architecture.

``tf.train.Checkpoint(root=loaded).read`` walks the object graph in Python for every read:
tens of milliseconds holding the GIL, which requests on the replica's event loop wait for. A
``WeightsReader`` walks it once, when the slot is loaded, resolving every variable's checkpoint
key (``trunk/towers/0/.../.ATTRIBUTES/VARIABLE_VALUE``) to the loaded variable. A read checks
that the new checkpoint holds exactly those keys with the same shapes and dtypes (anything else
is refused before a variable is touched), then restores (``RestoreV2``) and assigns one
variable at a time, eagerly: TensorFlow moves the bytes off the GIL, in the calling thread, so
that thread's scheduling priority applies (a compiled ``tf.function`` would run them on
TensorFlow's shared threads, beside requests), and holds one variable's copy at a time.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


class WeightsMismatch(ValueError):
    """A checkpoint whose variables are not the loaded graph's, one to one."""


def checkpoint_prefix(version_dir: Path) -> str:
    """The SavedModel's variables, as a checkpoint prefix."""
    return str(Path(version_dir) / "variables" / "variables")


def variable_keys(prefix: str) -> dict[str, tuple[tuple[int, ...], tf.DType]]:
    """Checkpoint key -> (shape, dtype) of every variable value in the checkpoint."""
    reader = tf.train.load_checkpoint(prefix)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    return {key: (tuple(shapes[key]), dtypes[key]) for key in shapes if key.endswith(VALUE)}


def resolve(root, key: str):
    """The object at a checkpoint key's path of local names below ``root``."""
    obj = root
    for name in key[: -len(VALUE)].split("/"):
        if "." in name:
            raise WeightsMismatch(f"checkpoint key {key!r}: escaped names are not supported")
        obj = obj[int(name)] if name.isdigit() and not hasattr(obj, name) else getattr(obj, name)
    return obj


class WeightsReader:
    """Reads checkpoints of the architecture of ``loaded`` (a SavedModel, loaded from
    ``version_dir``) into its variables."""

    def __init__(self, loaded, version_dir: Path):
        self.expected = variable_keys(checkpoint_prefix(version_dir))
        self.keys = sorted(self.expected)
        variables = [resolve(loaded, key) for key in self.keys]
        for key, variable in zip(self.keys, variables, strict=True):
            if not isinstance(variable, tf.Variable):
                raise WeightsMismatch(f"checkpoint key {key!r} is not a variable of the graph")
        self._variables = variables
        self._dtypes = [self.expected[key][1] for key in self.keys]

    def read(self, version_dir: Path) -> None:
        """Overwrite every variable with the version's; WeightsMismatch (and nothing written)
        unless its checkpoint holds the same variables with the same shapes and dtypes."""
        prefix = checkpoint_prefix(version_dir)
        found = variable_keys(prefix)
        if found != self.expected:
            differing = sorted(set(found) ^ set(self.expected)) or sorted(
                k for k in found if found[k] != self.expected[k]
            )
            raise WeightsMismatch(f"variables differ from the loaded graph's: {differing[:3]}")
        for key, variable, dtype in zip(self.keys, self._variables, self._dtypes, strict=True):
            # one tensor at a time: the memory held for a copy is one variable's, not the model's
            (value,) = tf.raw_ops.RestoreV2(
                prefix=prefix, tensor_names=[key], shape_and_slices=[""], dtypes=[dtype]
            )
            variable.assign(value)
