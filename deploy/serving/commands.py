"""``rarecvr serve``: one scoring replica."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from rarecvr import kafka_auth, settings


@click.command()
@click.option("--bootstrap", envvar="RARECVR_BOOTSTRAP", help="Kafka bootstrap address.")
@click.option(
    "--registry",
    type=click.Path(path_type=Path),
    envvar="RARECVR_REGISTRY",
    help="Model registry directory (default $RARECVR_HOME/registry).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True, envvar="RARECVR_SERVE_PORT")
@click.option(
    "--token",
    envvar="RARECVR_SERVE_TOKEN",
    help="Require 'Authorization: Bearer TOKEN' on /score. On the command line it is "
    "visible in ps: prefer RARECVR_SERVE_TOKEN or --token-file.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the bearer token from this file (its first line).",
)
@click.option("--max-batch", type=int, default=1000, show_default=True)
@click.option("--max-body-bytes", type=int, default=1 << 20, show_default=True)
@click.option(
    "--unknown-features",
    type=click.Choice(["ignore", "refuse"]),
    default="refuse",
    show_default=True,
    help="A request with a feature the version's schema does not have: refuse it "
    "(422, naming the feature) or ignore the feature.",
)
@click.option(
    "--switch-interval-ms",
    type=float,
    default=0.2,
    show_default=True,
    envvar="RARECVR_SERVE_SWITCH_INTERVAL_MS",
    help="Python's thread switch interval. Short, so a request waiting for the GIL "
    "is not held up while a new version loads in the background.",
)
@click.option(
    "--stale-after",
    "stale_after_s",
    type=float,
    default=300.0,
    show_default=True,
    envvar="RARECVR_SERVE_STALE_AFTER",
    help="Seconds without a success of the model follower or the assignment reader (the "
    "broker away) after which /readyz answers 503; /score still answers.",
)
def serve(
    bootstrap,
    registry,
    host,
    port,
    token,
    token_file,
    max_batch,
    max_body_bytes,
    unknown_features,
    switch_interval_ms,
    stale_after_s,
) -> None:
    """Serve pCVR: POST /score routes each candidate to the hard-only or soft graph by its
    setup's task, and swaps in new model versions without dropping a request.

    \b
    POST /score   {"candidates": [{"setup_id": ..., "advertiser_id": ..., "features": {...}}]}
    GET  /readyz  ready once a model version and the task assignments are loaded, and while
                  the threads that keep them current work (--stale-after)
    GET  /healthz, /metrics (Prometheus)
    Run several replicas (own --port each) behind a load balancer: each follows the same topics
    and registry and converges on the same version and epoch.
    """
    import sys

    from aiohttp import web

    from deploy.serving.replica import Replica, ReplicaConfig, create_app

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if token_file is not None:
        token = token_file.read_text().splitlines()[0].strip() if token_file.stat().st_size else ""
        if not token:
            raise click.BadParameter(f"{token_file} is empty", param_hint="--token-file")
    cfg = ReplicaConfig(
        bootstrap=kafka_auth.connect(bootstrap),
        registry=registry or settings.home() / "registry",
        token=token,
        max_batch=max_batch,
        max_body_bytes=max_body_bytes,
        unknown_features=unknown_features,
        stale_after_s=stale_after_s,
    )
    sys.setswitchinterval(switch_interval_ms / 1000)
    replica = Replica(cfg).start()
    try:
        web.run_app(create_app(replica), host=host, port=port, print=click.echo)
    finally:
        replica.stop()
