"""Adam that updates only the embedding rows a batch touched ("lazy" Adam).

Keras's Adam turns an embedding's sparse gradient (``tf.IndexedSlices``) into a dense update of
the whole table: with 18 tables of 100,000 x 16 that alone holds training below 10,000
examples/s on 2 cores. Here a sparse gradient updates the moments and weights of its rows only;
dense gradients take Keras's own path. Rows not in a batch keep stale moments, as in TF1's
LazyAdam, which is the usual trade for recommender embeddings.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="rarecvr")
class SparseAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with row-sparse updates for ``IndexedSlices`` gradients."""

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        rows, position = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(
            tf.cast(gradient.values, dtype), position, tf.shape(rows)[0]
        )
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        m_rows = beta_1 * tf.gather(m.value, rows) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v.value, rows) + (1 - beta_2) * tf.square(grad)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        update = alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon)
        self.assign_sub(variable, tf.IndexedSlices(update, rows))
