"""The stream worker: a Faust app whose agents turn clicks and conversions into labeled
examples and per-setup CVR state, with tables in RocksDB (rocksdict).

Agents and what connects them::

    rarecvr.clicks + rarecvr.conversions ─> attribute ─> rarecvr.labeled-examples
        (keyed by click id, co-partitioned)     │   └──> rarecvr.dead-letters
                                                └──> rarecvr.cvr-deltas ─> count ─> setup CVR

A source record holds one event or many, one a line (``docs/events.md``, record format 2); each
line is applied as an event of its own. The ``attribute`` agent works in steps of many events
(``streams.step``): each table key it
changed is written once a step, then the step's outputs are sent. Outputs are buffered
(``send_soon``), not awaited one by one: Faust flushes the producer before it commits offsets,
which is the guarantee that matters. They share Faust's producer buffer with
the tables' changelogs, so a label is never delivered ahead of the state change that caused it
(sending labels straight to the Kafka producer was faster, but a worker taking over partitions
then restored a state without its conversion while the label was out: a conflicting label).
Correctness does not rest on Faust's exactly-once: outputs are sent at least once and
recognised downstream by click id, and every table update is idempotent (see
``streams.attribution.apply_event`` and ``streams.cvr.apply``). After an unclean stop the local
RocksDB copy is discarded and tables are restored from their changelogs, which hold everything
up to the last committed offset (Faust flushes the producer before committing).
"""

from __future__ import annotations

import base64
import heapq
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import faust
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP
from kafka.admin import NewTopic
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rarecvr import kafka_auth, settings
from rarecvr.contracts import (
    Click,
    ContractError,
    Conversion,
    DeadLetter,
    decode,
    encode,
    join_lines,
    split_lines,
)
from rarecvr.topics import (
    CLICKS,
    CONVERSIONS,
    CVR_DELTAS,
    DEAD_LETTERS,
    EVENT_PARTITIONS,
    LABELED_EXAMPLES,
    create_missing,
)
from streams import cvr, faust_commit, metrics
from streams.attribution import (
    Count,
    CvrDelta,
    Label,
    Rules,
    apply_event,
    deadline,
    forgettable,
    label_effects,
    on_watermark,
)
from streams.step import Step
from streams.watermark import Watermark

STREAMS = ("clicks", "conversions")
SOURCE_TOPICS = {"clicks": CLICKS.name, "conversions": CONVERSIONS.name}
CLEAN_MARK = ".clean-shutdown"


@dataclass(frozen=True)
class WorkerConfig:
    """Where a worker connects, keeps its tables and serves; and the stream rules."""

    bootstrap: str
    data_dir: Path
    web_port: int = 6066
    app_id: str | None = None  #: default: the topic prefix and "streams"
    rules: Rules = field(default_factory=Rules)
    cvr: cvr.CvrParams = field(default_factory=cvr.CvrParams)
    commit_interval_s: float = 1.0
    #: Events per agent step: the step's table writes and outputs are sent once per key and
    #: setup (``streams.step``). Records taken at a time (``stream.take_events``, a record holds
    #: one event or many) and how long a take waits to fill; a take of batched records is cut
    #: into steps of ``step_events``, so a step's buffer stays bounded whatever the records hold.
    step_events: int = 10_000
    step_records: int = 1_000
    step_within_s: float = 0.5
    #: How soon the group notices a worker that died: its partitions wait this long.
    session_timeout_s: float = 10.0


def create_changelogs(app: faust.App, bootstrap: str) -> list[str]:
    """Create the tables' changelog topics before the worker starts; return those created.

    Faust creates them itself as it starts, but when the broker is not ready for that yet (the
    first seconds of a fresh broker) it logs "Ignoring missing topic" and goes on, and every
    write to that table then crashes its agent (``PartitionsMismatch``, 0 partitions): in one
    CI run of the demo the stabilizer's table had no changelog and no setup was ever hard.
    """
    compact = {"cleanup.policy": "compact"}
    return create_missing(
        bootstrap,
        [
            NewTopic(
                t.changelog_topic.get_topic_name(),
                t.changelog_topic.partitions,
                1,
                topic_configs=compact,
            )
            for t in app.tables.values()
        ],
    )


