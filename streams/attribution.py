"""The life of one click, as a pure state machine: attribution and its delayed-feedback label.

State is kept per click id (clicks and conversions share the key and the partition). Time is
event time. Each partition has a watermark, ``min(latest click time, latest conversion time)
- allowed_lateness``: every event that arrives within the allowed lateness of its own stream is
before the watermark passes it, so the outcome does not depend on how the two topics interleave.

- A click is counted once (a second click with the same id is a duplicate).
- A conversion is attributed to its click if it happened within ``[click, click + window]``
  (even if the conversion came first and waited); its setup's CVR counts it at once.
- When the watermark passes ``click + window`` the click's label is final: positive if a
  conversion was attributed, else negative. Positives wait with their negatives, so the labels
  of any span of label time are a click-time cohort with the population's conversion rate (a
  positive sent at its conversion would reach the trainer up to a window before the negatives
  of its cohort, and a window of label time would over-state the rate; docs/diagnosis.md).
- A conversion whose click is unknown is kept until the watermark passes ``conversion +
  orphan_ttl`` (the click may be late), then dropped and counted, never silently.
- A conversion that arrives after its click was labeled negative is counted as late; the label
  stays (a label, once emitted, is final).

>>> rules = Rules(window_ms=100, allowed_lateness_ms=0, orphan_ttl_ms=100)
>>> click = {"event_id": "c1", "ts_ms": 10, "setup_id": "s", "advertiser_id": "a",
...          "features": {}, "true_p": None}
>>> state, effects = on_click(None, click, rules)
>>> [type(e).__name__ for e in effects]
['CvrDelta']
>>> state, effects = on_conversion(state, {"event_id": "v1", "ts_ms": 40}, rules)
>>> [(type(e).__name__, e.kind) for e in effects]
[('CvrDelta', 'conversion')]
>>> state, effects = on_watermark(state, 110, rules)
>>> effects[0].example["label"], effects[0].example["conversion_ts_ms"]
(1, 40)
"""

from __future__ import annotations

from dataclasses import dataclass

from rarecvr.contracts import peer_group
from rarecvr.units import DAY_MS

#: The source streams of a partition, by the names the states and watermarks use.
STREAMS = ("clicks", "conversions")


@dataclass(frozen=True)
class Rules:
    """Attribution and labelling parameters (event time, milliseconds)."""

    window_ms: int = 7 * DAY_MS
    allowed_lateness_ms: int = 3_600_000
    orphan_ttl_ms: int = 7 * DAY_MS
    #: How long a labeled click is remembered to recognise late duplicates.
    retention_ms: int = 7 * DAY_MS


@dataclass(frozen=True)
class Label:
    """A final label: the labeled example to publish."""

    example: dict


@dataclass(frozen=True)
class CvrDelta:
    """A change to its setup's historical CVR: a click or a conversion at event time ``ts``."""

    setup_id: str
    kind: str  # "click" or "conversion"
    ts_ms: int
    delay_ms: int = 0
    #: The setup's peer group from the click's tags (see :func:`peer_group`); clicks only.
    group: str = ""


def click_delta(click: dict) -> CvrDelta:
    return CvrDelta(
        click["setup_id"], "click", click["ts_ms"], group=peer_group(click.get("features", {}))
    )


@dataclass(frozen=True)
class Count:
    """Something worth counting that changes no state: a duplicate, a late or orphan event."""

    name: str


def _example(click: dict, label: int, conversion_ts: int | None) -> dict:
    return {
        "v": 1,
        "click_id": click["event_id"],
        "setup_id": click["setup_id"],
        "advertiser_id": click["advertiser_id"],
        "features": click["features"],
        "label": label,
        "click_ts_ms": click["ts_ms"],
        "conversion_ts_ms": conversion_ts,
        "true_p": click.get("true_p"),
    }


def _attribute(state: dict, rules: Rules) -> list:
    """Attribute the recorded conversion if it falls in the click's window (the label waits
    for the window's close)."""
    click, conv = state["click"], state["conv"]
    delay = conv["ts_ms"] - click["ts_ms"]
    if not 0 <= delay <= rules.window_ms:
        return [Count("conversion_outside_window")]
    state["attributed"] = True
    return [conversion_delta(state)]


