"""Which graph scores each candidate: its setup's task from the local assignment view.

>>> from stabilizer.view import AssignmentView
>>> from rarecvr.contracts import TaskAssignment
>>> view = AssignmentView()
>>> _ = view.apply(TaskAssignment(setup_id="s1", task="hard", epoch=4, reason="r",
...                               evidence={}, valid_from_ms=0))
>>> route([{"setup_id": "s1", "features": {}}, {"setup_id": "s9", "features": {}}], view)
(['hard', 'soft'], [4, 0])
"""

from __future__ import annotations

from rarecvr.contracts import peer_group


def route(candidates: list[dict], view) -> tuple[list[str], list[int]]:
    """(task, assignment epoch) per candidate; a setup never seen gets the cold-start answer
    of its peer group (epoch 0)."""
    tasks, epochs = [], []
    for candidate in candidates:
        task, epoch = view.task(candidate["setup_id"], peer_group(candidate["features"]))
        tasks.append(task)
        epochs.append(epoch)
    return tasks, epochs
