"""The trainer on the real broker: a first version fitted on a history log, windows from the
labeled-examples topic that warm-start from it, progressive validation, a gate that refuses a
candidate trained on noisy labels and one no better than a constant, atomic versions, and a
SIGKILL mid-window that neither repeats nor skips a window."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from model.dcn import ModelConfig, build
from model.export import SOFT, load
from model.training import predict
from rarecvr.contracts import TaskAssignment
from rarecvr.logfile import HistoryLog
from rarecvr.produce import produce
from rarecvr.registry import Registry
from rarecvr.schema import FeatureSchema, encode_records
from rarecvr.schema_topic import publish_schema
from rarecvr.topics import ensure_topics
from rarecvr.units import HOUR_MS
from simulator import Marketplace, SimConfig
from simulator.labels import labeled_examples, true_assignments
from simulator.tables import CATEGORICAL_FEATURES, NUMERIC_FEATURES, SCHEMA, Vocab, clicks_table
from simulator.traffic import generate
from stabilizer.view import AssignmentView
from trainer.examples import Examples
from trainer.gate import judge, score
from trainer.holdout import Holdout
from trainer.loop import Trainer, TrainerConfig, TrainerState
from trainer.window_run import WindowRun

WINDOW_MS = 12 * HOUR_MS
ATTRIBUTION_MS = 6 * HOUR_MS
SIM = SimConfig(
    clicks=360_000, days=4.0, advertisers=60, seed=3, attribution_window_ms=ATTRIBUTION_MS
)
LIVE_FROM = SIM.start_ms + 2 * 86_400_000  #: the first two days are the history log
MODEL = ModelConfig(
    FeatureSchema(CATEGORICAL_FEATURES, NUMERIC_FEATURES), hash_buckets=20_000, tower_units=(64, 32)
)


def config(bootstrap: str, root: Path) -> TrainerConfig:
    return TrainerConfig(
        bootstrap=bootstrap,
        registry=root / "registry",
        state_dir=root / "state",
        model=MODEL,
        window_ms=WINDOW_MS,
        attribution_window_ms=ATTRIBUTION_MS,
    )


def stream(kafka, monkeypatch, **noise) -> str:
    """The labels of the clicks after the history, on fresh topics; returns their prefix."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("RARECVR_TOPIC_PREFIX", prefix)
    ensure_topics(kafka.bootstrap)
    publish_schema(kafka.bootstrap, SCHEMA, "simulator")
    market = Marketplace(SIM)
    produce(kafka.bootstrap, true_assignments(market))
    live = LIVE_FROM + ATTRIBUTION_MS  # label time of the first live click
    produce(kafka.bootstrap, (r for r in labeled_examples(market, **noise) if r.ts_ms >= live))
    return prefix


@pytest.fixture(scope="module")
def history_log(tmp_path_factory) -> HistoryLog:
    """The simulated clicks before ``LIVE_FROM`` as a Parquet click log."""
    market = Marketplace(SIM)
    table = pa.concat_tables(clicks_table(c, Vocab(market)) for c in generate(market))
    path = tmp_path_factory.mktemp("history") / "clicks.parquet"
    pq.write_table(table.filter(pc.less(table["ts_ms"], LIVE_FROM)), path)
    return HistoryLog(path)


def assert_windows_tile(history: list[dict]) -> None:
    """Window k starts where window k-1 ended: nothing trained twice, nothing skipped."""
    assert [h["window"] for h in history] == list(range(len(history)))
    for before, after in zip(history, history[1:], strict=False):
        assert after["start_offsets"] == before["end_offsets"]


@pytest.mark.timeout(900)
def test_history_publishes_version_1_and_windows_warm_start_from_it_above_a_constant(
    kafka, monkeypatch, tmp_path, history_log, report
):
    stream(kafka, monkeypatch)
    trainer = Trainer(config(kafka.bootstrap, tmp_path))
    first = trainer.bootstrap(history_log)
    assert first["rejected"] == [] and first["version"] == 1
    assert first["holdout"]["candidate"]["hard_rig_vs_constant_low"] > 0
    trainer.run(max_windows=4)
    history = trainer.state.history
    assert_windows_tile(history)
    registry = Registry(tmp_path / "registry")
    published = [h for h in history if h["version"]]
    assert len(published) >= 2, [(h["rejected"], h["holdout"]["candidate"]) for h in history]
    assert registry.versions() == [1, *[h["version"] for h in published]][-registry.keep :]
    # every window was scored by a served version before training on it (version 1 first)
    assert all(h["progressive"] is not None for h in history)
    gains = [h["progressive"]["hard_rig_vs_constant"] for h in history]
    assert np.mean(gains) > 0, gains
    sample = {n: np.array([b"x", b"y"]) for n in CATEGORICAL_FEATURES}
    sample |= {n: np.array([1.0, 2.0], np.float32) for n in NUMERIC_FEATURES}
    for version in registry.versions():
        manifest = registry.verify(version)
        assert manifest["assignment_epoch"] == (0 if manifest["window"] == -1 else 1)
        assert np.isfinite(load(registry.path(version), SOFT)(sample)).all(), "soft signature"
    graph = load(registry.path(registry.serving()))
    assert np.isfinite(graph(sample)).all()
    report(
        f"trainer: version 1 from history (hard RIG over a constant "
        f"{first['holdout']['candidate']['hard_rig_vs_constant']:.4f} held out), then "
        f"{len(published)} versions from {len(history)} windows; progressive hard RIG over a "
        f"constant {', '.join(f'{g:.4f}' for g in gains)}"
    )


