"""``rarecvr train`` (the incremental trainer) and ``rarecvr model`` (the registry)."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import click

from rarecvr import kafka_auth, log_options, settings


def registry_option(f):
    return click.option(
        "--registry",
        type=click.Path(path_type=Path),
        envvar="RARECVR_REGISTRY",
        help="Model registry directory (default $RARECVR_HOME/registry).",
    )(f)


def registry_path(registry: Path | None) -> Path:
    return registry or settings.home() / "registry"


@click.command()
@click.option("--bootstrap", envvar="RARECVR_BOOTSTRAP", help="Kafka bootstrap address.")
@registry_option
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    envvar="RARECVR_TRAINER_STATE",
    help="Checkpoints and progress (default $RARECVR_HOME/trainer).",
)
@click.option(
    "--window-hours",
    type=float,
    default=6.0,
    show_default=True,
    help="Window size in event time (label time of the examples).",
)
@click.option(
    "--attribution-days",
    type=float,
    default=7.0,
    show_default=True,
    help="The stream worker's attribution window (when a negative became final).",
)
@click.option(
    "--max-rig-drop",
    type=float,
    default=0.01,
    show_default=True,
    help="Gate: the candidate must be shown (95%, paired on the holdout) to trail the serving "
    "model's hard RIG by less than this.",
)
@click.option(
    "--calibration",
    type=(float, float),
    default=(0.67, 1.5),
    show_default=True,
    help="Gate: bounds on the hard calibration ratio (mean prediction / mean label).",
)
@click.option("--hash-buckets", type=int, default=100_000, show_default=True)
@click.option(
    "--loss-weights",
    type=(float, float),
    default=(0.5, 0.5),
    show_default=True,
    help="W_soft W_hard of the multi-task loss.",
)
@click.option("--batch", type=int, default=1024, show_default=True, help="Training batch size.")
@click.option("--keep", type=int, default=5, show_default=True, help="Versions kept.")
@click.option(
    "--reader-nice",
    type=click.IntRange(0, 19),
    default=10,
    show_default=True,
    envvar="RARECVR_READER_NICE",
    help="How much lower the topic reader's CPU priority is than training's (0: the same), "
    "so that reading takes the CPU training leaves.",
)
@click.option(
    "--close-idle-seconds",
    type=float,
    default=30.0,
    show_default=True,
    help="A window closes without a label past its end once the topic has had nothing new "
    "for this long (the end of a replayed log, a quiet partition).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=6067,
    show_default=True,
    envvar="RARECVR_TRAINER_PORT",
    help="Prometheus /metrics port (0: none).",
)
@click.option("--max-windows", type=int, help="Stop after this many windows.")
@log_options.history(
    "to fit the first version on before the first live window; ignored once the trainer has a model"
)
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(exists=True, path_type=Path),
    help='Feature schema JSON ({"categorical": [...], "numeric": [...]}); default: '
    "the one published on the feature-schema topic.",
)
@click.option(
    "--schema-wait",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for a published schema when the state has none.",
)
@click.option(
    "--alpha",
    type=float,
    default=0.01,
    show_default=True,
    help="History: a setup is hard when its decayed CVR is at most alpha.",
)
def train(
    bootstrap,
    registry,
    state_dir,
    window_hours,
    attribution_days,
    max_rig_drop,
    calibration,
    hash_buckets,
    loss_weights,
    batch,
    keep,
    reader_nice,
    close_idle_seconds,
    metrics_port,
    max_windows,
    history,
    alpha,
    schema_file,
    schema_wait,
) -> None:
    """Train the multi-task model on each window of labeled examples and publish validated
    hard-only graphs (with the soft tower as a second signature) to the registry.

    Resumes where it stopped: the state directory holds the next window's offsets and the last
    good checkpoint. SIGTERM or Ctrl-C stops between records; the open window is read again.

    A version is published only when it beats a constant with confidence on the held-out tails
    of recent windows; with little data that takes many windows, so give a history log with
    --history to start from a useful first version.
    """
    from prometheus_client import start_http_server

    from model.dcn import ModelConfig
    from rarecvr.schema import FeatureSchema
    from rarecvr.schema_topic import latest_schema
    from trainer.features import NoSchema, choose
    from trainer.gate import GateParams
    from trainer.history import stream_rule
    from trainer.loop import Trainer, TrainerConfig

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    address = kafka_auth.connect(bootstrap)
    state_dir = state_dir or settings.home() / "trainer"

    def published(wait_s: float = 0.0) -> FeatureSchema | None:
        found = latest_schema(address, wait_s)
        return found[0] if found else None

    given = FeatureSchema.from_json(json.loads(schema_file.read_text())) if schema_file else None
    kept = (state_dir / "schema.json").exists()
    try:
        schema = choose(state_dir, given, None if kept or given else published(schema_wait))
    except NoSchema as exc:
        raise click.ClickException(f"{exc} within {schema_wait:g} s") from None
    click.echo(f"features: {schema.summary()}")
    cfg = TrainerConfig(
        bootstrap=address,
        registry=registry_path(registry),
        state_dir=state_dir,
        model=ModelConfig(schema, hash_buckets=hash_buckets, loss_weights=tuple(loss_weights)),
        window_ms=int(window_hours * 3_600_000),
        attribution_window_ms=int(attribution_days * 86_400_000),
        gate=GateParams(max_rig_drop=max_rig_drop, calibration_bounds=tuple(calibration)),
        keep_versions=keep,
        batch=batch,
        reader_nice=reader_nice,
        close_idle_s=close_idle_seconds,
    )
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    trainer = Trainer(cfg, schema_watch=published)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: trainer.stop_event.set())
    if history is not None:
        try:
            entry = trainer.bootstrap(history, stream_rule(alpha))
        except (KeyError, ValueError) as exc:
            raise click.ClickException(str(exc).strip("'\"")) from None
        click.echo(_history_line(entry))
    click.echo(f"training from window {trainer.state.window}; registry {cfg.registry}")
    trainer.run(max_windows=max_windows)


def _history_line(entry: dict) -> str:
    if "skipped" in entry:
        return entry["skipped"]
    figures = entry["holdout"]["candidate"] or {}
    rig = figures.get("hard_rig_vs_constant")
    told = (
        (
            f"hard RIG over a constant {rig:.4f} (95% lower bound "
            f"{figures['hard_rig_vs_constant_low']:.4f}) on {figures['hard_examples']} held-out "
            f"hard clicks with {figures['hard_positives']} conversions"
        )
        if rig is not None
        else ("too few held-out hard conversions to measure")
    )
    outcome = (
        f"published version {entry['version']}"
        if entry["version"]
        else f"refused ({', '.join(entry['rejected'])}): nothing published"
    )
    return f"history {entry['history']}: {entry['examples']} clicks; {told}; {outcome}"


@click.group()
def model() -> None:
    """List, pin and roll back versions in the model registry."""


@model.command("list")
@registry_option
def list_versions(registry) -> None:
    """Versions with their window, examples and progressive hard RIG."""
    from rarecvr.registry import Registry

    reg = Registry(registry_path(registry))
    serving = reg.serving()
    for version in reg.versions():
        m = reg.manifest(version)
        tail = (m.get("metrics") or {}).get("tail") or {}
        rig = tail.get("hard_rig")
        mark = "*" if version == serving else " "
        click.echo(
            f"{mark} {version:>4}  window {m.get('window')}  epoch "
            f"{m.get('assignment_epoch')}  tail hard RIG "
            f"{'-' if rig is None else f'{rig:.4f}'}"
        )
    pinned = reg.pinned()
    click.echo(f"serving: {serving}" + (f" (pinned {pinned})" if pinned else ""))


def change(registry: Path | None, bootstrap: str | None, action: str, apply) -> int | None:
    """Apply ``apply(registry) -> version`` to the registry and announce it on the topic."""
    from kafka import KafkaProducer

    from rarecvr.contracts import encode
    from rarecvr.registry import Registry, RegistryError
    from rarecvr.topics import MODEL_UPDATES

    reg = Registry(registry_path(registry))
    try:
        version = apply(reg)
    except RegistryError as error:
        raise click.ClickException(str(error)) from None
    if version is not None:
        producer = KafkaProducer(**kafka_auth.kafka_python(kafka_auth.connect(bootstrap)))
        update = reg.update_event(action, version)
        producer.send(MODEL_UPDATES.name, key=b"model", value=encode(update))
        producer.flush()
        producer.close()
    return version


bootstrap_option = click.option(
    "--bootstrap", envvar="RARECVR_BOOTSTRAP", help="Kafka bootstrap address."
)


@model.command()
@click.argument("version", type=int)
@registry_option
@bootstrap_option
def pin(version, registry, bootstrap) -> None:
    """Serve VERSION until unpinned (checked against its manifest first)."""
    change(registry, bootstrap, "pin", lambda reg: reg.pin(version) or version)
    click.echo(f"pinned {version}")


@model.command()
@registry_option
@bootstrap_option
def unpin(registry, bootstrap) -> None:
    """Serve the latest version again."""
    latest = change(registry, bootstrap, "unpin", lambda reg: reg.unpin() or reg.serving())
    click.echo(f"unpinned; serving {latest}")


@model.command()
@registry_option
@bootstrap_option
def rollback(registry, bootstrap) -> None:
    """Pin the version before the one serving now."""
    version = change(registry, bootstrap, "rollback", lambda reg: reg.rollback())
    click.echo(json.dumps({"rolled_back_to": version}))
