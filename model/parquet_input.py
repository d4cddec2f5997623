"""A tf.data pipeline that streams training batches from Parquet files.

Row groups are read in batches with pyarrow on a background thread (tf.data's prefetch), so
reading and hashing overlap with training, and nothing but a few batches sits in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from rarecvr.schema import FeatureSchema, encode_table


def parquet_dataset(
    path: Path,
    spec: FeatureSchema,
    batch: int,
    label: str,
    task_of: Callable[[pa.RecordBatch], np.ndarray],
    limit: int | None = None,
) -> tf.data.Dataset:
    """Batches of (inputs, {label, task}) from ``path``; ``task_of`` gives each row's tower."""

    def batches():
        seen = 0
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch):
            if limit is not None and seen >= limit:
                return
            table = pa.Table.from_batches([record_batch])
            seen += table.num_rows
            inputs = encode_table(table, spec)
            targets = {
                "label": table[label].to_numpy().astype(np.float32),
                "task": task_of(record_batch).astype(np.int32),
            }
            yield inputs, targets

    signature = (
        {n: tf.TensorSpec([None], tf.string) for n in spec.categorical}
        | {n: tf.TensorSpec([None], tf.float32) for n in spec.numeric},
        {"label": tf.TensorSpec([None], tf.float32), "task": tf.TensorSpec([None], tf.int32)},
    )
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(4)
