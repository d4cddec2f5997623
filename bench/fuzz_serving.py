"""Generated bad requests against a real scoring replica: every answer must be strict JSON, a
client's error a 4xx, and every valid request interleaved with them a 200.

    python -m bench.fuzz_serving [--requests 6000] [--seed 0]

Starts a broker and ``rarecvr serve`` (with a bearer token) over a registry holding one version
of a small model (categorical ``setup_id``, ``advertiser_id``, ``device``; numeric
``recency_days``). Requests are drawn with hypothesis: wrong types in every field, NaN and
Infinity, huge numbers and lists, deep nesting, unknown fields and features, bad UTF-8,
truncated bodies, wrong or missing tokens; one in eight is valid. Prints one JSON line last
with ``requests``, ``responses_5xx``, ``invalid_json_responses``, ``valid_request_failures``
(each must be 0) and the statuses seen.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rich.progress import Progress

from deploy.kafka import Broker, fetch
from deploy.kafka.broker import free_port
from model.dcn import ModelConfig, build
from model.export import export_version
from rarecvr.registry import Registry
from rarecvr.schema import FeatureSchema
from rarecvr.topics import ensure_topics

SCHEMA = FeatureSchema(("setup_id", "advertiser_id", "device"), ("recency_days",))
TOKEN = "fuzz-token"

scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
anything = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
device = st.one_of(st.text(max_size=20), st.integers(-(10**6), 10**6))
features = st.fixed_dictionaries({}, optional={"device": device, "recency_days": st.floats(0, 1e4)})
valid_candidate = st.fixed_dictionaries(
    {
        "setup_id": st.text(min_size=1, max_size=20),
        "advertiser_id": st.text(max_size=20),
        "features": features,
    }
)
valid_body = st.fixed_dictionaries(
    {"candidates": st.lists(valid_candidate, min_size=1, max_size=20)}
)


def mutate(body: dict, draw) -> bytes:
    """A valid body broken in one of the ways a client breaks it."""
    kind = draw(
        st.sampled_from(
            ["field", "feature", "top", "nan", "huge", "nest", "truncate", "utf8", "list", "bytes"]
        )
    )
    candidate = body["candidates"][0]
    if kind == "field":
        candidate[draw(st.sampled_from(["setup_id", "advertiser_id", "features"]))] = draw(anything)
    elif kind == "feature":
        candidate["features"] = {draw(st.text(max_size=70)): draw(anything)}
    elif kind == "top":
        body = draw(
            st.one_of(
                anything,
                st.just({"candidates": draw(anything)}),
                st.just(body | {draw(st.text(max_size=8)): 1}),
            )
        )
    elif kind in ("nan", "huge"):
        token = (
            draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
            if kind == "nan"
            else (draw(st.sampled_from(["1e400", "-1e309", "1" + "0" * 400, "3.5e38"])))
        )
        text = json.dumps(body).replace('"setup_id"', f'"x": {token}, "setup_id"', 1)
        if draw(st.booleans()):
            candidate["features"]["recency_days"] = 0.0
            text = json.dumps(body).replace("0.0", token)
        return text.encode()
    elif kind == "nest":
        depth = draw(st.integers(100, 100_000))
        return b'{"candidates": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == "truncate":
        raw = json.dumps(body).encode()
        return raw[: draw(st.integers(0, len(raw) - 1))]
    elif kind == "utf8":
        raw = json.dumps(body, ensure_ascii=False).encode()
        cut = draw(st.integers(0, len(raw)))
        return (
            raw[:cut] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + raw[cut:]
        )
    elif kind == "list":
        body = {"candidates": body["candidates"] * draw(st.integers(60, 600))}
    else:
        return draw(st.binary(max_size=200))
    return json.dumps(body, allow_nan=True).encode()


def post(port: int, raw: bytes, token: str | None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/score", raw, headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def strict_json(raw: bytes) -> bool:
    def refuse(name):
        raise ValueError(name)

    try:
        json.loads(raw, parse_constant=refuse)
        return True
    except ValueError:
        return False


def start_replica(tmp: Path, bootstrap: str) -> tuple[subprocess.Popen, int]:
    sample = {n: np.array([b"a", b"b"]) for n in SCHEMA.categorical}
    sample |= {n: np.array([1.0, 2.0], np.float32) for n in SCHEMA.numeric}
    config = ModelConfig(
        SCHEMA, hash_buckets=1000, embedding_dim=4, shared_layers=1, tower_units=(8,)
    )
    model = build(config, sample, {"hard": 0.005, "soft": 0.1})
    registry = Registry(tmp / "registry")
    registry.publish(partial(export_version, model), {})
    port = free_port()
    proc = subprocess.Popen(
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
            "--max-batch",
            "100",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RARECVR_SERVE_TOKEN": TOKEN},
    )
    ready = json.dumps({"candidates": [{"setup_id": "s"}]}).encode()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if post(port, ready, TOKEN)[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the replica did not become ready in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ["RARECVR_TOPIC_PREFIX"] = "fuzz."
    fetch()
    counts: Counter = Counter()
    statuses: Counter = Counter()
    examples: dict[str, str] = {}

    def note(what: str, raw: bytes, status: int, answer: bytes) -> None:
        counts[what] += 1
        examples.setdefault(what, f"{raw[:200]!r} -> {status} {answer[:200]!r}")

    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "kafka", log_level="WARN", heap="512m")
        info = broker.start()
        proc = None
        try:
            ensure_topics(info.bootstrap)
            proc, port = start_replica(Path(tmp), info.bootstrap)
            with Progress() as progress:
                task = progress.add_task("requests", total=args.requests)

                @settings(
                    max_examples=args.requests,
                    database=None,
                    deadline=None,
                    derandomize=True,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(st.data())
                def one(data):
                    body = data.draw(valid_body)
                    kind = data.draw(st.sampled_from(["valid", "token", *["bad"] * 6]))
                    valid, token = kind == "valid", TOKEN
                    if valid:
                        raw = json.dumps(body).encode()
                    elif kind == "token":
                        raw, token = (
                            json.dumps(body).encode(),
                            data.draw(st.sampled_from([None, "", "wrong", TOKEN + "x"])),
                        )
                    else:
                        raw = mutate(body, data.draw)
                    status, answer = post(port, raw, token)
                    counts["requests"] += 1
                    statuses[status] += 1
                    if status >= 500:
                        note("responses_5xx", raw, status, answer)
                    if not strict_json(answer):
                        note("invalid_json_responses", raw, status, answer)
                    if valid and status != 200:
                        note("valid_request_failures", raw, status, answer)
                    progress.advance(task)

                one()
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
            broker.stop()
    for what, example in examples.items():
        print(f"{what}, e.g. {example}", file=sys.stderr)
    print(
        json.dumps(
            {
                "requests": counts["requests"],
                "responses_5xx": counts["responses_5xx"],
                "invalid_json_responses": counts["invalid_json_responses"],
                "valid_request_failures": counts["valid_request_failures"],
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
            }
        )
    )


if __name__ == "__main__":
    main()
