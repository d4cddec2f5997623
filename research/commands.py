"""``rarecvr research``: reproduce the paper's offline tables on simulator data or your log."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from rarecvr import log_options


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


@click.command()
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="CSV(.gz) or Parquet log; default: simulator data.",
)
@click.option("--label", help="Label column (with --data).")
@click.option("--positive", help="Label value that means a conversion (default: numeric > 0).")
@click.option(
    "--setup", help="Column(s) whose combination is the conversion setup, comma-separated."
)
@click.option("--time", "time_col", help="Event-time column; without it the split is random.")
@click.option("--features", help="Feature columns, comma-separated (setup is added).")
@log_options.feature_kinds
@log_options.time_unit
@click.option("--columns", help="Column names of a header-less CSV, comma-separated.")
@click.option(
    "--alpha",
    type=float,
    default=0.01,
    show_default=True,
    help="A setup is hard when its historical CVR is at most alpha.",
)
@click.option(
    "--clicks",
    type=int,
    default=2_000_000,
    show_default=True,
    help="Simulated clicks per seed (simulator data).",
)
@click.option("--seeds", type=int, default=3, show_default=True, help="Seeds to repeat over.")
@click.option(
    "--epochs",
    type=int,
    help="Most passes over the training split; with more than "
    "one, the end of the training split picks the epoch (default: auto).",
)
@click.option("--quick", is_flag=True, help="A small version that runs in a few minutes.")
@click.option(
    "--esmm",
    is_flag=True,
    help="Instead: entire-space CVR models (CTR head, ESMM, IPW) against today's multi-task "
    "model, on simulated impressions (docs/research.md).",
)
@click.option("--out", type=click.Path(path_type=Path), help="Report directory.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line of figures last.")
def research(
    data,
    label,
    positive,
    setup,
    time_col,
    features,
    categorical,
    numeric,
    unit,
    columns,
    alpha,
    clicks,
    seeds,
    epochs,
    quick,
    esmm,
    out,
    as_json,
) -> None:
    """Offline study: loss weights, shared layers, and multi-task vs single-task on the hard
    population, with bootstrap confidence intervals and a report with plots.

    \b
    Simulator data (default), with the oracle's ceiling and a shared-signal sweep:
      rarecvr research --quick
    Your own log:
      rarecvr research --data log.csv --label converted --setup advertiser,event \\
          --time ts --features device,geo,publisher --alpha 0.01
    Entire-space models (CTR head, ESMM, IPW) on simulated impressions:
      rarecvr research --esmm --quick --json
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if esmm:
        return _esmm(quick, out, as_json)
    from model.tasks import TaskRule
    from model.training import auto_epochs
    from research import report
    from research.data import from_file, simulated
    from research.study import Plan, run_study, summarise

    plan = Plan.quick() if quick else Plan()
    plan = replace(plan, seeds=tuple(range(1, (1 if quick else seeds) + 1)))
    rule = TaskRule(alpha=alpha)
    if data is not None:
        if not (label and setup and features):
            raise click.UsageError("--data needs --label, --setup and --features")
        cache = {}

        def studies(seed, _strength):
            if seed not in cache:
                cache.clear()
                cache[seed] = from_file(
                    data,
                    label,
                    _csv(setup),
                    _csv(features),
                    rule,
                    time=time_col,
                    positive=positive,
                    columns=_csv(columns) or None,
                    categorical=_csv(categorical),
                    numeric=_csv(numeric),
                    unit=unit,
                    seed=seed,
                )
            return cache[seed]

        try:
            first = studies(plan.seeds[0], None)
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc).strip("'\"")) from None
        rows = len(first.train)
        click.echo(f"features: {first.about['schema']}", err=True)
        for note in first.about["schema_notes"]:
            click.echo(f"  {note}", err=True)
        plan = replace(
            plan,
            epochs=epochs or auto_epochs(rows),
            batch=512,
            hash_buckets=min(plan.hash_buckets, 20_000),
        )
        strengths = (None,)
    else:
        from simulator import Marketplace, SimConfig

        n = 200_000 if quick else clicks

        def studies(seed, strength):
            cfg = SimConfig(seed=seed, clicks=n, shared_strength=strength, alpha=alpha)
            return simulated(Marketplace(cfg), rule)

        plan = replace(plan, epochs=epochs or (2 if quick else 1))
        strengths = plan.strengths
    started = time.monotonic()
    findings = run_study(plan, studies, strengths, progress=lambda m: click.echo(m, err=True))
    summary = summarise(findings, plan)
    out = out or Path("reports") / time.strftime("research-%Y%m%d-%H%M%S")
    command = "rarecvr " + shlex.join(sys.argv[1:])
    path = report.write(findings, summary, plan, out, command)
    vs = summary["vs_single_task"]
    rig, auc = report.fmt_lift(vs.get("rig")), report.fmt_lift(vs.get("auc"))
    click.echo(f"best MTL: {summary['best_mtl']}; vs single-task on hard: RIG {rig}, AUC {auc}")
    figures = summary["json"]
    named = {
        "best MTL": "best_mtl_hard_rig",
        "single-task": "single_task_hard_rig",
        "hard-only": "hard_only_hard_rig",
        "logistic regression": "logistic_regression_hard_rig",
    }
    click.echo(
        "pooled hard RIG: "
        + ", ".join(
            f"{name} {'-' if figures[key] is None else f'{figures[key]:.4f}'}"
            for name, key in named.items()
        )
    )
    if summary.get("oracle_rig_fraction") is not None:
        click.echo(f"oracle RIG fraction: {summary['oracle_rig_fraction']:.3f}")
    click.echo(f"report: {path} ({time.monotonic() - started:.0f} s)")
    if as_json:
        configuration = {
            "data": str(data) if data else "simulator",
            "seeds": list(plan.seeds),
            "clicks": None if data else n,
            "epochs": plan.epochs,
            "hash_buckets": plan.hash_buckets,
            "alpha": alpha,
            "best_mtl": summary["best_mtl"],
            "quick": quick,
        }
        click.echo(
            json.dumps(summary["json"] | {"configuration": configuration, "report": str(path)})
        )


def _esmm(quick: bool, out: Path | None, as_json: bool) -> None:
    from research import esmm

    plan = esmm.EsmmPlan.quick() if quick else esmm.EsmmPlan()
    started = time.monotonic()
    figures = esmm.run(plan, progress=lambda m: click.echo(m, err=True))
    summary = esmm.summary_json(figures)
    out = out or Path("reports") / time.strftime("esmm-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "esmm.json").write_text(json.dumps(figures, indent=1))
    click.echo(
        f"hard population: {summary['hard_test_clicks']:,} test clicks, "
        f"{summary['hard_test_conversions']} conversions"
    )
    for name, values in figures["variants"].items():
        click.echo(
            f"  {name:28s} RIG on clicks {_fmt(values['rig_clicks'])}, "
            f"entire space {_fmt(values['rig_entire_space'])}"
        )
    click.echo(
        f"  {'oracle':28s} RIG on clicks {_fmt(figures['oracle']['rig_clicks'])}, "
        f"entire space {_fmt(figures['oracle']['rig_entire_space'])}"
    )
    click.echo(f"figures: {out / 'esmm.json'} ({time.monotonic() - started:.0f} s)")
    if as_json:
        click.echo(json.dumps(summary | {"quick": quick, "figures": str(out / "esmm.json")}))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