def on_click(state: dict | None, click: dict, rules: Rules) -> tuple[dict, list]:
    """Apply a click event; returns the new state and its effects."""
    if state is not None and state.get("click") is not None:
        return state, [Count("duplicate_click")]
    state = {"click": click, "conv": None, "label": None} | (
        {"conv": state["conv"]} if state else {}
    )
    effects: list = [click_delta(click)]
    if state["conv"] is not None:
        effects += _attribute(state, rules)
    return state, effects


def on_conversion(state: dict | None, conversion: dict, rules: Rules) -> tuple[dict, list]:
    """Apply a conversion event (the first per click counts; later ones are duplicates)."""
    if state is not None and state.get("conv") is not None:
        return state, [Count("duplicate_conversion")]
    conv = {"event_id": conversion["event_id"], "ts_ms": conversion["ts_ms"]}
    if state is None or state.get("click") is None:
        return {"click": None, "conv": conv, "label": None}, [Count("orphan_conversion")]
    state = dict(state, conv=conv)
    if state["label"] is not None:
        return state, [Count("late_conversion")]
    return state, _attribute(state, rules)


def deadline(state: dict, rules: Rules) -> int:
    """The watermark at which :func:`on_watermark` has something to do for this state."""
    click = state.get("click")
    if click is None:
        return state["conv"]["ts_ms"] + rules.orphan_ttl_ms
    if state["label"] is None:
        return click["ts_ms"] + rules.window_ms
    return click["ts_ms"] + rules.window_ms + rules.retention_ms


def on_watermark(state: dict, watermark: int, rules: Rules) -> tuple[dict | None, list]:
    """Close what the watermark has passed: a negative label, or forgetting the state (None)."""
    if watermark < deadline(state, rules):
        return state, []
    click = state.get("click")
    if click is None:
        return None, [Count("orphan_expired")]
    if state["label"] is None:
        state = dict(state, label=1 if state.get("attributed") else 0)
        return state, label_effects(state)
    return None, []


def forgettable(state: dict, committed) -> bool:
    """Whether a state that :func:`on_watermark` closed may be deleted now.

    A closed state is kept for records read again only: ``closed`` holds its partition's
    offsets when it closed, and to a record past them it is absent (:func:`apply_event`). It
    is deleted once the committed offsets (``committed(kind, partition)``, the next to read)
    are past them: until then a record read again after a crash, the state's own or a
    duplicate, must find it, or it would count as new.

    >>> state = {"p": 0, "closed": {"clicks": 7, "conversions": 3}}
    >>> forgettable(state, lambda kind, p: 8), forgettable(state, lambda kind, p: 7)
    (True, False)
    """
    return all(offset < committed(kind, state["p"]) for kind, offset in state["closed"].items())


def conversion_delta(state: dict) -> CvrDelta:
    """The CVR delta of an attributed conversion."""
    click, conv = state["click"], state["conv"]
    return CvrDelta(click["setup_id"], "conversion", conv["ts_ms"], conv["ts_ms"] - click["ts_ms"])


def label_effects(state: dict) -> list:
    """The output of a final label: the labeled example."""
    positive = state["label"] == 1
    return [
        Label(
            _example(state["click"], state["label"], state["conv"]["ts_ms"] if positive else None)
        )
    ]


def apply_event(
    state: dict | None, kind: str, event: dict, source: list, rules: Rules
) -> tuple[dict, list, bool]:
    """Apply a click (``kind='clicks'``) or conversion event read at ``source`` = [topic kind,
    partition, offset, line in the record]; returns (state, effects, replayed).

    The state remembers the source of each transition. The same record read again (a replay
    after a crash) changes nothing but re-emits the outputs that record caused, since they may
    not have been delivered; another record with the same event id is a duplicate.
    """
    slot = "click" if kind == "clicks" else "conv"
    if state is not None and state.get("src", {}).get(slot) == source:
        effects = []
        if slot == "click":
            click = state["click"]
            effects.append(click_delta(click))
        if state.get("delta_src") == source:
            effects.append(conversion_delta(state))
        return state, effects, True
    if state is not None and source[2] > state.get("closed", {}).get(kind, source[2]):
        state = None  # read after the watermark closed it: a new event starts over
    handler = on_click if slot == "click" else on_conversion
    new, effects = handler(state, event, rules)
    if new is not state:
        new = dict(new, src=dict((state or {}).get("src", {}), **{slot: source}))
        if any(isinstance(e, CvrDelta) and e.kind == "conversion" for e in effects):
            new["delta_src"] = source
    return new, effects, False
