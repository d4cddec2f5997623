"""``rarecvr worker`` (the stream worker) and ``rarecvr replay`` (a user's log as events)."""

from __future__ import annotations

from pathlib import Path

import click

from rarecvr import kafka_auth, log_options, settings
from stabilizer.policy import PolicyParams

POLICY = PolicyParams()


@click.command()
@click.option("--bootstrap", envvar="RARECVR_BOOTSTRAP", help="Kafka bootstrap address.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="RARECVR_WORKER_DATA",
    help="This worker's RocksDB tables (default $RARECVR_HOME/worker).",
)
@click.option(
    "--web-port",
    type=int,
    default=6066,
    show_default=True,
    envvar="RARECVR_WORKER_PORT",
    help="HTTP port: /cvr/<setup>, /metrics.",
)
@click.option(
    "--window-days", type=float, default=7.0, show_default=True, help="Attribution window."
)
@click.option(
    "--lateness-minutes",
    type=float,
    default=60.0,
    show_default=True,
    help="Allowed lateness of an event behind its stream.",
)
@click.option(
    "--half-life-days",
    type=float,
    default=7.0,
    show_default=True,
    help="Half-life of the decayed CVR.",
)
@click.option(
    "--alpha",
    type=float,
    default=POLICY.alpha,
    show_default=True,
    envvar="RARECVR_ALPHA",
    help="Stabilizer: a setup with CVR at most alpha is hard.",
)
@click.option(
    "--online-margin",
    type=float,
    default=POLICY.online_margin,
    show_default=True,
    help="Stabilizer: the online threshold is alpha * (1 - margin).",
)
@click.option(
    "--confidence",
    type=float,
    default=POLICY.confidence,
    show_default=True,
    help="Stabilizer: posterior probability needed to change a task.",
)
@click.option(
    "--dwell-hours",
    type=float,
    show_default=True,
    default=POLICY.min_dwell_ms / 3_600_000,
    help="Stabilizer: event time a setup keeps a task before it may change.",
)
@click.option(
    "--tag-noise",
    type=click.FloatRange(0, 1, max_open=True),
    show_default=True,
    default=POLICY.tag_noise,
    envvar="RARECVR_TAG_NOISE",
    help="Stabilizer: share of setups whose type and category tags are wrong; the "
    "weight of all setups' prior beside the peer group's.",
)
@click.option(
    "--step-events",
    type=int,
    default=10_000,
    show_default=True,
    envvar="RARECVR_STEP_EVENTS",
    help="Events per agent step: a step writes each table key and sends each "
    "setup's CVR deltas once. Larger is faster, holds the loop longer.",
)
@log_options.history(
    "to start each setup's CVR (and so its task) from, before the live stream: sent to "
    "rarecvr.cvr-deltas as the worker starts (again on a restart; the count agent skips what it "
    "has applied)"
)
@click.option("--loglevel", default="warning", show_default=True)
def worker(
    bootstrap,
    data_dir,
    web_port,
    window_days,
    lateness_minutes,
    half_life_days,
    alpha,
    online_margin,
    confidence,
    dwell_hours,
    tag_noise,
    step_events,
    history,
    loglevel,
) -> None:
    """Run a stream worker: attribution, labels, decayed CVR per setup and the stabilizer's
    task assignments (Faust, RocksDB). Serves /cvr/<setup>, /assignments, /metrics, /healthz.

    Start more workers with the same bootstrap (and their own --data-dir and --web-port) to
    share the partitions. SIGTERM or Ctrl-C stops cleanly; after a SIGKILL the worker restores
    its tables from their changelogs and resumes from its committed offsets.

    With --history (the log the trainer's --history reads), each setup's CVR starts from its
    past clicks, so the stabilizer judges it on its own evidence from the first minute rather
    than on its peers' prior (see streams/seed.py).
    """
    from faust import Worker

    from stabilizer.agent import attach
    from streams import seed
    from streams.attribution import DAY_MS, Rules
    from streams.cvr import CvrParams
    from streams.worker import (
        WorkerConfig,
        create_app,
        create_changelogs,
        mark_clean,
        prepare_data_dir,
    )

    address = kafka_auth.connect(bootstrap)
    data_dir = data_dir or settings.home() / "worker"
    window = int(window_days * DAY_MS)
    cfg = WorkerConfig(
        bootstrap=address,
        data_dir=data_dir,
        web_port=web_port,
        rules=Rules(
            window_ms=window,
            allowed_lateness_ms=int(lateness_minutes * 60_000),
            orphan_ttl_ms=window,
            retention_ms=window,
        ),
        # Recent-click buckets: 3 h, or finer for a short window (the delay correction needs
        # several buckets per window).
        cvr=CvrParams(
            half_life_ms=int(half_life_days * DAY_MS),
            window_ms=window,
            bucket_ms=max(min(3 * 3_600_000, window // 8), 60_000),
        ),
        step_events=step_events,
    )
    if prepare_data_dir(data_dir):
        click.echo("previous stop was not clean: tables will be restored from their changelogs")
    listeners = []
    app, tables = create_app(cfg, listeners)
    policy = PolicyParams(
        alpha=alpha,
        online_margin=online_margin,
        confidence=confidence,
        min_dwell_ms=int(dwell_hours * 3_600_000),
        tag_noise=tag_noise,
    )
    listeners.append(attach(app, tables.setups, policy, cfg.cvr).on_cvr)
    create_changelogs(app, address)
    if history is not None:
        try:
            records, setups = seed.send(address, history, cfg.cvr)
        except (KeyError, ValueError) as exc:
            raise click.ClickException(str(exc).strip("'\"")) from None
        click.echo(f"history: {setups} setups' CVR sent as {records} records of CVR deltas")
    code = 1
    try:
        runner = Worker(app, loglevel=loglevel, quiet=True)
        # No terminal spinner: to spin on every log record it sets the root logger to DEBUG,
        # and every debug call in aiokafka and Faust then builds a record (a tenth of the CPU).
        runner.spinner = None
        runner.execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code or 0
        raise
    finally:
        if code == 0:
            mark_clean(data_dir)


@click.command()
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="CSV(.gz) or Parquet click log, one row per click.",
)
@click.option(
    "--click-time",
    required=True,
    help="Column with the click's time: epoch numbers, ISO-8601 or datetime strings, "
    "or timestamps.",
)
@click.option(
    "--conversion-time",
    required=True,
    help="Column with the conversion's time; empty when there was none.",
)
@click.option("--setup", required=True, help="Conversion setup column(s), comma-separated.")
@click.option("--features", required=True, help="Feature columns, comma-separated.")
@log_options.feature_kinds
@click.option("--id", "id_column", help="Click id column (default: the row number).")
@click.option(
    "--advertiser",
    help="Advertiser column (default: advertiser_id if the log has one, else the setup).",
)
@log_options.time_unit
@click.option(
    "--window-days",
    type=float,
    default=7.0,
    show_default=True,
    help="The worker's attribution window: a log shorter than it is warned about.",
)
@click.option("--speed", type=float, help="Compress event time by this factor.")
@log_options.events_per_record
@click.option("--bootstrap", envvar="RARECVR_BOOTSTRAP", help="Kafka bootstrap address.")
def replay(
    data,
    click_time,
    conversion_time,
    setup,
    features,
    categorical,
    numeric,
    id_column,
    advertiser,
    unit,
    window_days,
    speed,
    events_per_record,
    bootstrap,
) -> None:
    """Send a click log to the clicks and conversions topics, in event-time order, after its
    feature schema (printed; integer columns are ids, hashed as categories, unless --numeric).

    \b
      rarecvr replay --data train.csv.gz --click-time click_time \\
          --conversion-time attributed_time --setup app --features ip,device,os,channel
    """
    from rarecvr.logfile import read_table
    from rarecvr.produce import produce
    from rarecvr.schema import FeatureSchema, infer
    from rarecvr.schema_topic import publish_schema
    from streams.replay import describe_times, log_records, log_span_days, window_warning

    def names(value: str) -> list[str]:
        return [v.strip() for v in value.split(",") if v.strip()]

    address = kafka_auth.connect(bootstrap)
    try:
        table = read_table(data)
        inferred, notes = infer(
            table, names(features), tuple(names(categorical)), tuple(names(numeric))
        )
        records = list(
            log_records(
                table,
                click_time,
                conversion_time,
                names(setup),
                names(features),
                unit,
                id_column,
                advertiser,
            )
        )
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    has_advertiser = advertiser or "advertiser_id" in table.column_names
    top = ("setup_id", "advertiser_id") if has_advertiser else ("setup_id",)
    schema = FeatureSchema((*top, *inferred.categorical), inferred.numeric)
    click.echo(f"features: {schema.summary()}")
    for note in notes:
        click.echo(f"  {note}")
    click.echo(f"clicks: {describe_times(records)}")
    warning = window_warning(log_span_days(records), window_days)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    publish_schema(address, schema, str(data))
    counts = produce(address, records, speed=speed, batch=events_per_record)
    sent = ", ".join(f"{n} to {topic}" for (topic, _), n in sorted(counts.items()))
    click.echo(f"replayed {data}: {sent}")
