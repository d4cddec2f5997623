"""Offline research: task assignment without leakage, data preparation, and the CLI's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.tasks import TaskRule, decayed_cvr_asof, setup_cvr_from
from research.data import from_file

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_a_rows_own_conversion_never_counts_in_its_setups_cvr():
    setup = np.zeros(3, np.int64)
    t = np.array([0.0, 100.0, 200.0])
    converted = np.array([np.nan, 100.0, np.nan])  # the second click converts at once
    cvr = decayed_cvr_asof(setup, t, converted, setup, t, half_life=1e12, prior=0.0, strength=0)
    # row 1 sees one earlier click and no conversion yet; row 2 sees both clicks, one conversion
    assert cvr[1] == 0.0 and cvr[2] == pytest.approx(0.5)


def test_a_conversion_counts_from_when_it_arrived_not_from_its_click():
    setup = np.zeros(2, np.int64)
    t = np.array([0.0, 50.0])
    late = np.array([80.0, np.nan])  # click 0 converts at t=80, after row 1
    cvr = decayed_cvr_asof(setup, t, late, setup, t, half_life=1e12, prior=0.0, strength=0)
    assert cvr[1] == 0.0


def test_evidence_halves_after_one_half_life():
    setup = np.zeros(1, np.int64)
    query_setup = np.zeros(1, np.int64)
    at = np.array([0.0])
    clicks_then = decayed_cvr_asof(
        setup, at, at, query_setup, np.array([10.0]), half_life=10.0, prior=0.0, strength=1.0
    )
    # one click and one conversion, both decayed to weight 1/2: (0.5 + 0) / (0.5 + 1)
    assert clicks_then[0] == pytest.approx(0.5 / 1.5)


def test_setups_never_seen_in_training_get_the_prior():
    cvr = setup_cvr_from(np.array([0, 0, 2]), np.array([1.0, 0.0, 0.0]), prior=0.1, strength=10)
    assert cvr[1] == pytest.approx(0.1)
    assert cvr[0] == pytest.approx((1 + 1) / (2 + 10))


def test_random_split_assigns_tasks_from_the_training_part_only(tmp_path):
    rng = np.random.default_rng(0)
    n = 8000
    segment = rng.choice(["a", "b", "c", "d"], n)
    rate = {"a": 0.001, "b": 0.002, "c": 0.2, "d": 0.3}
    label = (rng.random(n) < np.vectorize(rate.get)(segment)).astype(int)
    csv = tmp_path / "log.csv"
    rows = "\n".join(f"{s},{y},{rng.integers(0, 5)}" for s, y in zip(segment, label, strict=True))
    csv.write_text("segment,converted,device\n" + rows + "\n")
    study = from_file(
        csv, "converted", ["segment"], ["device"], TaskRule(alpha=0.01, prior_strength=5)
    )
    assert len(study.train) == 6000 and len(study.test) == 2000
    hard_segments = {s.decode() for s in study.test.inputs["setup_id"][study.test.hard]}
    assert hard_segments == {"a", "b"}
    # Flipping every test label leaves every assignment unchanged: no leakage.
    flipped = tmp_path / "flipped.csv"
    lines = csv.read_text().splitlines()
    header, body = lines[0], lines[1:]
    order = np.random.default_rng(0).permutation(n)
    test_rows = set(order[6000:].tolist())
    body = [
        (",".join([p[0], str(1 - int(p[1])), p[2]]) if i in test_rows else line)
        for i, line in enumerate(body)
        for p in [line.split(",")]
    ]
    flipped.write_text("\n".join([header, *body]) + "\n")
    again = from_file(
        flipped, "converted", ["segment"], ["device"], TaskRule(alpha=0.01, prior_strength=5)
    )
    assert np.array_equal(again.test.hard, study.test.hard)


def test_a_string_label_needs_to_be_told_its_positive_value(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("s,y,f\na,yes,1\nb,no,2\n")
    with pytest.raises(ValueError, match="--positive"):
        from_file(csv, "y", ["s"], ["f"], TaskRule())
    study = from_file(csv, "y", ["s"], ["f"], TaskRule(), positive="yes", test_share=0.5)
    assert sorted(np.r_[study.train.labels, study.test.labels].tolist()) == [0.0, 1.0]


def test_a_missing_column_is_named(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("s,y\na,1\n")
    with pytest.raises(KeyError, match="no column"):
        from_file(csv, "y", ["s"], ["nope"], TaskRule())


@pytest.mark.skipif(not (SHARED / "hillstrom.csv").exists(), reason="needs ../shared/data")
def test_research_cli_on_hillstrom_writes_a_report_and_json(tmp_path):
    args = [
        "research",
        "--data",
        str(SHARED / "hillstrom.csv"),
        "--label",
        "conversion",
        "--setup",
        "treatment,channel",
        "--features",
        "recency,history_segment,history,mens,womens,zip_code,newbie",
        "--alpha",
        "0.01",
        "--quick",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--json",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "rarecvr.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert {
        "rig_lift_vs_single_task",
        "auc_lift_vs_single_task",
        "oracle_rig_fraction",
        "configuration",
    } <= set(last)
    assert last["oracle_rig_fraction"] is None  # no truth in a real log
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64" in html and "single-task" in html
    findings = json.loads((tmp_path / "findings.json").read_text())
    assert {r["name"] for r in findings["runs"]} >= {"single-task", "hard-only"}
