"""The simulated A/B test: auctions, pacing, KPIs, the funnel's truth, and a whole small study."""

from dataclasses import replace

import numpy as np
import pytest

from abtest import experiment, kpis, report, study
from abtest.auction import second_price
from abtest.pacing import Pacer
from abtest.scoring import Scorer
from model.dcn import ModelConfig, build
from model.export import export_version
from model.training import predict
from rarecvr.schema import encode_table
from simulator import Marketplace, SimConfig
from simulator.auctions import Funnel
from simulator.config import AuctionConfig
from simulator.tables import SCHEMA, Vocab, clicks_table
from simulator.traffic import generate


@pytest.fixture(scope="module")
def market():
    return Marketplace(SimConfig(advertisers=40, clicks=20_000, days=3))


def test_the_winner_pays_the_second_bid_or_the_floor_and_nobody_wins_below_it():
    bids = np.array([[5.0, 4.0, 1.0], [1.0, 2.0, 3.0], [0.2, 0.1, 0.0]])
    winner, price = second_price(bids, np.array([0.5, 2.5, 0.3]))
    assert winner.tolist() == [0, 2, -1]
    assert price.tolist() == [4.0, 2.5, 0.0]


def test_pacing_spreads_a_budget_over_the_day_when_demand_is_three_times_it():
    budget = np.array([100.0])
    pacer = Pacer(budget)
    shares = np.full(96, 1 / 96)
    spent_by_step = []
    for share in shares:
        demand = 3.0 * share * budget  # what full bids would buy in this step
        pacer.update(demand * pacer.multipliers(), share)
        spent_by_step.append(float(pacer.spent[0]))
    assert 90.0 <= spent_by_step[-1] <= 100.0 + 3.0 * budget[0] / 96
    assert spent_by_step[47] <= 65.0  # not spent out by midday


def test_a_setup_whose_budget_is_spent_bids_nothing_until_the_next_day():
    pacer = Pacer(np.array([10.0, 10.0]))
    pacer.update(np.array([12.0, 1.0]), planned_share=0.5)
    assert pacer.multipliers()[0] == 0.0 and pacer.multipliers()[1] == 1.0
    pacer.new_day()
    assert pacer.multipliers().tolist() == [1.0, 1.0]


def test_the_spend_weighted_change_is_the_spend_weighted_geometric_mean_of_the_ratios():
    log_ratio = np.log(np.array([0.5, 2.0, 1.1]))
    spend = np.array([1.0, 3.0, 6.0])
    expected = np.exp((1 * np.log(0.5) + 3 * np.log(2.0) + 6 * np.log(1.1)) / 10) - 1
    assert kpis.spend_weighted_change(log_ratio, spend) == pytest.approx(expected)
    assert kpis.median_change(log_ratio, spend) == pytest.approx(0.1)


def test_setups_without_conversions_in_an_arm_are_left_out_of_the_cpa_and_counted():
    one = np.ones((1, 3))
    table = kpis.SetupKpis(
        one * 10, np.array([[1.0, 0.0, 2.0]]), one * 10, np.array([[2.0, 1.0, 0.0]])
    )
    assert np.isfinite(table.log_cpa).tolist() == [[True, False, False]]
    assert table.without_conversions() == {"control": 1, "variant": 1, "either": 2}


def test_top_advertiser_groups_are_nested_and_cover_their_share_of_spend():
    rng = np.random.default_rng(0)
    advertiser = rng.integers(0, 30, 200)
    spend = rng.lognormal(0, 1.5, 200)
    groups = kpis.top_advertiser_groups(advertiser, spend)
    masks = list(groups.values())
    for share, mask in zip(kpis.GROUP_SHARES, masks, strict=True):
        assert spend[mask].sum() / spend.sum() >= share
    assert all((small <= big).all() for small, big in zip(masks, masks[1:], strict=False))


def test_the_cluster_bootstrap_interval_holds_the_estimate_and_is_a_point_for_equal_ratios():
    rng = np.random.default_rng(1)
    log_ratio = rng.normal(-0.05, 0.2, (3, 80))
    weight = np.ones_like(log_ratio)
    low, high = kpis.cluster_bootstrap(kpis.median_change, log_ratio, weight, 200, rng)
    assert low < kpis.median_change(log_ratio.ravel(), weight.ravel()) < high
    flat = np.full((2, 10), np.log(0.9))
    low, high = kpis.cluster_bootstrap(kpis.median_change, flat, np.ones_like(flat), 50, rng)
    assert low == pytest.approx(-0.1) and high == pytest.approx(-0.1)


def test_the_funnel_ctr_has_its_configured_mean_and_shares_the_cvr_user_effects(market):
    rng = np.random.default_rng(2)
    for strength, related in ((1.0, True), (0.0, False)):
        funnel = Funnel(market, AuctionConfig(ctr_shared_strength=strength))
        requests = funnel.requests(np.full(50_000, market.cfg.end_ms), rng, hours=True)
        c = funnel.candidates(requests, rng)
        assert c.true_ctr.mean() == pytest.approx(funnel.cfg.base_ctr, rel=0.05)
        shared = market.shared_logit(c.features)
        correlation = np.corrcoef(shared, np.log(c.true_ctr))[0, 1]
        assert (correlation > 0.5) if related else (abs(correlation) < 0.05)


