"""The multi-task DCN-v2 of the paper, read top to bottom.

    categorical strings --hash--> embeddings ┐
    numeric floats -----normalise-----------─┴─> x0 ─> N shared cross layers ─> h
    h ─> soft tower (MLP) ─> p_soft          h ─> hard tower (MLP) ─> p_hard

Each example counts only in its own task's loss, and the loss of a task is averaged over that
task's examples in the batch (not over the whole batch, which would shrink a task's weight with
its share):  L = W_soft * mean(BCE over soft rows) + W_hard * mean(BCE over hard rows).
Training computes each tower on its own task's rows only, so multi-task training costs what a
single tower does. The single-task baseline is the same model with one tower, ``tasks=("all",)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import keras
import keras_rs
import tensorflow as tf

from model.optimizer import SparseAdam
from rarecvr.schema import FeatureSchema

TASKS = ("soft", "hard")
SINGLE_TASK = ("all",)
CVR_LOSSES = ("clicks", "none", "ipw")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and loss of a model. ``loss_weights`` are in the order of ``tasks``."""

    features: FeatureSchema
    hash_buckets: int = 100_000
    embedding_dim: int = 16
    shared_layers: int = 2  #: DCN-v2 cross layers shared by the towers (0: embeddings only)
    tower_units: tuple[int, ...] = (256, 128)
    tasks: tuple[str, ...] = TASKS
    loss_weights: tuple[float, ...] = (0.5, 0.5)
    learning_rate: float = 1e-3
    l2: float = 0.0  #: L2 on the weights an example uses: its embedding rows and the kernels
    linear: bool = False  #: a hashed logistic regression (``LinearLogit``) instead of MLP towers
    #: Entire-space training on impressions (ESMM, ``esmm_loss``): the weights of the CTR loss
    #: and of the click-and-convert loss, over every impression of a batch.
    ctr_weight: float = 0.0
    ctcvr_weight: float = 0.0
    #: The direct CVR loss of each task: on its clicked rows ("clicks"), none ("none": ESMM
    #: without it), or on every row weighted by 1/pCTR ("ipw", ESCM2-style, gradients stopped)
    cvr_loss: str = "clicks"
    propensity_floor: float = 0.005  #: pCTR below this counts as this in the "ipw" weights
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.tasks) != len(self.loss_weights):
            raise ValueError(f"{len(self.tasks)} tasks but {len(self.loss_weights)} loss weights")
        if any(w < 0 for w in self.loss_weights) or sum(self.loss_weights) <= 0:
            raise ValueError(f"loss weights must be >= 0 and not all 0: {self.loss_weights}")
        if self.cvr_loss not in CVR_LOSSES:
            raise ValueError(f"cvr_loss must be one of {CVR_LOSSES}, not {self.cvr_loss!r}")
        if self.ctr_weight < 0 or self.ctcvr_weight < 0:
            raise ValueError("the CTR and CTCVR loss weights must be >= 0")

    @property
    def has_ctr(self) -> bool:
        """Whether the model has a CTR tower (trained on impressions)."""
        return self.ctr_weight > 0 or self.ctcvr_weight > 0 or self.cvr_loss == "ipw"

    def to_dict(self) -> dict:
        return asdict(self)


def multitask_loss(
    labels: tf.Tensor, logits: list[tf.Tensor | None], rows: list[tf.Tensor], weights
) -> tf.Tensor:
    """``sum_k W_k * mean(BCE of task k's rows)``; a task with no rows in the batch adds 0.

    ``logits[k]`` are the logits of task k's tower on the rows ``rows[k]`` of the batch.
    """
    total = tf.constant(0.0)
    for task_logits, task_rows, weight in zip(logits, rows, weights, strict=True):
        if task_logits is None or weight == 0:
            continue
        y = tf.gather(labels, task_rows)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=task_logits)
        count = tf.cast(tf.size(task_rows), tf.float32)
        total += weight * tf.math.divide_no_nan(tf.reduce_sum(bce), count)
    return total


def log_one_minus_exp(log_p: tf.Tensor) -> tf.Tensor:
    """``log(1 - exp(log_p))`` for ``log_p < 0``, accurate at both ends (Maechler 2012)."""
    return tf.where(
        log_p > -0.6931472, tf.math.log(-tf.math.expm1(log_p)), tf.math.log1p(-tf.exp(log_p))
    )


def ctcvr_cross_entropy(y: tf.Tensor, z_ctr: tf.Tensor, z_cvr: tf.Tensor) -> tf.Tensor:
    """Per-row cross-entropy of ``pCTCVR = sigmoid(z_ctr) * sigmoid(z_cvr)`` against the
    click-and-convert label ``y``, in log space: Keras's probability cross-entropy clips at
    1e-7, where the products of rare conversions live.

    >>> z = tf.constant([-10.0])
    >>> round(float(ctcvr_cross_entropy(tf.constant([1.0]), z, z)[0]), 3)  # -log(2.06e-9)
    20.0
    """
    log_p = tf.math.log_sigmoid(z_ctr) + tf.math.log_sigmoid(z_cvr)
    return -(y * log_p + (1 - y) * log_one_minus_exp(log_p))


