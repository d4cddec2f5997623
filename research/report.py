"""The research report: one HTML file with its plots embedded, and the figures behind them."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from model import metrics
from rarecvr.plots import img, plt
from research.study import (
    PAPER_LAYER_LIFT,
    PAPER_VS_SINGLE,
    PAPER_WEIGHT_LIFT,
    Findings,
    pooled,
    pooled_labels,
)


def rig_by_configuration(findings: Findings, main, reps: int):
    names = sorted({r.name for r in findings.runs if r.strength == main})
    y = pooled_labels(findings, main)
    values, lows, highs = [], [], []
    for name in names:
        p = pooled(findings, name, main)
        values.append(metrics.rig(y, p))
        lo, hi = metrics.bootstrap_ci(metrics.rig, y, p, reps=reps)
        lows.append(values[-1] - lo)
        highs.append(hi - values[-1])
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.5))
    colors = ["tab:gray" if not n.startswith("MTL") else "tab:blue" for n in names]
    ax.barh(names, values, xerr=[lows, highs], color=colors, capsize=3)
    if (main, "hard") in findings.truth:
        oracle = metrics.rig(y, np.concatenate(findings.truth[(main, "hard")]))
        ax.axvline(oracle, color="tab:green", linestyle="--", label=f"oracle {oracle:.4f}")
        ax.legend(loc="lower right")
    ax.set_xlabel("RIG on the hard population (95% bootstrap CI)")
    ax.set_title("Hard-population RIG by configuration")
    return img(fig)


def calibration_plot(findings: Findings, main, names: list[str]):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, population in zip(axes, ("hard", "soft"), strict=True):
        y = pooled_labels(findings, main, population)
        if not 0 < y.sum() < y.size:
            ax.set_title(f"{population}: no conversions to calibrate on")
            continue
        for name in names:
            p = pooled(findings, name, main, population)
            if p is None:
                continue
            predicted, observed = metrics.calibration_curve(y, p, bins=10)
            ax.plot(predicted, observed, marker="o", label=name)
        lo = max(min(y.mean() / 20, 1e-4), 1e-5)
        ax.plot([lo, 1], [lo, 1], color="black", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=lo)
        ax.set_xlabel("mean prediction (decile)")
        ax.set_ylabel("observed CVR")
        ax.set_title(f"Calibration on the {population} population")
        ax.legend(fontsize=7)
    return img(fig)


def lifts_plot(summary: dict):
    rows = [(n, v) for n, v in summary["weights_vs_hard_only"].items() if v]
    if not rows:
        return ""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = [n.removeprefix("MTL ") for n, _ in rows]
    ours = [100 * v["lift"] for _, v in rows]
    err = [
        [100 * (v["lift"] - v["ci_low"]) for _, v in rows],
        [100 * (v["ci_high"] - v["lift"]) for _, v in rows],
    ]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, ours, 0.4, yerr=err, capsize=3, label="measured here")
    paper = [PAPER_WEIGHT_LIFT.get(_pair(n), np.nan) for n, _ in rows]
    ax.bar(x + 0.2, paper, 0.4, label="paper (Table 1)", color="tab:orange")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels, rotation=20, fontsize=8)
    ax.set_ylabel("RIG lift over hard-only, %")
    ax.legend()
    return img(fig)


def _pair(name: str) -> tuple[float, float]:
    parts = dict(p.split("=") for p in name.removeprefix("MTL ").split())
    return float(parts["W_hard"]), float(parts["W_soft"])


def fmt_lift(entry) -> str:
    """A comparison in words: the difference with its interval, and the relative lift unless
    the baseline is worse than a constant (then a relative lift means nothing).

    >>> words = fmt_lift({"diff": 0.071, "diff_ci_low": 0.02, "diff_ci_high": 0.1, "lift": 0.87,
    ...                   "ci_low": 0.2, "ci_high": 1.3, "baseline_worse_than_constant": True})
    >>> for part in words.split("; "):
    ...     print(part)
    difference +0.0710 [+0.0200, +0.1000]
    the baseline is worse than a constant, so a relative lift is not meaningful
    """
    if not entry:
        return "n/a"
    diff = (
        f"difference {entry['diff']:+.4f} [{entry['diff_ci_low']:+.4f}, "
        f"{entry['diff_ci_high']:+.4f}]"
    )
    if entry.get("baseline_worse_than_constant"):
        return (
            f"{diff}; the baseline is worse than a constant, so a relative lift is not meaningful"
        )
    return (
        f"{100 * entry['lift']:+.2f}% [{100 * entry['ci_low']:+.2f}, "
        f"{100 * entry['ci_high']:+.2f}], {diff}"
    )


def write(findings: Findings, summary: dict, plan, out_dir: Path, command: str) -> Path:
    """Write ``report.html`` and ``findings.json`` into ``out_dir``; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    main = findings.about["main_strength"]
    best = summary["best_mtl"]
    table_rows = []
    for name in sorted({r.name for r in findings.runs}):
        for strength in sorted(
            {r.strength for r in findings.runs if r.name == name},
            key=lambda s: -1 if s is None else s,
        ):
            runs = [r for r in findings.runs if r.name == name and r.strength == strength]
            cells = []
            for key in (
                "rig_hard",
                "auc_hard",
                "calibration_hard",
                "ece_hard",
                "rig_soft",
                "auc_soft",
            ):
                values = [r.figures[key] for r in runs if key in r.figures]
                cells.append(f"{np.mean(values):.4f}" if values else "n/a")
            table_rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{strength}</td><td>{len(runs)}</td>"
                + "".join(f"<td>{c}</td>" for c in cells)
                + "</tr>"
            )
    vs = summary["vs_single_task"]
    strengths = "".join(
        f"<tr><td>{s}</td><td>{fmt_lift(v.get('vs_single-task'))}</td>"
        f"<td>{fmt_lift(v.get('vs_hard-only'))}</td></tr>"
        for s, v in summary["strengths"].items()
    )
    layers = "".join(
        f"<tr><td>{n}</td><td>{'n/a' if v is None else f'{v:.4f}'}</td>"
        f"<td>{PAPER_LAYER_LIFT.get(n, 0):+.2f}%</td></tr>"
        for n, v in summary["layers_rig_hard"].items()
    )
    oracle = ""
    if "oracle_rig_hard" in summary:
        oracle = (
            f"<p>Oracle RIG on the hard population: {summary['oracle_rig_hard']:.4f}; "
            f"the best MTL reaches {100 * summary['oracle_rig_fraction']:.1f}% of it.</p>"
        )
    compare = [n for n in (best, "single-task", "hard-only") if n]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>rarecvr research</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 8px;
