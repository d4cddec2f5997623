"""``rarecvr simulate``: generate the marketplace's traffic to Parquet files or to Kafka."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rarecvr import log_options
from simulator.config import Faults, SimConfig


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )


@click.command()
@click.option(
    "--to",
    "sink",
    type=click.Choice(["parquet", "kafka"]),
    default="parquet",
    show_default=True,
    help="Write Parquet files, or produce events to Kafka.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("out/sim"),
    show_default=True,
    help="Directory for clicks.parquet and setups.parquet.",
)
@click.option("--bootstrap", envvar="RARECVR_BOOTSTRAP", help="Kafka bootstrap (with --to kafka).")
@click.option("--clicks", type=int, default=SimConfig.clicks, show_default=True)
@click.option(
    "--days",
    type=float,
    default=SimConfig.days,
    show_default=True,
    help="Event-time horizon of the traffic.",
)
@click.option("--advertisers", type=int, default=SimConfig.advertisers, show_default=True)
@click.option("--seed", type=int, default=SimConfig.seed, show_default=True)
@click.option(
    "--shared-strength",
    type=float,
    default=SimConfig.shared_strength,
    show_default=True,
    help="Strength of the signal shared by hard and soft setups.",
)
@click.option(
    "--speed",
    type=float,
    default=None,
    help="Compress event time by this factor when producing (default: full speed).",
)
@click.option("--duplicates", type=float, default=0.0, help="Share of events sent twice.")
@click.option("--out-of-order", type=float, default=0.0, help="Share sent minutes late.")
@click.option("--late", type=float, default=0.0, help="Share sent hours late.")
@click.option("--malformed", type=float, default=0.0, help="Share of extra malformed records.")
@log_options.events_per_record
def simulate(
    sink,
    out,
    bootstrap,
    clicks,
    days,
    advertisers,
    seed,
    shared_strength,
    speed,
    duplicates,
    out_of_order,
    late,
    malformed,
    events_per_record,
) -> None:
    """Simulate an ad marketplace with known true conversion probabilities.

    Parquet output holds one row per click (features, true_p, converted, conversion time) and
    one per setup (tags, true category, CVR, drift). Kafka output sends clicks and conversions
    to their topics in event-time order. The same seed gives the same data.
    """
    from simulator.marketplace import Marketplace

    cfg = replace(
        SimConfig(),
        seed=seed,
        clicks=clicks,
        days=days,
        advertisers=advertisers,
        shared_strength=shared_strength,
        faults=Faults(
            duplicate=duplicates, out_of_order=out_of_order, late=late, malformed=malformed
        ),
    )
    started = time.monotonic()
    market = Marketplace(cfg)
    with progress_bar() as bar:
        if sink == "parquet":
            from simulator.tables import write_parquet

            task = bar.add_task("clicks", total=clicks, rate="")

            def advance(n: int) -> None:
                elapsed = time.monotonic() - started
                done = bar.tasks[task].completed + n
                bar.update(task, advance=n, rate=f"{done / max(elapsed, 1e-9):,.0f}/s")

            paths = write_parquet(market, out, progress=advance)
            summary = f"wrote {paths['clicks']} and {paths['setups']}"
        else:
            from rarecvr import kafka_auth
            from rarecvr.produce import produce
            from rarecvr.schema_topic import publish_schema
            from simulator.events import event_stream
            from simulator.tables import SCHEMA

            address = kafka_auth.connect(bootstrap)
            publish_schema(address, SCHEMA, "simulator")
            task = bar.add_task("events", total=None, rate="")
            seen = 0

            def tick(_record) -> None:
                nonlocal seen
                seen += 1
                if seen % 2000 == 0:
                    elapsed = time.monotonic() - started
                    bar.update(task, completed=seen, rate=f"{seen / elapsed:,.0f}/s")

            counts = produce(
                address, event_stream(market), speed=speed, progress=tick, batch=events_per_record
            )
            bar.update(task, completed=seen)
            parts = ", ".join(
                f"{n} {topic.removeprefix('rarecvr.')}{'' if fault is None else f' ({fault})'}"
                for (topic, fault), n in sorted(counts.items(), key=lambda kv: -kv[1])
            )
            summary = f"produced to {address}: {parts}"
    click.echo(f"{summary} in {time.monotonic() - started:.1f} s")
