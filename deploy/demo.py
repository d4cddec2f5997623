"""``rarecvr demo``: the whole loop, live, on embedded defaults.

It starts the local broker (state in ``$RARECVR_HOME/demo``), then each stage as its own process,
as in production: ``rarecvr worker`` (streams and stabilizer), ``rarecvr train`` and
``rarecvr serve``; in this process, the simulator produces traffic with event time compressed
(``--speed``) and a load generator scores batches of candidates against the replica. Before the
live traffic, the trainer fits version 1 on a simulated history (``--history-days`` of the same
marketplace, written as a Parquet click log and given to ``rarecvr train --history``), as a
model is trained on past logs before it goes online, and the worker seeds each setup's CVR
from the same log (``rarecvr worker --history``), so setups are hard or soft from the start. A
live table shows events in, labels out, hard/soft setups, model versions, the replica's version and
its latency. At the end (``--minutes``, or Ctrl-C) every process is stopped cleanly and an HTML
report with plots is written. Run it again to resume from the stored state and registry;
``--fresh`` starts over.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import click

from deploy.kafka import local
from deploy.kafka.broker import BrokerError, free_port
from deploy.kafka.dist import DistError
from deploy.loadgen import LoadGenerator
from deploy.report import write
from deploy.stack import Stack, StageDied
from model.metrics import pooled_rig
from rarecvr import settings
from rarecvr.produce import produce
from rarecvr.schema_topic import publish_schema
from rarecvr.scrape import by_name, samples
from rarecvr.units import HOUR_MS
from simulator import Marketplace, SimConfig
from simulator.events import event_stream
from simulator.tables import SCHEMA

ATTRIBUTION_MS = 2 * HOUR_MS  #: the demo's attribution window, in compressed event time


class Stopped(Exception):
    """Raised inside the producer's progress callback to stop it."""


def scrape(url: str) -> dict[str, float]:
    """Prometheus metrics as {sample name: sum over its label sets}; {} when unreachable."""
    try:
        return by_name(samples(url, timeout=2))
    except OSError:
        return {}


def get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


class Traffic(threading.Thread):
    """The simulator producing to Kafka, resuming after the records a previous run sent."""

    def __init__(self, bootstrap: str, cfg: SimConfig, speed: float, state: Path, from_ms: int):
        super().__init__(name="traffic", daemon=True)
        self.bootstrap, self.cfg, self.speed, self.state = bootstrap, cfg, speed, state
        self.from_ms = from_ms  #: events before it are the history, not sent
        self.sent = json.loads(state.read_text())["sent"] if state.exists() else 0
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        def tick(_record) -> None:
            self.sent += 1
            if self.sent % 1000 == 0:
                self.state.write_text(json.dumps({"sent": self.sent}))
            if self.stop_event.is_set():
                raise Stopped

        live = (r for r in event_stream(Marketplace(self.cfg)) if r.ts_ms >= self.from_ms)
        records = itertools.islice(live, self.sent, None)
        try:
            produce(self.bootstrap, records, speed=self.speed, progress=tick)
        except Stopped:
            pass
        except BaseException as error:  # noqa: BLE001 - reported by the demo
            self.error = error
        self.state.write_text(json.dumps({"sent": self.sent}))