border-bottom:1px solid #ddd;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>rarecvr research</h1>
<p><code>{html.escape(command)}</code></p>
<p>Data: {html.escape(json.dumps(findings.about))}. Seeds: {list(plan.seeds)}. Evaluated on the
hard population of the test split (rows whose setup's historical CVR, from earlier rows only,
is at most alpha). Lifts are relative, pooled over seeds, with 95% paired bootstrap intervals.</p>
<h2>Best multi-task model against the single-task model (paper: +{PAPER_VS_SINGLE["rig"]}% RIG,
+{PAPER_VS_SINGLE["auc"]}% AUC)</h2>
<p>Best MTL: <b>{html.escape(str(best))}</b>. RIG lift {fmt_lift(vs.get("rig"))}; AUC lift
{fmt_lift(vs.get("auc"))}.</p>{oracle}
{rig_by_configuration(findings, main, plan.bootstrap_reps)}
<h2>Loss weights against hard-only (paper's Table 1)</h2>{lifts_plot(summary)}
<h2>Shared layers (paper's Table 2: lift over 0 layers)</h2>
<table><tr><th>shared layers</th><th>hard RIG</th><th>paper lift</th></tr>{layers}</table>
<h2>Shared-signal strength (at 0, MTL should not help)</h2>
<table><tr><th>strength</th><th>{html.escape(summary["best_weights"])} vs single-task</th>
<th>vs hard-only</th></tr>{strengths}</table>
<h2>Calibration by task</h2>{calibration_plot(findings, main, compare)}
<h2>Every run (means over seeds)</h2><table><tr><th>configuration</th><th>strength</th>
<th>seeds</th><th>RIG hard</th><th>AUC hard</th><th>pred/obs hard</th><th>ECE hard</th>
<th>RIG soft</th><th>AUC soft</th></tr>{"".join(table_rows)}</table></body></html>"""
    path = out_dir / "report.html"
    path.write_text(page)
    runs = [
        {"name": r.name, "seed": r.seed, "strength": r.strength, **r.figures} for r in findings.runs
    ]
    (out_dir / "findings.json").write_text(
        json.dumps(
            {"summary": summary, "runs": runs, "about": findings.about}, indent=2, default=str
        )
    )
    return path
