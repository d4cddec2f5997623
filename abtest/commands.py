"""``rarecvr abtest``: the paper's budget-split A/B test between two pCVR models, simulated."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import click


@click.command()
@click.option("--quick", is_flag=True, help="A small study that runs in a few minutes.")
@click.option("--days", type=int, help="Days of the A/B test (default 7; quick 1).")
@click.option("--seeds", type=int, help="A/B runs, each with its own users and draws (3; quick 2).")
@click.option(
    "--aa-seeds",
    type=int,
    help="A/A runs (both arms the control) that check the intervals (default 20).",
)
@click.option(
    "--requests-per-day", type=int, help="Ad requests a day, both arms (400,000; quick 120,000)."
)
@click.option(
    "--compare",
    type=click.Choice(["models", "routing", "esmm"]),
    default="models",
    show_default=True,
    help="models: single-task control vs multi-task variant; routing: the multi-task model "
    "routed by the naive rule (control) vs by the stabilizer (variant); esmm: the multi-task "
    "model on the history's clicks (control) vs ESMM on all its impressions (variant).",
)
@click.option(
    "--control-version",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A registry version directory to use as the single-task control instead of training.",
)
@click.option(
    "--variant-version",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A registry version directory to use as the multi-task variant instead of training.",
)
@click.option("--out", type=click.Path(path_type=Path), help="Report directory.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line of figures last.")
def abtest(
    quick,
    days,
    seeds,
    aa_seeds,
    requests_per_day,
    compare,
    control_version,
    variant_version,
    out,
    as_json,
) -> None:
    """Simulate the paper's online A/B test on the simulator's ground truth.

    \b
    Both models train on the same logged history (simulated clicks); then ad requests arrive,
    users are hashed to two arms, each arm gets half of every setup's daily budget, bids
    target-CPA (lambda x target CPA x pCTR x its pCVR, lambda from a PI pacing controller)
    and runs its own second-price auctions against outside competition. The KPIs are the
    paper's Table 4 (CPA and conversion ratios per setup: median, spend-weighted geometric
    mean, top-advertiser groups) on the hard setups and on all, with cluster-bootstrap
    intervals over setups and seeds; A/A runs check the intervals' coverage.

    \b
      rarecvr abtest --quick --json
      rarecvr abtest --days 7 --seeds 3 --compare routing
      rarecvr abtest --variant-version ~/.rarecvr/registry/12   # a published version
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from rich.progress import Progress

    from abtest import report, study

    plan = study.Plan.quick() if quick else study.Plan()
    plan = replace(
        plan,
        comparison=compare,
        test_days=days or plan.test_days,
        seeds=tuple(range(1, (seeds or len(plan.seeds)) + 1)),
        aa_seeds=plan.aa_seeds if aa_seeds is None else aa_seeds,
        requests_per_day=requests_per_day or plan.requests_per_day,
    )
    started = time.monotonic()
    versions = {
        name: path
        for name, path in (("single-task", control_version), ("multi-task", variant_version))
        if path is not None
    }
    prepared = study.prepare(plan, log=lambda m: click.echo(m, err=True), versions=versions)
    total = plan.requests_per_day * plan.test_days * (len(plan.seeds) + plan.aa_seeds)
    with Progress(transient=True) as bar:
        task = bar.add_task("auctions", total=total)
        runs = study.run_all(plan, prepared, lambda n: bar.advance(task, n))
    summary = study.summarise(plan, prepared, runs)
    out = out or Path("reports") / time.strftime("abtest-%Y%m%d-%H%M%S")
    command = "rarecvr " + shlex.join(sys.argv[1:])
    path = report.write(summary, runs, study.hard_segment(prepared), out, command)
    summary["seconds"] = round(time.monotonic() - started, 1)
    click.echo(report.headline(summary))
    click.echo(f"A/A coverage of the hard median CPA interval: {summary['aa_coverage']}")
    click.echo(f"report: {path} ({summary['seconds']:.0f} s)")
    if as_json:
        click.echo(json.dumps(summary | {"report": str(path), "quick": quick}))
