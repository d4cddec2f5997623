"""The stabilizer's policy: a setup's task from the evidence, with hysteresis.

The paper's tasks come from data: hard when a setup's historical CVR is at most ``alpha``. The
policy keeps a posterior of the CVR (its peers' prior, a Beta or a mixture of two, see
``stabilizer.peers``, updated with its own decayed clicks and conversions) and moves a setup
only on strong evidence:

- soft -> hard when P(CVR <= online threshold) >= ``confidence``; the online threshold sits
  ``online_margin`` below alpha, as in the paper, so a borderline setup stays soft;
- hard -> soft when P(CVR > alpha) >= ``confidence``;
- and never sooner than ``min_dwell_ms`` (event time) after its last change.

A setup seen for the first time takes the task of its posterior mean (its peers' when it has no
data yet): the cold start. Every change gets the next epoch of that setup.

>>> params = PolicyParams(alpha=0.01, min_dwell_ms=0)
>>> first = decide(None, Evidence(clicks=0, conversions=0), BetaPrior(1, 399), 0, params)
>>> first.task, first.epoch, first.reason
('hard', 1, 'cold_start')
>>> decide(first, Evidence(clicks=2000, conversions=21), BetaPrior(1, 399), 1, params) is None
True
>>> later = decide(first, Evidence(clicks=20000, conversions=400), BetaPrior(1, 399), 2, params)
>>> later.task, later.epoch, later.reason
('soft', 2, 'evidence_above_alpha')
"""

from __future__ import annotations

from dataclasses import dataclass

from rarecvr.contracts import TaskAssignment
from rarecvr.units import DAY_MS
from stabilizer.peers import BetaPrior, PeerBook, PeerPrior

Prior = BetaPrior | PeerPrior


@dataclass(frozen=True)
class PolicyParams:
    """Every knob of the policy; see ``docs/stabilizer.md``."""

    alpha: float = 0.01  #: the offline threshold: CVR at most alpha is hard
    online_margin: float = 0.1  #: online threshold = alpha * (1 - online_margin)
    confidence: float = 0.87  #: posterior probability that a change needs
    min_dwell_ms: int = DAY_MS  #: event time a setup keeps a task before it may change again
    prior_min_strength: float = 20.0  #: bounds on the peers' prior, in pseudo-clicks
    prior_max_strength: float = 2000.0
    tag_noise: float = 0.2  #: share of setups whose tags are wrong: the population's weight
    cold_start_task: str = "soft"  #: the answer for a setup and group never seen

    @property
    def online_threshold(self) -> float:
        return self.alpha * (1 - self.online_margin)

    def peer_book(self) -> PeerBook:
        """An empty book of peers' evidence with this policy's prior bounds and tag noise."""
        return PeerBook(self.prior_min_strength, self.prior_max_strength, self.tag_noise)

    def default_prior(self) -> BetaPrior:
        """The prior of a setup without peers: mean alpha, weakest strength."""
        s = self.prior_min_strength
        return BetaPrior(self.alpha * s, (1 - self.alpha) * s)


@dataclass(frozen=True)
class Evidence:
    """A setup's decayed (and delay-corrected) clicks and conversions."""

    clicks: float
    conversions: float


def posterior(evidence: Evidence, prior: Prior) -> Prior:
    """The prior updated with the evidence (conversions clamped to [0, clicks])."""
    clicks = max(evidence.clicks, 0.0)
    return prior.posterior(clicks, min(max(evidence.conversions, 0.0), clicks))


def decide(
    current: TaskAssignment | None,
    evidence: Evidence,
    prior: Prior,
    now_ms: int,
    params: PolicyParams,
    setup_id: str = "setup",
) -> TaskAssignment | None:
    """The setup's new assignment, or None when it keeps its current one."""
    if current is not None and now_ms - current.valid_from_ms < params.min_dwell_ms:
        return None
    post = posterior(evidence, prior)
    p_below = post.cdf(params.online_threshold)
    p_above = 1.0 - post.cdf(params.alpha)
    if current is None:
        task = "hard" if post.mean <= params.online_threshold else "soft"
        reason = "cold_start"
    elif current.task == "soft" and p_below >= params.confidence:
        task, reason = "hard", "evidence_below_threshold"
    elif current.task == "hard" and p_above >= params.confidence:
        task, reason = "soft", "evidence_above_alpha"
    else:
        return None
    return TaskAssignment(
        setup_id=setup_id,
        task=task,
        epoch=(current.epoch + 1) if current else 1,
        reason=reason,
        evidence={
            "clicks": round(evidence.clicks, 3),
            "conversions": round(evidence.conversions, 3),
            "posterior_mean": post.mean,
            "p_below_threshold": p_below,
            "p_above_alpha": p_above,
        }
        | prior.describe(),
        valid_from_ms=now_ms,
    )
