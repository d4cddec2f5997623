"""Drift of the served model on live hard clicks: river's ADWIN over its per-example log loss.

Every window's hard clicks are scored by the version serving before the trainer learns from
them (progressive validation). Their log losses, one after the other and window after window,
feed one ADWIN detector (``river.drift.ADWIN``): it keeps the longest recent run of losses whose
mean is the same and reports when the newest part's mean differs from the older part's beyond
chance. A drift says that the population the model serves moved (a tracking change, a new
mix of setups, a market shift), which a holdout of older tails cannot see. The detector lives
in the trainer's process: a restarted trainer starts a fresh one. It runs across versions: a
better version lowers the loss (a drift down, not flagged), a version or a population that
serves worse raises it (``rising``, flagged).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> watch = LossDrift()
>>> steady = (rng.random(20_000) < 0.01).astype(float)
>>> watch.update(steady, np.full(steady.size, 0.01))["detected"]
False
>>> moved = (rng.random(20_000) < 0.05).astype(float)  # five times the rate, same predictions
>>> found = watch.update(moved, np.full(moved.size, 0.01))
>>> found["detected"], found["rising"]
(True, True)
"""

from __future__ import annotations

import numpy as np
from river import drift

from model.metrics import EPS


class LossDrift:
    def __init__(self, delta: float = 0.002):
        """``delta``: ADWIN's confidence (smaller: fewer false alarms, later detection)."""
        self.detector = drift.ADWIN(delta=delta)

    def update(self, labels: np.ndarray, probs: np.ndarray) -> dict:
        """Feed one window's hard labels and served predictions, in order; whether a drift was
        detected in it, whether the loss rose (the model got worse on what it serves, not
        better), and the mean loss and length of the run ADWIN now keeps."""
        p = np.clip(probs.astype(np.float64), EPS, 1 - EPS)
        losses = -(labels * np.log(p) + (1 - labels) * np.log1p(-p))
        before = self.detector.estimation if self.detector.width else None
        detected = False
        for loss in losses.tolist():
            self.detector.update(loss)
            detected = detected or self.detector.drift_detected
        rising = detected and before is not None and self.detector.estimation > before
        return {
            "rising": rising,
            "detected": detected,
            "mean_loss": float(self.detector.estimation),
            "examples": int(self.detector.width),
        }