class Trunk(keras.layers.Layer):
    """The shared part: hashed embeddings, normalised numerics, and the shared cross layers."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        spec = config.features
        self.categorical, self.numeric = spec.categorical, spec.numeric
        self.hashers = [keras.layers.Hashing(config.hash_buckets) for _ in self.categorical]
        self.embeddings = [
            keras.layers.Embedding(
                config.hash_buckets,
                config.embedding_dim,
                embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, config.seed),
                name=f"embedding_{name}",
            )
            for name in self.categorical
        ]
        self.normalizer = (
            keras.layers.Normalization(axis=-1, name="numeric") if self.numeric else None
        )
        self.crosses = [
            keras_rs.layers.FeatureCross(name=f"shared_cross_{i}")
            for i in range(config.shared_layers)
        ]

    def adapt(self, numeric: tf.Tensor) -> None:
        """Fit the numeric normalisation's mean and variance (once, on the first data seen)."""
        if self.normalizer is not None:
            self.normalizer.adapt(numeric)

    def numeric_matrix(self, inputs: dict) -> tf.Tensor:
        return tf.stack([tf.cast(inputs[n], tf.float32) for n in self.numeric], axis=1)

    def call(self, inputs: dict, with_embeddings: bool = False):
        """``h``, and with ``with_embeddings`` the embedding rows each example looked up."""
        looked_up = [
            embed(hasher(inputs[name]))
            for name, hasher, embed in zip(
                self.categorical, self.hashers, self.embeddings, strict=True
            )
        ]
        parts = list(looked_up)
        if self.normalizer is not None:
            parts.append(self.normalizer(self.numeric_matrix(inputs)))
        x0 = tf.concat(parts, axis=1)
        h = x0
        for cross in self.crosses:
            h = cross(x0, h)
        return (h, looked_up) if with_embeddings else h


class LinearLogit(keras.layers.Layer):
    """The logit of a hashed logistic regression over a trunk with embeddings of size 1 and no
    crosses: the sum of each categorical value's weight (its embedding), plus a linear term of
    the normalised numerics and a bias. No product of weights, so L2 is plain L2."""

    def __init__(self, categorical: int, numeric: int, **kwargs):
        super().__init__(**kwargs)
        self.categorical = categorical
        self.kernel = self.add_weight(shape=(numeric, 1), initializer="zeros", name="kernel")
        self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias")

    def call(self, h: tf.Tensor) -> tf.Tensor:
        values = tf.reduce_sum(h[:, : self.categorical], axis=1, keepdims=True)
        numeric = tf.reduce_sum(h[:, self.categorical :] * self.kernel[:, 0], axis=1, keepdims=True)
        return values + numeric + self.bias


def tower(config: ModelConfig, task: str) -> keras.Sequential:
    """One task's head: an MLP ending in a single logit (a linear logit for ``linear``)."""
    if config.linear:
        if config.embedding_dim != 1 or config.shared_layers or config.tower_units:
            raise ValueError("a linear model has embeddings of size 1, no crosses, no layers")
        return keras.Sequential(
            [
                LinearLogit(
                    len(config.features.categorical),
                    len(config.features.numeric),
                    name=f"{task}_logit",
                )
            ],
            name=f"tower_{task}",
        )
    layers = [
        keras.layers.Dense(u, activation="relu", name=f"{task}_dense_{i}")
        for i, u in enumerate(config.tower_units)
    ]
    return keras.Sequential(
        [*layers, keras.layers.Dense(1, name=f"{task}_logit")], name=f"tower_{task}"
    )


