"""The simulated marketplace: CVRs, tags, delays, determinism and faults behave as configured."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

from model import metrics
from research.oracle import oracle_figures
from simulator import Faults, Marketplace, SimConfig
from simulator.config import CATEGORIES
from simulator.events import event_stream
from simulator.marketplace import CATEGORY_NAMES
from simulator.tables import write_parquet
from simulator.traffic import generate

SMALL = SimConfig(clicks=400_000, advertisers=120, days=7.0)


@pytest.fixture(scope="module")
def market():
    return Marketplace(SMALL)


@pytest.fixture(scope="module")
def traffic(market):
    chunks = list(generate(market))
    setup = np.concatenate([c.features["setup"] for c in chunks])
    return {
        "setup": setup,
        "ts": np.concatenate([c.ts_ms for c in chunks]),
        "true_p": np.concatenate([c.true_p for c in chunks]),
        "converted": np.concatenate([c.converted for c in chunks]),
        "conv_ts": np.concatenate([c.conversion_ts_ms for c in chunks]),
    }


def test_realised_cvr_of_each_setup_lies_in_its_binomial_99_interval(market, traffic):
    setup, ts = traffic["setup"], traffic["ts"]
    configured = market.cvr(setup, ts)
    n = market.n_setups
    expected = np.bincount(setup, configured, n)
    variance = np.bincount(setup, configured * (1 - configured), n)
    observed = np.bincount(setup, traffic["converted"], n)
    testable = expected >= 5
    outside = np.abs(observed - expected) > 2.576 * np.sqrt(variance)
    assert testable.sum() > 100
    # 1% of setups fall outside a 99% interval by chance alone.
    assert outside[testable].mean() < 0.03, outside[testable].mean()


def test_hard_share_and_cvr_span_follow_the_defaults():
    market = Marketplace(SimConfig(advertisers=600))
    hard = market.base_cvr <= market.cfg.alpha
    assert 0.25 < hard.mean() < 0.42  # about a third of setups are hard at alpha = 1%
    assert market.base_cvr.min() == pytest.approx(0.0002)
    assert np.quantile(market.base_cvr, 0.02) < 0.001
    assert np.quantile(market.base_cvr, 0.98) > 0.2
    assert market.base_cvr.max() <= 0.40


def test_tags_are_wrong_for_the_configured_share():
    market = Marketplace(SimConfig(advertisers=600))
    wrong = market.category_tag != market.setup_category
    assert wrong.mean() == pytest.approx(0.10, abs=0.03)
    assert np.array_equal(wrong, market.tag_is_wrong)


def test_a_share_of_setups_drifts_and_some_cross_alpha():
    market = Marketplace(SimConfig(advertisers=600))
    drifting = market.setup_drift != 0
    assert drifting.mean() == pytest.approx(0.2, abs=0.04)
    setups = np.arange(market.n_setups)
    crossed = market.is_hard(setups, market.cfg.start_ms) != market.is_hard(
        setups, market.cfg.end_ms
    )
    assert crossed.sum() >= 10
    assert not crossed[~drifting].any()


def test_conversion_delays_follow_their_truncated_lognormal(market, traffic):
    delays = (traffic["conv_ts"] - traffic["ts"])[traffic["converted"]]
    category = market.setup_category[traffic["setup"][traffic["converted"]]]
    window, sigma = market.cfg.attribution_window_ms, market.cfg.delay_sigma
    assert delays.min() >= 0 and delays.max() < window
    for c, (_, _, _, median_min) in enumerate(CATEGORIES.values()):
        sample = delays[category == c]
        if sample.size < 200:
            continue
        law = stats.lognorm(s=sigma, scale=median_min * 60_000)
        truncated_cdf = lambda x, law=law: np.minimum(law.cdf(x) / law.cdf(window), 1.0)  # noqa: E731
        result = stats.kstest(sample, truncated_cdf)
        assert result.pvalue > 0.001, (CATEGORY_NAMES[c], result)


def test_daily_seasonality_makes_evening_busier_than_night(traffic):
    hours = (traffic["ts"] // 3_600_000) % 24
    counts = np.bincount(hours, minlength=24)
    assert counts[18:22].mean() > 1.5 * counts[6:10].mean()


def test_a_fixed_seed_gives_byte_identical_parquet(tmp_path):
    cfg = replace(SMALL, clicks=50_000)

    def digest(directory):
        paths = write_parquet(Marketplace(cfg), directory)
        return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()}

    first, second = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert first == second
    other = write_parquet(Marketplace(replace(cfg, seed=cfg.seed + 1)), tmp_path / "c")
    assert hashlib.sha256(other["clicks"].read_bytes()).hexdigest() != first["clicks"]


def test_parquet_holds_truth_next_to_features(tmp_path, market):
    paths = write_parquet(Marketplace(replace(SMALL, clicks=20_000)), tmp_path)
    clicks = pq.read_table(paths["clicks"])
    assert clicks.num_rows == 20_000
    assert {"true_p", "converted", "conversion_ts_ms", "setup_id", "device"} <= set(
        clicks.column_names
    )
    converted = clicks["converted"].to_numpy().astype(bool)
    conv_ts = clicks["conversion_ts_ms"].to_numpy(zero_copy_only=False)
    assert np.isnan(conv_ts[~converted]).all() and not np.isnan(conv_ts[converted]).any()
    setups = pq.read_table(paths["setups"])
    assert setups.num_rows == Marketplace(replace(SMALL, clicks=20_000)).n_setups


def test_each_fault_appears_at_its_configured_rate():
    faults = Faults(duplicate=0.02, out_of_order=0.03, late=0.01, malformed=0.02)
    market = Marketplace(replace(SMALL, clicks=60_000, advertisers=60, faults=faults))
    counts = Counter()
    for record in event_stream(market):
        counts[(record.fault or "valid").split(":")[0]] += 1
    valid_events = counts["valid"] + counts["out_of_order"] + counts["late"]
    for fault, rate in [
        ("duplicate", 0.02),
        ("out_of_order", 0.03),
        ("late", 0.01),
        ("malformed", 0.02),
    ]:
        sd = np.sqrt(rate * (1 - rate) / valid_events)
        assert abs(counts[fault] / valid_events - rate) < 4 * sd, (fault, counts)


def test_faults_leave_the_valid_events_unchanged():
    base = replace(SMALL, clicks=20_000, advertisers=40)
    noisy = replace(
        base, faults=Faults(duplicate=0.05, out_of_order=0.05, late=0.02, malformed=0.05)
    )
    clean = sorted(r.value for r in event_stream(Marketplace(base)))
    faulty = {
        r.value
        for r in event_stream(Marketplace(noisy))
        if r.fault is None or r.fault in ("out_of_order", "late")
    }
    assert set(clean) == faulty


def test_event_stream_is_in_event_time_order_without_faults(market):
    small = Marketplace(replace(SMALL, clicks=30_000, advertisers=40))
    times = [r.ts_ms for r in event_stream(small)]
    assert times == sorted(times)


def test_shared_strength_zero_removes_the_shared_effects():
    market = Marketplace(replace(SMALL, shared_strength=0.0, advertisers=30, clicks=1000))
    f = market.draw_features(
        np.zeros(500, dtype=np.int64), np.full(500, 3), np.random.default_rng(0)
    )
    before = market.feature_logit(f)
    market.effects.segment_shared += 5.0
    market.effects.device_shared += 5.0
    assert np.allclose(before, market.feature_logit(f))


def test_the_oracle_beats_the_base_rate(traffic):
    figures = oracle_figures(traffic["converted"], traffic["true_p"])
    base = metrics.entropy(traffic["converted"].mean())
    assert figures["log_loss"] < base
    assert 0 < figures["rig"] < 1
    assert 0.5 < figures["auc"] < 1
