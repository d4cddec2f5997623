"""The whole loop for 3.5 minutes (``rarecvr demo``) on a real broker: stream worker, trainer
and replica as their own processes, traffic and load from the demo; version 1 is fitted on the
simulated history and beats a constant, later versions are published and served with no failed
request, and the report is written with its headline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(600)
def test_the_demo_loop_publishes_and_serves_versions_without_a_failed_request(tmp_path, report):
    env = {**os.environ, "RARECVR_HOME": str(tmp_path)}
    env.pop("RARECVR_BOOTSTRAP", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rarecvr.cli",
            "demo",
            "--minutes",
            "3.5",
            "--speed",
            "800",
            "--window-hours",
            "1",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    logs = {p.stem: p.read_text()[-3000:] for p in (tmp_path / "demo" / "logs").glob("*.log")}
    assert summary["exit_codes"] == {"worker": 0, "trainer": 0, "replica": 0}, {
        name: logs.get(name) for name, code in summary["exit_codes"].items() if code
    }
    assert summary["failed_requests"] == 0 and summary["requests"] > 100
    assert summary["versions_published"] >= 2
    assert summary["versions_served"][-1] >= 2
    assert summary["history"]["hard_rig_vs_constant_low"] > 0
    # the stabilizer assigned hard setups and the served versions were scored on them
    assert summary["served_hard_rig_pooled"] is not None, diagnosis(summary, tmp_path)
    assert summary["headline"].startswith("Version 1, fitted on the simulated history, beat")
    assert os.path.getsize(summary["report"]) > 20_000  # the plots are in it
    report(
        f"demo (3.5 min): {summary['versions_published']} versions published, served "
        f"{summary['versions_served']}, {summary['requests']} requests, 0 failed; hard RIG "
        f"{summary['first_hard_rig']} -> {summary['last_hard_rig']}, pooled "
        f"{summary['served_hard_rig_pooled']}"
    )


def diagnosis(summary: dict, home) -> str:
    """What a run with no hard figures shows: the summary, each trainer window's line and the
    worker's warnings (its whole log stays in ``home``)."""
    logs = home / "demo" / "logs"
    trainer = [ln for ln in (logs / "trainer.log").read_text().splitlines() if "window" in ln]
    worker = [
        ln
        for ln in (logs / "worker.log").read_text().splitlines()
        if ("WARNING" in ln or "ERROR" in ln) and "buffer full" not in ln
    ]
    brief = {k: v for k, v in summary.items() if k not in ("soft_rigs", "headline")}
    return "\n".join([json.dumps(brief), *trainer[-30:], *worker[:40]])
