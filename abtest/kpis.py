"""The paper's A/B KPIs per conversion setup, their aggregates and cluster-bootstrap intervals.

Per setup, variant over control: the CPA ratio ``(spend_v / conv_v) / (spend_c / conv_c)`` and
the conversion ratio ``conv_v / conv_c``. A setup without conversions in an arm has no CPA
there: it is left out of the CPA figures (and of the conversion ratio if control has none) and
counted. Aggregates of the ratios m_i: the median, the spend-weighted geometric mean
``exp(sum s_i ln m_i / sum s_j)``, and both over nested groups of the top advertisers by spend
covering about 30%, 50% and 70% of it. Changes are reported as ratio - 1.

Intervals come from a cluster bootstrap: seeds and setups resampled with replacement (a
setup's figures in every resampled seed stay together), the aggregate recomputed, its 2.5% and
97.5% percentiles taken.

>>> spend = np.array([[10.0, 20.0, 30.0]])
>>> kpis = SetupKpis(spend, np.array([[1.0, 2.0, 3.0]]), spend, np.array([[2.0, 2.0, 0.0]]))
>>> np.exp(kpis.log_cpa).round(2).tolist(), kpis.without_conversions()
([[0.5, 1.0, nan]], {'control': 0, 'variant': 1, 'either': 1})
>>> round(median_change(kpis.log_cpa, kpis.weight), 3)
-0.293
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Top advertisers by spend covering about these shares of it.
GROUP_SHARES = (0.3, 0.5, 0.7)


@dataclass
class SetupKpis:
    """Per (seed, setup) spend and conversions of both arms, and the log ratios of the KPIs."""

    spend_control: np.ndarray
    conversions_control: np.ndarray
    spend_variant: np.ndarray
    conversions_variant: np.ndarray

    def __post_init__(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            defined = (self.conversions_control > 0) & (self.conversions_variant > 0)
            cpa_v = self.spend_variant / self.conversions_variant
            cpa_c = self.spend_control / self.conversions_control
            self.log_cpa = np.where(defined, np.log(cpa_v / cpa_c), np.nan)
            self.log_conversions = np.where(
                defined, np.log(self.conversions_variant / self.conversions_control), np.nan
            )
        self.weight = self.spend_control + self.spend_variant

    def without_conversions(self) -> dict[str, int]:
        """(seed, setup) cells with spend but no conversions in an arm."""
        spent = self.weight > 0
        control = spent & (self.conversions_control <= 0)
        variant = spent & (self.conversions_variant <= 0)
        return {
            "control": int(control.sum()),
            "variant": int(variant.sum()),
            "either": int((control | variant).sum()),
        }


def median_change(log_ratio: np.ndarray, weight: np.ndarray) -> float:
    """exp(median of the defined log ratios) - 1 (nan if none is defined)."""
    values = log_ratio[np.isfinite(log_ratio)]
    return float(np.expm1(np.median(values))) if values.size else float("nan")


def spend_weighted_change(log_ratio: np.ndarray, weight: np.ndarray) -> float:
    """The spend-weighted geometric mean of the defined ratios, minus 1."""
    ok = np.isfinite(log_ratio) & (weight > 0)
    if not ok.any():
        return float("nan")
    return float(np.expm1(np.sum(weight[ok] * log_ratio[ok]) / np.sum(weight[ok])))


AGGREGATES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "median": median_change,
    "spend_weighted": spend_weighted_change,
}


def top_advertiser_groups(
    advertiser: np.ndarray, spend: np.ndarray, shares=GROUP_SHARES
) -> dict[str, np.ndarray]:
    """Setup masks of the nested groups of top advertisers by ``spend`` (per setup, summed over
    seeds): for each share, the fewest top advertisers whose spend reaches it.

    >>> groups = top_advertiser_groups(np.array([0, 0, 1, 2]), np.array([5.0, 1.0, 3.0, 1.0]))
    >>> {name: mask.tolist() for name, mask in groups.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'top_30pct': [True, True, False, False], 'top_50pct': [True, True, False, False],
     'top_70pct': [True, True, True, False]}
    """
    by_advertiser = np.bincount(advertiser, weights=spend)
    order = np.argsort(-by_advertiser, kind="stable")
    covered = np.cumsum(by_advertiser[order]) / max(by_advertiser.sum(), 1e-300)
    groups = {}
    for share in shares:
        top = order[: int(np.searchsorted(covered, share - 1e-12)) + 1]
        groups[f"top_{round(share * 100)}pct"] = np.isin(advertiser, top)
    return groups


def cluster_bootstrap(
    aggregate: Callable[[np.ndarray, np.ndarray], float],
    log_ratio: np.ndarray,
    weight: np.ndarray,
    reps: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """The 95% percentile interval of ``aggregate`` over (seeds, setups) matrices, resampling
    seeds and setups with replacement."""
    seeds, setups = log_ratio.shape
    values = []
    for _ in range(reps):
        s = rng.integers(0, seeds, seeds)[:, None]
        j = rng.integers(0, setups, setups)[None, :]
        value = aggregate(log_ratio[s, j].ravel(), weight[s, j].ravel())
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def segment_figures(
    kpis: SetupKpis,
    mask: np.ndarray,
    advertiser: np.ndarray,
    reps: int,
    rng: np.random.Generator,
) -> dict:
    """Every aggregate of both KPIs, with intervals, over the setups in ``mask``, and over the
    segment's top-advertiser groups."""
    groups = {"all": mask} | {
        name: group & mask
        for name, group in top_advertiser_groups(
            advertiser, np.where(mask, kpis.weight.sum(0), 0.0)
        ).items()
    }
    out: dict = {}
    for group, members in groups.items():
        cells = {}
        for kpi, log_ratio in (("cpa", kpis.log_cpa), ("conversion", kpis.log_conversions)):
            lr, w = log_ratio[:, members], kpis.weight[:, members]
            for name, aggregate in AGGREGATES.items():
                value = aggregate(lr.ravel(), w.ravel())
                low, high = (
                    cluster_bootstrap(aggregate, lr, w, reps, rng)
                    if lr.size
                    else (
                        float("nan"),
                        float("nan"),
                    )
                )
                cells[f"{name}_{kpi}_change"] = {"value": value, "ci": [low, high]}
        spend = kpis.weight[:, members].sum()
        cells["setups"] = int(members.sum())
        cells["spend_share"] = float(spend / max(kpis.weight.sum(), 1e-300))
        cells["setups_without_conversions"] = SetupKpis(
            kpis.spend_control[:, members],
            kpis.conversions_control[:, members],
            kpis.spend_variant[:, members],
            kpis.conversions_variant[:, members],
        ).without_conversions()
        out[group] = cells
    return out
