"""A local view of task assignments: the latest per setup, its history, and cold starts.

Pure logic behind :class:`stabilizer.reader.AssignmentReader`: records from the compacted topic
go in through :meth:`AssignmentView.apply` (a record with an older epoch than the one held is
ignored, so duplicates and replays change nothing), and questions come out:

>>> from rarecvr.contracts import TaskAssignment
>>> view = AssignmentView()
>>> ev = {"clicks": 5000.0, "conversions": 10.0, "group": "retail/purchase"}
>>> view.apply(TaskAssignment(setup_id="s1", task="hard", epoch=1, reason="cold_start",
...                           evidence=ev, valid_from_ms=100))
True
>>> view.apply(TaskAssignment(setup_id="s1", task="soft", epoch=2, reason="evidence_above_alpha",
...                           evidence=ev, valid_from_ms=500))
True
>>> view.task("s1"), view.task_as_of("s1", 200), view.task_as_of("s1", 900)
(('soft', 2), ('hard', 1), ('soft', 2))
>>> view.hard_as_of("s1", np.array([200, 900, 50])).tolist()  # many event times at once
[True, False, True]
>>> view.task("new-setup", group="retail/purchase")  # a setup never seen: its peers' answer
('hard', 0)
>>> view.task("new-setup")  # no peers either: the configured cold-start task
('soft', 0)
"""

from __future__ import annotations

import bisect

import numpy as np

from rarecvr.contracts import TaskAssignment
from stabilizer.policy import Evidence, PolicyParams, decide


class AssignmentView:
    """Latest assignment per setup (highest epoch wins) with the history seen since start."""

    def __init__(self, params: PolicyParams | None = None, settled: bool = False):
        self.params = params or PolicyParams()
        #: True where a reader thread calls :meth:`settle` after each batch of records: then a
        #: cold start on the request path reads a settled answer and never fits a prior
        self.settled = settled
        self._unsettled = False
        self.latest: dict[str, TaskAssignment] = {}
        self.history: dict[str, list[tuple[int, str, int]]] = {}  # (valid_from, task, epoch)
        self.book = self.params.peer_book()  #: each setup's latest evidence, by peer group
        self._cold: dict[str, str] = {}  #: cold-start answer by group, until the next record
        self.records = 0
        self.max_epoch = 0  #: the highest epoch applied (kept, not searched for per request)

    def apply(self, assignment: TaskAssignment) -> bool:
        """Take one record; False when it is not newer than the assignment held."""
        self.records += 1
        held = self.latest.get(assignment.setup_id)
        if held is not None and assignment.epoch <= held.epoch:
            return False
        self.latest[assignment.setup_id] = assignment
        self.max_epoch = max(self.max_epoch, assignment.epoch)
        steps = self.history.setdefault(assignment.setup_id, [])
        bisect.insort(steps, (assignment.valid_from_ms, assignment.task, assignment.epoch))
        group = str(assignment.evidence.get("group", ""))
        self.book.update(
            assignment.setup_id,
            group,
            float(assignment.evidence.get("clicks", 0.0)),
            float(assignment.evidence.get("conversions", 0.0)),
        )
        # The prior mixes in the population: every group's answer may move.
        if self.settled:
            self._unsettled = True
        else:
            self._cold.clear()
        return True

    def settle(self) -> None:
        """Work out every peer group's cold-start answer now, after records were applied."""
        if self._unsettled:
            self._unsettled = False
            groups = [group for group, members in self.book.groups.items() if members]
            self._cold = {group: self._cold_answer(group) for group in groups}

    def task(self, setup_id: str, group: str | None = None) -> tuple[str, int]:
        """(task, epoch) for routing now; epoch 0 marks a cold-start answer."""
        held = self.latest.get(setup_id)
        if held is not None:
            return held.task, held.epoch
        return self.cold_start(group), 0

    def judged(self, setup_id: str) -> str | None:
        """The setup's task where the stabilizer has decided it on the setup's own evidence
        (None: never seen, or only a cold-start answer from its peers)."""
        held = self.latest.get(setup_id)
        return None if held is None or held.reason == "cold_start" else held.task

    def task_as_of(self, setup_id: str, ts_ms: int, group: str | None = None) -> tuple[str, int]:
        """(task, epoch) that held at event time ``ts_ms`` (the earliest known before that)."""
        steps = self.history.get(setup_id)
        if not steps:
            return self.cold_start(group), 0
        i = bisect.bisect_right(steps, (ts_ms, "~", float("inf"))) - 1
        _, task, epoch = steps[max(i, 0)]
        return task, epoch

    def hard_as_of(self, setup_id: str, ts_ms: np.ndarray, group: str | None = None) -> np.ndarray:
        """Whether the setup was hard at each of these event times (as ``task_as_of``)."""
        steps = self.history.get(setup_id)
        if not steps:
            return np.full(len(ts_ms), self.cold_start(group) == "hard")
        starts = np.array([valid_from for valid_from, _, _ in steps])
        hard = np.array([task == "hard" for _, task, _ in steps])
        return hard[np.maximum(np.searchsorted(starts, ts_ms, side="right") - 1, 0)]

    def cold_start(self, group: str | None) -> str:
        """The stabilizer's answer for a setup never seen: from its peer group's evidence."""
        group = group or ""
        if not self.book.groups.get(group):
            return self.params.cold_start_task
        task = self._cold.get(group)
        if task is None:  # kept in a local: the reader's thread may replace the cache meanwhile
            task = self._cold[group] = self._cold_answer(group)
        return task

    def _cold_answer(self, group: str) -> str:
        prior = self.book.prior(group) or self.params.default_prior()
        return decide(None, Evidence(0.0, 0.0), prior, 0, self.params).task

    def snapshot(self) -> dict[str, dict]:
        return {setup: a.model_dump() for setup, a in self.latest.items()}
