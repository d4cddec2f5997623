"""The empirical-Bayes prior of a setup's CVR, from setups with the same (noisy) tags.

A new setup borrows the CVR distribution of its peers: setups of the same advertiser type and
conversion category. The group's prior is a Beta fitted by maximum marginal likelihood (the
beta-binomial) to the peers' decayed clicks and conversions, its strength (pseudo-clicks) clamped:
at least ``min_strength`` so one lucky peer cannot make it flat, at most ``max_strength`` so a
setup's own data take over soon. CVRs within a group span orders of magnitude; the likelihood
fit follows the rare setups' zeros where a fit of moments is pulled by the large common ones.

Tags are often wrong, so a setup's prior is a mixture (:class:`PeerPrior`): the group's Beta with
weight ``1 - tag_noise`` and the Beta of all setups (the population) with weight ``tag_noise``.
A setup whose own data disagree with its group moves to the population's component, in
proportion to how much better that component explains its data.

>>> book = PeerBook(min_strength=10, max_strength=1000, tag_noise=0.1)
>>> book.update("a", "retail/purchase", clicks=1000, conversions=5)
>>> book.update("b", "retail/purchase", clicks=3000, conversions=9)
>>> book.update("c", "travel/purchase", clicks=2000, conversions=200)
>>> prior = book.prior("retail/purchase")
>>> round(prior.peers.mean, 4), round(prior.peers.strength), prior.peers_weight
(0.0042, 1000, 0.9)
>>> rare, common = prior.posterior(2000, 4), prior.posterior(2000, 200)
>>> round(rare.peers_weight, 3), round(common.peers_weight, 3)  # common: not like its peers
(0.971, 0.0)
>>> book.prior("unknown/group").peers is None  # no peers: the population alone
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betainc, betaln, digamma, expit, logit


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

    def cdf(self, x: float) -> float:
        return float(betainc(self.a, self.b, x))

    def posterior(self, clicks: float, conversions: float) -> BetaPrior:
        return BetaPrior(self.a + conversions, self.b + clicks - conversions)

    def log_marginal(self, clicks: float, conversions: float) -> float:
        """Log-likelihood of the data under this prior, less the binomial coefficient."""
        return float(
            betaln(self.a + conversions, self.b + clicks - conversions) - betaln(self.a, self.b)
        )

    def describe(self) -> dict[str, float]:
        return {"prior_a": self.a, "prior_b": self.b}


@dataclass(frozen=True)
class PeerPrior:
    """The group's Beta with weight ``peers_weight``, else the population's (a mixture).

    ``peers`` is None when the setup's group has no evidence yet: the population alone.
    """

    peers: BetaPrior | None
    population: BetaPrior
    peers_weight: float

    def _parts(self) -> list[tuple[float, BetaPrior]]:
        if self.peers is None:
            return [(1.0, self.population)]
        return [(self.peers_weight, self.peers), (1.0 - self.peers_weight, self.population)]

    @property
    def mean(self) -> float:
        return sum(w * part.mean for w, part in self._parts())

    def cdf(self, x: float) -> float:
        return sum(w * part.cdf(x) for w, part in self._parts())

    def posterior(self, clicks: float, conversions: float) -> PeerPrior:
        """Both components updated, and their weights by how well each explains the data."""
        population = self.population.posterior(clicks, conversions)
        if self.peers is None:
            return PeerPrior(None, population, 0.0)
        weight = self.peers_weight
        if 0.0 < weight < 1.0:  # Bayes' rule on the two components' marginal likelihoods
            log_odds = np.log(weight / (1.0 - weight)) + (
                self.peers.log_marginal(clicks, conversions)
                - self.population.log_marginal(clicks, conversions)
            )
            weight = float(expit(log_odds))
        return PeerPrior(self.peers.posterior(clicks, conversions), population, weight)

    def describe(self) -> dict[str, float]:
        peers = self.peers.describe() if self.peers else {}
        return peers | {
            "population_a": self.population.a,
            "population_b": self.population.b,
            "peers_weight": self.peers_weight,
        }


def fit_prior(
    evidence: list[tuple[float, float]],
    min_strength: float,
    max_strength: float,
    start: BetaPrior | None = None,
) -> BetaPrior | None:
    """Maximum-likelihood Beta over setups' (clicks, conversions); None without clicks.

    Each setup's conversions are beta-binomial given its clicks: the fit finds the mean and the
    strength whose spread of true rates best explains the spread of observed ones. Peers that
    agree give a strong prior, peers that disagree a weak one. ``start`` (the last fit) speeds a
    refit.
    """
    data = np.array([(n, min(max(k, 0.0), n)) for n, k in evidence if n > 0], dtype=float)
    if data.size == 0:
        return None
    n, k = data[:, 0], data[:, 1]
    pooled = float(np.clip(k.sum() / n.sum(), 1e-4, 1 - 1e-4))
    bounds = [(-12.0, 12.0), (np.log(min_strength), np.log(max_strength))]
    if start is None:
        x0 = [logit(pooled), np.log(np.clip(100.0, min_strength, max_strength))]
    else:
        x0 = [np.clip(logit(start.mean), *bounds[0]), np.clip(np.log(start.strength), *bounds[1])]

    def negative_log_likelihood(x: np.ndarray) -> tuple[float, np.ndarray]:
        mean, strength = expit(x[0]), np.exp(x[1])
        a, b = mean * strength, (1 - mean) * strength
        value = (betaln(a + k, b + n - k) - betaln(a, b)).sum()
        d_a = (digamma(a + k) - digamma(a)).sum()  # d/da, without the terms d/db shares
        d_b = (digamma(b + n - k) - digamma(b)).sum()
        d_ab = (digamma(a + b) - digamma(a + b + n)).sum()
        d_mean = (d_a - d_b) * strength * mean * (1 - mean)  # d/d logit(mean)
        d_strength = a * d_a + b * d_b + strength * d_ab  # d/d log(strength)
        return -float(value), -np.array([d_mean, d_strength])

    fit = minimize(negative_log_likelihood, x0, jac=True, method="L-BFGS-B", bounds=bounds)
    strength = float(np.exp(fit.x[1]))
    return BetaPrior(float(expit(fit.x[0])) * strength, float(expit(-fit.x[0])) * strength)


class PeerBook:
    """Each setup's latest evidence by peer group, and the priors fitted from it."""

    POPULATION = "\x00population"  #: the key under which the fit over all setups is kept

    def __init__(self, min_strength: float, max_strength: float, tag_noise: float):
        self.min_strength, self.max_strength, self.tag_noise = min_strength, max_strength, tag_noise
        self.groups: dict[str, dict[str, tuple[float, float]]] = {}
        self.setups: dict[str, tuple[float, float]] = {}
        self.group_of: dict[str, str] = {}
        self._fits: dict[str, BetaPrior | None] = {}
        self._changes: dict[str, int] = {}

    def update(self, setup_id: str, group: str, clicks: float, conversions: float) -> None:
        """A setup's latest evidence; a setup whose tags changed leaves its old group."""
        old = self.group_of.get(setup_id, group)
        if old != group:
            del self.groups[old][setup_id]
            self._changes[old] = self._changes.get(old, 0) + 1
        self.groups.setdefault(group, {})[setup_id] = (clicks, conversions)
        self.setups[setup_id] = (clicks, conversions)
        self.group_of[setup_id] = group
        for key in (group, self.POPULATION):
            self._changes[key] = self._changes.get(key, 0) + 1

    def prior(self, group: str) -> PeerPrior | None:
        """The setup's prior; None while no setup has clicks."""
        population = self._fit(self.POPULATION, self.setups)
        if population is None:
            return None
        peers = self._fit(group, self.groups.get(group, {}))
        return PeerPrior(peers, population, 1.0 - self.tag_noise)

    def _fit(self, key: str, members: dict[str, tuple[float, float]]) -> BetaPrior | None:
        """The key's fit, refitted once a tenth of its setups (at least one) have changed."""
        if not members:
            return None
        if key not in self._fits or self._changes.get(key, 0) * 10 >= len(members):
            self._fits[key] = fit_prior(
                list(members.values()), self.min_strength, self.max_strength, self._fits.get(key)
            )
            self._changes[key] = 0
        return self._fits[key]
