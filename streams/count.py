"""The ``count`` agent's logic: a CVR-delta message read and checked, then applied to its
setup's state (``streams.cvr``), each delta at most once.

>>> params = cvr.CvrParams()
>>> value = cvr.message("s1", [{"kind": "click", "ts_ms": 5, "delay_ms": 0, "group": "",
...                             "source": "clicks:0:click", "offset": 7}])
>>> setup, entries = read(value)
>>> state, applied = apply(None, entries, params)
>>> setup, applied, apply(state, entries, params)[1]  # the same deltas again: skipped
('s1', [5], [])
>>> try:
...     read(b'{"setup_id": 3, "deltas": []}')
... except ContractError as error:
...     print(error)
cvr_delta: unreadable (TypeError('setup_id must be a string, got 3'))
"""

from __future__ import annotations

import orjson

from rarecvr.contracts import ContractError
from streams import cvr


def read(value: bytes) -> tuple[str, list[dict]]:
    """The setup and its deltas in a message of ``rarecvr.cvr-deltas`` (v2: many, v1: one),
    every delta checked before any is applied; a ``ContractError`` if it is unreadable (a
    poisoned record of the internal topic is set aside, not retried forever)."""
    try:
        message = orjson.loads(value)
        setup = message["setup_id"]
        if not isinstance(setup, str):
            raise TypeError(f"setup_id must be a string, got {setup!r:.80}")
        entries = message["deltas"] if message.get("v") == 2 else [message]
        for delta in entries:
            cvr.check(delta)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ContractError("cvr_delta", "", f"unreadable ({error!r})") from None
    return setup, entries


def apply(state: dict | None, entries: list[dict], params: cvr.CvrParams):
    """The setup's state after ``entries``, and the event times of the deltas applied (those
    already in the state are skipped)."""
    applied = []
    for delta in entries:
        state, fresh = cvr.apply(state, delta, params)
        if fresh:
            applied.append(delta["ts_ms"])
    return state, applied
