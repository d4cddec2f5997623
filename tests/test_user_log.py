"""A user's own click log through the whole loop, not the simulator's: datetime-string times,
integer id columns, feature names rarecvr has never seen, a gzipped CSV history and a Parquet
live part. replay -> worker -> trainer (version 1 from the history) -> replica, the served
model scored on the log's own features, and the same log in ``rarecvr research``."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from deploy.kafka.broker import free_port
from model.export import read_architecture
from model.tasks import TaskRule
from rarecvr.registry import Registry
from research.data import from_file
from trainer.loop import TrainerState

FEATURES = ("ip", "device", "os", "channel")
START = datetime(2017, 11, 6, 16, 0, tzinfo=UTC).timestamp()  # seconds
DAYS, HISTORY_DAYS = 4.5, 2.5
WINDOW_DAYS = 0.25  #: the attribution window, worker and trainer alike


def click_log(clicks: int = 270_000, seed: int = 11) -> pa.Table:
    """A log shaped like TalkingData's AdTracking sample: integer ids for ip, app (the
    conversion setup), device, os and channel; times as "YYYY-MM-DD HH:MM:SS" strings; an empty
    attributed_time when the click did not convert. Most apps convert rarely (hard), a few
    often; channel, os and device move the odds, ip is noise."""
    rng = np.random.default_rng(seed)
    apps = 40
    app_rate = np.where(
        rng.random(apps) < 0.7, rng.uniform(0.002, 0.008, apps), rng.uniform(0.03, 0.08, apps)
    )
    channel_effect, os_effect = rng.normal(0, 0.9, 150), rng.normal(0, 0.5, 40)
    app = rng.integers(0, apps, clicks)
    channel, os_, device = (
        rng.integers(0, 150, clicks),
        rng.integers(0, 40, clicks),
        rng.integers(0, 4, clicks),
    )
    logit = (
        np.log(app_rate / (1 - app_rate))[app]
        + channel_effect[channel]
        + os_effect[os_]
        + 0.4 * (device == 1)
    )
    converted = rng.random(clicks) < 1 / (1 + np.exp(-logit))
    t = START + np.sort(rng.uniform(0, DAYS * 86_400, clicks))
    delay = rng.exponential(3_600, clicks)

    def stamp(seconds: np.ndarray) -> list[str]:
        return [datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%d %H:%M:%S") for s in seconds]

    attributed = np.where(converted, t + delay, np.nan)
    return pa.table(
        {
            "ip": rng.integers(1, 20_000, clicks),
            "app": app,
            "device": device,
            "os": os_,
            "channel": channel,
            "click_time": stamp(t),
            "attributed_time": [
                s if c else ""
                for s, c in zip(stamp(np.nan_to_num(attributed)), converted, strict=True)
            ],
            "is_attributed": converted.astype(np.int64),
        }
    )


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Path]:
    """The history part as a gzipped CSV, the live part as Parquet, the whole as a CSV."""
    root = tmp_path_factory.mktemp("user-log")
    table = click_log()
    split = START + HISTORY_DAYS * 86_400
    times = [
        datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        for s in table["click_time"].to_pylist()
    ]
    cut = int(np.searchsorted(np.array(times), split))
    paths = {
        "history": root / "history.csv.gz",
        "live": root / "live.parquet",
        "all": root / "clicks.csv",
    }
    with gzip.open(paths["history"], "wb") as out:
        pacsv.write_csv(table.slice(0, cut), out)
    pq.write_table(table.slice(cut), paths["live"])
    pacsv.write_csv(table, paths["all"])
    return paths


def cli(*args: str, env: dict, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rarecvr.cli", *args], env=env, **kwargs)


def post(port: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/score",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_until(check, timeout: float, what: str, procs: dict) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for name, (proc, log) in procs.items():
            assert proc.poll() is None or name == "replay", (
                f"{name} died:\n{log.read_text()[-3000:]}"
            )
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout} s")


@pytest.mark.timeout(900)
def test_a_users_log_goes_replay_worker_trainer_replica_on_its_own_features(
    kafka, stack, tmp_path, logs, report
):
    bootstrap, workers, _ = stack
    env = workers.env
    days = str(WINDOW_DAYS)
    workers.start("worker", "--window-days", days, "--dwell-hours", "1", "--half-life-days", "1")
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(name: str, *args: str) -> None:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            procs[name] = (cli(*args, env=env, stdout=out, stderr=subprocess.STDOUT), log)

    start(
        "replay",
        "replay",
        "--data",
        str(logs["live"]),
        "--click-time",
        "click_time",
        "--conversion-time",
        "attributed_time",
        "--setup",
        "app",
        "--features",
        ",".join(FEATURES),
        "--window-days",
        days,
        "--bootstrap",
        bootstrap,
    )
    registry, state = tmp_path / "registry", tmp_path / "trainer"
    start(
        "trainer",
        "train",
        "--bootstrap",
        bootstrap,
        "--registry",
        str(registry),
        "--state-dir",
        str(state),
        "--window-hours",
        "12",
        "--attribution-days",
        days,
        "--hash-buckets",
        "20000",
        "--metrics-port",
        "0",
        "--max-windows",
        "3",
        "--history",
        str(logs["history"]),
        "--history-click-time",
        "click_time",
        "--history-conversion-time",
        "attributed_time",
        "--history-setup",
        "app",
    )
    port = free_port()
    start(
        "replica",
        "serve",
        "--bootstrap",
        bootstrap,
        "--registry",
        str(registry),
        "--port",
        str(port),
    )
    try:
        assert procs["replay"][0].wait(timeout=300) == 0, procs["replay"][1].read_text()
        told = procs["replay"][1].read_text()
        assert "categorical: setup_id, ip, device, os, channel; numeric: none" in told, told
        assert "ip: integers, categorical" in told and "warning" not in told, told

        trainer_log = procs["trainer"][1]
        state_file = state / "state.json"

        def windows() -> list[dict]:
            return TrainerState.load(state_file).history if state_file.exists() else []

        wait_until(lambda: len(windows()) >= 3, 600, "three live windows", procs)
        first = TrainerState.load(state_file).bootstrap
        assert first["version"] == 1, (first, trainer_log.read_text()[-3000:])
        architecture = json.loads(read_architecture(Registry(registry).path(1)))
        assert architecture["config"]["features"]["categorical"] == ["setup_id", *FEATURES], (
            architecture
        )

        candidate = {
            "setup_id": "7",
            "features": {"ip": 5348, "device": 1, "os": 19, "channel": 107},
        }
        wait_until(
            lambda: post(port, {"candidates": [candidate]})[0] == 200,
            120,
            "the replica serving",
            procs,
        )
        status, body = post(port, {"candidates": [candidate]})
        assert 0 < body["results"][0]["pcvr"] < 1 and body["model_version"] >= 1
        status, body = post(port, {"candidates": [candidate | {"features": {"app_name": "x"}}]})
        assert status == 422 and body["field"] == "candidates.0.features.app_name", body

        live = [w for w in windows() if (w["progressive"] or {}).get("hard_rig") is not None]
        assert live, [(w["window"], w["hard_examples"]) for w in windows()]
        gains = [w["progressive"]["hard_rig_vs_constant"] for w in live]
        weights = [w["progressive"]["hard_examples"] for w in live]
        assert np.average(gains, weights=weights) > 0, list(zip(gains, weights, strict=True))
        calibration = [w["progressive"]["hard_calibration"] for w in live]
        versions = Registry(registry).versions()
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
    first_gain = first["holdout"]["candidate"]["hard_rig_vs_constant"]
    report(
        f"user log: version 1 from a gzipped-CSV history (hard RIG over a constant "
        f"{first_gain:.4f}), {len(windows())} live windows, versions {versions}; the served "
        f"model's progressive hard RIG over a constant {', '.join(f'{g:.4f}' for g in gains)}, "
        f"hard calibration {', '.join(f'{c:.2f}' for c in calibration)}"
    )


def test_the_same_log_reads_in_research_with_its_times_and_integer_ids(logs):
    study = from_file(
        logs["all"], "is_attributed", ["app"], list(FEATURES), TaskRule(), time="click_time"
    )
    assert study.spec.categorical == ("setup_id", *FEATURES) and study.spec.numeric == ()
    assert study.about["split"] == "by time" and len(study.about["schema_notes"]) == 4
    assert 0 < study.about["hard_share_train"] < 1
    assert len(study.train) + len(study.test) == 270_000
