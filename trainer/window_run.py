"""One window's test-then-train, done chunk by chunk while the window fills.

Examples arrive in about label-time order. Each chunk is first scored by the serving model
(progressive validation: it has never seen them) and joins the *pending* examples. The
candidate, warm-started at the first chunk, trains on the oldest pending examples (by label
time) a chunk at a time, but only while the pending ones left stay at least ``tail_share`` of
all the window's examples so far. When the window closes, the latest ``tail_share`` of its
examples by label time are among the pending ones: that is the held-out tail, kept for the gate
and never trained on; the rest trains then. The chunks go to one ``fit`` running in a thread
(``trainer.background_fit``), so reading, scoring and merging the next ones overlap training,
and the window is never held in memory whole.

A tail cut by the window's nominal end would be empty for a window closed early because the
trainer caught up with a live stream, and the gate would then see nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from model.dcn import ModelConfig
from model.training import predict_tasks
from trainer.background_fit import BackgroundFit
from trainer.examples import Examples
from trainer.gate import score

#: (first chunk's inputs, labels, hard) -> (warm-started candidate, serving model or None)
StartModels = Callable[[dict, np.ndarray, np.ndarray], tuple[object, object | None]]


class WindowRun:
    def __init__(
        self,
        model: ModelConfig,
        start_ms: int,
        tail_share: float,
        attribution_window_ms: int,
        batch: int,
        chunk: int,
        start_models: StartModels,
        tasks_of: Callable[[Examples], np.ndarray],
    ):
        self.model, self.batch, self.chunk = model, batch, chunk
        self.start_ms, self.tail_share = start_ms, tail_share
        self.attribution_window_ms = attribution_window_ms
        self.start_models, self.tasks_of = start_models, tasks_of
        self.candidate = self.serving = None
        self.seen: list[tuple] = []  #: per chunk: labels, hard, true_p, serving predictions
        self.pending: list[tuple] = []  #: chunks not trained on: inputs, labels, hard, label ms
        self.tail: tuple | None = None  #: inputs, labels, hard of the held-out tail, at close
        self.trained, self.train_s = 0, 0.0
        self.training: BackgroundFit | None = None  #: the candidate's one fit, in a thread
        self.started = time.perf_counter()
        self.trained_at: float | None = None  #: when ``close`` had trained all but the tail

    @property
    def examples(self) -> int:
        return sum(labels.size for labels, *_ in self.seen)

    def add(self, examples: Examples | None) -> None:
        """Score a chunk with the serving model, then train on the oldest pending examples while
        enough stay pending to form the tail."""
        if examples is None or not len(examples):
            return
        inputs = examples.inputs
        labels = examples.meta["label"].astype(np.float32)
        hard = self.tasks_of(examples)
        true_p = examples.meta["true_p"]
        label_ms = examples.label_time(self.attribution_window_ms)
        if self.candidate is None:
            self.candidate, self.serving = self.start_models(inputs, labels, hard)
        served = predict_tasks(self.serving, inputs) if self.serving is not None else None
        self.seen.append((labels, hard, true_p, served))
        self.pending.append((inputs, labels, hard, label_ms))
        while self._pending_rows() - self.chunk >= self.tail_share * self.examples:
            self._train_oldest(self.chunk)

    def close(self) -> None:
        """Hold out the latest ``tail_share`` of the window's examples; train on the rest."""
        held = int(np.ceil(self.tail_share * self.examples))
        rows = self._pending_rows()
        if rows > held:
            self._train_oldest(rows - held)
        if self.training is not None:
            self.train_s = self.training.finish()
        self.tail = self._merged()[:3] if self.pending else None
        self.pending = []
        self.trained_at = time.perf_counter()

    def _pending_rows(self) -> int:
        return sum(labels.size for _, labels, _, _ in self.pending)

    def _merged(self) -> tuple:
        """The pending examples as one chunk, by label time."""
        inputs, labels, hard, label_ms = self.pending[0]
        if len(self.pending) > 1:
            inputs = {k: np.concatenate([c[0][k] for c in self.pending]) for k in inputs}
            labels, hard, label_ms = (
                np.concatenate([c[i] for c in self.pending]) for i in (1, 2, 3)
            )
        o = np.argsort(label_ms, kind="stable")
        return {k: v[o] for k, v in inputs.items()}, labels[o], hard[o], label_ms[o]

    def _train_oldest(self, n: int) -> None:
        inputs, labels, hard, label_ms = self._merged()
        if self.training is None:
            self.training = BackgroundFit(self.model, self.candidate, self.batch)
        self.training.put(({k: v[:n] for k, v in inputs.items()}, labels[:n], hard[:n]))
        self.trained += n
        self.pending = [({k: v[n:] for k, v in inputs.items()}, labels[n:], hard[n:], label_ms[n:])]

    def trained_hard(self) -> tuple[int, int]:
        """Hard examples and hard positives trained on (the window less its tail; after
        ``close``)."""
        labels, hard = (np.concatenate([s[i] for s in self.seen]) for i in (0, 1))
        tail_labels, tail_hard = self.tail[1:] if self.tail else (labels[:0], hard[:0])
        return (
            int(hard.sum() - tail_hard.sum()),
            int(labels[hard].sum() - tail_labels[tail_hard].sum()),
        )

    def served_hard(self) -> tuple[np.ndarray, np.ndarray]:
        """Labels and the serving model's hard predictions of the window's hard examples."""
        labels, hard = (np.concatenate([s[i] for s in self.seen]) for i in (0, 1))
        served = np.concatenate([s[3]["hard"] for s in self.seen])
        return labels[hard], served[hard]

    def figures(self, min_positives: int) -> dict:
        """Progressive and oracle scores on the whole window; candidate and serving model on
        its tail (call ``close`` first)."""
        labels, hard, true_p = (np.concatenate([s[i] for s in self.seen]) for i in range(3))
        progressive = oracle = serving_tail = None
        if self.serving is not None:
            served = {t: np.concatenate([s[3][t] for s in self.seen]) for t in ("hard", "soft")}
            progressive = score(labels, hard, served)
        if np.isfinite(true_p).all():  # simulated traffic: the best any model could do
            oracle = score(labels, hard, {"hard": true_p, "soft": true_p})
        inputs, tail_labels, tail_hard = self.tail or (
            {},
            np.zeros(0, np.float32),
            np.zeros(0, bool),
        )
        candidate_tail = self._score_tail(
            self.candidate, inputs, tail_labels, tail_hard, min_positives
        )
        if self.serving is not None:
            serving_tail = self._score_tail(
                self.serving, inputs, tail_labels, tail_hard, min_positives
            )
        rate = round(self.trained / self.train_s) if self.train_s else 0
        return {
            "examples": int(labels.size),
            "hard_examples": int(hard.sum()),
            "progressive": progressive,
            "oracle": oracle,
            "candidate_tail": candidate_tail,
            "serving_tail": serving_tail,
            "trained": self.trained,
            "train_examples_per_s": rate,
        }

    @staticmethod
    def _score_tail(model, inputs, labels, hard, min_positives) -> dict:
        if not labels.size:
            return score(labels, hard, {"hard": np.zeros(0), "soft": np.zeros(0)}, min_positives)
        return score(labels, hard, predict_tasks(model, inputs), min_positives)
