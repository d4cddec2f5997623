"""What a worker rebuilds from its tables after a (re)assignment: each partition's watermark,
the expiry heaps, and the labels to send again.

The tables hold every write sent before the last stop, which can be past the committed
offsets: the labels caused by records at or after the committed offset are sent again (their
sends may never have been delivered; downstream recognises a click id sent twice), and a
watermark saved past the committed offsets holds until those records are read again
(``Watermark.restore``).

>>> from streams.attribution import Rules
>>> rules = Rules(window_ms=100, allowed_lateness_ms=0)
>>> labeled = {"p": 0, "label": 0, "label_src": ["clicks", 0, 9, 0], "conv": None, "src": {},
...            "click": {"event_id": "c1", "ts_ms": 10, "setup_id": "s", "advertiser_id": "a",
...                      "features": {}, "true_p": None}}
>>> saved = {"latest": {"clicks": 120, "conversions": 120}, "offsets": {"clicks": 9,
...                                                                      "conversions": 4}}
>>> got = recover([("c1", labeled)], [("0", saved)], {("t.clicks", 0): 9},
...               {"clicks": "t.clicks", "conversions": "t.conversions"}, {}, rules)
>>> [(p, example["click_id"]) for p, example in got.resend], got.watermarks[0].hold
([(0, 'c1')], {'clicks': 9, 'conversions': 4})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streams.attribution import STREAMS, Label, Rules, label_effects
from streams.expiry import Expiry
from streams.watermark import Watermark


@dataclass
class Recovered:
    watermarks: dict[int, Watermark]
    expiry: Expiry
    #: (partition, labeled example) to send again
    resend: list[tuple[int, dict]] = field(default_factory=list)


def recover(
    states: Iterable[tuple],
    marks: Iterable[tuple],
    committed: Mapping[tuple[str, int], int],
    topics: Mapping[str, str],
    applied: Mapping[tuple[str, int], int],
    rules: Rules,
) -> Recovered:
    """Rebuild from the click ``states`` and the saved watermarks (``marks``, partition as a
    string -> saved) as the tables hold them. ``committed`` maps (topic, partition) to the
    group's committed offset, ``topics`` each stream to its topic, and ``applied`` (stream,
    partition) to the last offset this process applied itself (a partition it kept: its
    tables are current up to there, whatever the committed offsets say)."""
    expiry, resend = Expiry(rules), []
    for key, state in states:
        p = state["p"]
        expiry.track(p, key, state)
        src = state.get("label_src")
        done = committed.get((topics[src[0]], p), 0) if src else 0
        if src and state.get("label") is not None and src[2] >= done - 1:
            resend += [(p, e.example) for e in label_effects(state) if isinstance(e, Label)]
    watermarks = {}
    for key, saved in marks:
        p = int(key)
        resume_at = {
            kind: max(committed.get((topic, p), 0), applied.get((kind, p), -1) + 1)
            for kind, topic in topics.items()
        }
        watermarks[p] = Watermark.restore(saved, STREAMS, rules.allowed_lateness_ms, resume_at)
    return Recovered(watermarks, expiry, resend)
