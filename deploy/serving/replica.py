"""One scoring replica: an aiohttp app that routes candidates by task and hot-swaps graphs.

Two background threads keep it current: the assignment reader (``stabilizer.reader``) and the
model follower, which reads ``rarecvr.model-updates`` (and rescans the registry every few
seconds in case an event was missed), loads the version the registry says should serve (the
pinned one, else the latest), verifies and warms it off the request path, then swaps one
reference. A request reads that reference once, so it finishes on the graphs it started with.
Versions only move forward, except to a pinned version (pin, rollback).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from aiohttp import web
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploy.serving import metrics
from deploy.serving.graphs import GraphLoader, Graphs, RefusedVersion
from deploy.serving.routing import route
from rarecvr import kafka_auth
from rarecvr.contracts import PEER_TAGS, ContractError, FeatureValue, Id, ModelUpdate, decode
from rarecvr.liveness import Heartbeat
from rarecvr.malformed import skipped
from rarecvr.registry import Registry
from rarecvr.schema import EncodingError, FeatureSchema, encode_records
from rarecvr.topics import MODEL_UPDATES
from stabilizer.reader import AssignmentReader

log = logging.getLogger("rarecvr.serving")


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    setup_id: Id
    advertiser_id: Annotated[str, Field(max_length=256)] = ""
    features: dict[Annotated[str, Field(min_length=1, max_length=64)], FeatureValue] = {}


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidates: Annotated[list[Candidate], Field(min_length=1)]


@dataclass(frozen=True)
class ReplicaConfig:
    bootstrap: str
    registry: Path
    token: str | None = None  #: require ``Authorization: Bearer <token>`` when set
    max_batch: int = 1000
    max_body_bytes: int = 1 << 20
    unknown_features: Literal["ignore", "refuse"] = "refuse"
    rescan_s: float = 5.0
    scoring_threads: int = 2  #: requests scored at once, off the event loop
    #: ``/readyz`` fails when a background thread's last success is older (scoring goes on)
    stale_after_s: float = 300.0


class Replica:
    def __init__(self, cfg: ReplicaConfig):
        self.cfg = cfg
        self.registry = Registry(cfg.registry)
        self.loader = GraphLoader(self.registry)
        self.reader = AssignmentReader(cfg.bootstrap, stale_after_s=cfg.stale_after_s)
        self.graphs: Graphs | None = None
        self._swap = threading.Lock()  #: makes reading the reference and holding it one step
        self.refused: tuple[int, str] | None = None  #: logged once, not on every rescan
        self._stop = threading.Event()
        self._follower = threading.Thread(target=self._follow, name="model-follower", daemon=True)
        #: a success: the registry read and the broker's end of the updates topic told
        self.follower = Heartbeat("model-follower", cfg.stale_after_s)

    # -- keeping current ----------------------------------------------------------------------
    def start(self) -> Replica:
        self.reader.start()
        self.refresh()
        self._follower.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.reader.stop()
        self._follower.join(timeout=10)

    @property
    def ready(self) -> bool:
        return self.graphs is not None and self.reader.ready

    def refresh(self, announced: ModelUpdate | None = None) -> None:
        """Load the version that should serve, if it is not the one serving."""
        target = self.registry.serving()
        current = self.graphs.version if self.graphs else None
        if target is None or target == current:
            return
        if current is not None and target < current and target != self.registry.pinned():
            return  # an older version is served only when pinned
        if announced is None and self.refused and self.refused[0] == target:
            return  # refused already: tried again only when an event announces it
        sha = announced.manifest_sha256 if announced and announced.version == target else None
        started = time.perf_counter()
        try:
            graphs = self.loader.load(target, sha)
        except RefusedVersion as refused:
            if self.refused != (target, refused.reason):
                metrics.REFUSED.labels(refused.reason).inc()
                log.error("%s; still serving %s", refused, current)
            self.refused = (target, refused.reason)
            return
        with self._swap:
            previous, self.graphs = self.graphs, graphs  # the swap: one reference
        self.refused = None
        if previous is None:
            self.loader.reserve(graphs)
        self.loader.retire(previous)
        metrics.LOAD_SECONDS.observe(time.perf_counter() - started)
        metrics.SWAPS.labels(graphs.load).inc()
        metrics.VERSION.set(graphs.version)
        log.warning("serving version %d (was %s; %s load)", graphs.version, current, graphs.load)

    def _follow(self) -> None:
        """Follow the registry until stopped; any failure (the broker away, an unreadable
        registry, a graph that raises) is logged and counted, and following starts again."""
        # Checksums and weight reads run only when no request needs the CPU (Linux SCHED_IDLE,
        # per thread). Under a load that leaves no idle CPU they wait: add replicas.
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
        while not self._stop.is_set():
            try:
                self._follow_once()
            except Exception as error:  # noqa: BLE001 - the follower must outlive any failure
                self.follower.failed(error)
                log.exception("the model follower failed (%s); following again in 5 s", error)
                self._stop.wait(5)

    def _follow_once(self) -> None:
        consumer = KafkaConsumer(
            **kafka_auth.kafka_python(self.cfg.bootstrap), group_id=None, enable_auto_commit=False
        )
        tp = TopicPartition(MODEL_UPDATES.name, 0)
        consumer.assign([tp])
        consumer.seek_to_end(tp)
        last_scan = 0.0
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    for record in records:
                        try:
                            self.refresh(decode(ModelUpdate, record.value))
                        except ContractError as error:
                            skipped(MODEL_UPDATES.name, error)
                if time.monotonic() - last_scan > self.cfg.rescan_s:
                    self.refresh()
                    consumer.end_offsets([tp], timeout_ms=10_000)  # the broker is there
                    self.follower.beat()
                    last_scan = time.monotonic()
        finally:
            consumer.close()

    # -- scoring ------------------------------------------------------------------------------
    def score(self, request: ScoreRequest) -> dict:
        with self._serving() as graphs:
            return self._score(request, graphs)

    @contextmanager
    def _serving(self):
        """The graphs serving now, held until the request is done: a request finishes on the
        graphs it started with, and their slot is not reused under it."""
        with self._swap:
            graphs = self.graphs
            graphs.slot.acquire()
        try:
            yield graphs
        finally:
            graphs.slot.release()

    def _score(self, request: ScoreRequest, graphs: Graphs) -> dict:
        candidates = [c.model_dump() for c in request.candidates]
        inputs = self.inputs(candidates, graphs.schema, self.cfg.unknown_features)
        tasks, epochs = route(candidates, self.reader)
        pcvr = np.zeros(len(candidates))
        for task in ("hard", "soft"):
            rows = [i for i, t in enumerate(tasks) if t == task]
            if rows:
                graph = graphs.slot.hard if task == "hard" else graphs.slot.soft
                pcvr[rows] = np.asarray(graph({k: v[rows] for k, v in inputs.items()}))
                metrics.CANDIDATES.labels(task).inc(len(rows))
        if not np.isfinite(pcvr).all():
            raise ModelFault(f"version {graphs.version} gave a non-finite score")
        epoch = self.reader.view.max_epoch
        metrics.EPOCH.set(epoch)
        return {
            "model_version": graphs.version,
            "assignment_epoch": epoch,
            "results": [
                {"pcvr": float(p), "task": t, "epoch": e}
                for p, t, e in zip(pcvr, tasks, epochs, strict=True)
            ],
        }

    @staticmethod
    def inputs(candidates: list[dict], schema: FeatureSchema, unknown: str = "refuse") -> dict:
        """The graph's inputs, encoded as the trainer encodes examples; BadRequest names the
        first value that does not fit the version's schema (and, unless ``unknown`` is
        "ignore", the first feature the schema does not have; the peer tags, which route a new
        setup, are always welcome)."""
        known = {*schema.names, *PEER_TAGS}
        if unknown == "refuse":
            for i, c in enumerate(candidates):
                strays = sorted(set(c["features"]) - known)
                if strays:
                    raise BadRequest(
                        f"candidates.{i}.features.{strays[0]}",
                        f"the model (features: {', '.join(schema.names)}) has no "
                        "such feature; send it without, or start the replica with "
                        "--unknown-features ignore",
                    )
        rows = [
            c["features"] | {"setup_id": c["setup_id"], "advertiser_id": c["advertiser_id"]}
            for c in candidates
        ]
        try:
            return encode_records(rows, schema)
        except EncodingError as error:
            row, name = error.field.split(".", 1)
            raise BadRequest(f"candidates.{row}.features.{name}", error.problem) from None


class ModelFault(Exception):
    """The serving version answered something no client should get (never a client's fault)."""


class BadRequest(Exception):
    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def error(status: int, message: str, field: str | None = None) -> web.Response:
    metrics.REQUESTS.labels(str(status)).inc()
    body = {"error": message} | ({"field": field} if field else {})
    return web.json_response(body, status=status)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def create_app(replica: Replica) -> web.Application:
    cfg = replica.cfg
    app = web.Application(client_max_size=cfg.max_body_bytes)

    expected = f"Bearer {cfg.token}".encode() if cfg.token else None
    scoring = ThreadPoolExecutor(max_workers=cfg.scoring_threads, thread_name_prefix="score")

    async def score(request: web.Request) -> web.Response:
        started = time.perf_counter()
        given = request.headers.get("Authorization", "").encode()
        if expected and not hmac.compare_digest(given, expected):
            return error(401, "missing or wrong bearer token")
        if not replica.ready:
            return error(503, "not ready: no model or assignments loaded yet")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"request body over {cfg.max_body_bytes} bytes")
        try:
            body = json.loads(raw, parse_constant=_no_constant)
        except ValueError as exc:  # UnicodeDecodeError too
            return error(400, f"body is not JSON: {exc}")
        except RecursionError:
            return error(400, "body is not JSON this replica reads: nested too deeply")
        candidates = body.get("candidates") if isinstance(body, dict) else None
        if isinstance(candidates, list) and len(candidates) > cfg.max_batch:
            return error(413, f"more than {cfg.max_batch} candidates in one request", "candidates")
        try:
            parsed = ScoreRequest.model_validate(body)
            # Off the event loop: health checks and other requests are answered meanwhile.
            result = await asyncio.get_running_loop().run_in_executor(
                scoring, replica.score, parsed
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            return error(422, f"{field}: {first['msg']}", field)
        except BadRequest as exc:
            return error(422, str(exc), exc.field)
        except Exception as exc:  # noqa: BLE001 - answered, counted and logged, never a crash
            log.exception("scoring failed")
            return error(500, f"internal error while scoring: {type(exc).__name__}: {exc}")
        metrics.REQUESTS.labels("200").inc()
        metrics.LATENCY.observe(time.perf_counter() - started)
        return web.json_response(result)

    async def healthz(request):  # noqa: ARG001
        return web.json_response({"ok": True})

    async def readyz(request):  # noqa: ARG001
        """Ready: a model and the assignments loaded, and both threads that keep them current
        working (a broker away longer than ``stale_after_s`` makes the replica unready; it
        still scores with what it has)."""
        graphs = replica.graphs
        threads = {b.thread: b.status() for b in (replica.follower, replica.reader.heartbeat)}
        ready = replica.ready and all(t["healthy"] for t in threads.values())
        body = {
            "ready": ready,
            "model_version": graphs.version if graphs else None,
            "assignments_loaded": replica.reader.ready,
            "assignment_epoch": replica.reader.view.max_epoch,
            "threads": threads,
            "refused": dict(zip(("version", "reason"), replica.refused, strict=True))
            if replica.refused
            else None,
        }
        return web.json_response(body, status=200 if ready else 503)

    async def metrics_view(request):  # noqa: ARG001
        return web.Response(body=generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    app.router.add_post("/score", score)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app
