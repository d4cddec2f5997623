"""Pure logic of streams/: decay, the click state machine and its watermark, and the CVR
estimator. The labels must equal a batch recomputation whatever the interleaving of streams."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import cvr, decay
from streams.attribution import (
    CvrDelta,
    Label,
    Rules,
    deadline,
    on_click,
    on_conversion,
    on_watermark,
)
from streams.watermark import Watermark

RULES = Rules(window_ms=1000, allowed_lateness_ms=50, orphan_ttl_ms=1000, retention_ms=1000)


def click(i, ts):
    return {
        "event_id": f"c{i}",
        "ts_ms": ts,
        "setup_id": f"s{i % 3}",
        "advertiser_id": "a",
        "features": {"f": i},
        "true_p": None,
    }


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.floats(0.1, 5.0)), min_size=1, max_size=30),
    st.randoms(),
)
def test_decayed_sum_does_not_depend_on_arrival_order(events, rng):
    forward = decay.ZERO
    for t, w in events:
        forward = decay.add(forward, t, w, half_life=500)
    shuffled = list(events)
    rng.shuffle(shuffled)
    backward = decay.ZERO
    for t, w in shuffled:
        backward = decay.add(backward, t, w, half_life=500)
    end = max(t for t, _ in events)
    expected = sum(w * 2 ** (-(end - t) / 500) for t, w in events)
    assert decay.value_at(forward, end, 500) == pytest.approx(expected, rel=1e-9)
    assert decay.value_at(backward, end, 500) == pytest.approx(expected, rel=1e-9)


def run(events, rules=RULES):
    """Feed (stream, event) pairs through the state machine as the worker does."""
    states, labels, counts = {}, {}, {}
    wm = Watermark(("clicks", "conversions"), rules.allowed_lateness_ms)

    def effects_of(effects):
        for e in effects:
            if isinstance(e, Label):
                assert e.example["click_id"] not in labels, "a click is labeled once"
                labels[e.example["click_id"]] = e.example["label"]
            elif not isinstance(e, CvrDelta):
                counts[e.name] = counts.get(e.name, 0) + 1

    def advance(value):
        for key in list(states):
            if deadline(states[key], rules) <= value:
                state, effects = on_watermark(states[key], value, rules)
                effects_of(effects)
                if state is None:
                    del states[key]
                else:
                    states[key] = state

    for stream, event in events:
        key = event["event_id"] if stream == "clicks" else event["click_id"]
        handler = on_click if stream == "clicks" else on_conversion
        states[key], effects = handler(states.get(key), event, rules)
        effects_of(effects)
        if wm.observe(stream, event["ts_ms"]):
            advance(wm.value)
    advance(10**12)  # end of stream: close everything
    return labels, counts


def simulate(rng: random.Random, n: int, jitter: int):
    clicks, conversions, truth = [], [], {}
    for i in range(n):
        ts = rng.randint(0, 20_000)
        clicks.append(click(i, ts))
        truth[f"c{i}"] = 0
        if rng.random() < 0.3:
            delay = rng.randint(0, 1500)  # some fall outside the 1000 ms window
            conversions.append({"event_id": f"v{i}", "click_id": f"c{i}", "ts_ms": ts + delay})
            truth[f"c{i}"] = int(delay <= RULES.window_ms)

    def in_stream_order(events):  # event-time order, each event displaced by < jitter
        return sorted(events, key=lambda e: e["ts_ms"] + rng.uniform(0, jitter))

    a = [("clicks", e) for e in in_stream_order(clicks)]
    b = [("conversions", e) for e in in_stream_order(conversions)]
    merged = []
    while a or b:  # an arbitrary interleaving of the two streams
        source = a if (a and (not b or rng.random() < 0.5)) else b
        merged.append(source.pop(0))
    return merged, truth


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 60))
def test_labels_equal_batch_rule_for_any_interleaving_within_lateness(rng, n):
    events, truth = simulate(rng, n, jitter=RULES.allowed_lateness_ms)
    labels, _ = run(events)
    assert labels == truth


def test_duplicates_are_counted_once():
    c = click(1, 100)
    v = {"event_id": "v1", "click_id": "c1", "ts_ms": 200}
    labels, counts = run([("clicks", c), ("clicks", c), ("conversions", v), ("conversions", v)])
    assert labels == {"c1": 1}
    assert counts == {"duplicate_click": 1, "duplicate_conversion": 1}


def test_an_orphan_conversion_waits_for_its_late_click():
    v = {"event_id": "v1", "click_id": "c1", "ts_ms": 500}
    state, effects = on_conversion(None, v, RULES)
    assert [e.name for e in effects] == ["orphan_conversion"]
    state, effects = on_click(state, click(1, 400), RULES)
    assert [(type(e).__name__, e.kind) for e in effects] == [
        ("CvrDelta", "click"),
        ("CvrDelta", "conversion"),
    ]
    state, effects = on_watermark(state, 400 + RULES.window_ms, RULES)
    assert effects[0].example["label"] == 1 and effects[0].example["conversion_ts_ms"] == 500


def test_a_positive_waits_for_its_attribution_window_to_close():
    state, _ = on_click(None, click(1, 400), RULES)
    state, effects = on_conversion(state, {"event_id": "v1", "ts_ms": 450}, RULES)
    assert not any(isinstance(e, Label) for e in effects)
    assert on_watermark(state, 400 + RULES.window_ms - 1, RULES) == (state, [])
    _, effects = on_watermark(state, 400 + RULES.window_ms, RULES)
    assert [e.example["label"] for e in effects] == [1]


def test_an_orphan_conversion_expires_counted_after_its_ttl():
    v = {"event_id": "v1", "click_id": "c9", "ts_ms": 500}
    state, _ = on_conversion(None, v, RULES)
    assert on_watermark(state, 500 + RULES.orphan_ttl_ms - 1, RULES)[0] is state
    gone, effects = on_watermark(state, 500 + RULES.orphan_ttl_ms, RULES)
    assert gone is None and [e.name for e in effects] == ["orphan_expired"]


def test_a_conversion_after_the_negative_label_is_late_and_the_label_stays():
    state, _ = on_click(None, click(1, 0), RULES)
    state, effects = on_watermark(state, RULES.window_ms, RULES)
    assert effects[0].example["label"] == 0
    state, effects = on_conversion(state, {"event_id": "v", "click_id": "c1", "ts_ms": 10}, RULES)
    assert [e.name for e in effects] == ["late_conversion"] and state["label"] == 0


def test_a_labeled_click_is_remembered_then_forgotten():
    state, _ = on_click(None, click(1, 0), RULES)
    state, _ = on_watermark(state, RULES.window_ms, RULES)
    assert on_watermark(state, RULES.window_ms + RULES.retention_ms - 1, RULES)[0] is state
    assert on_watermark(state, RULES.window_ms + RULES.retention_ms, RULES)[0] is None


def test_watermark_is_the_slowest_stream_less_lateness_and_never_goes_back():
    wm = Watermark(("clicks", "conversions"), lateness_ms=10)
    wm.observe("clicks", 100)
    assert wm.value == -1  # conversions not seen yet
    assert wm.observe("conversions", 50) and wm.value == 40
    assert not wm.observe("conversions", 30) and wm.value == 40
    assert wm.is_late("conversions", 39) and not wm.is_late("conversions", 40)
    wm.observe("conversions", 200)
    assert wm.value == 90


PARAMS = cvr.CvrParams(
    half_life_ms=10_000, window_ms=5_000, bucket_ms=500, prior_delay_median_ms=1_000
)


def delta(kind, ts, offset, source="clicks:0", delay=0):
    return {"kind": kind, "ts_ms": ts, "delay_ms": delay, "source": source, "offset": offset}


def test_replayed_deltas_are_skipped_by_their_offsets():
    state = None
    for i in range(5):
        state, applied = cvr.apply(state, delta("click", 100 * i, i), PARAMS)
        assert applied
    before = cvr.estimate(state, 1000, PARAMS)
    for i in range(5):  # the same deltas again, as after a crash
        state, applied = cvr.apply(state, delta("click", 100 * i, i), PARAMS)
        assert not applied
    assert cvr.estimate(state, 1000, PARAMS) == before
    state, applied = cvr.apply(state, delta("click", 600, 0, source="clicks:1"), PARAMS)
    assert applied, "offsets are per source partition"


def test_recent_clicks_count_only_for_the_share_that_could_have_converted():
    state = None
    for i in range(100):
        state, _ = cvr.apply(state, delta("click", 0, i), PARAMS)
    for i in range(10):
        state, _ = cvr.apply(state, delta("conversion", 300, 100 + i, delay=300), PARAMS)
    young = cvr.estimate(state, 400, PARAMS)
    assert young["mature_clicks"] < young["clicks"]
    assert young["cvr"] > young["raw_cvr"]
    old = cvr.estimate(state, PARAMS.window_ms + 1000, PARAMS)
    assert old["mature_clicks"] == pytest.approx(old["clicks"])
    assert old["cvr"] == pytest.approx(old["raw_cvr"])


def test_delay_cdf_rises_from_zero_to_one_at_the_window():
    state = cvr.empty()
    for d in (100, 200, 400, 800):
        state["delays"][cvr.delay_bin(d)] += 1
    values = [cvr.delay_cdf(state, a, PARAMS) for a in (0, 100, 1000, 4000, 5000)]
    assert values == sorted(values) and values[0] == 0 and values[-1] == 1


def test_a_replayed_record_re_emits_its_outputs_and_a_duplicate_does_not():
    from streams.attribution import apply_event

    state, effects, replayed = apply_event(None, "clicks", click(1, 100), ["clicks", 0, 7], RULES)
    assert not replayed and [type(e).__name__ for e in effects] == ["CvrDelta"]
    conv = {"event_id": "v1", "click_id": "c1", "ts_ms": 150}
    state, effects, _ = apply_event(state, "conversions", conv, ["conversions", 0, 3], RULES)
    assert [(type(e).__name__, e.kind) for e in effects] == [("CvrDelta", "conversion")]
    # The same conversion record again (a replay): its delta is sent again.
    again, effects, replayed = apply_event(state, "conversions", conv, ["conversions", 0, 3], RULES)
    assert replayed and again == state
    assert [(type(e).__name__, e.kind) for e in effects] == [("CvrDelta", "conversion")]
    # The same conversion id in another record: a duplicate, nothing to send.
    again, effects, replayed = apply_event(state, "conversions", conv, ["conversions", 0, 9], RULES)
    assert not replayed and [e.name for e in effects] == ["duplicate_conversion"]


def test_a_closed_state_is_absent_to_a_later_record_but_not_to_one_read_again():
    from streams.attribution import apply_event, forgettable

    state, _, _ = apply_event(None, "clicks", click(1, 100), ["clicks", 0, 7], RULES)
    state, effects = on_watermark(state, 100 + RULES.window_ms, RULES)
    assert [e.example["label"] for e in effects] == [0]
    closed = dict(state, label_src=["clicks", 0, 40], closed={"clicks": 40, "conversions": 2})
    # The click's own record read again after a crash: a replay, not a new click.
    again, effects, replayed = apply_event(closed, "clicks", click(1, 100), ["clicks", 0, 7], RULES)
    assert replayed and again is closed and not any(isinstance(e, Label) for e in effects)
    # A duplicate of it read before the state closed, read again: still a duplicate.
    again, effects, replayed = apply_event(closed, "clicks", click(1, 100), ["clicks", 0, 9], RULES)
    assert not replayed and again is closed and [e.name for e in effects] == ["duplicate_click"]
    # The same click id in a later record: the closed state is gone for it, it starts over.
    new, _, replayed = apply_event(closed, "clicks", click(1, 100), ["clicks", 0, 50], RULES)
    assert not replayed and new["label"] is None and "closed" not in new
    # Deleted only once the committed offsets are past those at closing.
    closed["p"] = 0
    assert not forgettable(closed, lambda kind, p: 40)
    assert forgettable(closed, lambda kind, p: 41)


def test_a_restored_watermark_expires_nothing_until_every_stream_is_read_back_to_its_offsets():
    wm = Watermark(("clicks", "conversions"), lateness_ms=0)
    for offset, ts in enumerate((100, 200, 300)):
        wm.observe("clicks", ts, offset)
        wm.observe("conversions", ts, offset)
    resumed = Watermark.restore(
        wm.saved(), ("clicks", "conversions"), 0, resume_at={"clicks": 1, "conversions": 2}
    )
    assert resumed.value == 300 and resumed.hold == {"clicks": 2, "conversions": 2}
    assert not resumed.observe("clicks", 200, 1)  # re-read, still short of offset 2
    assert not resumed.record_read("clicks", 1)
    assert not resumed.observe("clicks", 300, 2) and not resumed.record_read("clicks", 2)
    # The saved watermark reflects every event of the record at offset 2: its first event
    # read back does not end the hold, the end of the record does.
    assert not resumed.observe("conversions", 250, 2) and resumed.held
    assert resumed.record_read("conversions", 2) and not resumed.held
    assert resumed.value == 300


def test_a_watermark_saved_before_the_committed_offsets_resumes_without_a_hold():
    wm = Watermark(("clicks", "conversions"), lateness_ms=0)
    wm.observe("clicks", 100, 4)
    wm.observe("conversions", 90, 7)
    resumed = Watermark.restore(
        wm.saved(), ("clicks", "conversions"), 0, resume_at={"clicks": 5, "conversions": 8}
    )
    assert not resumed.held and resumed.value == 90
    assert resumed.observe("conversions", 95, 8)