def test_candidate_inputs_are_what_the_table_encoding_gives_for_the_same_features(market):
    vocab = Vocab(market)
    chunk = next(generate(market))
    expected = encode_table(clicks_table(chunk, vocab), SCHEMA)
    inputs = vocab.model_inputs(chunk.features)
    assert list(inputs) == list(expected)
    assert all(np.array_equal(inputs[k], expected[k]) for k in expected)


def test_users_keep_their_arm_and_split_about_evenly():
    users = np.arange(100_000)
    arms = experiment.user_arm(users, salt=5)
    assert np.array_equal(arms, experiment.user_arm(users, salt=5))
    assert 0.48 < arms.mean() < 0.52
    assert not np.array_equal(arms, experiment.user_arm(users, salt=6))


def _constant(value):
    return lambda inputs, hard: np.full(hard.size, value)


def test_an_arm_that_overestimates_cvr_wins_more_and_no_arm_spends_past_its_budgets(market):
    funnel = Funnel(market, AuctionConfig(requests_per_day=20_000))
    never_hard = lambda t_ms: np.zeros(market.n_setups, dtype=bool)  # noqa: E731
    arms = (
        experiment.Arm("control", _constant(0.02), never_hard),
        experiment.Arm("variant", _constant(0.06), never_hard),
    )
    control, variant = experiment.run(funnel, arms, market.cfg.end_ms, 1, seed=3)
    assert abs(control.requests - variant.requests) < 0.05 * control.requests
    for total in ("impressions", "spend"):
        assert variant.sums[total].sum() > 1.1 * control.sums[total].sum()
    for arm in (control, variant):
        assert (arm.sums["spend"] <= arm.budget + 1e-9).all()
        assert arm.sums["conversions"].sum() <= arm.sums["clicks"].sum()
        assert arm.sums["clicks"].sum() <= arm.sums["impressions"].sum()


@pytest.fixture(scope="module")
def small():
    plan = replace(
        study.Plan.quick(),
        history_days=4,
        history_clicks_per_day=8_000,
        advertisers=30,
        requests_per_day=8_000,
        seeds=(1,),
        aa_seeds=3,
        hash_buckets=2_000,
        epochs=1,
        bootstrap_reps=50,
    )
    return plan, study.prepare(plan, log=lambda message: None)


def test_a_small_study_reports_table_four_with_intervals_and_aa_coverage(small, tmp_path):
    plan, prepared = small
    runs = study.run_all(plan, prepared)
    summary = study.summarise(plan, prepared, runs)
    for key in (
        "hard_median_cpa_change",
        "hard_median_conversion_change",
        "hard_spend_weighted_cpa_change",
        "hard_top_30pct_spend_weighted_cpa_change",
    ):
        assert key in summary and len(summary[f"{key}_ci"]) == 2
    low, high = summary["all_median_cpa_change_ci"]
    assert low <= summary["all_median_cpa_change"] <= high
    assert (
        summary["aa_seeds"] == 3
        and 0.0 <= summary["aa_coverage_by_figure"]["median_cpa_change"] <= 1.0
    )
    assert set(summary["offline"]) == {"single-task", "multi-task", "oracle_hard"}
    assert summary["arms"]["control"]["impressions"] > 0
    path = report.write(summary, runs, study.hard_segment(prepared), tmp_path, "rarecvr abtest")
    page = path.read_text()
    assert report.headline(summary) in page and "Table 4" in page


def test_a_registry_version_scores_candidates_as_the_model_it_was_exported_from(market, tmp_path):
    vocab = Vocab(market)
    chunk = next(generate(market))
    inputs = vocab.model_inputs(chunk.features)
    model = build(ModelConfig(SCHEMA, hash_buckets=500), inputs, {"soft": 0.03, "hard": 0.004})
    export_version(model, tmp_path / "1")
    hard = np.arange(len(chunk)) % 3 == 0
    in_memory = Scorer.of_model(model, "mtl")(inputs, hard)
    loaded = Scorer.of_version(tmp_path / "1")(inputs, hard)
    np.testing.assert_allclose(loaded, in_memory, rtol=1e-6)
    towers = predict(model, inputs)
    np.testing.assert_allclose(in_memory, np.where(hard, towers["hard"], towers["soft"]), rtol=1e-5)


def test_the_routing_comparison_runs_one_model_routed_by_the_naive_rule_and_the_stabilizer(small):
    _, prepared = small
    control, variant = study.arms(prepared, "routing")
    assert control.scorer is variant.scorer is prepared.scorers["multi-task"]
    hour = 30
    t_ms = prepared.routing.start_ms + (hour + 1) * 3_600_000
    assert np.array_equal(control.hard(t_ms), prepared.routing.naive[:, hour] == 1)
    assert np.array_equal(variant.hard(t_ms), prepared.routing.policy[:, hour] == 1)
    aa_control, aa_variant = study.arms(prepared, "routing", aa=True)
    assert aa_variant.hard is aa_control.hard and aa_variant.scorer is aa_control.scorer


def test_the_esmm_comparison_trains_both_arms_on_the_history_impressions(small):
    plan, _ = small
    plan = replace(plan, comparison="esmm", aa_seeds=0)
    prepared = study.prepare(plan, log=lambda message: None)
    control, variant = study.arms(prepared, "esmm")
    assert control.scorer is prepared.scorers["multi-task"]
    assert variant.scorer is prepared.scorers["esmm"]
    assert set(prepared.offline) == {"multi-task", "esmm", "oracle_hard"}
    runs = study.run_all(plan, prepared)
    assert study.summarise(plan, prepared, runs)["comparison"] == "esmm"
