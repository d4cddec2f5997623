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
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import faust
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP
from kafka.admin import NewTopic

from rarecvr import kafka_auth, settings
from rarecvr.contracts import ContractError, DeadLetter, encode, join_lines
from rarecvr.topics import (
    CLICKS,
    CONVERSIONS,
    CVR_DELTAS,
    DEAD_LETTERS,
    EVENT_PARTITIONS,
    LABELED_EXAMPLES,
    create_missing,
)
from streams import count, cvr, faust_commit, metrics
from streams.attribution import Rules
from streams.attributor import Attributor
from streams.clickstore import ClickStore
from streams.recovery import recover
from streams.step import Step
from streams.views import add_views

SOURCE_TOPICS = {"clicks": CLICKS.name, "conversions": CONVERSIONS.name}
CLEAN_MARK = ".clean-shutdown"
#: The largest changelog record: a bundle of clicks with many features (``streams.clickstore``).
MAX_RECORD_BYTES = 8 * 1024 * 1024


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
    compact = {"cleanup.policy": "compact", "max.message.bytes": str(MAX_RECORD_BYTES)}
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


class Progress:
    """Where reading stands, as the Faust glue knows it: the group's committed offsets asked
    of the broker at the last assignment, and whether the attributor must be rebuilt from the
    tables before the next step (after an assignment or a table recovery)."""

    def __init__(self):
        self.committed: dict[TP, int] = {}
        self.stale = True


@dataclass(frozen=True)
class Tables:
    states: faust.Table  #: click states, many a value (``streams.clickstore``)
    marks: faust.Table  #: partition -> its saved watermark
    setups: faust.Table  #: setup id -> its CVR state (``streams.cvr``)


def create_app(cfg: WorkerConfig, cvr_listeners: list) -> tuple[faust.App, Tables]:
    """The Faust app of one worker process and its tables. ``cvr_listeners``: ``async f(setup_id,
    state, ts_ms)`` called after each applied CVR update (the stabilizer), read as they are
    called, so a listener may be added after the app is made."""
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
        producer_max_request_size=MAX_RECORD_BYTES,
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
    tables = Tables(
        states=app.Table("click-bundles", default=None, **table),
        marks=app.Table("watermarks", default=None, **table),
        setups=app.Table("setup-cvr", default=None, **table),
    )
    states, marks, setups = tables.states, tables.marks, tables.setups
    store = ClickStore(states)
    attributor, progress = Attributor(cfg.rules), Progress()

    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs):  # noqa: ARG001
        progress.stale = True
        # Asked here, while the flow is stopped, not on the agent's path: nothing is processed
        # between an assignment and the reload, so these are where reading resumes.
        progress.committed = await committed_offsets(app, cfg.bootstrap)

    @states.on_recover
    async def on_recovered():
        progress.stale = True  # rebuild the index from the tables as recovered

    def committed(kind: str, p: int) -> int:
        """The next offset to read of ``kind`` in partition ``p``: as asked at the assignment,
        or as the consumer committed since."""
        tp = TP(SOURCE_TOPICS[kind], p)
        return max(progress.committed.get(tp, 0), app.consumer._committed_offset.get(tp) or 0)

    def reload(step: Step) -> None:
        store.rebuild()
        recovered = recover(
            store.items(),
            marks.items(),
            progress.committed,
            SOURCE_TOPICS,
            attributor.applied,
            cfg.rules,
        )
        attributor.restore(recovered, step)
        progress.stale = False
        app.log.warning(
            "reloaded %d states, resent %d labels; committed %r; watermarks %r",
            len(store),
            len(recovered.resend),
            dict(progress.committed),
            {p: w.saved() | {"hold": w.hold} for p, w in recovered.watermarks.items()},
        )

    def finish(stream, step: Step) -> None:
        """Write the step's states and the watermarks that moved, then send its labels (each
        partition's, many a record, to the labeled-examples partition of the same number) and
        CVR deltas."""
        for key, value, event in store.write(step.writes()):
            stream._set_current_event(event)  # a table write goes to the current event's partition
            if value is None:
                del states[key]
            else:
                states[key] = value
        for p, event in step.watermarks.items():
            stream._set_current_event(event)
            marks[str(p)] = attributor.watermarks[p].saved()
        for p, examples in step.labels.items():
            for value in join_lines(map(orjson.dumps, examples)):
                labeled.send_soon(
                    key=str(p).encode(), value=value, partition=p % LABELED_EXAMPLES.partitions
                )
            for label, n in Counter(example["label"] for example in examples).items():
                metrics.LABELS.labels(str(label)).inc(n)
        for setup_id, entries in step.deltas.items():
            deltas.send_soon(key=setup_id.encode(), value=cvr.message(setup_id, entries))

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

    @app.agent(source, name="attribute")
    async def attribute(stream):
        async for records in stream.take_events(cfg.step_records, within=cfg.step_within_s):
            step, kinds = Step(store.get), Counter()
            if progress.stale:
                reload(step)
            for i, event in enumerate(records):
                message = event.message
                kind = "clicks" if message.topic == CLICKS.name else "conversions"
                stream._set_current_event(event)  # table reads look in the event's partition
                n, bad = attributor.record(
                    step, kind, message.partition, message.offset, event.value, event, committed
                )
                kinds[kind] += n
                for line, raw, error in bad:
                    dead_letter(message, raw, error, line)
                if kinds.total() >= cfg.step_events or i == len(records) - 1:
                    # every step's writes and outputs are handed to the producer before the
                    # take's records are acknowledged
                    finish(stream, step)
                    for kind, n in kinds.items():
                        metrics.EVENTS.labels(kind).inc(n)
                    step, kinds = Step(store.get), Counter()
            if not records:
                finish(stream, step)  # what a reload resends

    @app.agent(deltas, name="count")
    async def count_deltas(stream):
        async for event in stream.events():
            try:
                setup, entries = count.read(event.value)
            except ContractError as problem:
                dead_letter(event.message, event.value, problem)
                continue
            state = setups.get(setup)
            if state is None:
                metrics.SETUPS.inc()
            state, applied = count.apply(state, entries, cfg.cvr)
            if applied:
                setups[setup] = state
                for listener in cvr_listeners:
                    await listener(setup, state, max(applied))
            metrics.CVR_UPDATES.labels("applied").inc(len(applied))
            metrics.CVR_UPDATES.labels("replay_skipped").inc(len(entries) - len(applied))

    add_views(app, setups, cfg.cvr)
    return app, tables


async def committed_offsets(app: faust.App, bootstrap: str) -> dict[TP, int]:
    """The group's committed offsets, asked of the broker. (The consumer's own record of them
    is not filled in for partitions it was just given.)"""
    admin = AIOKafkaAdminClient(**kafka_auth.aiokafka(bootstrap))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(app.conf.id)
    finally:
        await admin.close()
    return {
        TP(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0
    }
