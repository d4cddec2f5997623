"""The historical CVR of a conversion setup: decayed clicks and conversions, and an estimate
corrected for clicks too recent to have converted yet. See ``docs/streams.md``.

State per setup (a JSON-friendly dict):

- ``clicks``, ``conversions``: decayed sums (:mod:`streams.decay`) in event time.
- ``recent``: undecayed click counts of the last attribution window, by ``bucket_ms`` bucket.
- ``delays``: counts of observed conversion delays in log-spaced bins.
- ``applied``: per source (``topic:partition``), the highest offset applied. A delta from an
  offset not above it was applied before (a replay after a crash) and is skipped, so updates
  are idempotent, and the mark is stored in the same value as the sums it guards.

The corrected estimate divides the decayed conversions by the *mature* decayed clicks: a click
of age a counts as F(a), the probability that a conversion which will come has come by then,
where F is the setup's observed delay distribution blended with a broad prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

from rarecvr.units import MINUTE_MS
from streams import decay

#: Upper edges of the delay bins: 1 minute doubling up to about 11 days.
DELAY_EDGES_MS = [MINUTE_MS * 2**k for k in range(15)]


@dataclass(frozen=True)
class CvrParams:
    half_life_ms: int = 7 * 86_400_000
    window_ms: int = 7 * 86_400_000
    bucket_ms: int = 3 * 3_600_000
    #: Prior on the delay distribution: log-normal median and log-sd, and its weight in
    #: pseudo-conversions, so a setup with few conversions borrows a plausible shape.
    prior_delay_median_ms: int = 6 * 3_600_000
    prior_delay_sigma: float = 2.0
    prior_delay_weight: float = 10.0


def empty() -> dict:
    return {
        "clicks": [0.0, 0],
        "conversions": [0.0, 0],
        "recent": {},
        "delays": [0] * 16,
        "applied": {},
    }


#: Fields a delta may leave out, and their values then: ``n`` clicks at the same time (a
#: history's clicks of one bucket, ``streams.seed``), one by default.
OPTIONAL = {"delay_ms": 0, "n": 1}


def message(setup_id: str, entries: list[dict]) -> bytes:
    """A setup's CVR deltas, in order, as one record of ``rarecvr.cvr-deltas``."""
    return orjson.dumps({"v": 2, "setup_id": setup_id, "deltas": entries})


def check(delta) -> None:
    """ValueError unless ``delta`` is one that ``apply`` can take.

    >>> check({"kind": "click", "ts_ms": 5, "source": "clicks:0:click", "offset": 3})
    >>> check({"kind": "view", "ts_ms": 5, "source": "s", "offset": 3})
    Traceback (most recent call last):
    ...
    ValueError: a CVR delta needs kind click or conversion, got 'view'
    """
    if not isinstance(delta, dict):
        raise ValueError(f"a CVR delta is an object, got {delta!r:.80}")
    if delta.get("kind") not in ("click", "conversion"):
        raise ValueError(f"a CVR delta needs kind click or conversion, got {delta.get('kind')!r}")
    wanted = {"ts_ms": int, "offset": int, "source": str, "delay_ms": int, "n": int}
    for name, kind in wanted.items():
        value = delta.get(name, OPTIONAL[name]) if name in OPTIONAL else delta.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"a CVR delta needs {name} as {kind.__name__}, got {value!r}")
    if delta.get("n", 1) < 1:
        raise ValueError(f"a CVR delta's n counts clicks, at least 1; got {delta['n']!r}")


def apply(state: dict | None, delta: dict, params: CvrParams) -> tuple[dict, bool]:
    """Apply one delta ``{kind, ts_ms, delay_ms, n, source, offset}``; returns (state, applied)."""
    state = state if state is not None else empty()
    source, offset = delta["source"], delta["offset"]
    if offset <= state["applied"].get(source, -1):
        return state, False
    state["applied"][source] = offset
    ts = delta["ts_ms"]
    if delta.get("group"):
        state["group"] = delta["group"]
    if delta["kind"] == "click":
        n = delta.get("n", 1)
        state["clicks"] = list(decay.add(tuple(state["clicks"]), ts, n, params.half_life_ms))
        bucket = str(ts - ts % params.bucket_ms)
        state["recent"][bucket] = state["recent"].get(bucket, 0) + n
        latest = max(int(b) for b in state["recent"])
        horizon = latest - params.window_ms - params.bucket_ms
        state["recent"] = {b: n for b, n in state["recent"].items() if int(b) >= horizon}
    else:
        state["conversions"] = list(
            decay.add(tuple(state["conversions"]), ts, 1.0, params.half_life_ms)
        )
        state["delays"][delay_bin(delta["delay_ms"])] += 1
    return state, True


def delay_bin(delay_ms: int) -> int:
    """The index of the log-spaced bin holding ``delay_ms``."""
    for i, edge in enumerate(DELAY_EDGES_MS):
        if delay_ms <= edge:
            return i
    return len(DELAY_EDGES_MS)


def _prior_cdf(delay_ms: float, params: CvrParams) -> float:
    if delay_ms <= 0:
        return 0.0
    z = (math.log(delay_ms) - math.log(params.prior_delay_median_ms)) / params.prior_delay_sigma
    top = (math.log(params.window_ms) - math.log(params.prior_delay_median_ms)) / (
        params.prior_delay_sigma
    )
    phi = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return min(phi / (0.5 * (1 + math.erf(top / math.sqrt(2)))), 1.0)


def delay_cdf(state: dict, age_ms: float, params: CvrParams) -> float:
    """P(delay <= age) for this setup: its delay histogram blended with the prior."""
    if age_ms >= params.window_ms:
        return 1.0
    counts = state["delays"]
    total = sum(counts)
    edges = [0, *DELAY_EDGES_MS, params.window_ms]
    below = 0.0
    for i, count in enumerate(counts):
        lo, hi = edges[i], max(edges[i + 1], edges[i] + 1)
        if age_ms >= hi:
            below += count
        elif age_ms > lo:
            below += count * (age_ms - lo) / (hi - lo)
    observed = below / total if total else 0.0
    w = params.prior_delay_weight
    return (total * observed + w * _prior_cdf(age_ms, params)) / (total + w)


def estimate(state: dict, now_ms: int, params: CvrParams) -> dict:
    """Decayed clicks and conversions at ``now_ms``, the raw ratio and the corrected CVR."""
    hl = params.half_life_ms
    clicks = decay.value_at(tuple(state["clicks"]), now_ms, hl)
    conversions = decay.value_at(tuple(state["conversions"]), now_ms, hl)
    immature = 0.0
    for bucket, count in state["recent"].items():
        age = now_ms - (int(bucket) + params.bucket_ms / 2)
        if age < params.window_ms:
            weight = 2.0 ** (-max(age, 0) / hl)
            immature += count * weight * (1.0 - delay_cdf(state, max(age, 0), params))
    mature = max(clicks - immature, 0.0)
    return {
        "clicks": clicks,
        "conversions": conversions,
        "mature_clicks": mature,
        "raw_cvr": conversions / clicks if clicks > 0 else None,
        "cvr": min(conversions / mature, 1.0) if mature > 0 else None,
        "as_of_ms": now_ms,
    }
