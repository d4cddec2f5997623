"""The stabilizer inside a stream worker: re-decide a setup's task when its CVR state changes.

The worker's ``count`` agent calls :meth:`Stabilizer.on_cvr` after each CVR update (so table
writes happen inside stream iteration, on the setup's own partition). Decisions are in event time
and at most once per ``eval_every_ms`` per setup. Only changes are written: to the
``task-assignments`` table (whose changelog survives a crash) and to the compacted
``rarecvr.task-assignments`` topic, keyed by setup id. After partitions are (re)assigned the table's
assignments are sent again unchanged, same epoch, so a send lost in a crash is repaired and a
reader sees nothing new.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from rarecvr.contracts import TaskAssignment, encode
from rarecvr.topics import TASK_ASSIGNMENTS
from rarecvr.units import HOUR_MS
from stabilizer import metrics
from stabilizer.policy import Evidence, PolicyParams, decide
from streams import cvr

Publish = Callable[[str, bytes, bytes], Awaitable[None]]


class Stabilizer:
    """Policy state of one worker: its peers' evidence and the assignments table."""

    def __init__(
        self,
        assignments,
        setups,
        params: PolicyParams,
        cvr_params: cvr.CvrParams,
        publish: Publish,
        eval_every_ms: int = 10 * 60_000,
    ):
        self.assignments, self.setups = assignments, setups
        self.params, self.cvr_params, self.publish = params, cvr_params, publish
        self.eval_every_ms = eval_every_ms
        self.book = params.peer_book()
        self.last_eval: dict[str, int] = {}
        self.tasks: dict[str, str] = {}  #: the assignments table's tasks, for the hard share
        self.stale = True

    def evidence(self, state: dict, now_ms: int) -> Evidence:
        estimate = cvr.estimate(state, now_ms, self.cvr_params)
        return Evidence(estimate["mature_clicks"], estimate["conversions"])

    async def recover(self) -> None:
        """Refill the peers' evidence from the CVR table and resend the current assignments."""
        for setup_id, state in self.setups.items():
            now = max(state["clicks"][1], state["conversions"][1])
            ev = self.evidence(state, now)
            self.book.update(setup_id, state.get("group", ""), ev.clicks, ev.conversions)
        self.tasks = {}
        for setup_id, raw in self.assignments.items():
            self.tasks[setup_id] = raw["task"]
            await self.publish(
                TASK_ASSIGNMENTS.name, setup_id.encode(), encode(TaskAssignment.model_validate(raw))
            )
        self.stale = False

    async def on_cvr(self, setup_id: str, state: dict, now_ms: int) -> TaskAssignment | None:
        """Apply the policy to a setup whose CVR state changed at event time ``now_ms``."""
        if self.stale:
            await self.recover()
        if now_ms - self.last_eval.get(setup_id, -self.eval_every_ms) < self.eval_every_ms:
            return None
        self.last_eval[setup_id] = now_ms
        group = state.get("group", "")
        evidence = self.evidence(state, now_ms)
        self.book.update(setup_id, group, evidence.clicks, evidence.conversions)
        prior = self.book.prior(group) or self.params.default_prior()
        raw = self.assignments.get(setup_id)
        current = TaskAssignment.model_validate(raw) if raw else None
        new = decide(current, evidence, prior, now_ms, self.params, setup_id)
        if new is None:
            return None
        new = new.model_copy(update={"evidence": new.evidence | {"group": group}})
        self.assignments[setup_id] = new.model_dump()
        self.tasks[setup_id] = new.task
        await self.publish(TASK_ASSIGNMENTS.name, setup_id.encode(), encode(new))
        if current is None:
            metrics.COLD_STARTS.inc()
        else:
            metrics.FLIPS.labels(f"{current.task}_to_{new.task}").inc()
            metrics.DWELL.observe((now_ms - current.valid_from_ms) / HOUR_MS)
        metrics.HARD_SHARE.set(self.hard_share() or 0.0)
        return new

    def hard_share(self) -> float | None:
        tasks = list(self.tasks.values())
        return tasks.count("hard") / len(tasks) if tasks else None


def attach(app, setups, params: PolicyParams, cvr_params: cvr.CvrParams) -> Stabilizer:
    """Run the stabilizer in a stream worker app (see ``streams.worker.create_app``) beside its
    setup-CVR table ``setups``; the caller passes ``Stabilizer.on_cvr`` to the worker's CVR
    listeners."""
    import faust

    from rarecvr.topics import CVR_DELTAS

    assignments = app.Table(
        "task-assignments",
        default=None,
        partitions=CVR_DELTAS.partitions,
        options={"driver": "rocksdict"},
        schema=faust.Schema(key_serializer="raw", value_serializer="json"),
    )

    async def publish(topic: str, key: bytes, value: bytes) -> None:
        await app.producer.send(topic, key, value, None, None, None)

    stabilizer = Stabilizer(assignments, setups, params, cvr_params, publish)

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs):  # noqa: ARG001
        stabilizer.stale = True

    @app.page("/assignments")
    async def assignments_view(web, request):
        """A page of assignments in setup-id order: ``?after=SETUP&limit=N`` (at most 10,000;
        default 1,000); ``next`` is the ``after`` of the next page, null on the last."""
        try:
            limit = min(int(request.query.get("limit", 1000)), 10_000)
        except ValueError:
            return web.json({"error": "limit must be an integer"}, status=400)
        after = request.query.get("after", "")
        keys = sorted(k for k in assignments if k > after)
        page = {key: assignments[key] for key in keys[: max(limit, 1)]}
        more = len(keys) > len(page)
        return web.json({"assignments": page, "next": max(page) if more else None})

    return stabilizer