class MultiTaskDCN(keras.Model):
    """A trunk shared by one tower per task. ``call`` returns each task's probability."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.trunk = Trunk(config, name="trunk")
        self.towers = [tower(config, task) for task in config.tasks]
        self.ctr_tower = tower(config, "ctr") if config.has_ctr else None
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, inputs: dict) -> dict[str, tf.Tensor]:
        h = self.trunk(inputs)
        out = {
            task: tf.sigmoid(t(h))[:, 0]
            for task, t in zip(self.config.tasks, self.towers, strict=True)
        }
        if self.ctr_tower is not None:
            out["ctr"] = tf.sigmoid(self.ctr_tower(h))[:, 0]
        return out

    def task_index(self, task_names) -> tf.Tensor:
        """Each example's tower: its task's position in ``config.tasks`` (all 0 if single-task)."""
        if self.config.tasks == SINGLE_TASK:
            return tf.zeros([len(task_names)], tf.int32)
        lookup = {name: i for i, name in enumerate(self.config.tasks)}
        return tf.constant([lookup[t] for t in task_names], tf.int32)

    def l2_penalty(self, looked_up: list[tf.Tensor]) -> tf.Tensor:
        """The squared weights a batch uses: each example's embedding rows (averaged over the
        batch: only rows in use pay, so the gradient stays sparse, as with FTRL's per-coordinate
        L2) plus the towers' and cross layers' kernels."""
        rows = sum(tf.reduce_mean(tf.reduce_sum(tf.square(e), axis=1)) for e in looked_up)
        kernels = [v for v in self.trainable_variables if "kernel" in v.path]
        return rows + sum(tf.reduce_sum(tf.square(k)) for k in kernels)

    def train_step(self, data):
        inputs, targets = data
        labels = tf.cast(targets["label"], tf.float32)
        task = tf.cast(targets["task"], tf.int32)
        clicked = tf.cast(targets["click"], tf.float32) if "click" in targets else None
        rows = [tf.where(task == k)[:, 0] for k in range(len(self.towers))]
        with tf.GradientTape() as tape:
            h, looked_up = self.trunk(inputs, training=True, with_embeddings=True)
            if clicked is None:  # clicks only: every row is a click
                logits = [
                    t(tf.gather(h, r), training=True)[:, 0] if w > 0 else None
                    for t, r, w in zip(self.towers, rows, self.config.loss_weights, strict=True)
                ]
                loss = multitask_loss(labels, logits, rows, self.config.loss_weights)
            else:
                loss = self.impression_loss(h, labels, clicked, rows)
            if self.config.l2:
                loss += self.config.l2 * self.l2_penalty(looked_up)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def impression_loss(self, h, labels, clicked, rows) -> tf.Tensor:
        """The loss on a batch of impressions (``clicked`` 1 for a click; ``labels`` 1 for a
        click that converted): each task's CVR loss as ``cvr_loss`` says, plus ``ctr_weight``
        times the CTR log loss and ``ctcvr_weight`` times the click-and-convert log loss
        (``ctcvr_cross_entropy``), both averaged over every impression of the batch."""
        cfg = self.config
        z_ctr = self.ctr_tower(h, training=True)[:, 0] if self.ctr_tower is not None else None
        logits = [
            t(tf.gather(h, r), training=True)[:, 0] if w > 0 or cfg.ctcvr_weight > 0 else None
            for t, r, w in zip(self.towers, rows, cfg.loss_weights, strict=True)
        ]
        total = tf.constant(0.0)
        if cfg.cvr_loss == "clicks":
            hit = [tf.where(tf.gather(clicked, r) > 0)[:, 0] for r in rows]
            total += multitask_loss(
                labels,
                [None if z is None else tf.gather(z, c) for z, c in zip(logits, hit, strict=True)],
                [tf.gather(r, c) for r, c in zip(rows, hit, strict=True)],
                cfg.loss_weights,
            )
        elif cfg.cvr_loss == "ipw":
            propensity = tf.maximum(tf.stop_gradient(tf.sigmoid(z_ctr)), cfg.propensity_floor)
            for z, r, w in zip(logits, rows, cfg.loss_weights, strict=True):
                if z is None or w == 0:
                    continue
                bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.gather(labels, r), logits=z)
                weight = tf.gather(clicked, r) / tf.gather(propensity, r)
                count = tf.cast(tf.size(r), tf.float32)
                total += w * tf.math.divide_no_nan(tf.reduce_sum(weight * bce), count)
        batch = tf.cast(tf.size(labels), tf.float32)
        if cfg.ctr_weight > 0:
            ctr = tf.nn.sigmoid_cross_entropy_with_logits(labels=clicked, logits=z_ctr)
            total += cfg.ctr_weight * tf.reduce_mean(ctr)
        if cfg.ctcvr_weight > 0:
            ctcvr = [
                tf.reduce_sum(
                    ctcvr_cross_entropy(tf.gather(labels * clicked, r), tf.gather(z_ctr, r), z)
                )
                for z, r in zip(logits, rows, strict=True)
            ]
            total += cfg.ctcvr_weight * tf.add_n(ctcvr) / batch
        return total


def build(config: ModelConfig, sample: dict, base_rates: dict | None = None) -> MultiTaskDCN:
    """A compiled model, built and with its numeric normalisation fitted on ``sample`` inputs.

    ``base_rates`` (task -> mean label; ``"ctr"`` -> the click rate) start each tower's output
    bias at the logit of its task's rate: with rare labels, a tower that starts at 50% spends
    its first thousand steps unlearning that, and is badly calibrated until it has.
    """
    keras.utils.set_random_seed(config.seed)
    model = MultiTaskDCN(config)
    if config.features.numeric:
        model.trunk.adapt(model.trunk.numeric_matrix(sample))
    model.compile(optimizer=SparseAdam(learning_rate=config.learning_rate), jit_compile=False)
    model({k: v[:2] for k, v in sample.items()})
    for task, rate in (base_rates or {}).items():
        rate = min(max(float(rate), 1e-6), 1 - 1e-6)
        head = model.ctr_tower if task == "ctr" else model.towers[config.tasks.index(task)]
        bias = head.layers[-1].bias
        bias.assign([math.log(rate / (1 - rate))])
    return model