def prepare_data_dir(data_dir: Path) -> bool:
    """Discard local tables unless the last stop was clean; True if they were discarded."""
    data_dir.mkdir(parents=True, exist_ok=True)
    mark = data_dir / CLEAN_MARK
    tables = [p for p in data_dir.iterdir() if p.is_dir()]
    discarded = bool(tables) and not mark.exists()
    if discarded:
        for path in tables:
            shutil.rmtree(path)
    mark.unlink(missing_ok=True)
    return discarded


def mark_clean(data_dir: Path) -> None:
    (data_dir / CLEAN_MARK).write_text("the worker stopped cleanly; its tables are current\n")


#: Lines a record may hold, for the CVR deltas' offsets (``delta_offset``).
LINES_PER_RECORD = 1 << 20


def delta_offset(source: list) -> int:
    """What orders the CVR deltas of one source partition: the record's offset, then the
    event's line in it.

    >>> delta_offset(["clicks", 0, 7, 0]) < delta_offset(["clicks", 0, 7, 3]) < delta_offset(
    ...     ["clicks", 0, 8, 0])
    True
    """
    return source[2] * LINES_PER_RECORD + source[3]


def delta_entry(effect: CvrDelta, source: str, offset: int) -> dict:
    """One CVR delta; ``source`` and ``offset`` (of the event that caused it) make it unique."""
    return {
        "kind": effect.kind,
        "ts_ms": effect.ts_ms,
        "delay_ms": effect.delay_ms,
        "source": source,
        "offset": offset,
        "group": effect.group,
    }


class Partitions:
    """Per source partition: the watermark, a heap of (deadline, click id) to expire, and the
    closed states kept until their records are committed (``attribution.forgettable``)."""

    def __init__(self):
        self.watermarks: dict[int, Watermark] = {}
        self.heaps: dict[int, list] = {}
        self.closed: dict[int, list] = {}
        self.progress: dict[int, tuple] = {}  #: committed offsets when ``closed`` was checked
        #: (stream, partition) -> the last offset this process applied: its local tables are
        #: current up to there, whatever the committed offsets say
        self.applied: dict[tuple[str, int], int] = {}
        self.committed: dict[TP, int] = {}  #: as asked of the broker at the last assignment
        self.stale = True


