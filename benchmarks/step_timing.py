"""Shared by the step benchmarks: run one measuring worker in its own subprocess
(so that its peak RSS is its own) and summarise several such runs."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_worker(command: list[str]) -> dict:
    """The JSON a worker prints on its last line, or {"error": its last stderr line}."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    """Median and minimum step time over all workers' steps, and their largest peak RSS."""
    ok = [r for r in runs if "step_s" in r]
    if not ok:
        return {"error": runs[0].get("error", "no run")}
    times = [t for r in ok for t in r["step_s"]]
    return {
        "step_s_median": statistics.median(times),
        "step_s_min": min(times),
        "steps_timed": len(times),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
        "step_peak_over_start_mb": max(r["step_peak_over_start_mb"] for r in ok),
    }