@pytest.mark.timeout(900)
def test_without_history_too_little_data_publishes_nothing_and_says_so(
    kafka, monkeypatch, tmp_path
):
    stream(kafka, monkeypatch)
    trainer = Trainer(config(kafka.bootstrap, tmp_path))
    trainer.run(max_windows=2)
    history = trainer.state.history
    assert [h["version"] for h in history] == [None, None]
    assert all(h["rejected"] == ["too_few_positives"] for h in history)
    assert Registry(tmp_path / "registry").versions() == []


@pytest.mark.timeout(900)
def test_the_gate_refuses_a_candidate_trained_on_noisy_labels(
    kafka, monkeypatch, tmp_path, history_log, report
):
    start = LIVE_FROM + ATTRIBUTION_MS + WINDOW_MS  # the second live window
    noisy = (start, start + int(0.8 * WINDOW_MS))
    stream(kafka, monkeypatch, label_noise=0.3, noisy_between=noisy)
    trainer = Trainer(config(kafka.bootstrap, tmp_path))
    trainer.bootstrap(history_log)
    trainer.run(max_windows=3)
    history = trainer.state.history
    noisy_windows = [h for h in history if h["examples"] and h["rejected"]]
    assert noisy_windows, [(h["window"], h["candidate_tail"]) for h in history]
    rejected = noisy_windows[0]
    assert "hard_calibration" in rejected["rejected"] or "hard_rig_drop" in rejected["rejected"]
    assert rejected["version"] is None
    assert rejected["tail_quarantined"]  # its labels stay out of the gate's holdout
    assert rejected["served_loss_drift"]["rising"]  # and ADWIN saw the served loss jump
    assert judge(rejected["holdout"]["serving"], None, trainer.cfg.gate) == []  # it was fine
    assert_windows_tile(history)
    report(
        f"trainer: window {rejected['window']} with 30% flipped labels refused "
        f"({', '.join(rejected['rejected'])}): "
        f"{rejected['candidate_tail']['hard_expected']:.0f} hard conversions expected, "
        f"{rejected['candidate_tail']['hard_positives']} seen"
    )


