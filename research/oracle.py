"""The oracle: how well the true probabilities themselves score on an evaluation set.

No model can beat it on average; ``model_rig / oracle_rig`` says how much of the learnable
signal a model has found.
"""

from __future__ import annotations

from model import metrics


def oracle_figures(labels, true_p) -> dict[str, float]:
    """Log loss, RIG and AUC of the true probabilities on these labels."""
    return {
        "log_loss": metrics.log_loss(labels, true_p),
        "rig": metrics.rig(labels, true_p),
        "auc": metrics.auc(labels, true_p),
    }