@click.command()
@click.option("--minutes", type=float, default=5.0, show_default=True, help="How long to run.")
@click.option(
    "--speed",
    type=float,
    default=400.0,
    show_default=True,
    help="Event time runs this many times faster than the wall clock.",
)
@click.option(
    "--clicks",
    type=int,
    default=400_000,
    show_default=True,
    help="Live clicks in the simulated horizon (4 days of event time).",
)
@click.option(
    "--history-days",
    type=float,
    default=3.0,
    show_default=True,
    help="Days of simulated history (at the live rate) that version 1 is fitted on before the "
    "live traffic; 0: none, the trainer starts from random weights.",
)
@click.option(
    "--window-hours",
    type=float,
    default=3.0,
    show_default=True,
    help="Training window, in event time.",
)
@click.option("--fresh", is_flag=True, help="Forget the stored state and registry; start over.")
@click.option("--keep-broker", is_flag=True, help="Leave the broker running afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line of figures last.")
def demo(minutes, speed, clicks, window_hours, history_days, fresh, keep_broker, as_json) -> None:
    """Run the whole loop live: traffic, stream worker, trainer, a replica under load."""
    home = settings.home() / "demo"
    if fresh and home.exists():
        os.environ["RARECVR_HOME"] = str(home)
        local.down()
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["RARECVR_HOME"] = str(home)
    try:
        info, started_broker = local.up()
    except (BrokerError, DistError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Kafka {info.version} at {info.bootstrap}; state in {home}")
    try:
        summary = run(home, info.bootstrap, minutes, speed, clicks, window_hours, history_days)
    finally:
        if started_broker and not keep_broker:
            local.down()
    if as_json:
        click.echo(json.dumps(summary))


def run(home: Path, bootstrap: str, minutes, speed, clicks, window_hours, history_days) -> dict:
    env = {**os.environ, "RARECVR_BOOTSTRAP": bootstrap, "PYTHONUNBUFFERED": "1"}
    live_days = 4.0
    cfg = SimConfig(
        clicks=int(clicks * (live_days + history_days) / live_days),
        days=live_days + history_days,
        advertisers=100,
        seed=7,
        attribution_window_ms=ATTRIBUTION_MS,
    )
    live_from = cfg.start_ms + int(history_days * 86_400_000)
    history = write_history(cfg, live_from, home / "history.parquet") if history_days else None
    ports = {name: free_port() for name in ("worker", "trainer", "replica")}
    days = str(ATTRIBUTION_MS / 86_400_000)
    publish_schema(bootstrap, SCHEMA, "simulator")
    stack = Stack(home / "logs", env)
    stack.start(
        "worker",
        "worker",
        "--data-dir",
        str(home / "worker"),
        "--web-port",
        str(ports["worker"]),
        "--window-days",
        days,
        "--lateness-minutes",
        "5",
        "--half-life-days",
        "1",
        "--dwell-hours",
        "6",
        *(["--history", str(history)] if history else []),
    )
    stack.start(
        "trainer",
        "train",
        "--registry",
        str(home / "registry"),
        "--state-dir",
        str(home / "trainer"),
        "--window-hours",
        str(window_hours),
        "--attribution-days",
        days,
        "--hash-buckets",
        "20000",
        "--metrics-port",
        str(ports["trainer"]),
        *(["--history", str(history)] if history else []),
    )
    stack.start(
        "replica", "serve", "--registry", str(home / "registry"), "--port", str(ports["replica"])
    )
    traffic = Traffic(bootstrap, cfg, speed, home / "traffic.json", live_from)
    traffic.start()
    worker = f"http://127.0.0.1:{ports['worker']}"
    replica = f"http://127.0.0.1:{ports['replica']}"
    loadgen: LoadGenerator | None = None
    samples: list[dict] = []
    died = None
    end = time.time() + minutes * 60
    from rich.live import Live

    try:
        with Live(refresh_per_second=2) as live:
            while time.time() < end:
                stack.check()
                if traffic.error is not None:
                    raise click.ClickException(f"the simulator stopped: {traffic.error}")
                if loadgen is None and (get_json(f"{replica}/readyz") or {}).get("ready"):
                    loadgen = LoadGenerator(f"{replica}/score", candidates(cfg))
                    loadgen.start()
                samples.append(sample(worker, home, loadgen, traffic))
                live.update(table(samples[-1], end - time.time()))
                time.sleep(2)
    except KeyboardInterrupt:
        click.echo("interrupted: stopping every stage")
    except StageDied as exc:
        died = str(exc)
        click.echo(f"a stage died: {exc}", err=True)
    finally:
        traffic.stop_event.set()
        if loadgen is not None:
            loadgen.stop_event.set()
            loadgen.join(timeout=15)
        codes = stack.stop()
        traffic.join(timeout=30)
    history = trainer_history(home)
    bootstrap = trainer_state(home).get("bootstrap")
    requests = loadgen.records if loadgen else []
    progressive = [h["progressive"] for h in history if h.get("progressive")]
    rigs = [p["hard_rig"] for p in progressive if p.get("hard_rig") is not None]
    summary = {
        "headline": None,
        "versions_published": sum(1 for h in [bootstrap, *history] if h and h["version"]),
        "versions_rejected": sum(1 for h in history if h["rejected"]),
        "versions_served": sorted({r[3] for r in requests if r[2] == 200}),
        "requests": len(requests),
        "failed_requests": sum(r[2] != 200 for r in requests),
        "first_hard_rig": rigs[0] if rigs else None,
        "last_hard_rig": rigs[-1] if rigs else None,
        **served_figures(progressive),
        "soft_rigs": [p["soft_rig"] for p in progressive if p.get("soft_rig") is not None],
        "history": (bootstrap or {}).get("holdout", {}).get("candidate"),
        "events_sent": traffic.sent,
        # the worker keeps up when this stays bounded: events sent and not yet consumed
        "events_behind_halfway": behind(samples[len(samples) // 2]) if samples else None,
        "events_behind_end": behind(samples[-1]) if samples else None,
        "exit_codes": codes,
        "stage_died": died,
    }
    summary["headline"] = headline(summary)
    click.echo(summary["headline"])
    summary["report"] = str(write(home / "report.html", summary, samples, history, requests))
    click.echo(f"report: {summary['report']}")
    if died:
        raise click.ClickException("a stage died; see the report and " + str(home / "logs"))
    return summary


def behind(sample: dict) -> int:
    return max(int(sample["sent"] - sample["events"]), 0)


def candidates(cfg: SimConfig) -> list[dict]:
    """Scoring requests drawn from the simulated clicks' features."""
    from simulator.events import click_records
    from simulator.tables import Vocab
    from simulator.traffic import generate

    market = Marketplace(SimConfig(**{**cfg.__dict__, "clicks": 2_000}))
    chunk = next(generate(market))
    out = []
    for record in click_records(chunk, Vocab(market)):
        click_event = json.loads(record.value)
        out.append(
            {
                "setup_id": click_event["setup_id"],
                "advertiser_id": click_event["advertiser_id"],
                "features": click_event["features"],
            }
        )
    return out


def write_history(cfg: SimConfig, until_ms: int, path: Path) -> Path:
    """The simulated clicks before ``until_ms`` as a Parquet click log (kept once written)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from simulator.tables import Vocab, clicks_table
    from simulator.traffic import generate

    if not path.exists():
        market = Marketplace(cfg)
        vocab = Vocab(market)
        parts = []
        for chunk in generate(market):
            table = clicks_table(chunk, vocab)
            parts.append(table.filter(pc.less(table["ts_ms"], until_ms)))
            if chunk.ts_ms[-1] >= until_ms:
                break
        pq.write_table(pa.concat_tables(parts), path)
    return path


def served_figures(progressive: list[dict]) -> dict:
    """The served versions' hard figures pooled over the windows they were scored on."""
    expected = sum(p.get("hard_expected") or 0.0 for p in progressive)
    seen = sum(p.get("hard_positives") or 0 for p in progressive)
    gains = [
        p["hard_rig_vs_constant"] for p in progressive if p.get("hard_rig_vs_constant") is not None
    ]
    scored = [
        (p["hard_rig"], p["hard_examples"], p["hard_positives"])
        for p in progressive
        if p.get("hard_rig") is not None
    ]
    return {
        "served_hard_calibration": expected / seen if seen else None,
        "served_hard_rig_pooled": pooled_rig(scored),
        "windows_above_constant": sum(g > 0 for g in gains),
        "windows_scored": len(gains),
    }


def headline(summary: dict) -> str:
    """One sentence a person can read: is the served model better than a constant?"""
    first, last = summary["first_hard_rig"], summary["last_hard_rig"]
    history = summary.get("history") or {}
    before = (
        f"Version 1, fitted on the simulated history, beat a constant on held-out hard "
        f"clicks by {history['hard_rig_vs_constant']:.3f} RIG (95% lower bound "
        f"{history['hard_rig_vs_constant_low']:.3f}). "
        if history.get("hard_rig_vs_constant") is not None
        else ""
    )
    if first is None:
        soft = summary.get("soft_rigs") or []
        soft_part = (
            f" On soft clicks the served versions' progressive RIG was "
            f"{min(soft):.3f} to {max(soft):.3f}."
            if soft
            else ""
        )
        return (
            f"{before}No served version was scored on live hard clicks: the live windows held "
            f"none (the stabilizer had assigned no setup to the hard task in the event time "
            f"the worker processed).{soft_part}"
        )
    pooled, cal = summary["served_hard_rig_pooled"], summary["served_hard_calibration"]
    if pooled <= 0:
        better = "not better"
    elif summary["windows_above_constant"] < summary["windows_scored"]:
        better = "better over the whole run, though not in every window,"
    else:
        better = "better"
    return (
        f"{before}The served model was {better} than a constant on live hard traffic: "
        f"progressive hard RIG {pooled:.3f} over every window with hard conversions, "
        f"{first:.3f} on the first window scored and {last:.3f} on the "
        f"last, above a constant in {summary['windows_above_constant']} of "
        f"{summary['windows_scored']} windows, predicting "
        f"{'-' if cal is None else f'{cal:.2f}'}x the hard conversions seen."
    )


def trainer_state(home: Path) -> dict:
    state = home / "trainer" / "state.json"
    return json.loads(state.read_text()) if state.exists() else {}


def trainer_history(home: Path) -> list[dict]:
    return trainer_state(home).get("history", [])


def sample(worker: str, home: Path, loadgen: LoadGenerator | None, traffic: Traffic) -> dict:
    metrics = scrape(f"{worker}/metrics")
    page = get_json(f"{worker}/assignments?limit=10000") or {}
    tasks = [a["task"] for a in page.get("assignments", {}).values()]
    history = trainer_history(home)
    load = loadgen.summary(last_s=10) if loadgen else {}
    return {
        "t": time.time(),
        "sent": traffic.sent,
        "events": metrics.get("rarecvr_stream_events_total", 0),
        "labels": metrics.get("rarecvr_stream_labels_total", 0),
        "hard": tasks.count("hard"),
        "soft": tasks.count("soft"),
        "hard_share": tasks.count("hard") / len(tasks) if tasks else 0.0,
        "flips": metrics.get("rarecvr_stabilizer_flips_total", 0),
        "published": sum(1 for h in history if h["version"]),
        "rejected": sum(1 for h in history if h["rejected"]),
        "serving": (load.get("versions") or [None])[-1],
        "rps": load.get("requests", 0) / 10,
        "p99_ms": load.get("p99_ms"),
        "failed": loadgen.summary()["failed"] if loadgen else 0,
    }


def table(s: dict, left_s: float):
    from rich.table import Table

    t = Table(title=f"rarecvr demo: {max(left_s, 0):.0f} s left", show_header=False)
    p99 = "-" if s["p99_ms"] is None else f"{s['p99_ms']:.1f} ms"
    for name, value in (
        (
            "events sent / consumed",
            f"{s['sent']:,} / {s['events']:,.0f} ({max(s['sent'] - s['events'], 0):,.0f} behind)",
        ),
        ("labeled examples out", f"{s['labels']:,.0f}"),
        ("setups hard / soft", f"{s['hard']} / {s['soft']} ({s['flips']:.0f} changes)"),
        ("versions published / rejected", f"{s['published']} / {s['rejected']}"),
        ("replica serving version", str(s["serving"] or "-")),
        ("requests/s, p99 (last 10 s)", f"{s['rps']:.1f}, {p99}"),
        ("failed requests", str(s["failed"])),
    ):
        t.add_row(name, value)
    return t
