"""``rarecvr demo``: the main job on embedded defaults.

Today it exercises the foundation end to end: it starts the local broker (unless one runs),
sends simulated clicks and conversions through it, reads every record back checked against its
contract, prints what it did, and stops the broker it started. The stages join it as they land.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import replace

import click

from deploy.kafka import local
from deploy.kafka.broker import BrokerError
from deploy.kafka.dist import DistError
from rarecvr.peek import check_topic, end_offsets
from rarecvr.produce import produce
from rarecvr.topics import CLICKS, CONVERSIONS
from simulator import Faults, Marketplace, SimConfig
from simulator.commands import progress_bar
from simulator.events import event_stream


@click.command()
@click.option("--clicks", type=int, default=50_000, show_default=True)
@click.option(
    "--malformed",
    type=float,
    default=0.001,
    show_default=True,
    help="Share of malformed records mixed in, to show how they are reported.",
)
@click.option("--keep-broker", is_flag=True, help="Leave the broker running afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line of figures last.")
def demo(clicks: int, malformed: float, keep_broker: bool, as_json: bool) -> None:
    """Run the main job on embedded defaults (broker, simulated traffic, read-back)."""
    started = time.monotonic()
    try:
        info, started_broker = local.up()
    except (BrokerError, DistError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Kafka {info.version} at {info.bootstrap} "
               f"({'started' if started_broker else 'already running'})")  # fmt: skip
    try:
        figures = run(info.bootstrap, clicks, malformed)
    finally:
        if started_broker and not keep_broker:
            local.down()
            click.echo("Kafka stopped.")
    figures |= {"kafka_version": info.version, "seconds": round(time.monotonic() - started, 1)}
    if as_json:
        click.echo(json.dumps(figures))


def run(bootstrap: str, clicks: int, malformed: float) -> dict:
    cfg = replace(SimConfig(), clicks=clicks, days=2.0, faults=Faults(malformed=malformed))
    starts = {t.name: end_offsets(bootstrap, t) for t in (CLICKS, CONVERSIONS)}
    with progress_bar() as bar:
        task = bar.add_task("producing", total=None, rate="")
        sent = produce(bootstrap, event_stream(Marketplace(cfg)),
                       progress=lambda r: bar.advance(task))  # fmt: skip
    received: Counter = Counter()
    for topic in (CLICKS, CONVERSIONS):
        for checked in check_topic(bootstrap, topic, start=starts[topic.name]):
            if checked.error is None:
                received[topic.name] += 1
            else:
                received["malformed"] += 1
                if received["malformed"] <= 3:
                    click.echo(f"  malformed at {topic.name}[{checked.partition}]@"
                               f"{checked.offset}: {checked.error}")  # fmt: skip
    produced = Counter()
    for (topic, fault), n in sent.items():
        produced["malformed" if fault and fault.startswith("malformed") else topic] += n
    click.echo(
        f"sent {produced[CLICKS.name]} clicks, {produced[CONVERSIONS.name]} conversions and "
        f"{produced['malformed']} malformed records; read back {received[CLICKS.name]} valid "
        f"clicks, {received[CONVERSIONS.name]} conversions, {received['malformed']} malformed"
    )
    if received != produced:
        raise click.ClickException(f"read back {dict(received)} but sent {dict(produced)}")
    return {
        "clicks_sent": produced[CLICKS.name],
        "conversions_sent": produced[CONVERSIONS.name],
        "malformed_sent": produced["malformed"],
        "records_read_back": sum(received.values()),
    }
