"""``rarecvr worker`` (the stream worker) and ``rarecvr replay`` (a user's log as events)."""

from __future__ import annotations

from pathlib import Path

import click

from rarecvr import settings


@click.command()
@click.option("--bootstrap", envvar="RARECVR_BOOTSTRAP", help="Kafka bootstrap address.")
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="RARECVR_WORKER_DATA",
              help="This worker's RocksDB tables (default $RARECVR_HOME/worker).")  # fmt: skip
@click.option("--web-port", type=int, default=6066, show_default=True,
              envvar="RARECVR_WORKER_PORT", help="HTTP port: /cvr/<setup>, /metrics.")  # fmt: skip
@click.option("--window-days", type=float, default=7.0, show_default=True,
              help="Attribution window.")  # fmt: skip
@click.option("--lateness-minutes", type=float, default=60.0, show_default=True,
              help="Allowed lateness of an event behind its stream.")  # fmt: skip
@click.option("--half-life-days", type=float, default=7.0, show_default=True,
              help="Half-life of the decayed CVR.")  # fmt: skip
@click.option("--loglevel", default="warning", show_default=True)
def worker(bootstrap, data_dir, web_port, window_days, lateness_minutes, half_life_days,
           loglevel) -> None:  # fmt: skip
    """Run a stream worker: attribution, labels and decayed CVR per setup (Faust, RocksDB).

    Start more workers with the same bootstrap (and their own --data-dir and --web-port) to
    share the partitions. SIGTERM or Ctrl-C stops cleanly; after a SIGKILL the worker restores
    its tables from their changelogs and resumes from its committed offsets.
    """
    from faust import Worker

    from streams.attribution import DAY_MS, Rules
    from streams.cvr import CvrParams
    from streams.worker import WorkerConfig, create_app, mark_clean, prepare_data_dir

    address = settings.bootstrap(bootstrap)
    data_dir = data_dir or settings.home() / "worker"
    window = int(window_days * DAY_MS)
    cfg = WorkerConfig(
        bootstrap=address,
        data_dir=data_dir,
        web_port=web_port,
        rules=Rules(window_ms=window, allowed_lateness_ms=int(lateness_minutes * 60_000),
                    orphan_ttl_ms=window, retention_ms=window),
        cvr=CvrParams(half_life_ms=int(half_life_days * DAY_MS), window_ms=window),
    )  # fmt: skip
    if prepare_data_dir(data_dir):
        click.echo("previous stop was not clean: tables will be restored from their changelogs")
    app = create_app(cfg)
    code = 1
    try:
        Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code or 0
        raise
    finally:
        if code == 0:
            mark_clean(data_dir)