def create_app(cfg: WorkerConfig) -> faust.App:
    """The Faust app of one worker process."""
    app = faust.App(
        cfg.app_id or settings.topic_prefix() + "streams",
        broker=f"kafka://{cfg.bootstrap}",
        store="rocksdb://",
        datadir=str(cfg.data_dir),
        web_port=cfg.web_port,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        topic_partitions=EVENT_PARTITIONS,
        topic_replication_factor=1,
        table_standby_replicas=0,
        broker_commit_interval=cfg.commit_interval_s,
        broker_session_timeout=cfg.session_timeout_s,
        broker_heartbeat_interval=min(3.0, cfg.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=5,
        producer_max_batch_size=512 * 1024,
        **kafka_auth.auth_for(cfg.bootstrap).faust(),
    )
    app.transport = faust_commit.Transport(app.conf.broker_consumer, app)
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(CLICKS.name, CONVERSIONS.name, **raw)
    labeled = app.topic(LABELED_EXAMPLES.name, **raw)
    deltas = app.topic(CVR_DELTAS.name, partitions=CVR_DELTAS.partitions, **raw)
    dead = app.topic(DEAD_LETTERS.name, **raw)
    table = {
        "partitions": EVENT_PARTITIONS,
        "options": {"driver": "rocksdict"},
        "schema": faust.Schema(key_serializer="raw", value_serializer="json"),
    }
    states = app.Table("click-states", default=None, **table)
    marks = app.Table("watermarks", default=None, **table)
    setups = app.Table("setup-cvr", default=None, **table)
    rules, params = cfg.rules, cfg.cvr
    parts = Partitions()

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs):  # noqa: ARG001
        parts.stale = True
        # Asked here, while the flow is stopped, not on the agent's path: nothing is processed
        # between an assignment and the reload, so these are where reading resumes.
        parts.committed = await committed_offsets()

    @states.on_recover
    async def on_recovered():
        parts.stale = True  # rebuild the index from the tables as recovered

    def collect(step: Step, effects: list, source: list) -> None:
        """Hold the effects of the event read at ``source`` in the step: labels and CVR deltas
        to send, counts."""
        kind, partition = source[0], source[1]
        for effect in effects:
            if isinstance(effect, Label):
                step.label(partition, effect.example)
            elif isinstance(effect, CvrDelta):
                step.delta(
                    effect.setup_id,
                    delta_entry(effect, f"{kind}:{partition}:{effect.kind}", delta_offset(source)),
                )
            elif isinstance(effect, Count):
                metrics.OUTCOMES.labels(effect.name).inc()

    def finish(stream, step: Step, moved: dict) -> None:
        """Write the step's states and the watermarks that ``moved`` (partition -> an event of
        it), then send its labels (each partition's, many a record, to the labeled-examples
        partition of the same number) and CVR deltas."""
        for key, value, event in step.writes():
            stream._set_current_event(event)  # a table write goes to the current event's partition
            if value is None:
                del states[key]
            else:
                states[key] = value
        for p, event in moved.items():
            stream._set_current_event(event)
            marks[str(p)] = parts.watermarks[p].saved()
        for p, examples in step.labels.items():
            for value in join_lines(map(orjson.dumps, examples)):
                labeled.send_soon(
                    key=str(p).encode(), value=value, partition=p % LABELED_EXAMPLES.partitions
                )
            for label, n in Counter(example["label"] for example in examples).items():
                metrics.LABELS.labels(str(label)).inc(n)
        for setup_id, entries in step.deltas.items():
            deltas.send_soon(key=setup_id.encode(), value=cvr.message(setup_id, entries))

    async def committed_offsets() -> dict[TP, int]:
        """The group's committed offsets, asked of the broker. (The consumer's own record of
        them is not filled in for partitions it was just given.)"""
        admin = AIOKafkaAdminClient(**kafka_auth.aiokafka(cfg.bootstrap))
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(app.conf.id)
        finally:
            await admin.close()
        return {
            TP(tp.topic, tp.partition): meta.offset
            for tp, meta in offsets.items()
            if meta.offset >= 0
        }

    def reload(step: Step) -> None:
        """Rebuild watermarks and expiry heaps from the tables after a (re)assignment.

        Labels caused by records at or after the committed offset are sent again: the tables
        may hold their state while their sends were never delivered. A watermark saved past the
        committed offsets holds until those records are read again (``Watermark.restore``).
        """
        parts.watermarks.clear()
        parts.heaps.clear()
        parts.closed.clear()
        parts.progress.clear()
        committed = parts.committed
        resent = 0
        for key, state in states.items():
            p = state["p"]
            if state.get("closed"):
                parts.closed.setdefault(p, []).append(key)
            else:
                heapq.heappush(parts.heaps.setdefault(p, []), (deadline(state, rules), key))
            src = state.get("label_src")
            if src and state.get("label") is not None:
                done = committed.get(TP(SOURCE_TOPICS[src[0]], p), 0)
                if src[2] >= done - 1:
                    for effect in label_effects(state):
                        if isinstance(effect, Label):
                            step.label(p, effect.example)
                    metrics.OUTCOMES.labels("label_resent_after_restart").inc()
                    resent += 1
        for key, saved in marks.items():
            p = int(key)
            resume_at = {
                kind: max(committed.get(TP(topic, p), 0), parts.applied.get((kind, p), -1) + 1)
                for kind, topic in SOURCE_TOPICS.items()
            }
            parts.watermarks[p] = Watermark.restore(
                saved, STREAMS, rules.allowed_lateness_ms, resume_at
            )
        parts.stale = False
        app.log.warning(
            "reloaded %d states, resent %d labels; committed %r; watermarks %r",
            len(states),
            resent,
            dict(committed),
            {p: w.saved() | {"hold": w.hold} for p, w in parts.watermarks.items()},
        )

    def committed(kind: str, p: int) -> int:
        tp = TP(SOURCE_TOPICS[kind], p)
        return max(parts.committed.get(tp, 0), app.consumer._committed_offset.get(tp) or 0)

    def forget(step: Step, p: int, keys: list, event) -> None:
        """Delete the closed states whose records are all committed; keep the others. (Checked
        again only after a commit: a state just closed holds a record not yet committed.)"""
        progress = tuple(committed(kind, p) for kind in STREAMS)
        if parts.progress.get(p) == progress:
            parts.closed[p] = keys
            return
        parts.progress[p] = progress
        kept = []
        for key in keys:
            state = step.get(key)
            if state is None or not state.get("closed"):
                continue  # deleted, or a new event started it over
            if forgettable(state, committed):
                step.delete(key, event)
            else:
                kept.append(key)
        parts.closed[p] = kept

    def expire(step: Step, p: int, watermark: int, source: list, event) -> None:
        heap = parts.heaps.setdefault(p, [])
        closed = parts.closed.get(p, [])
        while heap and heap[0][0] <= watermark:
            _, key = heapq.heappop(heap)
            state = step.get(key)
            if state is None:
                continue
            due = deadline(state, rules)
            if due > watermark:
                heapq.heappush(heap, (due, key))
                continue
            new, effects = on_watermark(state, watermark, rules)
            if new is None:
                step.put(key, dict(state, closed=dict(parts.watermarks[p].offsets)), event)
                closed.append(key)
            else:
                if effects:
                    new["label_src"] = source
                step.put(key, new, event)
                heapq.heappush(heap, (deadline(new, rules), key))
            collect(step, effects, source)
        forget(step, p, closed, event)
        metrics.PENDING.labels(str(p)).set(len(heap))

    def dead_letter(message, value: bytes, error: ContractError, line: int = 0) -> None:
        letter = DeadLetter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            line=line,
            reason=error.reason,
            detail=str(error),
            raw_b64=base64.b64encode(value or b"").decode(),
        )
        dead.send_soon(key=message.key, value=encode(letter))
        metrics.DEAD_LETTERS.labels(error.metric_label).inc()

    def attribute_record(stream, step: Step, event, moved: dict, kinds: Counter) -> None:
        """Apply each event (line) of a record to the step, counting them by kind."""
        message = event.message
        kind = "clicks" if message.topic == CLICKS.name else "conversions"
        stream._set_current_event(event)  # table reads look in the event's partition
        for line, raw in enumerate(split_lines(event.value or b"") or [event.value or b""]):
            try:
                parsed = decode(Click if kind == "clicks" else Conversion, raw)
            except ContractError as error:
                dead_letter(message, raw, error, line)
                continue
            attribute_one(step, event, kind, parsed, line, moved)
            kinds[kind] += 1
        parts.applied[kind, message.partition] = message.offset

    def attribute_one(step: Step, event, kind: str, parsed, line: int, moved: dict) -> None:
        """Apply one event, line ``line`` of its record, to the step."""
        message = event.message
        p = message.partition
        wm = parts.watermarks.setdefault(p, Watermark(STREAMS, rules.allowed_lateness_ms))
        if wm.is_late(kind, parsed.ts_ms):
            metrics.LATE.labels(kind).inc()
        key = parsed.event_id if kind == "clicks" else parsed.click_id
        source = [kind, p, message.offset, line]
        old = step.get(key)
        new, effects, replayed = apply_event(old, kind, parsed.model_dump(), source, rules)
        if replayed:
            metrics.OUTCOMES.labels("replayed_after_restart").inc()
        elif new is not old:
            new["p"] = p
            step.put(key, new, event)
            heapq.heappush(parts.heaps.setdefault(p, []), (deadline(new, rules), key))
        collect(step, effects, source)
        if wm.observe(kind, parsed.ts_ms, message.offset):
            moved[p] = event
            expire(step, p, wm.value, source, event)
            delay = max(wm.latest.values()) - wm.value
            metrics.WATERMARK_DELAY.labels(str(p)).set(delay / 1000)

    @app.agent(source, name="attribute")
    async def attribute(stream):
        async for records in stream.take_events(cfg.step_records, within=cfg.step_within_s):
            step, moved, kinds = Step(states.get), {}, Counter()
            if parts.stale:
                reload(step)
            for i, event in enumerate(records):
                attribute_record(stream, step, event, moved, kinds)
                if kinds.total() >= cfg.step_events or i == len(records) - 1:
                    # every step's writes and outputs are handed to the producer before the
                    # take's records are acknowledged
                    finish(stream, step, moved)
                    for kind, n in kinds.items():
                        metrics.EVENTS.labels(kind).inc(n)
                    step, moved, kinds = Step(states.get), {}, Counter()
            if not records:
                finish(stream, step, moved)  # what a reload resends

    @app.agent(deltas, name="count")
    async def count(stream):
        async for event in stream.events():
            try:
                message = orjson.loads(event.value)
                setup = message["setup_id"]
                if not isinstance(setup, str):
                    raise TypeError(f"setup_id must be a string, got {setup!r:.80}")
                entries = message["deltas"] if message.get("v") == 2 else [message]  # v1: one
                state, applied = setups.get(setup), []
                for delta in entries:
                    cvr.check(delta)  # every delta, before any is applied
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                # A poisoned record of the internal topic is set aside, not retried forever.
                problem = ContractError("cvr_delta", "", f"unreadable ({error!r})")
                dead_letter(event.message, event.value, problem)
                continue
            if state is None:
                metrics.SETUPS.inc()
            for delta in entries:
                state, fresh = cvr.apply(state, delta, params)
                if fresh:
                    applied.append(delta["ts_ms"])
            if applied:
                setups[setup] = state
                for listener in app.rarecvr_cvr_listeners:
                    await listener(setup, state, max(applied))
            metrics.CVR_UPDATES.labels("applied").inc(len(applied))
            metrics.CVR_UPDATES.labels("replay_skipped").inc(len(entries) - len(applied))

    @app.page("/cvr/{setup_id}")
    @app.table_route(table=setups, match_info="setup_id")
    async def cvr_view(web, request, setup_id):  # noqa: ARG001
        state = setups.get(setup_id)
        if state is None:
            return web.json({"error": f"no CVR state for setup {setup_id!r}"}, status=404)
        now = max(state["clicks"][1], state["conversions"][1])
        return web.json({"setup_id": setup_id} | cvr.estimate(state, now, params))

    @app.page("/metrics")
    async def metrics_view(web, request):  # noqa: ARG001
        for tp in app.consumer.assignment():
            position = await app.consumer.position(tp)
            highwater = app.consumer.highwater(tp)
            if position is not None and highwater is not None:
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(highwater - position, 0))
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web, request):  # noqa: ARG001
        return web.json({"ok": True})

    app.rarecvr_tables = {"states": states, "marks": marks, "setups": setups}
    #: ``async f(setup_id, state, ts_ms)`` called after each applied CVR update (the stabilizer).
    app.rarecvr_cvr_listeners = []
    return app
