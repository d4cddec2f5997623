"""The stabilizer's policy, peers' prior and assignment view, as pure logic (no broker)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import betainc

from rarecvr.contracts import TaskAssignment
from stabilizer.peers import BetaPrior, PeerBook, PeerPrior, fit_prior
from stabilizer.policy import DAY_MS, Evidence, PolicyParams, decide, posterior
from stabilizer.view import AssignmentView

PARAMS = PolicyParams(alpha=0.01, online_margin=0.1, confidence=0.9, min_dwell_ms=DAY_MS)

tasks = st.sampled_from(["hard", "soft"])
clicks = st.floats(0, 1e6, allow_nan=False)
rates = st.floats(0, 0.2, allow_nan=False)
priors = st.builds(BetaPrior, st.floats(0.01, 50), st.floats(1, 5000))


def assignment(task: str, epoch: int = 3, valid_from_ms: int = 0) -> TaskAssignment:
    return TaskAssignment(
        setup_id="s",
        task=task,
        epoch=epoch,
        reason="test",
        evidence={},
        valid_from_ms=valid_from_ms,
    )


@settings(max_examples=300, deadline=None)
@given(task=tasks, n=clicks, rate=rates, prior=priors, age=st.integers(0, 10 * DAY_MS))
def test_no_change_without_strong_evidence_and_the_dwell_time(task, n, rate, prior, age):
    new = decide(assignment(task), Evidence(n, n * rate), prior, age, PARAMS)
    if new is None:
        return
    assert age >= PARAMS.min_dwell_ms
    post = posterior(Evidence(n, n * rate), prior)
    if task == "soft":
        assert new.task == "hard"
        assert betainc(post.a, post.b, PARAMS.online_threshold) >= PARAMS.confidence
    else:
        assert new.task == "soft"
        assert 1 - betainc(post.a, post.b, PARAMS.alpha) >= PARAMS.confidence


@settings(max_examples=200, deadline=None)
@given(
    prior=priors,
    low=st.floats(0, 0.004),
    high=st.floats(0.03, 0.3),
    age=st.integers(DAY_MS, 30 * DAY_MS),
)
def test_a_change_once_evidence_is_strong_and_the_dwell_time_has_passed(prior, low, high, age):
    n = 200_000.0
    to_hard = decide(assignment("soft"), Evidence(n, n * low), prior, age, PARAMS)
    to_soft = decide(assignment("hard"), Evidence(n, n * high), prior, age, PARAMS)
    assert to_hard is not None and to_hard.task == "hard"
    assert to_soft is not None and to_soft.task == "soft"
    assert to_hard.reason == "evidence_below_threshold"
    assert to_soft.reason == "evidence_above_alpha"


@settings(max_examples=100, deadline=None)
@given(task=tasks, n=st.floats(1e6, 1e8), prior=priors)
def test_a_setup_inside_the_hysteresis_band_keeps_its_task_however_much_data(task, n, prior):
    middle = (PARAMS.online_threshold + PARAMS.alpha) / 2
    assert decide(assignment(task), Evidence(n, n * middle), prior, 30 * DAY_MS, PARAMS) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(clicks, rates), min_size=1, max_size=60), priors)
def test_epochs_only_grow_and_each_change_starts_its_dwell(steps, prior):
    current, epochs = None, []
    for hour, (n, rate) in enumerate(steps):
        now = hour * 12 * 3_600_000
        new = decide(current, Evidence(n, n * rate), prior, now, PARAMS)
        if new is not None:
            assert new.valid_from_ms == now
            assert current is None or now - current.valid_from_ms >= PARAMS.min_dwell_ms
            current = new
            epochs.append(new.epoch)
    assert epochs[0] == 1
    assert epochs == list(range(1, len(epochs) + 1))


def test_a_new_setup_starts_from_its_peers_prior():
    rare_peers, common_peers = BetaPrior(2, 998), BetaPrior(50, 950)
    empty = Evidence(0, 0)
    assert decide(None, empty, rare_peers, 0, PARAMS).task == "hard"
    assert decide(None, empty, common_peers, 0, PARAMS).task == "soft"
    assert decide(None, empty, rare_peers, 0, PARAMS).reason == "cold_start"


@given(st.lists(st.tuples(st.floats(1, 1e5), rates), min_size=1, max_size=30))
def test_the_peers_prior_has_bounded_strength_and_a_mean_among_the_peers_rates(setups):
    evidence = [(n, n * r) for n, r in setups]
    prior = fit_prior(evidence, min_strength=10, max_strength=1000)
    assert 10 * (1 - 1e-9) <= prior.strength <= 1000 * (1 + 1e-9)
    noise = [3 * np.sqrt(max(k / n, 1 / n) / n) + 1 / n for n, k in evidence]  # rates plausible
    # With its strength capped below the clicks, the Beta that best explains a rare rate puts its
    # bulk, not its mean, on it: the mean may lie up to the prior's own spread beyond the rates.
    spread = np.sqrt(prior.mean * (1 - prior.mean) / (prior.strength + 1))
    assert min(k / n - e for (n, k), e in zip(evidence, noise, strict=True)) - spread <= prior.mean
    assert prior.mean <= max(k / n + e for (n, k), e in zip(evidence, noise, strict=True)) + spread


def test_the_peers_prior_recovers_the_spread_of_true_rates():
    rng = np.random.default_rng(3)
    true_rates = rng.beta(2, 198, size=400)  # mean 1%, strength 200
    clicks = rng.integers(2_000, 20_000, size=400)
    evidence = list(zip(clicks, rng.binomial(clicks, true_rates), strict=True))
    prior = fit_prior(evidence, min_strength=10, max_strength=2000)
    assert abs(prior.mean - 0.01) < 0.001
    assert 140 < prior.strength < 280


def test_peers_that_disagree_give_a_weak_prior_and_peers_that_agree_a_strong_one():
    agree = fit_prior([(10_000, 50), (20_000, 100), (5_000, 25)], 10, 1000)
    disagree = fit_prior([(10_000, 1), (20_000, 2_000), (5_000, 25)], 10, 1000)
    assert agree.strength > 999.99
    assert disagree.strength < 50


def test_the_peer_book_refits_a_group_after_its_setups_change():
    book = PeerBook(10, 1000, tag_noise=0.1)
    book.update("a", "g", 1000, 1)
    assert book.prior("g").peers.mean < 0.003
    book.update("a", "g", 1000, 100)
    assert 0.09 < book.prior("g").peers.mean < 0.11


def test_a_setup_whose_tags_change_leaves_its_old_group():
    book = PeerBook(10, 1000, tag_noise=0.1)
    book.update("a", "g", 1000, 1)
    book.update("b", "g", 1000, 2)
    book.update("a", "h", 1000, 100)
    assert set(book.groups["g"]) == {"b"} and set(book.groups["h"]) == {"a"}
    assert book.prior("g").peers.mean < 0.003  # refitted without "a"'s new evidence
    assert len(book.setups) == 2


def test_a_setup_unlike_its_peers_is_judged_by_the_population_since_tags_can_be_wrong():
    book = PeerBook(20, 2000, tag_noise=0.1)
    for i in range(20):  # a group of common setups (CVR near 15%) ...
        book.update(f"common{i}", "retail/landing_page_view", 1_000, 150 + 5 * (i % 3))
    for i in range(20):  # ... and, in another group, setups of every rate down to the rare
        book.update(f"other{i}", "finance/purchase", 1_000, [1, 5, 20, 80][i % 4])
    prior = book.prior("retail/landing_page_view")
    rare_setup = Evidence(clicks=800, conversions=2)  # tagged like the common ones
    post = posterior(rare_setup, prior)
    assert post.peers_weight < 0.01
    assert decide(assignment("soft"), rare_setup, prior, 2 * DAY_MS, PARAMS).task == "hard"
    assert decide(assignment("soft"), rare_setup, prior.peers, 2 * DAY_MS, PARAMS) is None
    assert posterior(Evidence(800, 120), prior).peers_weight > 0.9  # a setup like its peers


def test_the_view_keeps_the_highest_epoch_and_answers_as_of_a_time():
    view = AssignmentView(PARAMS)
    assert view.apply(assignment("soft", epoch=1, valid_from_ms=0))
    assert view.apply(assignment("hard", epoch=2, valid_from_ms=100))
    assert not view.apply(assignment("soft", epoch=1, valid_from_ms=0))  # a replay
    assert not view.apply(assignment("hard", epoch=2, valid_from_ms=100))  # a duplicate
    assert view.task("s") == ("hard", 2)
    assert view.task_as_of("s", 50) == ("soft", 1)
    assert view.task_as_of("s", 100) == ("hard", 2)
    assert view.task_as_of("s", -5) == ("soft", 1)  # before the history: the earliest known
    assert view.max_epoch == 2 and view.records == 4


def test_without_tag_noise_the_group_alone_is_the_prior():
    prior = PeerPrior(BetaPrior(3, 17), BetaPrior(0.7, 19), peers_weight=1.0)
    post = posterior(Evidence(clicks=800, conversions=2), prior)
    assert post.peers_weight == 1.0
    assert post.cdf(0.009) == posterior(Evidence(800, 2), prior.peers).cdf(0.009)


def test_a_cold_start_answer_follows_evidence_from_other_groups():
    # The prior mixes the group with the population, so another group's setups move it too.
    view = AssignmentView(PolicyParams(alpha=0.01, tag_noise=0.2))

    def apply(setup, group, clicks, conversions):
        view.apply(
            TaskAssignment(
                setup_id=setup,
                task="soft",
                epoch=1,
                reason="cold_start",
                evidence={"clicks": clicks, "conversions": conversions, "group": group},
                valid_from_ms=0,
            )
        )

    apply("rare", "retail/purchase", 10_000, 50)
    assert view.task("new", group="retail/purchase") == ("hard", 0)
    for i in range(20):  # many common setups elsewhere: the population's CVR rises
        apply(f"common{i}", "travel/landing_page_view", 10_000, 2_000)
    assert view.task("new", group="retail/purchase") == ("soft", 0)


def test_a_settled_view_answers_cold_starts_as_the_lazy_one_without_a_fit_per_request():
    params = PolicyParams(alpha=0.01, tag_noise=0.2)
    lazy, settled = AssignmentView(params), AssignmentView(params, settled=True)
    groups = {"retail/purchase": (10_000, 10), "travel/landing_page_view": (10_000, 2_000)}
    for view in (lazy, settled):
        for i, (group, (clicks, conversions)) in enumerate(list(groups.items()) * 10):
            evidence = {"clicks": clicks, "conversions": conversions, "group": group}
            record = TaskAssignment(
                setup_id=f"s{i}",
                task="soft",
                epoch=1,
                reason="test",
                evidence=evidence,
                valid_from_ms=0,
            )
            view.apply(record)
    settled.settle()  # what the reader's thread does after a batch of records
    fits = []
    settled.book.prior = fits.append  # a prior fitted on the request path would land here
    for group in groups:
        assert settled.task("new", group=group) == lazy.task("new", group=group)
    assert {lazy.task("new", group=g)[0] for g in groups} == {"hard", "soft"}
    assert fits == []
