"""A scoring replica (``rarecvr serve``) on the real broker: requests under load while versions
are published see no error and never an older version; corrupt and NaN versions are refused
while serving goes on; bad requests get a 4xx that says what is wrong."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from functools import partial

import numpy as np
import pytest
from kafka import KafkaProducer

from deploy.kafka.broker import free_port
from deploy.serving.graphs import GraphLoader, RefusedVersion, Slot, probe
from deploy.serving.weights import WeightsMismatch
from model.dcn import ModelConfig, build
from model.export import export_version
from rarecvr.contracts import TaskAssignment, encode
from rarecvr.registry import Registry
from rarecvr.schema import FeatureSchema
from rarecvr.scrape import by_name, samples
from rarecvr.topics import MODEL_UPDATES, TASK_ASSIGNMENTS, ensure_topics

SPEC = FeatureSchema(categorical=("setup_id", "advertiser_id", "device"), numeric=("recency_days",))
CONFIG = ModelConfig(SPEC, hash_buckets=1000, embedding_dim=4, shared_layers=1, tower_units=(8,))
SAMPLE = {
    "setup_id": np.array([b"s1", b"s2"]),
    "advertiser_id": np.array([b"a", b"b"]),
    "device": np.array([b"ios", b"web"]),
    "recency_days": np.array([1.0, 3.0], np.float32),
}
TOKEN = "sesame"
STALE_S = 15  #: the replica's --stale-after: above the threads' 5 s between successes


def write_version(registry: Registry, seed: int, poison: str | None = None, **config) -> int:
    """A version of a freshly initialised model (``poison``: "nan" weights or "corrupt" files)."""
    model = build(
        ModelConfig(**{**CONFIG.__dict__, "seed": seed, **config}),
        SAMPLE,
        {"hard": 0.005, "soft": 0.1},
    )
    if poison == "nan":
        tower = model.towers[model.config.tasks.index("hard")]
        kernel = tower.layers[-1].kernel
        kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    version = registry.publish(partial(export_version, model), {"seed": seed})
    if poison == "corrupt":
        victim = next((registry.path(version) / "variables").glob("variables.data*"))
        victim.write_bytes(b"\0" * victim.stat().st_size)
    return version


def publish(registry: Registry, producer, seed: int, poison: str | None = None) -> int:
    version = write_version(registry, seed, poison)
    update = registry.update_event("publish", version)
    producer.send(MODEL_UPDATES.name, key=b"model", value=encode(update))
    producer.flush()
    return version


def post(port: int, body, token: str | None = TOKEN, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data, headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_version_of_the_same_architecture_is_read_into_the_replaced_slot(tmp_path):
    registry = Registry(tmp_path / "registry", keep=50)
    loader = GraphLoader(registry)
    first = loader.load(write_version(registry, seed=1))
    loader.retire(first)
    second = loader.load(write_version(registry, seed=2))
    assert (first.load, second.load) == ("full", "weights") and second.slot is first.slot
    batch = probe(second.inputs)
    fresh = Slot.load(registry.path(second.version))
    for task in ("hard", "soft"):
        reused, loaded = getattr(second.slot, task)(batch), getattr(fresh, task)(batch)
        np.testing.assert_array_equal(reused, loaded)
    loader.retire(second)
    wider = loader.load(write_version(registry, seed=3, embedding_dim=8))
    assert wider.load == "full" and wider.slot is not second.slot


def test_weights_of_another_shape_are_refused_before_any_variable_is_written(tmp_path):
    registry = Registry(tmp_path / "registry", keep=50)
    slot = Slot.load(registry.path(write_version(registry, seed=1)))
    batch = probe(slot.inputs)
    before = slot.hard(batch)
    other = registry.path(write_version(registry, seed=2, embedding_dim=8))
    with pytest.raises(WeightsMismatch, match="variables differ"):
        slot.read_weights(other)
    np.testing.assert_array_equal(slot.hard(batch), before)


def test_a_nan_version_read_into_a_spare_is_refused_and_the_spare_dropped(tmp_path):
    registry = Registry(tmp_path / "registry", keep=50)
    loader = GraphLoader(registry)
    loader.retire(loader.load(write_version(registry, seed=1)))
    with pytest.raises(RefusedVersion) as refused:
        loader.load(write_version(registry, seed=2, poison="nan"))
    assert refused.value.reason == "non_finite"
    assert loader.load(write_version(registry, seed=3)).load == "full"


def test_a_spare_still_scoring_a_request_is_not_overwritten(tmp_path):
    registry = Registry(tmp_path / "registry", keep=50)
    loader = GraphLoader(registry, idle_timeout_s=0.2)
    busy = loader.load(write_version(registry, seed=1))
    busy.slot.acquire()  # a request still running on the replaced graphs
    loader.retire(busy)
    after = loader.load(write_version(registry, seed=2))
    assert after.load == "full" and after.slot is not busy.slot
    busy.slot.release()


CANDIDATES = [
    {"setup_id": "s-hard", "advertiser_id": "a1", "features": {"device": "ios", "recency_days": 2}},
    {"setup_id": "s-soft", "features": {"device": "web"}},
    {"setup_id": "s-new", "features": {"device": "web", "advertiser_type": "x", "category": "y"}},
]


def start_replica(
    bootstrap: str, registry, port: int, log_path, env: dict, *extra: str, stale_s=STALE_S
):
    """``rarecvr serve`` on ``registry`` with the tests' token."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rarecvr.cli",
                "serve",
                "--bootstrap",
                bootstrap,
                "--registry",
                str(registry.root),
                "--port",
                str(port),
                "--token",
                TOKEN,
                "--stale-after",
                str(stale_s),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )


