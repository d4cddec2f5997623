"""``rarecvr kafka ...``: fetch the jars, start, inspect and stop the local broker."""

from __future__ import annotations

import time

import click

from deploy.kafka import local
from deploy.kafka.broker import BrokerError
from deploy.kafka.dist import KAFKA_VERSION, DistError, fetch, libs_dir
from rarecvr import settings
from rarecvr.topics import ALL


@click.group()
def kafka() -> None:
    """The local Apache Kafka broker (single-node KRaft, jars from Maven Central).

    State lives in $RARECVR_HOME/kafka (default ~/.rarecvr/kafka); jars are cached in
    $RARECVR_CACHE (default ~/.cache/rarecvr).
    """


@kafka.command("fetch")
def fetch_cmd() -> None:
    """Resolve the broker's jars with Maven, once, into the cache."""
    started = time.monotonic()
    try:
        libs = fetch(quiet=False)
    except DistError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Kafka {KAFKA_VERSION} jars in {libs} ({time.monotonic() - started:.1f} s)")


@kafka.command()
@click.option(
    "--port", type=int, envvar="RARECVR_KAFKA_PORT", help="Listener port (default: free)."
)
@click.option("--timeout", type=float, default=60, show_default=True, help="Seconds to wait.")
@click.option(
    "--secure",
    is_flag=True,
    envvar="RARECVR_KAFKA_SECURE",
    help="Listen with SASL_SSL only: TLS with a self-signed certificate made at first start "
    "(keytool) and one SCRAM-SHA-512 user with a random password, kept under "
    "$RARECVR_HOME/kafka/tls. Local rarecvr commands find the settings by themselves; the "
    "variables printed are for other shells and hosts.",
)
def up(port: int | None, timeout: float, secure: bool) -> None:
    """Start the broker on 127.0.0.1 (if not running) and create every rarecvr topic."""
    started = time.monotonic()
    try:
        info, now = local.up(port=port, timeout=timeout, secure=secure)
    except (BrokerError, DistError) as exc:
        raise click.ClickException(str(exc)) from None
    verb = "started" if now else "already running"
    click.echo(
        f"Kafka {info.version} {verb} at {info.bootstrap} (pid {info.pid}, "
        f"{time.monotonic() - started:.1f} s); topics: {', '.join(t.name for t in ALL)}"
    )
    if info.security:
        click.echo("SASL_SSL only; for clients elsewhere:")
        for name, value in local.client_environment(info).items():
            click.echo(f"  export {name}={value}")


@kafka.command()
def status() -> None:
    """Say whether the local broker runs, where, and which version. Exit 1 if it does not."""
    info = local.recorded()
    if info is None:
        cached = (libs_dir().parent / ".complete").exists()
        click.echo(
            f"Kafka is not running (jars {'cached' if cached else 'not fetched'}; "
            f"state in {settings.home() / 'kafka'})."
        )
        raise SystemExit(1)
    click.echo(
        f"Kafka {info.version} running at {info.bootstrap} (pid {info.pid}, "
        f"{'SASL_SSL' if info.security else 'plaintext'}); data {info.data_dir}; "
        f"log {info.log_file}"
    )


@kafka.command()
@click.option(
    "--timeout", type=float, default=20, show_default=True, help="Seconds before SIGKILL."
)
def down(timeout: float) -> None:
    """Stop the local broker: SIGTERM, then SIGKILL after the timeout."""
    try:
        info = local.down(timeout=timeout)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("Kafka was not running." if info is None else f"Kafka stopped (pid {info.pid}).")
