"""One window's test-then-train, done chunk by chunk while the window fills.

Examples arrive in about label-time order. Each chunk is first scored by the serving model
(progressive validation: it has never seen them), then the candidate, warm-started at the
first chunk, trains on the chunk's examples outside the held-out tail. The tail is the window's
last ``tail_share`` of event time (label time in ``[end - tail_share * size, end)``): its
examples are kept for the gate and never trained on. Training while the window is still being
read is what lets reading overlap training, and a window is never held in memory whole: only
its tail and, per example, its label, task and the serving model's predictions.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from model.dcn import ModelConfig
from model.features import records_to_inputs
from model.training import fit, predict
from trainer.gate import score
from trainer.windows import label_time

#: (first chunk's inputs, labels, hard) -> (warm-started candidate, serving model or None)
StartModels = Callable[[dict, np.ndarray, np.ndarray], tuple[object, object | None]]


class WindowRun:
    def __init__(self, model: ModelConfig, start_ms: int, size_ms: int, tail_share: float,
                 attribution_window_ms: int, batch: int, start_models: StartModels,
                 tasks_of: Callable[[list[dict]], np.ndarray]):  # fmt: skip
        self.model, self.batch = model, batch
        self.start_ms, self.end_ms = start_ms, start_ms + size_ms
        self.tail_from_ms = self.end_ms - int(size_ms * tail_share)
        self.attribution_window_ms = attribution_window_ms
        self.start_models, self.tasks_of = start_models, tasks_of
        self.candidate = self.serving = None
        self.seen: list[tuple] = []  #: per chunk: labels, hard, true_p, serving predictions
        self.tail: list[tuple] = []  #: per chunk: inputs, labels, hard of its tail rows
        self.trained, self.train_s = 0, 0.0
        self.started = time.perf_counter()

    @property
    def examples(self) -> int:
        return sum(labels.size for labels, *_ in self.seen)

    def add(self, examples: list[dict]) -> None:
        """Score a chunk with the serving model, then train the candidate on its non-tail rows."""
        if not examples:
            return
        records = [e["features"] | {"setup_id": e["setup_id"],
                                    "advertiser_id": e.get("advertiser_id", "")}
                   for e in examples]  # fmt: skip
        inputs = records_to_inputs(records, self.model.features)
        labels = np.array([e["label"] for e in examples], dtype=np.float32)
        hard = self.tasks_of(examples)
        true_p = np.array([np.nan if e.get("true_p") is None else e["true_p"] for e in examples],
                          dtype=np.float64)  # fmt: skip
        in_tail = np.array([label_time(e, self.attribution_window_ms) >= self.tail_from_ms
                            for e in examples])  # fmt: skip
        if self.candidate is None:
            self.candidate, self.serving = self.start_models(inputs, labels, hard)
        served = predict(self.serving, inputs) if self.serving is not None else None
        self.seen.append((labels, hard, true_p, served))
        if in_tail.any():
            self.tail.append(({k: v[in_tail] for k, v in inputs.items()}, labels[in_tail],
                              hard[in_tail]))  # fmt: skip
        train = ~in_tail
        if train.any():
            started = time.perf_counter()
            fit(self.model, {k: v[train] for k, v in inputs.items()}, labels[train], hard[train],
                model=self.candidate, batch=self.batch)  # fmt: skip
            self.train_s += time.perf_counter() - started
            self.trained += int(train.sum())

    def figures(self, min_positives: int) -> dict:
        """Progressive and oracle scores on the whole window; candidate and serving model on
        its tail."""
        labels, hard, true_p = (np.concatenate([s[i] for s in self.seen]) for i in range(3))
        progressive = oracle = serving_tail = None
        if self.serving is not None:
            served = {t: np.concatenate([s[3][t] for s in self.seen]) for t in ("hard", "soft")}
            progressive = score(labels, hard, served)
        if np.isfinite(true_p).all():  # simulated traffic: the best any model could do
            oracle = score(labels, hard, {"hard": true_p, "soft": true_p})
        if self.tail:
            inputs = {k: np.concatenate([t[0][k] for t in self.tail]) for k in self.tail[0][0]}
            tail_labels = np.concatenate([t[1] for t in self.tail])
            tail_hard = np.concatenate([t[2] for t in self.tail])
        else:
            inputs, tail_labels, tail_hard = {}, np.zeros(0, np.float32), np.zeros(0, bool)
        candidate_tail = self._score_tail(self.candidate, inputs, tail_labels, tail_hard,
                                          min_positives)  # fmt: skip
        if self.serving is not None:
            serving_tail = self._score_tail(self.serving, inputs, tail_labels, tail_hard,
                                            min_positives)  # fmt: skip
        rate = round(self.trained / self.train_s) if self.train_s else 0
        return {"examples": int(labels.size), "hard_examples": int(hard.sum()),
                "progressive": progressive, "oracle": oracle, "candidate_tail": candidate_tail,
                "serving_tail": serving_tail, "trained": self.trained,
                "train_examples_per_s": rate}  # fmt: skip

    @staticmethod
    def _score_tail(model, inputs, labels, hard, min_positives) -> dict:
        if not labels.size:
            return score(labels, hard, {"hard": np.zeros(0), "soft": np.zeros(0)}, min_positives)
        return score(labels, hard, predict(model, inputs), min_positives)