@pytest.fixture
def replica(kafka, tmp_path, monkeypatch):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("RARECVR_TOPIC_PREFIX", prefix)
    ensure_topics(kafka.bootstrap)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for setup, task in (("s-hard", "hard"), ("s-soft", "soft")):
        assignment = TaskAssignment(
            setup_id=setup, task=task, epoch=3, reason="test", evidence={}, valid_from_ms=0
        )
        producer.send(TASK_ASSIGNMENTS.name, key=setup.encode(), value=encode(assignment))
    registry = Registry(tmp_path / "registry", keep=50)
    publish(registry, producer, seed=1)
    port = free_port()
    proc = start_replica(
        kafka.bootstrap,
        registry,
        port,
        tmp_path / "serve.log",
        {"RARECVR_TOPIC_PREFIX": prefix},
        "--max-batch",
        "100",
        "--max-body-bytes",
        "200000",
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if json.loads(r.read())["ready"]:
                    break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        time.sleep(0.3)
    yield port, registry, producer, proc
    proc.terminate()
    proc.wait(timeout=30)
    producer.close()


def metric(port: int, name: str) -> float:
    return by_name(samples(f"http://127.0.0.1:{port}/metrics")).get(name, 0.0)


def wait_for_version(port: int, version: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if post(port, {"candidates": CANDIDATES[:1]})[1]["model_version"] == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"version {version} not served within {timeout} s")


@pytest.mark.timeout(600)
def test_versions_swap_under_load_without_an_error_or_going_back(replica, report):
    port, registry, producer, _ = replica
    # Each client's own sequence: two requests in flight at a swap may finish in either order.
    by_client, failures, stop = ([], []), [], threading.Event()

    def load(seen: list[int]):
        while not stop.is_set():
            status, body = post(port, {"candidates": CANDIDATES})
            if status != 200:
                failures.append((status, body))
            else:
                seen.append(body["model_version"])

    threads = [threading.Thread(target=load, args=(seen,)) for seen in by_client]
    for t in threads:
        t.start()
    for seed in range(2, 6):
        publish(registry, producer, seed)
        time.sleep(1.5)
    wait_for_version(port, registry.versions()[-1])
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    for seen in by_client:
        assert seen == sorted(seen) and seen[-1] == registry.versions()[-1]
    seen = [*by_client[0], *by_client[1]]
    assert set(seen) >= {1, registry.versions()[-1]}
    status, body = post(port, {"candidates": CANDIDATES})
    assert [r["task"] for r in body["results"]] == ["hard", "soft", "soft"]
    assert [r["epoch"] for r in body["results"]] == [3, 3, 0]
    assert body["assignment_epoch"] == 3
    assert all(0 < r["pcvr"] < 1 for r in body["results"])
    report(f"serving: {len(seen)} requests during 4 swaps, 0 failed, versions {sorted(set(seen))}")


@pytest.mark.timeout(600)
def test_corrupt_and_nan_versions_are_refused_and_the_old_one_keeps_serving(replica, report):
    port, registry, producer, _ = replica
    corrupt = publish(registry, producer, seed=2, poison="corrupt")
    nan = publish(registry, producer, seed=3, poison="nan")
    deadline = time.monotonic() + 30
    while metric(port, "rarecvr_serving_refused_versions_total") < 2:
        assert time.monotonic() < deadline, "the bad versions were not refused"
        time.sleep(0.2)
    status, body = post(port, {"candidates": CANDIDATES})
    assert status == 200 and body["model_version"] == 1
    assert all(np.isfinite(r["pcvr"]) for r in body["results"])
    assert readyz(port)[1]["refused"] == {"version": nan, "reason": "non_finite"}
    good = publish(registry, producer, seed=4)
    wait_for_version(port, good)
    assert wait_for_readyz(port, 200)["refused"] is None
    report(f"serving: corrupt v{corrupt} and NaN v{nan} refused, v1 served on, v{good} swapped in")


def readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for_readyz(port: int, status: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    got, body = None, "not listening"
    while time.monotonic() < deadline:
        with contextlib.suppress(urllib.error.URLError):  # not listening yet
            got, body = readyz(port)
        if got == status:
            return body
        time.sleep(0.3)
    raise AssertionError(f"/readyz did not answer {status} within {timeout} s: {body}")


#: records no rarecvr stage writes: not JSON, not an object, fields missing, a tombstone
POISON = [b"not json", b"[1, 2]", b'{"setup_id": 5}', None]


@pytest.mark.timeout(300)
def test_poisoned_assignment_and_model_update_records_are_skipped_and_counted(replica, report):
    port, registry, producer, _ = replica
    for value in POISON:
        producer.send(TASK_ASSIGNMENTS.name, key=b"s-soft", value=value)
        producer.send(MODEL_UPDATES.name, key=b"model", value=value)
    moved = TaskAssignment(
        setup_id="s-soft", task="hard", epoch=4, reason="test", evidence={}, valid_from_ms=0
    )
    producer.send(TASK_ASSIGNMENTS.name, key=b"s-soft", value=encode(moved))
    good = publish(registry, producer, seed=2)  # after the poison on both topics
    wait_for_version(port, good)
    deadline = time.monotonic() + 30
    while post(port, {"candidates": CANDIDATES})[1]["results"][1]["task"] != "hard":
        assert time.monotonic() < deadline, "the assignment after the poison was not read"
        time.sleep(0.2)
    assert metric(port, "rarecvr_malformed_records_skipped_total") == 2 * len(POISON)
    assert readyz(port)[0] == 200
    report(f"serving: {2 * len(POISON)} poisoned records skipped and counted, v{good} swapped in")


@pytest.mark.timeout(300)
def test_a_garbage_pinned_file_makes_the_replica_unready_while_it_serves_on(replica):
    port, registry, *_ = replica
    (registry.root / "PINNED").write_text("yesterday's\n")
    body = wait_for_readyz(port, 503)
    follower = body["threads"]["model-follower"]
    assert not follower["healthy"] and "not a version number" in follower["error"]
    up = [
        x.value
        for x in samples(f"http://127.0.0.1:{port}/metrics")
        if x.name == "rarecvr_thread_up" and x.labels["thread"] == "model-follower"
    ]
    assert up == [0.0]
    status, scored = post(port, {"candidates": CANDIDATES})
    assert status == 200 and scored["model_version"] == 1
    (registry.root / "PINNED").unlink()
    assert wait_for_readyz(port, 200)["threads"]["model-follower"]["error"] is None


def test_bad_requests_get_a_4xx_that_names_the_problem(replica):
    port, *_ = replica
    assert post(port, {"candidates": CANDIDATES}, token=None)[0] == 401
    assert post(port, {"candidates": CANDIDATES}, token="wrong")[0] == 401
    status, body = post(port, None, raw=b"{not json")
    assert status == 400 and "not JSON" in body["error"]
    status, body = post(port, {"candidates": [{"features": {}}]})
    assert status == 422 and body["field"] == "candidates.0.setup_id"
    status, body = post(port, {"candidates": [{"setup_id": "s", "features": {"x": [1]}}]})
    assert status == 422 and body["field"].startswith("candidates.0.features.x")
    status, body = post(port, {"candidates": []})
    assert status == 422 and body["field"] == "candidates"
    status, body = post(port, {"candidates": 5})
    assert status == 422 and body["field"] == "candidates"
    status, body = post(
        port, None, raw=b'{"candidates": [{"setup_id": "s", "features": {"recency_days": NaN}}]}'
    )
    assert status == 400 and "NaN is not a JSON number" in body["error"]
    for huge in (b"1e400", b"1" + b"0" * 400):
        status, body = post(
            port,
            None,
            raw=b'{"candidates": [{"setup_id": "s", "features": {"recency_days": ' + huge + b"}}]}",
        )
        assert status == 422 and body["field"].startswith("candidates.0.features.recency_days")
    status, body = post(port, {"candidates": [{"setup_id": "s", "features": {"ip": 87540}}]})
    assert status == 422 and body["field"] == "candidates.0.features.ip"
    assert "no such feature" in body["error"] and "recency_days" in body["error"]
    late = {"setup_id": "s", "features": {"recency_days": "soon"}}
    status, body = post(port, {"candidates": [late]})
    assert status == 422 and body["field"] == "candidates.0.features.recency_days"
    assert "finite number" in body["error"]
    status, body = post(port, {"candidates": CANDIDATES[:1] * 101})
    assert status == 413 and "100 candidates" in body["error"]
    status, body = post(port, None, raw=b"x" * 300_000)
    assert status == 413
    assert post(port, {"candidates": CANDIDATES})[0] == 200  # and the replica is still up
