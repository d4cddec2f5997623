"""The demo's report: one HTML page of plots (embedded PNGs) and the figures behind them."""

from __future__ import annotations

import html
import json
from pathlib import Path

from rarecvr.plots import img, plt


def figures(samples: list[dict], history: list[dict], requests: list[tuple]) -> list[tuple]:
    """(title, ``<img>`` tag) for each plot of the report."""
    out = []
    t0 = samples[0]["t"] if samples else 0
    ts = [(s["t"] - t0) / 60 for s in samples]
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.2))
    ax[0].plot(ts, [s["events"] for s in samples], label="events in")
    ax[0].plot(ts, [s["labels"] for s in samples], label="labeled examples out")
    ax[0].set_xlabel("minutes"), ax[0].legend(), ax[0].set_title("events")
    ax[1].plot(ts, [max(s["sent"] - s["events"], 0) for s in samples], color="tab:red")
    ax[1].set_xlabel("minutes"), ax[1].set_title("worker behind the traffic (events)")
    out.append(("Events and lag", img(fig, dpi=90)))

    fig, ax = plt.subplots(1, 2, figsize=(11, 3.2))
    ax[0].plot(ts, [s["hard_share"] for s in samples])
    ax[0].set_ylim(0, 1), ax[0].set_xlabel("minutes"), ax[0].set_title("share of hard setups")
    ax[1].plot(ts, [s["flips"] for s in samples], color="tab:purple")
    ax[1].set_xlabel("minutes"), ax[1].set_title("task changes (cumulative)")
    out.append(("Task assignments", img(fig, dpi=90)))

    served = [h for h in history if h.get("progressive")]
    if served:
        fig, ax = plt.subplots(1, 2, figsize=(11, 3.2))
        windows = [h["window"] for h in served]
        for i, metric in enumerate(("rig", "auc")):
            for task, style in (("hard", "-o"), ("soft", "-s")):
                ax[i].plot(
                    windows,
                    [h["progressive"].get(f"{task}_{metric}") for h in served],
                    style,
                    label=f"model, {task}",
                )
                if all(h.get("oracle") for h in served):
                    ax[i].plot(
                        windows,
                        [h["oracle"].get(f"{task}_{metric}") for h in served],
                        ":",
                        label=f"oracle, {task}",
                    )
            ax[i].set_xlabel("window"), ax[i].set_title(f"progressive {metric.upper()}")
            ax[i].legend(fontsize=7)
        out.append(
            ("Serving model on each new window (progressive), next to the oracle", img(fig, dpi=90))
        )
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        ax.plot(
            windows,
            [h["progressive"]["hard_expected"] for h in served],
            "-o",
            label="expected by the model",
        )
        ax.plot(
            windows, [h["progressive"]["hard_positives"] for h in served], "-s", label="observed"
        )
        ax.set_xlabel("window"), ax.set_title("hard conversions: calibration"), ax.legend()
        out.append(("Calibration on hard examples", img(fig, dpi=90)))

    if requests:
        fig, ax = plt.subplots(figsize=(11, 3.2))
        r0 = requests[0][0]
        ax.plot([(r[0] - r0) / 60 for r in requests], [r[1] for r in requests], ".", ms=2)
        previous = None
        for t, _, status, version in requests:
            if status == 200 and version != previous:
                if previous is not None:
                    ax.axvline((t - r0) / 60, color="tab:green", alpha=0.5)
                previous = version
        ax.set_yscale("log"), ax.set_xlabel("minutes"), ax.set_ylabel("ms")
        ax.set_title("scoring latency, batches of 100 (green: a new version served)")
        out.append(("Serving latency", img(fig, dpi=90)))
    return out


def write(path: Path, summary: dict, samples, history, requests) -> Path:
    sections = "".join(
        f"<h2>{html.escape(title)}</h2>{png}" for title, png in figures(samples, history, requests)
    )
    rows = "".join(
        f"<tr><td>{h['window']}</td><td>{h['examples']}</td><td>{h['hard_examples']}</td>"
        f"<td>{h['version'] or 'rejected: ' + ', '.join(h['rejected'])}</td>"
        f"<td>{_fmt((h.get('progressive') or {}).get('hard_rig'))}</td>"
        f"<td>{_fmt((h.get('oracle') or {}).get('hard_rig'))}</td></tr>"
        for h in history
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>rarecvr demo</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 8px}}
</style></head><body><h1>rarecvr: the live loop</h1>
<p><b>{html.escape(summary.get("headline") or "")}</b></p>
<pre>{html.escape(json.dumps(summary, indent=1))}</pre>{sections}
<h2>Windows</h2><table><tr><th>window</th><th>examples</th><th>hard</th><th>version</th>
<th>progressive hard RIG</th><th>oracle hard RIG</th></tr>{rows}</table></body></html>"""
    path.write_text(page)
    return path


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
