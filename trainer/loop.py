"""``rarecvr train``: windows of labeled examples in, validated hard-only graphs out.

For each window (see ``trainer.windows``):

1. every example takes its setup's task as of its click time from the assignments topic;
2. the serving model is scored on the window before it trains on it (progressive validation:
   its honest out-of-sample figures);
3. a candidate is warm-started from the last good checkpoint (weights and optimizer state) and
   trained on the window less its held-out tail;
4. the gate compares candidate and serving model on the tail (``trainer.gate``); a candidate
   that passes is checkpointed, published to the registry, and announced on
   ``rarecvr.model-updates``. A rejected one is logged, counted and dropped: the next window
   starts again from the last good checkpoint, so one bad window cannot poison the next.

Crash safety: the trainer's state (next window, end offsets, checkpoint, history) is one file
replaced atomically after each window; Kafka offsets are committed too, but only for lag
monitoring, the state file is the truth. A version published just before a crash carries the
same state in its manifest and is adopted at restart, so no window is trained twice or skipped.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from model.dcn import ModelConfig, build
from model.export import export
from model.features import records_to_inputs
from model.training import fit, predict
from rarecvr.contracts import DeadLetter, encode, peer_group
from rarecvr.topics import DEAD_LETTERS, LABELED_EXAMPLES, MODEL_UPDATES
from stabilizer.reader import AssignmentReader
from trainer import checkpoint, metrics
from trainer.files import atomic_write
from trainer.gate import GateParams, judge, score
from trainer.registry import Registry
from trainer.windows import WindowAssembler, label_time

log = logging.getLogger("rarecvr.trainer")
DAY_MS = 86_400_000
REQUIRED = ("click_id", "setup_id", "features", "label", "click_ts_ms")


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

    @classmethod
    def load(cls, path: Path) -> TrainerState:
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=1).encode())


class Trainer:
    def __init__(self, cfg: TrainerConfig):
        self.cfg = cfg
        self.registry = Registry(cfg.registry, keep=cfg.keep_versions)
        self.state_path = cfg.state_dir / "state.json"
        self.ckpt_dir = cfg.state_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.state = self._reconcile(TrainerState.load(self.state_path))
        self.serving_model = None
        self.stop_event = threading.Event()

    def _reconcile(self, state: TrainerState) -> TrainerState:
        """Adopt a version published after the state file was last written (a crash between)."""
        for version in self.registry.versions():
            manifest = self.registry.manifest(version)
            if manifest.get("window", -1) >= state.window and "trainer_state" in manifest:
                state = TrainerState(**manifest["trainer_state"])
                state.save(self.state_path)
                log.warning("adopted version %d published before the last stop", version)
        return state

    # -- the stream -------------------------------------------------------------------------
    def run(self, max_windows: int | None = None, idle_stop_s: float | None = None) -> None:
        """Consume and train until stopped (or ``max_windows`` more windows, or idle)."""
        cfg = self.cfg
        from rarecvr import settings

        group = cfg.group or settings.topic_prefix() + "trainer"
        consumer = KafkaConsumer(bootstrap_servers=cfg.bootstrap, group_id=group,
                                 enable_auto_commit=False, max_poll_records=2_000,
                                 fetch_max_bytes=64 << 20)  # fmt: skip
        self.producer = KafkaProducer(bootstrap_servers=cfg.bootstrap, linger_ms=5)
        self.reader = AssignmentReader(cfg.bootstrap).start()
        self.reader.wait_ready(timeout=60)
        parts = [
            TopicPartition(LABELED_EXAMPLES.name, p) for p in range(LABELED_EXAMPLES.partitions)
        ]
        consumer.assign(parts)
        for tp in parts:
            start = self.state.offsets.get(str(tp.partition))
            if start is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
        positions = {tp.partition: consumer.position(tp) for tp in parts}
        assembler = WindowAssembler(cfg.window_ms, sorted(positions))
        windows_done, last_record = 0, time.monotonic()
        metrics.STATE.labels("window").set(self.state.window)
        try:
            while not self.stop_event.is_set():
                batches = consumer.poll(timeout_ms=500)
                caught_up: set[int] = set()
                if batches:
                    last_record = time.monotonic()
                else:
                    if idle_stop_s is not None and time.monotonic() - last_record > idle_stop_s:
                        return
                    caught_up = {
                        tp.partition
                        for tp in parts
                        if positions[tp.partition] >= (consumer.highwater(tp) or 0)
                    }
                for tp, records in batches.items():
                    for record in records:
                        example = self._parse(record)
                        positions[tp.partition] = record.offset + 1
                        if example is not None:
                            t = label_time(example, cfg.attribution_window_ms)
                            assembler.add(tp.partition, record.offset, t, example)
                while assembler.ready(caught_up):
                    examples, ends = assembler.close(positions)
                    ends = {str(p): o for p, o in ends.items()}
                    self.train_window(examples, ends)
                    consumer.commit({parts[int(p)]: OffsetAndMetadata(o, "", -1)
                                     for p, o in ends.items()})  # fmt: skip
                    windows_done += 1
                    if max_windows is not None and windows_done >= max_windows:
                        return
                metrics.BUFFERED.set(len(assembler.current))
        finally:
            consumer.close()
            self.reader.stop()
            self.producer.flush()
            self.producer.close()

    def _parse(self, record) -> dict | None:
        """A labeled example as a dict; a malformed record goes to the dead-letter topic."""
        try:
            example = json.loads(record.value)
            missing = [k for k in REQUIRED if k not in example]
            if missing:
                raise ValueError(f"labeled_example.{missing[0]}: missing")
            return example
        except ValueError as error:
            reason = str(error).split(":")[0] if "labeled_example." in str(error) else "not_json"
            letter = DeadLetter(topic=record.topic, partition=record.partition,
                                offset=record.offset, reason=reason[:256], detail=str(error)[:2000],
                                raw_b64=base64.b64encode(record.value).decode())  # fmt: skip
            self.producer.send(DEAD_LETTERS.name, value=encode(letter))
            metrics.MALFORMED.inc()
            return None

    # -- one window -------------------------------------------------------------------------
    def tasks_of(self, examples: list[dict]) -> np.ndarray:
        """Each example's task as of its click time: True where hard."""
        return np.array([
            self.reader.task_as_of(e["setup_id"], e["click_ts_ms"], peer_group(e["features"]))[0]
            == "hard"
            for e in examples
        ])  # fmt: skip

    def train_window(self, examples: list[dict], end_offsets: dict[str, int]) -> dict:
        cfg, state = self.cfg, self.state
        started = time.perf_counter()
        spec = cfg.model.features
        # Partitions interleave coarsely: order by label time so the held-out tail is the latest.
        examples = sorted(examples, key=lambda e: label_time(e, cfg.attribution_window_ms))
        records = [e["features"] | {"setup_id": e["setup_id"],
                                    "advertiser_id": e.get("advertiser_id", "")}
                   for e in examples]  # fmt: skip
        inputs = records_to_inputs(records, spec)
        labels = np.array([e["label"] for e in examples], dtype=np.float32)
        hard = self.tasks_of(examples)
        epoch = self.reader.view.max_epoch
        n = labels.size
        cut = max(int(n * (1 - cfg.gate.tail_share)), 1)
        train = {k: v[:cut] for k, v in inputs.items()}
        tail = {k: v[cut:] for k, v in inputs.items()}

        candidate = self._warm_start(inputs, labels, hard)
        if self.serving_model is None and state.checkpoint:
            self.serving_model = checkpoint.restore(build(cfg.model, inputs),
                                                    self.ckpt_dir / state.checkpoint)  # fmt: skip
        true_p = np.array([e.get("true_p") if e.get("true_p") is not None else np.nan
                           for e in examples], dtype=np.float64)  # fmt: skip
        oracle = None
        if np.isfinite(true_p).all():  # simulated traffic: the best any model could do
            oracle = score(labels, hard, {"hard": true_p, "soft": true_p})
        progressive = None
        if self.serving_model is not None:
            progressive = score(labels, hard, predict(self.serving_model, inputs))
        fit_started = time.perf_counter()
        fit(cfg.model, train, labels[:cut], hard[:cut], model=candidate, batch=cfg.batch)
        train_s = time.perf_counter() - fit_started
        least = cfg.gate.min_positives
        cand_tail = score(labels[cut:], hard[cut:], predict(candidate, tail), least)
        serve_tail = None
        if self.serving_model is not None:
            serve_tail = score(labels[cut:], hard[cut:], predict(self.serving_model, tail), least)
        reasons = judge(cand_tail, serve_tail, cfg.gate)
        entry = {
            "window": state.window, "examples": int(n), "hard_examples": int(hard.sum()),
            "start_offsets": dict(state.offsets), "end_offsets": end_offsets,
            "assignment_epoch": epoch, "progressive": progressive, "oracle": oracle,
            "candidate_tail": cand_tail,
            "serving_tail": serve_tail, "rejected": reasons, "version": None,
            "train_examples_per_s": round(cut / train_s), "seconds": None,
        }  # fmt: skip
        if reasons:
            for reason in reasons:
                metrics.REJECTIONS.labels(reason).inc()
            log.warning("window %d rejected (%s): candidate %s, serving %s", state.window,
                        ", ".join(reasons), _brief(cand_tail), _brief(serve_tail))  # fmt: skip
            new_state = TrainerState(state.window + 1, end_offsets, state.checkpoint,
                                     state.serving_version, state.history)  # fmt: skip
        else:
            ckpt = f"ckpt-{state.window}.npz"
            checkpoint.save(candidate, self.ckpt_dir / ckpt)
            new_state = TrainerState(state.window + 1, end_offsets, ckpt, None, state.history)

            def build_version(directory: Path) -> None:
                export(candidate, "hard", directory)
                export(candidate, "soft", directory / "soft")

            self._publish(build_version, entry, new_state)
            self.serving_model = candidate
            checkpoint.remove_older(self.ckpt_dir, {self.ckpt_dir / ckpt})
        entry["seconds"] = round(time.perf_counter() - started, 2)
        new_state.history = [*state.history, entry]
        new_state.save(self.state_path)
        self.state = new_state
        self._observe(entry, hard)
        log.warning("window %d: %d examples (%d hard), %s, %.1f s", entry["window"], n,
                    entry["hard_examples"],
                    f"published v{entry['version']}" if entry["version"] else "rejected",
                    entry["seconds"])  # fmt: skip
        return entry

    def _warm_start(self, inputs, labels, hard):
        cfg = self.cfg
        if self.state.checkpoint:
            return checkpoint.restore(build(cfg.model, inputs),
                                      self.ckpt_dir / self.state.checkpoint)  # fmt: skip
        rates = {t: float(labels[rows].mean())
                 for t, rows in (("hard", hard), ("soft", ~hard)) if rows.any()}  # fmt: skip
        return build(cfg.model, inputs, rates)

    def _publish(self, build_version, entry: dict, new_state: TrainerState) -> None:
        """Write the version (with the state it implies) atomically, then announce it; sets the
        version in ``entry`` and ``new_state``."""
        versions = self.registry.versions()
        next_version = (versions[-1] if versions else 0) + 1
        new_state.serving_version = next_version
        entry["version"] = next_version
        trainer_state = asdict(new_state) | {"history": [*self.state.history, entry]}
        meta = {"window": entry["window"], "assignment_epoch": entry["assignment_epoch"],
                "metrics": {"progressive": entry["progressive"], "tail": entry["candidate_tail"]},
                "end_offsets": entry["end_offsets"], "checkpoint": new_state.checkpoint,
                "trainer_state": trainer_state}  # fmt: skip
        version = self.registry.publish(build_version, meta)
        if version != next_version:
            raise RuntimeError(f"registry published {version}, expected {next_version}: "
                               "is another trainer writing to it?")  # fmt: skip
        update = self.registry.update_event("publish", version)
        self.producer.send(MODEL_UPDATES.name, key=b"model", value=encode(update))
        self.producer.flush()

    def _observe(self, entry: dict, hard: np.ndarray) -> None:
        metrics.STATE.labels("window").set(entry["window"] + 1)
        metrics.EXAMPLES.labels("hard").inc(int(hard.sum()))
        metrics.EXAMPLES.labels("soft").inc(int((~hard).sum()))
        metrics.TRAIN_RATE.set(entry["train_examples_per_s"])
        if entry["version"]:
            metrics.STATE.labels("published_version").set(entry["version"])
        for task in ("hard", "soft"):
            for name in ("rig", "auc"):
                value = (entry["progressive"] or {}).get(f"{task}_{name}")
                if value is not None:
                    metrics.PROGRESSIVE.labels(task, name).set(value)


def _brief(m: dict | None) -> str:
    if not m:
        return "-"
    rig = m.get("hard_rig")
    return (f"hard: {m['hard_expected']:.1f} conversions expected, {m['hard_positives']} seen, "
            f"RIG {'-' if rig is None else f'{rig:.4f}'}")  # fmt: skip
