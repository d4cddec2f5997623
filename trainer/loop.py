"""``rarecvr train``: windows of labeled examples in, validated hard-only graphs out.

For each window (see ``trainer.windows``):

1. every example takes its setup's task as of its click time from the assignments topic;
2. the serving model is scored on the window before it trains on it (progressive validation:
   its honest out-of-sample figures);
3. a candidate is warm-started from the last good checkpoint (weights and optimizer state) and
   trained on the window less its held-out tail;
4. the tail's hard examples join the holdout (``trainer.holdout``: the hard examples of recent
   tails, never trained on), and the gate compares candidate, serving model and a constant on it
   (``trainer.gate``); a candidate that passes is checkpointed, published to the registry, and
   announced on ``rarecvr.model-updates``. A rejected one is logged, counted and dropped: the
   next window starts again from the last good checkpoint, so one bad window cannot poison the
   next. A serving model that scores below a constant on a fresh window (progressively, with
   confidence) is reported in the window's entry and by a metric.

Crash safety: the trainer's state (next window, its start offsets and earliest event time, last
good checkpoint, history) is one file replaced atomically after each window; Kafka offsets are
committed too, but only for lag monitoring, the state file is the truth. A version published
just before a crash carries the same state in its manifest and is adopted at restart, so no
window is trained twice or skipped.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from kafka import KafkaProducer
from kafka.errors import KafkaError

from model.dcn import SINGLE_TASK, ModelConfig, build
from model.export import export_version
from model.tasks import TaskRule
from model.training import predict_tasks
from rarecvr import kafka_auth
from rarecvr.contracts import DeadLetter, encode
from rarecvr.files import atomic_write
from rarecvr.logfile import HistoryLog
from rarecvr.registry import Registry
from rarecvr.schema import FeatureSchema
from rarecvr.topics import DEAD_LETTERS, LABELED_EXAMPLES, MODEL_UPDATES
from rarecvr.units import DAY_MS
from stabilizer.reader import AssignmentReader
from trainer import checkpoint, history, metrics
from trainer.drift import LossDrift
from trainer.examples import Examples, parse
from trainer.features import drift_message
from trainer.feed import ExampleFeed
from trainer.gate import GateParams, implausible, judge, score_hard, vs_constant, vs_serving
from trainer.holdout import Holdout
from trainer.window_run import WindowRun
from trainer.windows import QuietPartitions, WindowAssembler

log = logging.getLogger("rarecvr.trainer")
HISTORY = -1  #: the window number of a version fitted on a history log


@dataclass(frozen=True)
class TrainerConfig:
    bootstrap: str
    registry: Path
    state_dir: Path
    model: ModelConfig
    window_ms: int = 6 * 3_600_000
    attribution_window_ms: int = 7 * DAY_MS
    gate: GateParams = field(default_factory=GateParams)
    batch: int = 1024  #: small: a window is a few hundred steps, not a few
    #: Examples handed to the window's training at a time while it fills (one ``fit`` takes
    #: them all, so a small chunk starts training early). Little is read ahead: on 2 cores
    #: reading beside training slows training more than overlapping them gains (BENCHMARKS.md).
    chunk: int = 65_536
    read_ahead: int = 2  #: blocks (a partition's records of a fetch) parsed ahead of the trainer
    #: How much lower the reader thread's CPU priority is than training's (0: the same)
    reader_nice: int = 10
    #: a window closes without an example past its end once every partition that has none has
    #: had nothing new for this long (``trainer.windows.QuietPartitions``)
    close_idle_s: float = 30.0
    keep_versions: int = 5
    group: str | None = None  #: consumer group (for lag only); default: prefix + "trainer"


@dataclass
class TrainerState:
    """What the trainer has done: the next window, where it starts, the last good checkpoint."""

    window: int = 0
    offsets: dict[str, int] = field(default_factory=dict)  #: partition -> next offset
    checkpoint: str | None = None
    serving_version: int | None = None
    history: list[dict] = field(default_factory=list)
    #: where the last window ended in event time: the next one starts there or later
    resume_ms: int | None = None
    #: hard examples and positives trained on so far: the constant the gate's floor beats
    hard_counts: list[int] = field(default_factory=lambda: [0, 0])
    #: the first version's fit on a history log (``rarecvr train --history``), if any
    bootstrap: dict | None = None

    @classmethod
    def load(cls, path: Path) -> TrainerState:
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=1).encode())


class Trainer:
    def __init__(self, cfg: TrainerConfig, schema_watch: Callable[[], FeatureSchema | None] = None):
        """``schema_watch`` gives the stream's published schema, compared with the model's on
        every window (``trainer.features``)."""
        self.cfg = cfg
        self.schema_watch = schema_watch
        self.registry = Registry(cfg.registry, keep=cfg.keep_versions)
        self.state_path = cfg.state_dir / "state.json"
        self.ckpt_dir = cfg.state_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.state = self._reconcile(TrainerState.load(self.state_path))
        self.holdout_path = cfg.state_dir / "holdout.npz"
        self.holdout = Holdout.load(self.holdout_path, cfg.gate.holdout_examples)
        self.serving_model = None
        self.loss_drift = LossDrift()
        self.stop_event = threading.Event()

    @functools.cached_property
    def producer(self) -> KafkaProducer:
        return KafkaProducer(**kafka_auth.kafka_python(self.cfg.bootstrap), linger_ms=5)

    def close(self) -> None:
        """Flush and close the Kafka producer, if one was opened (the next use opens another)."""
        producer = self.__dict__.pop("producer", None)
        if producer is not None:
            producer.flush()
            producer.close()

    def _reconcile(self, state: TrainerState) -> TrainerState:
        """Adopt a version published after the state file was last written (a crash between)."""
        for version in self.registry.versions():
            manifest = self.registry.manifest(version)
            window = manifest.get("window", -1)
            newer = window >= state.window or (window == HISTORY and state.checkpoint is None)
            if newer and "trainer_state" in manifest:
                state = TrainerState(**manifest["trainer_state"])
                state.save(self.state_path)
                log.warning("adopted version %d published before the last stop", version)
        return state

    # -- history ----------------------------------------------------------------------------
    def bootstrap(
        self,
        log_file: HistoryLog,
        rule: TaskRule | None = None,
        tail_share: float = 0.2,
        epochs: int | None = None,
    ) -> dict:
        """Fit the first version on a history log and publish it if it passes the gate (see
        ``trainer.history``). A trainer that already has a model ignores the history."""
        cfg, state = self.cfg, self.state
        if state.checkpoint or state.history:
            return {"skipped": "the trainer already has a model or windows; history ignored"}
        started = time.perf_counter()
        data = history.load(
            log_file,
            cfg.model,
            cfg.attribution_window_ms,
            rule or history.stream_rule(),
            tail_share,
        )
        model = history.train(data, cfg.model, cfg.batch, epochs)
        tail = slice(max(data.cut, len(data.labels) - cfg.gate.holdout_examples), None)
        self.holdout.set_history(
            *data.part(tail)[:2], data.setup_id[tail], data.click_ts_ms[tail], data.hard[tail]
        )
        trained = data.hard[: data.cut]
        counts = [int(trained.sum()), int(data.labels[: data.cut][trained].sum())]
        rate = counts[1] / counts[0] if counts[1] else None
        holdout = self._gate_figures(model, None, rate)
        reasons = (
            judge(holdout["candidate"], None, cfg.gate)
            if holdout["candidate"]
            else ["too_few_positives"]
        )
        entry = {
            "window": HISTORY,
            "history": str(log_file.path),
            "examples": len(data.labels),
            "hard_examples": int(data.hard.sum()),
            "trained_examples": data.cut,
            "assignment_epoch": 0,
            "progressive": None,
            "candidate_tail": None,
            "end_offsets": {},
            "holdout": holdout,
            "rejected": reasons,
            "version": None,
            "end_ms": data.end_ms,
        }
        new_state = TrainerState(hard_counts=counts, bootstrap=entry)
        if not reasons:
            ckpt = "ckpt-history.npz"
            checkpoint.save(model, self.ckpt_dir / ckpt)
            new_state.checkpoint = ckpt
            self._publish(partial(export_version, model), entry, new_state)
            self.serving_model = model
            self.close()
        entry["seconds"] = round(time.perf_counter() - started, 2)
        self.holdout.save(self.holdout_path)
        new_state.save(self.state_path)
        self.state = new_state
        log.warning(
            "history %s: %d clicks (%d hard), %s",
            log_file.path,
            entry["examples"],
            entry["hard_examples"],
            f"published v{entry['version']}"
            if entry["version"]
            else f"refused ({', '.join(reasons)})",
        )
        return entry

    # -- the stream -------------------------------------------------------------------------
    def run(self, max_windows: int | None = None, idle_stop_s: float | None = None) -> None:
        """Consume and train until stopped (or ``max_windows`` more windows, or idle)."""
        cfg = self.cfg
        from rarecvr import settings

        self.reader = AssignmentReader(cfg.bootstrap).start()
        while not self.reader.wait_ready(timeout=60):  # tasks unknown: every example "soft"
            log.warning("waiting for the task-assignments topic to load before training")
            if self.stop_event.is_set():
                self.reader.stop()
                return
        partitions = list(range(LABELED_EXAMPLES.partitions))
        start = {p: self.state.offsets.get(str(p)) for p in partitions}
        feed = ExampleFeed(
            cfg.bootstrap,
            LABELED_EXAMPLES.name,
            partitions,
            cfg.group or settings.topic_prefix() + "trainer",
            start,
            self._parse,
            max_batches=cfg.read_ahead,
            nice=cfg.reader_nice,
        ).start()
        assembler = WindowAssembler(cfg.window_ms, partitions, resume_ms=self.state.resume_ms)
        quiet = QuietPartitions(cfg.close_idle_s)
        run: WindowRun | None = None
        windows_done, last_record = 0, time.monotonic()
        metrics.STATE.labels("window").set(self.state.window)
        try:
            while not self.stop_event.is_set():
                batch = feed.get(timeout=0.5)
                if batch is None:
                    continue
                if batch.block is not None:
                    partition, offsets, examples = batch.block
                    offsets, examples = self.after_history(offsets, examples)
                    times = examples.label_time(cfg.attribution_window_ms)
                    assembler.add(partition, offsets, times, examples)
                    quiet.read(partition)
                    last_record = time.monotonic()
                elif idle_stop_s is not None and time.monotonic() - last_record > idle_stop_s:
                    return
                if assembler.rows >= cfg.chunk:
                    run = run or self._window_run(assembler.start_ms)
                    run.add(assembler.take())
                while assembler.ready(quiet.update(batch.caught_up, time.monotonic())):
                    run = run or self._window_run(assembler.start_ms)
                    examples, ends = assembler.close(batch.positions)
                    run.add(examples)
                    self.finish_window(run, {str(p): o for p, o in ends.items()})
                    feed.commit(ends)
                    run, windows_done = None, windows_done + 1
                    last_record = time.monotonic()  # time spent closing a window is not idle
                    if max_windows is not None and windows_done >= max_windows:
                        return
                metrics.BUFFERED.set(assembler.rows)
        finally:
            feed.stop()
            self.reader.stop()
            self.close()

    def _window_run(self, start_ms: int) -> WindowRun:
        cfg = self.cfg
        return WindowRun(
            cfg.model,
            start_ms,
            cfg.gate.tail_share,
            cfg.attribution_window_ms,
            cfg.batch,
            cfg.chunk,
            self._start_models,
            self.tasks_of,
        )

    def _parse(self, records: list) -> tuple[Examples, np.ndarray]:
        """A partition's records of one fetch as columns, with the offset of each example's
        record; malformed examples go to the dead-letter topic."""
        examples, rows, bad = parse([r.value for r in records], self.cfg.model.features)
        offsets = np.array([r.offset for r in records], dtype=np.int64)[rows]
        for i, line, reason, detail in bad:
            record = records[i]
            letter = DeadLetter(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=reason[:256],
                detail=detail[:2000],
                raw_b64=base64.b64encode(line or b"").decode(),
            )
            self.producer.send(DEAD_LETTERS.name, value=encode(letter))
            metrics.MALFORMED.inc()
        return examples, offsets

    def after_history(self, offsets: np.ndarray, examples: Examples):
        """The examples clicked after the history log's last click: the earlier ones are the
        history itself (a stream replayed from the log's start, as ``rarecvr demo`` does), which
        version 1 trained on and whose tail is in the gate's holdout."""
        end_ms = (self.state.bootstrap or {}).get("end_ms")
        if end_ms is None:
            return offsets, examples
        rows = np.flatnonzero(examples.meta["click_ts_ms"] > end_ms)
        if rows.size == len(examples):
            return offsets, examples
        metrics.HISTORY_SKIPPED.inc(len(examples) - rows.size)
        return offsets[rows], examples.take(rows)

    # -- one window -------------------------------------------------------------------------
    def tasks_of(self, examples: Examples) -> np.ndarray:
        """Each example's task as of its click time, from the assignments topic."""
        return examples.hard(self.reader)

    def finish_window(self, run: WindowRun, end_offsets: dict[str, int]) -> dict:
        """Gate the window's candidate, publish it if it passes, and save the trainer's state."""
        cfg, state = self.cfg, self.state
        resume_ms = run.start_ms + cfg.window_ms
        run.close()
        figures = run.figures(cfg.gate.min_positives)
        candidate = run.candidate
        trained = run.trained_hard()
        counts = [state.hard_counts[0] + trained[0], state.hard_counts[1] + trained[1]]
        rate = counts[1] / counts[0] if counts[0] else None
        progressive = figures["progressive"]
        drift = None
        if progressive is not None:
            labels, probs = run.served_hard()
            drift = self.loss_drift.update(labels, probs)
            metrics.SERVED_DRIFT.set(int(drift["rising"]))
            if drift["rising"]:
                metrics.SERVED_DRIFTS.inc()
                log.warning(
                    "window %d: the served model's hard log loss drifted up (ADWIN; mean of "
                    "the recent run %.4f over %d clicks)",
                    state.window,
                    drift["mean_loss"],
                    drift["examples"],
                )
            if rate is not None:
                gains = vs_constant(labels, probs, rate, cfg.gate.floor_z)
                progressive |= {f"hard_{k}": v for k, v in gains.items()}
        quarantined = implausible(figures["serving_tail"], cfg.gate)
        if run.tail is not None and not quarantined:
            inputs, labels, hard = run.tail
            self.holdout.add({k: v[hard] for k, v in inputs.items()}, labels[hard])
        if quarantined:
            log.error(
                "window %d: its tail's hard labels disagree with the serving version "
                "(%s); kept out of the holdout",
                state.window,
                _brief(figures["serving_tail"]),
            )
        holdout = self._gate_figures(candidate, self.serving_model, rate)
        reasons = (
            judge(holdout["candidate"], holdout["serving"], cfg.gate)
            if holdout["candidate"]
            else ["too_few_positives"]
        )
        entry = {
            "window": state.window,
            "examples": figures["examples"],
            "hard_examples": figures["hard_examples"],
            "trained_examples": figures["trained"],
            "start_offsets": dict(state.offsets),
            "end_offsets": end_offsets,
            "assignment_epoch": self.reader.view.max_epoch,
            "progressive": progressive,
            "oracle": figures["oracle"],
            "candidate_tail": figures["candidate_tail"],
            "serving_tail": figures["serving_tail"],
            "holdout": holdout,
            "tail_quarantined": quarantined,
            "rejected": reasons,
            "version": None,
            "serving_below_constant": _below_constant(progressive),
            "served_loss_drift": drift,
            "train_examples_per_s": figures["train_examples_per_s"],
            "seconds": round(time.perf_counter() - run.started, 2),
        }
        entry["schema_drift"] = self._schema_drift()
        if entry["serving_below_constant"]:
            log.error(
                "window %d: the serving version scored below a constant on fresh data "
                "(progressive hard RIG over a constant %.4f)",
                state.window,
                progressive["hard_rig_vs_constant"],
            )
        metrics.BELOW_CONSTANT.set(int(entry["serving_below_constant"]))
        if reasons:
            for reason in reasons:
                metrics.REJECTIONS.labels(reason).inc()
            log.warning(
                "window %d rejected (%s): candidate %s, serving %s",
                state.window,
                ", ".join(reasons),
                _brief(holdout["candidate"]),
                _brief(holdout["serving"]),
            )
            new_state = TrainerState(
                state.window + 1,
                end_offsets,
                state.checkpoint,
                state.serving_version,
                state.history,
                resume_ms,
                counts,
                state.bootstrap,
            )
        else:
            ckpt = f"ckpt-{state.window}.npz"
            checkpoint.save(candidate, self.ckpt_dir / ckpt)
            new_state = TrainerState(
                state.window + 1,
                end_offsets,
                ckpt,
                None,
                state.history,
                resume_ms,
                counts,
                state.bootstrap,
            )
            self._publish(partial(export_version, candidate), entry, new_state)
            self.serving_model = candidate
            checkpoint.remove_older(self.ckpt_dir, {self.ckpt_dir / ckpt})
        entry["seconds"] = round(time.perf_counter() - run.started, 2)
        new_state.history = [*state.history, entry]
        self.holdout.save(self.holdout_path)
        new_state.save(self.state_path)
        self.state = new_state
        self._observe(entry)
        log.warning(
            "window %d: %d examples (%d hard), %s, %.1f s",
            entry["window"],
            entry["examples"],
            entry["hard_examples"],
            f"published v{entry['version']}" if entry["version"] else "rejected",
            entry["seconds"],
        )
        return entry

    def _schema_drift(self) -> str | None:
        """How the stream's published schema differs from the model's, in words (None: not)."""
        try:
            published = self.schema_watch and self.schema_watch()
        except KafkaError as error:  # advisory: a broker away must not stop training
            log.warning(
                "window %d: the published schema is unreadable now (%s)", self.state.window, error
            )
            return None
        drift = drift_message(self.cfg.model.features, published)
        metrics.SCHEMA_DRIFT.set(int(drift is not None))
        if drift:
            log.warning("window %d: %s", self.state.window, drift)
        return drift

    def _gate_figures(self, candidate, serving, rate: float | None) -> dict:
        """Candidate and serving model on the holdout (None where there is nothing to score)."""
        if rate is None or not len(self.holdout):
            return {"candidate": None, "serving": None, "examples": len(self.holdout)}
        inputs, labels = self.holdout.rows(getattr(self, "reader", None))
        if not labels.size:
            return {"candidate": None, "serving": None, "examples": 0}
        gate = self.cfg.gate

        def hard(model):
            return predict_tasks(model, inputs)["hard"]

        mine = hard(candidate)
        figures = {
            "candidate": score_hard(labels, mine, rate, gate),
            "serving": None,
            "examples": int(labels.size),
        }
        if serving is not None:
            theirs = hard(serving)
            figures["serving"] = score_hard(labels, theirs, rate, gate)
            paired = vs_serving(labels, np.nan_to_num(mine, nan=0.5), theirs, gate.floor_z)
            figures["candidate"] |= {f"hard_{k}": v for k, v in paired.items()}
        return figures

    def _start_models(self, inputs, labels, hard):
        """The window's candidate, warm-started, and the serving model (restored after a
        restart), built on the first chunk's inputs."""
        cfg, state = self.cfg, self.state
        if self.serving_model is None and state.checkpoint:
            self.serving_model = checkpoint.restore(
                build(cfg.model, inputs), self.ckpt_dir / state.checkpoint
            )
        return self._warm_start(inputs, labels, hard), self.serving_model

    def _warm_start(self, inputs, labels, hard):
        cfg = self.cfg
        if self.state.checkpoint:
            return checkpoint.restore(
                build(cfg.model, inputs), self.ckpt_dir / self.state.checkpoint
            )
        groups = (
            (("all", hard | ~hard),)
            if cfg.model.tasks == SINGLE_TASK
            else (("hard", hard), ("soft", ~hard))
        )
        rates = {t: float(labels[rows].mean()) for t, rows in groups if rows.any()}
        return build(cfg.model, inputs, rates)

    def _publish(self, build_version, entry: dict, new_state: TrainerState) -> None:
        """Write the version (with the state it implies) atomically, then announce it; sets the
        version in ``entry`` and ``new_state``."""
        versions = self.registry.versions()
        next_version = (versions[-1] if versions else 0) + 1
        new_state.serving_version = next_version
        entry["version"] = next_version
        trainer_state = asdict(new_state) | {"history": [*self.state.history, entry]}
        meta = {
            "window": entry["window"],
            "assignment_epoch": entry["assignment_epoch"],
            "metrics": {
                "progressive": entry["progressive"],
                "tail": entry["candidate_tail"],
                "holdout": entry["holdout"]["candidate"],
            },
            "end_offsets": entry["end_offsets"],
            "checkpoint": new_state.checkpoint,
            "trainer_state": trainer_state,
        }
        version = self.registry.publish(build_version, meta)
        if version != next_version:
            raise RuntimeError(
                f"registry published {version}, expected {next_version}: "
                "is another trainer writing to it?"
            )
        update = self.registry.update_event("publish", version)
        try:
            self.producer.send(MODEL_UPDATES.name, key=b"model", value=encode(update))
            self.producer.flush(timeout=30)
        except KafkaError as error:  # replicas rescan the registry: the swap is only later
            log.warning("v%d is published, its announcement not sent (%s)", version, error)

    def _observe(self, entry: dict) -> None:
        metrics.STATE.labels("window").set(entry["window"] + 1)
        metrics.EXAMPLES.labels("hard").inc(entry["hard_examples"])
        metrics.EXAMPLES.labels("soft").inc(entry["examples"] - entry["hard_examples"])
        metrics.TRAIN_RATE.set(entry["train_examples_per_s"])
        if entry["version"]:
            metrics.STATE.labels("published_version").set(entry["version"])
        for task in ("hard", "soft"):
            for name in ("rig", "auc"):
                value = (entry["progressive"] or {}).get(f"{task}_{name}")
                if value is not None:
                    metrics.PROGRESSIVE.labels(task, name).set(value)


def _below_constant(progressive: dict | None) -> bool:
    """Whether the serving model's progressive hard predictions lost to a constant with
    confidence (the upper bound of its gain below 0)."""
    high = (progressive or {}).get("hard_rig_vs_constant_high")
    return high is not None and high < 0


def _brief(m: dict | None) -> str:
    if not m:
        return "-"
    rig, paired = m.get("hard_rig"), m.get("hard_rig_vs_serving")
    text = (
        f"hard: {m['hard_expected']:.1f} conversions expected, {m['hard_positives']} seen, "
        f"RIG {'-' if rig is None else f'{rig:.4f}'}"
    )
    if paired is not None:
        text += f", {paired:+.4f} vs serving (low {m['hard_rig_vs_serving_low']:+.4f})"
    return text
