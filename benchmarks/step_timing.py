"""Shared by the step benchmarks: time steps inside a worker, run each worker in its
own subprocess (so that its peak RSS is its own) and summarise several such runs."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def time_steps(step, steps: int, warmups: int) -> dict:
    """Run ``step`` ``warmups + steps`` times; the timed steps and this process's peak RSS."""
    rss_before = _rss_mb()
    times = []
    for i in range(warmups + steps):
        started = time.perf_counter()
        step()
        if i >= warmups:
            times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_s": times, "peak_rss_mb": peak, "step_peak_over_start_mb": peak - rss_before}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


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


def ratios(ours: dict, theirs: dict, **keys: str) -> dict:
    """{name: ours[key] / theirs[key]} for each ``name=key``, or {} when either side failed."""
    if "error" in ours or "error" in theirs:
        return {}
    return {name: ours[key] / theirs[key] for name, key in keys.items()}
