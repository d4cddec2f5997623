"""The empirical-Bayes prior of a setup's CVR, from setups with the same (noisy) tags.

A new setup borrows the CVR distribution of its peers: setups of the same advertiser type and
conversion category. The prior is a Beta fitted by the method of moments to the peers' decayed
clicks and conversions, with its strength (pseudo-clicks) clamped: at least ``min_strength`` so
one lucky peer cannot make it flat, at most ``max_strength`` because tags are often wrong and a
setup's own data must take over soon.

>>> book = PeerBook(min_strength=10, max_strength=1000)
>>> book.update("a", "retail/purchase", clicks=1000, conversions=5)
>>> book.update("b", "retail/purchase", clicks=3000, conversions=9)
>>> prior = book.prior("retail/purchase")
>>> round(prior.mean, 4), prior.strength
(0.0035, 1000.0)
>>> book.prior("unknown/group") is None
True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BetaPrior:
    a: float
    b: float

    @property
    def mean(self) -> float:
        return self.a / (self.a + self.b)

    @property
    def strength(self) -> float:
        return self.a + self.b


def fit_prior(evidence: list[tuple[float, float]], min_strength: float,
              max_strength: float) -> BetaPrior | None:  # fmt: skip
    """Method-of-moments Beta over setups' (clicks, conversions); None without clicks.

    The spread of the observed rates around the pooled rate, less the binomial noise expected
    from their click counts, estimates the spread of true rates: a small spread means peers
    agree and the prior is strong.
    """
    evidence = [(n, min(k, n)) for n, k in evidence if n > 0]
    total = sum(n for n, _ in evidence)
    if total <= 0:
        return None
    mean = min(max(sum(k for _, k in evidence) / total, 1e-6), 1 - 1e-6)
    spread = sum(n * (k / n - mean) ** 2 for n, k in evidence) / total
    noise = mean * (1 - mean) * len(evidence) / total
    between = spread - noise
    strength = mean * (1 - mean) / between - 1 if between > 0 else max_strength
    strength = min(max(strength, min_strength), max_strength)
    return BetaPrior(mean * strength, (1 - mean) * strength)


class PeerBook:
    """Each setup's latest evidence by peer group, and the group priors fitted from it."""

    def __init__(self, min_strength: float, max_strength: float):
        self.min_strength, self.max_strength = min_strength, max_strength
        self.groups: dict[str, dict[str, tuple[float, float]]] = {}
        self._priors: dict[str, BetaPrior | None] = {}
        self._changes: dict[str, int] = {}

    def update(self, setup_id: str, group: str, clicks: float, conversions: float) -> None:
        self.groups.setdefault(group, {})[setup_id] = (clicks, conversions)
        self._changes[group] = self._changes.get(group, 0) + 1

    def prior(self, group: str) -> BetaPrior | None:
        """The group's prior, refitted once a tenth of its setups (at least one) have changed."""
        members = self.groups.get(group)
        if not members:
            return None
        if group not in self._priors or self._changes.get(group, 0) * 10 >= len(members):
            self._priors[group] = fit_prior(list(members.values()), self.min_strength,
                                            self.max_strength)  # fmt: skip
            self._changes[group] = 0
        return self._priors[group]