@pytest.mark.timeout(900)
def test_a_sigkill_mid_window_repeats_and_skips_no_window(
    kafka, monkeypatch, tmp_path, history_log, report
):
    prefix = stream(kafka, monkeypatch)
    cmd = [
        sys.executable,
        "-m",
        "rarecvr.cli",
        "train",
        "--bootstrap",
        kafka.bootstrap,
        "--registry",
        str(tmp_path / "registry"),
        "--state-dir",
        str(tmp_path / "state"),
        "--window-hours",
        str(WINDOW_MS / HOUR_MS),
        "--attribution-days",
        str(ATTRIBUTION_MS / 86_400_000),
        "--hash-buckets",
        "20000",
        "--metrics-port",
        "0",
        "--history",
        str(history_log.path),
    ]
    env = {**os.environ, "RARECVR_TOPIC_PREFIX": prefix}
    state_file = tmp_path / "state" / "state.json"
    log = open(tmp_path / "train.log", "ab")  # noqa: SIM115
    kills = 0
    for round_ in range(2):
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        goal = round_ + 1
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = len(TrainerState.load(state_file).history) if state_file.exists() else 0
            if done >= goal:
                break
            assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(0.5 + round_)  # into the next window: reading or training it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    log.close()
    proc = subprocess.Popen(
        [*cmd, "--max-windows", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert proc.wait(timeout=300) == 0
    history = TrainerState.load(state_file).history
    assert len(history) >= 4
    assert_windows_tile(history)
    registry = Registry(tmp_path / "registry")
    windows = [registry.manifest(v)["window"] for v in registry.versions()]
    assert len(windows) == len(set(windows))
    assert not [p for p in (tmp_path / "registry").iterdir() if p.name.startswith(".tmp")]
    for version in registry.versions():
        registry.verify(version)
    report(
        f"trainer: {kills} SIGKILLs, {len(history)} windows tile the topic exactly, "
        f"versions {registry.versions()} verify"
    )


def test_the_registry_refuses_a_tampered_version_and_pins_and_rolls_back(tmp_path):
    registry = Registry(tmp_path, keep=3)
    for n in range(4):
        registry.publish(
            lambda d, n=n: (d / "saved_model.pb").write_bytes(bytes([n]) * 10), {"window": n}
        )
    assert registry.versions() == [2, 3, 4]
    assert registry.serving() == 4
    assert registry.rollback() == 3
    assert registry.serving() == 3 and registry.pinned() == 3
    registry.unpin()
    assert registry.serving() == 4
    (registry.path(4) / "saved_model.pb").write_bytes(b"tampered")
    with pytest.raises(Exception, match="saved_model.pb does not match"):
        registry.verify(4)
    assert json.loads((registry.path(3) / "manifest.json").read_text())["parent"] == 2


def test_model_commands_pin_roll_back_and_announce_on_the_topic(kafka, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from rarecvr.cli import main
    from rarecvr.topics import MODEL_UPDATES
    from tests.streams_harness import read_topic

    monkeypatch.setenv("RARECVR_TOPIC_PREFIX", f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(kafka.bootstrap)
    registry = Registry(tmp_path)
    for n in range(3):
        registry.publish(lambda d, n=n: (d / "saved_model.pb").write_bytes(bytes([n])), {})
    args = ["--registry", str(tmp_path), "--bootstrap", kafka.bootstrap]
    runner = CliRunner()
    assert runner.invoke(main, ["model", "rollback", *args]).exit_code == 0
    assert registry.serving() == 2
    listing = runner.invoke(main, ["model", "list", "--registry", str(tmp_path)]).output
    assert "serving: 2 (pinned 2)" in listing
    refused = runner.invoke(main, ["model", "pin", "9", *args])
    assert refused.exit_code == 1 and "version 9 has no manifest.json" in refused.output
    assert runner.invoke(main, ["model", "unpin", *args]).exit_code == 0
    events = [json.loads(r.value) for r in read_topic(kafka.bootstrap, MODEL_UPDATES)]
    assert [(e["action"], e["version"]) for e in events] == [("rollback", 2), ("unpin", 3)]


def test_examples_clicked_before_the_history_logs_end_train_no_window(tmp_path):
    trainer = Trainer(config("127.0.0.1:9", tmp_path))
    examples = Examples(
        {"device": np.array([b"a", b"b", b"c"])},
        {"click_ts_ms": np.array([90, 100, 101]), "label": np.zeros(3)},
    )
    offsets = np.array([7, 7, 8])
    assert trainer.after_history(offsets, examples)[0].tolist() == [7, 7, 8]  # no history
    trainer.state.bootstrap = {"end_ms": 100}  # the history's last click
    offsets, kept = trainer.after_history(offsets, examples)
    assert offsets.tolist() == [8] and kept.inputs["device"].tolist() == [b"c"]


def test_the_history_tail_is_judged_by_the_streams_tasks_once_they_are_known(tmp_path):
    holdout = Holdout(limit=100)
    holdout.set_history(
        {"device": np.array([b"a", b"b", b"c"])},
        np.array([1.0, 0.0, 0.0]),
        setup_id=np.array(["s1", "s1", "s2"]),
        click_ts_ms=np.array([1, 2, 3]),
        hard=np.array([True, True, False]),
    )  # the history's rule
    holdout.add({"device": np.array([b"live"])}, np.array([1.0]))
    assert holdout.rows()[0]["device"].tolist() == [b"a", b"b", b"live"]
    view = AssignmentView()
    for setup, task in (("s1", "soft"), ("s2", "hard")):  # the stream disagrees with the rule
        view.apply(
            TaskAssignment(
                setup_id=setup, task=task, epoch=1, reason="test", evidence={}, valid_from_ms=10
            )
        )
    inputs, labels = holdout.rows(view)
    assert inputs["device"].tolist() == [b"c", b"live"] and labels.tolist() == [0.0, 1.0]
    holdout.save(tmp_path / "holdout.npz")
    again = Holdout.load(tmp_path / "holdout.npz", limit=100).rows(view)
    assert again[0]["device"].tolist() == [b"c", b"live"]
    unjudged = AssignmentView()  # a cold-start answer is no judgement: the rule's flags stand
    unjudged.apply(
        TaskAssignment(
            setup_id="s1", task="soft", epoch=1, reason="cold_start", evidence={}, valid_from_ms=10
        )
    )
    assert holdout.rows(unjudged)[0]["device"].tolist() == [b"a", b"b", b"live"]


def test_a_window_run_holds_out_its_latest_examples_and_scores_each_chunk_before_training():
    spec = FeatureSchema(("setup_id", "advertiser_id", "device"), ("recency_days",))
    tiny = ModelConfig(spec, hash_buckets=500, embedding_dim=4, shared_layers=1, tower_units=(8,))
    rng = np.random.default_rng(0)
    examples = [
        {
            "setup_id": f"s{i % 7}",
            "advertiser_id": "a",
            "label": 0,
            "features": {"device": ["ios", "web"][i % 2], "recency_days": float(i % 5)},
            "click_ts_ms": int(t),
            "conversion_ts_ms": None,
        }
        for i, t in enumerate(rng.integers(0, 1000, 400))
    ]
    for e in examples[::5]:
        e["label"], e["conversion_ts_ms"] = 1, e["click_ts_ms"] + 3
    order = np.argsort(Examples.from_dicts(examples, spec).label_time(10), kind="stable")
    examples = [examples[i] for i in order]  # they arrive in label-time order
    block = Examples.from_dicts(examples, spec)
    hard = lambda chunk: np.isin(chunk.meta["setup_id"], ["s0", "s1"])  # noqa: E731
    serving = build(tiny, encode_records([{"setup_id": "x"}], spec), {"hard": 0.1, "soft": 0.3})
    before = [w.copy() for w in serving.get_weights()]

    def start_models(inputs, labels, rows):
        return build(tiny, inputs, {"hard": 0.1, "soft": 0.3}), serving

    run = WindowRun(
        tiny,
        start_ms=0,
        tail_share=0.2,
        attribution_window_ms=10,
        batch=64,
        chunk=100,
        start_models=start_models,
        tasks_of=hard,
    )
    run.add(block.take(np.arange(250)))
    assert run.trained == 200  # trained a chunk at a time, 20% of those seen kept pending
    run.add(block.take(np.arange(250, 400)))
    run.close()
    figures = run.figures(min_positives=1)

    assert run.trained == 320
    tail_inputs, tail_labels, _ = run.tail
    latest = examples[320:]
    assert list(tail_inputs["setup_id"]) == [e["setup_id"].encode() for e in latest]
    assert tail_labels.tolist() == [e["label"] for e in latest]
    tail = figures["candidate_tail"]
    assert tail["hard_examples"] + tail["soft_examples"] == 80
    assert all(np.array_equal(a, b) for a, b in zip(before, serving.get_weights(), strict=True))
    records = [e["features"] | {"setup_id": e["setup_id"], "advertiser_id": "a"} for e in examples]
    labels = np.array([e["label"] for e in examples], np.float32)
    expected = score(labels, hard(block), predict(serving, encode_records(records, spec)))
    assert figures["progressive"]["hard_expected"] == pytest.approx(expected["hard_expected"])
    assert figures["progressive"]["soft_rig"] == pytest.approx(expected["soft_rig"])


def test_a_history_log_is_labeled_by_the_attribution_window_and_names_missing_columns(tmp_path):
    from trainer import history

    spec = FeatureSchema(("setup_id", "device"))
    tiny = ModelConfig(spec, hash_buckets=100, embedding_dim=2, shared_layers=0, tower_units=())
    log = pa.table(
        {
            "ts_ms": [300, 100, 200, 400],
            "setup_id": ["a", "a", "b", "b"],
            "device": ["ios", "web", "ios", "web"],
            "conversion_ts_ms": [None, 150, 900, None],
        }
    )
    pq.write_table(log, tmp_path / "log.parquet")
    # times in ms since an origin near 0: named, as auto would read numbers this small as seconds
    data = history.load(
        HistoryLog(tmp_path / "log.parquet", unit="ms"),
        tiny,
        attribution_window_ms=100,
        rule=history.stream_rule(),
        tail_share=0.25,
    )
    # sorted by click time; 150 is within 100 ms of its click, 900 is not
    assert data.inputs["device"].tolist() == [b"web", b"ios", b"ios", b"web"]
    assert data.labels.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert data.cut == 3 and data.end_ms == 400
    pq.write_table(log.drop(["device"]), tmp_path / "bad.parquet")
    with pytest.raises(KeyError, match=r"no column\(s\) \['device'\]"):
        history.load(
            HistoryLog(tmp_path / "bad.parquet", unit="ms"), tiny, 100, history.stream_rule(), 0.2
        )
