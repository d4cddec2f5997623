"""Entire-space training (ESMM): a CTR tower on the shared trunk, the click-and-convert loss in
log space, the direct CVR loss on clicks only (or inverse-propensity weighted), and a served
hard-only graph that holds nothing of the CTR tower."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from model.dcn import build, ctcvr_cross_entropy  # noqa: E402
from model.export import export  # noqa: E402
from model.training import fit  # noqa: E402
from tests.test_model import batch, small  # noqa: E402

ESMM = {"ctr_weight": 1.0, "ctcvr_weight": 1.0}


def impressions(n=2048, seed=0):
    """Impressions whose click rate depends on the device; labels only where clicked."""
    inputs, labels, task = batch(n, seed)
    rng = np.random.default_rng(seed + 1)
    clicky = inputs["device"] == b"d0"
    clicked = (rng.random(n) < np.where(clicky, 0.5, 0.05)).astype(np.float32)
    return inputs, labels * clicked, task, clicked


def test_the_ctcvr_loss_stays_exact_where_probability_cross_entropy_clips():
    z = tf.constant([-10.0, -1.0])
    exact = -np.log(1 / (1 + np.exp(10.0)) ** 2)
    ours = ctcvr_cross_entropy(tf.constant([1.0, 1.0]), z, z).numpy()
    assert ours[0] == pytest.approx(exact, rel=1e-5)
    p = tf.sigmoid(z) ** 2
    clipped = keras.losses.binary_crossentropy(tf.constant([[1.0], [1.0]]), p[:, None]).numpy()
    assert clipped[0] < exact - 3  # Keras clips at 1e-7: -log(1e-7) = 16.1, not 20.0
    assert ours[1] == pytest.approx(clipped[1], rel=1e-4)
    negative = ctcvr_cross_entropy(tf.constant([0.0]), tf.constant([3.0]), tf.constant([4.0]))
    expected = -np.log(1 - 1 / (1 + np.exp(-3.0)) / (1 + np.exp(-4.0)))
    assert float(negative[0]) == pytest.approx(expected, rel=1e-5)


def test_rows_that_are_all_clicks_train_as_click_data_does():
    inputs, labels, task = batch(512)
    hard = task.astype(bool)
    plain = fit(small(), inputs, labels, hard, batch=128)
    as_impressions = fit(small(), inputs, labels, hard, batch=128, clicked=np.ones(512))
    for a, b in zip(plain.get_weights(), as_impressions.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_impressions_without_a_click_do_not_enter_the_direct_cvr_loss():
    inputs, labels, task, clicked = impressions(512)
    model = build(small(), inputs)
    h = model.trunk(inputs)
    rows = [tf.where(task == k)[:, 0] for k in range(2)]
    loss = model.impression_loss(h, tf.constant(labels), tf.constant(clicked), rows)
    flipped = np.where(clicked > 0, labels, 1.0 - labels)  # labels of non-clicks changed
    again = model.impression_loss(h, tf.constant(flipped), tf.constant(clicked), rows)
    assert float(loss) == pytest.approx(float(again))


def test_inverse_propensity_weights_are_one_over_the_clipped_pctr_of_each_click():
    inputs, labels, task, clicked = impressions(256)
    config = small(cvr_loss="ipw", loss_weights=(1.0, 0.0), propensity_floor=0.2)
    model = build(config, inputs)
    h = model.trunk(inputs)
    soft = np.flatnonzero(task == 0)
    rows = [tf.constant(soft, tf.int64), tf.constant(np.flatnonzero(task == 1), tf.int64)]
    loss = model.impression_loss(h, tf.constant(labels), tf.constant(clicked), rows)
    p_ctr = np.maximum(model(inputs)["ctr"].numpy()[soft], 0.2)
    z = model.towers[0](tf.gather(h, soft))[:, 0].numpy()
    y = labels[soft]
    per_row = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    expected = np.sum(clicked[soft] / p_ctr * per_row) / soft.size
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_an_esmm_model_learns_who_clicks_and_serves_the_same_hard_graph(tmp_path):
    inputs, labels, task, clicked = impressions(4096)
    hard = task.astype(bool)
    config = small(**ESMM, learning_rate=1e-2)
    model = fit(config, inputs, labels, hard, epochs=5, batch=256, clicked=clicked)
    ctr = model(inputs)["ctr"].numpy()
    clicky = inputs["device"] == b"d0"
    assert ctr[clicky].mean() > 3 * ctr[~clicky].mean()
    plain = build(small(), inputs)
    sizes = []
    for m, name in ((model, "esmm"), (plain, "plain")):
        path = export(m, "hard", tmp_path / name)
        variables = tf.train.list_variables(str(path / "variables" / "variables"))
        sizes.append(sorted(shape for name_, shape in variables if "VARIABLE_VALUE" in name_))
    assert sizes[0] == sizes[1]


def test_the_esmm_study_scores_every_variant_on_clicks_and_on_every_impression():
    from dataclasses import replace

    from research import esmm

    plan = replace(
        esmm.EsmmPlan.quick(),
        train_days=1,
        test_days=1,
        requests_per_day=60_000,
        advertisers=30,
        hash_buckets=2_000,
        bootstrap_reps=20,
    )
    figures = esmm.run(plan, progress=lambda message: None)
    assert set(figures["variants"]) == set(esmm.VARIANTS)
    oracle = figures["oracle"]["rig_entire_space"]
    for values in figures["variants"].values():
        assert values["rig_entire_space"] < oracle  # nothing beats the truth against itself
    summary = esmm.summary_json(figures)
    low, high = summary["esmm_entire_space_rig_diff_vs_mtl_ci"]
    assert low <= summary["esmm_entire_space_rig_diff_vs_mtl"] <= high
    assert summary["hard_test_clicks"] > 0
