"""The multi-task model: per-task loss normalisation, task isolation, sparse updates, and a
hard-only graph equal to the full model's hard head that holds nothing of the soft tower."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from model.dcn import ModelConfig, build, multitask_loss  # noqa: E402
from model.export import SOFT, export, export_version, load  # noqa: E402
from model.optimizer import SparseAdam  # noqa: E402
from model.training import dataset, fit_chunks  # noqa: E402
from rarecvr.schema import FeatureSchema  # noqa: E402

SPEC = FeatureSchema(categorical=("setup_id", "device"), numeric=("recency_days",))


def batch(n=256, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {
        "setup_id": np.array([f"s{i}".encode() for i in rng.integers(0, 50, n)]),
        "device": np.array([f"d{i}".encode() for i in rng.integers(0, 4, n)]),
        "recency_days": rng.exponential(7, n).astype(np.float32),
    }
    labels = (rng.random(n) < 0.2).astype(np.float32)
    task = (rng.random(n) < 0.1).astype(np.int32)  # 10% hard
    return inputs, labels, task


def small(**overrides):
    return ModelConfig(
        SPEC, **({"hash_buckets": 200, "embedding_dim": 4, "tower_units": (8,)} | overrides)
    )


def bce(y, logit):
    return np.mean(np.maximum(logit, 0) - logit * y + np.log1p(np.exp(-np.abs(logit))))


def test_each_task_loss_is_averaged_over_that_tasks_examples_only():
    rng = np.random.default_rng(3)
    labels = (rng.random(100) < 0.3).astype(np.float32)
    task = np.r_[np.zeros(90), np.ones(10)].astype(np.int32)  # hard is 10% of the batch
    logits_soft, logits_hard = rng.normal(size=90), rng.normal(size=10)
    rows = [tf.where(task == k)[:, 0] for k in (0, 1)]
    got = multitask_loss(
        tf.constant(labels),
        [tf.constant(logits_soft, tf.float32), tf.constant(logits_hard, tf.float32)],
        rows,
        (0.3, 0.7),
    )
    expected = 0.3 * bce(labels[:90], logits_soft) + 0.7 * bce(labels[90:], logits_hard)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # Keras's sum_over_batch_size would have given the hard task 10x less weight:
    diluted = 0.3 * bce(labels[:90], logits_soft) * 0.9 + 0.7 * bce(labels[90:], logits_hard) * 0.1
    assert float(got) != pytest.approx(diluted, rel=1e-3)


def test_a_task_absent_from_the_batch_adds_nothing():
    labels = tf.constant([1.0, 0.0])
    rows = [tf.constant([0, 1], tf.int64), tf.constant([], tf.int64)]
    got = multitask_loss(labels, [tf.constant([0.0, 0.0]), tf.zeros([0])], rows, (0.5, 0.5))
    assert float(got) == pytest.approx(0.5 * np.log(2), rel=1e-6)


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def tower_weights(model, task):
    index = model.config.tasks.index(task)
    return [w.numpy().copy() for w in model.towers[index].weights]


def train_once(model, inputs, labels, task):
    model.train_step((inputs, {"label": labels, "task": task}))


def test_an_example_only_trains_its_own_tasks_tower():
    inputs, labels, _ = batch()
    model = build(small(), inputs)
    soft_before = tower_weights(model, "soft")
    train_once(model, inputs, labels, np.ones_like(labels, dtype=np.int32))  # all hard
    assert same(soft_before, tower_weights(model, "soft"))
    hard_before = tower_weights(model, "hard")
    train_once(model, inputs, labels, np.ones_like(labels, dtype=np.int32))
    assert not same(hard_before, tower_weights(model, "hard"))


def test_hard_only_model_never_moves_its_soft_tower():
    inputs, labels, task = batch()
    model = build(small(loss_weights=(0.0, 1.0)), inputs)
    before = tower_weights(model, "soft")
    for _ in range(3):
        train_once(model, inputs, labels, task)
    assert same(before, tower_weights(model, "soft"))


def test_single_task_model_has_one_tower_for_every_example():
    inputs, labels, task = batch()
    model = build(small(tasks=("all",), loss_weights=(1.0,)), inputs)
    assert list(model(inputs)) == ["all"]
    assert np.all(model.task_index(["hard", "soft"]).numpy() == 0)


def test_training_lowers_the_loss():
    inputs, labels, task = batch(2048)
    model = build(small(), inputs)
    ds = tf.data.Dataset.from_tensor_slices((inputs, {"label": labels, "task": task})).batch(256)
    first = model.fit(ds, epochs=1, verbose=0).history["loss"][-1]
    last = model.fit(ds, epochs=5, verbose=0).history["loss"][-1]
    assert last < first


def linear(**overrides):
    shape = {
        "embedding_dim": 1,
        "shared_layers": 0,
        "tower_units": (),
        "tasks": ("all",),
        "loss_weights": (1.0,),
        "linear": True,
    }
    return small(**(shape | overrides))


def test_a_linear_model_is_a_logistic_regression_on_its_weights():
    inputs, labels, task = batch()
    model = build(linear(), inputs)
    train_once(model, inputs, labels, task)
    setup, device = (
        model.trunk.embeddings[i](model.trunk.hashers[i](inputs[n]))[:, 0]
        for i, n in enumerate(("setup_id", "device"))
    )
    weights = model.towers[0].layers[0]
    recency = model.trunk.normalizer(model.trunk.numeric_matrix(inputs))[:, 0]
    logit = setup + device + weights.kernel[0, 0] * recency + weights.bias[0]
    np.testing.assert_allclose(model(inputs)["all"], tf.sigmoid(logit), rtol=1e-5)


def test_a_linear_model_with_hidden_layers_is_refused():
    with pytest.raises(ValueError, match="linear model"):
        build(linear(tower_units=(4,)), batch()[0])


def test_l2_shrinks_the_weights_the_examples_use():
    inputs, labels, task = batch(2048)
    norms = {}
    for l2 in (0.0, 0.05):
        model = build(small(l2=l2, learning_rate=0.05), inputs)
        for _ in range(40):
            train_once(model, inputs, labels, task)
        _, looked_up = model.trunk(inputs, with_embeddings=True)
        norms[l2] = sum(float(tf.reduce_mean(tf.reduce_sum(tf.square(e), 1))) for e in looked_up)
    assert norms[0.05] < 0.5 * norms[0.0], norms


def test_sparse_adam_moves_only_the_rows_in_the_batch():
    table = keras.Variable(np.ones((6, 2), np.float32))
    dense_twin = keras.Variable(np.ones((6, 2), np.float32))
    sparse, dense = SparseAdam(learning_rate=0.1), keras.optimizers.Adam(learning_rate=0.1)
    sparse.build([table])
    dense.build([dense_twin])
    grad = tf.IndexedSlices(
        tf.constant([[1.0, -1.0], [0.5, 0.5], [1.0, 1.0]]),
        tf.constant([1, 3, 1]),
        tf.constant([6, 2]),
    )
    sparse.apply([grad], [table])
    dense.apply([tf.convert_to_tensor(grad)], [dense_twin])
    # On a first step lazy and dense Adam agree (untouched rows have zero moments in both).
    np.testing.assert_allclose(table.numpy(), dense_twin.numpy(), rtol=1e-6)
    assert np.array_equal(table.numpy()[[0, 2, 4, 5]], np.ones((4, 2)))
    before = table.numpy().copy()
    sparse.apply([tf.IndexedSlices(tf.constant([[1.0, 1.0]]), tf.constant([5]))], [table])
    dense.apply([tf.zeros([6, 2])], [dense_twin])
    assert not np.array_equal(dense_twin.numpy()[1], table.numpy()[1]), "dense Adam moves row 1"
    after = table.numpy()
    assert np.array_equal(after[:5], before[:5]), "rows 1 and 3 keep their value: not in batch"
    assert not np.array_equal(after[5], before[5])


def test_hard_only_graph_equals_the_full_models_hard_head(tmp_path):
    inputs, labels, task = batch(512)
    model = build(small(), inputs)
    for _ in range(3):
        train_once(model, inputs, labels, task)
    path = export(model, "hard", tmp_path / "models" / "1")
    assert (path / "saved_model.pb").exists() and (path / "variables").is_dir()
    predict = load(path)
    np.testing.assert_allclose(predict(inputs), model(inputs)["hard"].numpy(), atol=1e-6)


def test_hard_only_graph_holds_no_soft_tower_variable(tmp_path):
    inputs, _, _ = batch()
    model = build(small(tower_units=(8, 8)), inputs)
    path = export(model, "hard", tmp_path / "1")
    saved = {
        name: shape
        for name, shape in tf.train.list_variables(str(path / "variables" / "variables"))
        if name.endswith("VARIABLE_VALUE")
    }
    saved_params = sum(int(np.prod(s)) for s in saved.values())
    trunk = sum(int(np.prod(w.shape)) for w in model.trunk.weights)
    hard = sum(int(np.prod(w.shape)) for w in model.towers[1].weights)
    assert saved_params == trunk + hard
    assert saved_params < sum(int(np.prod(w.shape)) for w in model.weights)


def test_soft_tower_exports_the_same_way(tmp_path):
    inputs, _, _ = batch()
    model = build(small(), inputs)
    predict = load(export(model, "soft", tmp_path / "1"))
    np.testing.assert_allclose(predict(inputs), model(inputs)["soft"].numpy(), atol=1e-6)


def test_a_model_version_serves_each_tower_from_one_stored_trunk(tmp_path):
    inputs, _, _ = batch()
    model = build(small(), inputs)
    export_version(model, tmp_path / "1")
    out = model(inputs)
    np.testing.assert_allclose(load(tmp_path / "1")(inputs), out["hard"].numpy(), atol=1e-6)
    np.testing.assert_allclose(load(tmp_path / "1", SOFT)(inputs), out["soft"].numpy(), atol=1e-6)
    saved = sum(
        int(np.prod(shape))
        for name, shape in tf.train.list_variables(str(tmp_path / "1" / "variables" / "variables"))
        if name.endswith("VARIABLE_VALUE")
    )
    assert saved == sum(int(np.prod(w.shape)) for w in model.weights), "every weight stored once"


def test_exporting_a_tower_the_model_lacks_is_refused(tmp_path):
    inputs, _, _ = batch()
    model = build(small(tasks=("all",), loss_weights=(1.0,)), inputs)
    with pytest.raises(ValueError, match="no 'hard' tower"):
        export(model, "hard", tmp_path / "1")


def test_mismatched_loss_weights_are_refused():
    with pytest.raises(ValueError, match="2 tasks but 1 loss weights"):
        small(loss_weights=(1.0,))


def test_early_stopping_keeps_the_epoch_with_the_best_validation_loss():
    from model.training import fit, validation_loss

    inputs, labels, task = batch(2048, seed=4)
    held = batch(512, seed=5)
    valid = (held[0], held[1], held[2].astype(bool))
    config = small()
    one = fit(config, inputs, labels, task.astype(bool), epochs=1, batch=256)
    best = fit(config, inputs, labels, task.astype(bool), epochs=4, batch=256, validation=valid)
    assert validation_loss(best, config, *valid) <= validation_loss(one, config, *valid) + 1e-6


def test_dataset_batches_are_the_rows_in_order():
    inputs, labels, task = batch(600)
    batches = list(dataset(inputs, labels, task, 256).as_numpy_iterator())
    assert [len(y["label"]) for _, y in batches] == [256, 256, 88]
    np.testing.assert_array_equal(
        np.concatenate([x["setup_id"] for x, _ in batches]), inputs["setup_id"]
    )
    np.testing.assert_array_equal(np.concatenate([y["task"] for _, y in batches]), task)


def test_fit_chunks_trains_on_each_chunk_as_it_comes():
    inputs, labels, task = batch(800)
    config = small()
    model = build(config, inputs)
    before = [w.copy() for w in model.get_weights()]
    pulled = []

    def chunks():
        for a, b in ((0, 300), (300, 800)):
            pulled.append(a)
            yield {k: v[a:b] for k, v in inputs.items()}, labels[a:b], task[a:b].astype(bool)

    fit_chunks(config, model, chunks(), batch=256)
    after = model.get_weights()
    assert pulled == [0, 300]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(np.isfinite(w).all() for w in after)
