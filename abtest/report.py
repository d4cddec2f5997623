"""The A/B report: one HTML page that opens with the answer, a table shaped like the paper's
Table 4 with intervals, the per-setup CPA ratios, calibration by arm, and the checks."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from abtest.study import PAPER_TABLE4, TABLE4_ROWS, setup_kpis
from rarecvr.plots import img, plt


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def _ci(interval) -> str:
    if not interval or interval[0] is None:
        return ""
    return f" [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]"


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def headline(summary: dict) -> str:
    """The report's first sentence: what the variant did to the hard setups' CPA."""
    cpa, ci = summary.get("hard_median_cpa_change"), summary.get("hard_median_cpa_change_ci")
    conv = summary.get("hard_median_conversion_change")
    if cpa is None:
        return "The hard setups bought no conversions in one of the arms: no CPA to compare."
    direction = "lowered" if cpa < 0 else "raised"
    sure = (
        "the 95% interval is below 0"
        if ci[1] is not None and ci[1] < 0
        else "the 95% interval is above 0"
        if ci[0] is not None and ci[0] > 0
        else "the 95% interval includes 0"
    )
    return (
        f"On the {summary['hard_setups']} hard conversion setups, the variant {direction} the "
        f"median CPA by {abs(100 * cpa):.1f}% ({sure}) and changed their median conversions by "
        f"{_pct(conv)}, over {len(summary['seeds'])} seeds of {summary['test_days']} test days."
    )


def table4(summary: dict, segment: str) -> str:
    rows = []
    for label, group, aggregate in TABLE4_ROWS:
        prefix = segment if group == "all" else f"{segment}_{group}"
        cells = [html.escape(label)]
        for kpi in ("cpa", "conversion"):
            key = f"{prefix}_{aggregate}_{kpi}_change"
            cells.append(_pct(summary.get(key)) + _ci(summary.get(f"{key}_ci")))
        paper = PAPER_TABLE4[label]
        cells.append(f"{paper[0]:+.1f}% / {paper[1]:+.1f}%" if segment == "hard" else "")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = (
        "<tr><th>aggregate</th><th>CPA change [95% CI]</th><th>conversion change [95% CI]</th>"
        "<th>paper (CPA / conversions)</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def cpa_ratio_plot(runs: list, hard: np.ndarray) -> str:
    """Histogram of the per-setup CPA ratios (every seed), hard and soft, on log bins; ratios
    beyond 1/10 and 10 in the end bins."""
    table = setup_kpis(runs, "expected_conversions")
    bins = np.geomspace(0.1, 10, 41)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, mask, color in (("hard", hard, "tab:red"), ("soft", ~hard, "tab:blue")):
        values = table.log_cpa[:, mask].ravel()
        values = np.clip(np.exp(values[np.isfinite(values)]), bins[0], bins[-1])
        if values.size:
            ax.hist(values, bins=bins, alpha=0.55, color=color, label=f"{name} ({values.size})")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("CPA ratio, variant / control (per setup and seed)")
    ax.set_ylabel("setups")
    ax.legend()
    return img(fig)


def missing_table(summary: dict) -> str:
    """Setups with spend but no conversions in an arm, by basis and segment."""
    rows = []
    for basis, segments in summary["setups_without_conversions"].items():
        for segment, counts in segments.items():
            cells = [basis.replace("_", " "), segment, counts["control"], counts["variant"]]
            cells.append(counts["either"])
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    names = ("conversions", "segment", "control", "variant", "either")
    head = "<tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def calibration_plot(summary: dict) -> str:
    fig, ax = plt.subplots(figsize=(6, 3))
    arms = summary["calibration_won"]
    x = np.arange(2)
    for i, (arm, by_segment) in enumerate(arms.items()):
        values = [by_segment[s] or 0 for s in ("hard", "soft")]
        ax.bar(x + 0.38 * i, values, width=0.36, label=arm)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x + 0.19, ["hard setups", "soft setups"])
    ax.set_ylabel("mean pCVR / true CVR")
    ax.set_title("Calibration on won impressions (above 1: the winner's curse)")
    ax.legend()
    return img(fig)


def write(summary: dict, runs: dict, hard: np.ndarray, out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    offline = summary["offline"]
    arms = summary["arms"]
    coverage = summary["aa_coverage_by_figure"]
    parts = [
        "<h1>rarecvr: simulated budget-split A/B test</h1>",
        f"<p><b>{html.escape(headline(summary))}</b></p>",
        f"<p>Control and variant: {html.escape(summary['arms_described'])}. KPIs on the expected "
        "conversions of the won impressions (the simulator's truth); the drawn conversions' "
        "figures are in the JSON beside (<code>drawn_conversions</code>).</p>",
        "<h2>Hard conversion setups (the paper's Table 4)</h2>",
        table4(summary, "hard"),
        "<h2>All setups</h2>",
        table4(summary, "all"),
        "<h2>CPA ratios per setup</h2>",
        cpa_ratio_plot(runs["ab"], hard),
        "<h2>Calibration by arm</h2>",
        calibration_plot(summary),
        "<h2>Checks</h2><ul>",
        f"<li>A/A runs: {summary['aa_seeds']}; share of their 95% intervals covering no "
        "change: " + ", ".join(f"{html.escape(k)} {v:.2f}" for k, v in coverage.items()) + "</li>",
        "<li>Offline on the test period's clicks (hard population, routed): "
        + ", ".join(
            f"{html.escape(name)} RIG {_number(figs.get('rig_hard', figs.get('rig')))}"
            for name, figs in offline.items()
        )
        + "</li>",
        "<li>Arms (means over seeds): "
        + "; ".join(
            f"{html.escape(name)}: spend {a['spend']:.0f} ({100 * a['budget_used']:.0f}% of "
            f"budget), {a['impressions']:.0f} impressions, {a['expected_conversions']:.1f} "
            f"expected conversions, hard setups {100 * a['hard_impression_share']:.1f}% of them"
            for name, a in arms.items()
        )
        + "</li>",
        "</ul><p>(setup, seed) cells with spend but no conversions in an arm, left out of the "
        "CPA figures:</p>",
        missing_table(summary),
        f"<p>Command: <code>{html.escape(command)}</code></p>",
    ]
    style = (
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>"
    )
    path = out / "abtest.html"
    path.write_text(
        f"<html><head><meta charset='utf-8'>{style}</head><body>{''.join(parts)}</body></html>"
    )
    (out / "abtest.json").write_text(json.dumps(summary, indent=1))
    return path
