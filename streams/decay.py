"""Exponentially time-decayed sums in event time, as (value, reference time) pairs.

An event of weight w at time t adds ``w * 2 ** (-(T - t) / half_life)`` to the sum read at time
T. The pair keeps the sum as of its reference time, the latest event time applied; a late event
(t before the reference) is added with the decay its age calls for, so the result does not
depend on the order events arrive in (up to float rounding).

>>> s = add((0.0, 0), t=0, weight=1.0, half_life=10)
>>> s = add(s, t=10, weight=1.0, half_life=10)    # the first one has halved
>>> s
(1.5, 10)
>>> add(s, t=0, weight=1.0, half_life=10)          # a late event at t=0 counts one half
(2.0, 10)
>>> value_at(s, 20, half_life=10)
0.75
"""

from __future__ import annotations

Decayed = tuple[float, int]
ZERO: Decayed = (0.0, 0)


def add(state: Decayed, t: int, weight: float, half_life: float) -> Decayed:
    """The sum after an event of ``weight`` at event time ``t``."""
    value, ref = state
    if value == 0.0 and ref == 0:
        return (weight, t)
    if t >= ref:
        return (value * 2.0 ** (-(t - ref) / half_life) + weight, t)
    return (value + weight * 2.0 ** (-(ref - t) / half_life), ref)


def value_at(state: Decayed, t: int, half_life: float) -> float:
    """The sum read at event time ``t`` (not before its reference time)."""
    value, ref = state
    return value * 2.0 ** (-max(t - ref, 0) / half_life)
