"""Labeled examples and task assignments straight from the simulator, in label-time order.

What the stream worker and the stabilizer would publish for clean traffic, without running
them: the trainer's tests and benchmark read these from the topics. Like the worker, labels go
out in steps (``STEP`` examples here), each step's labels of a partition joined in records
(``contracts.join_lines``) on the labeled-examples partition of the same number. Every label is
final when its click's attribution window closes (positives wait with their negatives).
``label_noise`` flips that share of labels at random (to show that the trainer's gate refuses
such a window).
"""

from __future__ import annotations

import heapq
import json
import zlib
from collections.abc import Iterable, Iterator

import numpy as np

from rarecvr import topics
from rarecvr.contracts import TaskAssignment, encode, join_lines
from rarecvr.produce import Record
from simulator.events import click_records
from simulator.marketplace import Marketplace
from simulator.tables import Vocab
from simulator.traffic import generate


def labeled_examples(
    market: Marketplace,
    label_noise: float = 0.0,
    noisy_between: tuple[int, int] | None = None,
    seed: int = 0,
) -> Iterator[Record]:
    """Every click of the traffic as a labeled example, in records (each partition's in label-time
    order).

    ``label_noise`` applies to examples whose label time is within ``noisy_between`` (all when
    None).
    """
    return _in_steps(_examples(market, label_noise, noisy_between, seed))


def _examples(
    market: Marketplace, label_noise: float, noisy_between: tuple[int, int] | None, seed: int
) -> Iterator[tuple[int, dict]]:
    """(label time, example) of every click, by label time."""
    window = market.cfg.attribution_window_ms
    rng = np.random.default_rng([market.cfg.seed, 5, seed])
    vocab = Vocab(market)
    heap: list = []
    for chunk in generate(market):
        for i, record in enumerate(click_records(chunk, vocab)):
            click = json.loads(record.value)
            label = int(chunk.converted[i])
            conversion = int(chunk.conversion_ts_ms[i]) if label else None
            final = click["ts_ms"] + window
            lo, hi = noisy_between or (final, final)
            if label_noise and lo <= final <= hi and rng.random() < label_noise:
                label = 1 - label  # a false positive "converts" when its label became final
                conversion = final if label else None
            example = {
                "v": 1,
                "click_id": click["event_id"],
                "setup_id": click["setup_id"],
                "advertiser_id": click["advertiser_id"],
                "features": click["features"],
                "label": label,
                "click_ts_ms": click["ts_ms"],
                "conversion_ts_ms": conversion,
                "true_p": click["true_p"],
            }
            heapq.heappush(heap, (final, click["event_id"], example))
        while heap and heap[0][0] <= int(chunk.ts_ms[-1]):
            final, _, example = heapq.heappop(heap)
            yield final, example
    while heap:
        final, _, example = heapq.heappop(heap)
        yield final, example


#: Labels per simulated worker step.
STEP = 2_000


def _in_steps(examples: Iterable[tuple[int, dict]]) -> Iterator[Record]:
    """Records as the worker sends them: each step's labels of a partition together."""
    partitions = topics.LABELED_EXAMPLES.partitions
    step: dict[int, list] = {}
    for n, (final, example) in enumerate(examples, 1):
        # spread by click id, like the click topic's partitioner (with another hash)
        p = zlib.crc32(example["click_id"].encode()) % partitions
        step.setdefault(p, []).append((final, json.dumps(example).encode()))
        if n % STEP == 0:
            yield from _step_records(step)
            step = {}
    yield from _step_records(step)


def _step_records(step: dict[int, list]) -> Iterator[Record]:
    for p, labels in sorted(step.items()):
        start = 0
        for value in join_lines(value for _, value in labels):
            ts_ms = labels[start][0]
            start += value.count(b"\n") + 1
            yield Record(topics.LABELED_EXAMPLES.name, str(p).encode(), value, ts_ms, partition=p)


def true_assignments(market: Marketplace) -> Iterator[Record]:
    """Each setup's true class at the start of the traffic, as task-assignment records."""
    start = market.cfg.start_ms
    hard = market.is_hard(np.arange(market.n_setups), start)
    for setup, is_hard in zip(market.setup_ids, hard, strict=True):
        assignment = TaskAssignment(
            setup_id=setup,
            task="hard" if is_hard else "soft",
            epoch=1,
            reason="simulator_truth",
            evidence={},
            valid_from_ms=start,
        )
        yield Record(topics.TASK_ASSIGNMENTS.name, setup.encode(), encode(assignment), start)
