"""Grids: models × seeds × universes × windows as independent jobs, on Ray or in-process.

Each job is an ordinary single-model, single-seed run in ``GRID_DIR/jobs/<id>``.
A job whose ``metrics.json`` exists is finished and skipped on re-run; a failed
job is recorded in ``GRID_DIR/jobs/<id>/error.txt`` and the others go on. The
aggregate table is ``GRID_DIR/grid_results.csv`` and ``.md``.
"""

from __future__ import annotations

import itertools
import json
import traceback
from pathlib import Path
from typing import Any

import pandas as pd

from conceptalpha.errors import UserError
from conceptalpha.experiments.config import ExperimentConfig, load_config
from conceptalpha.io import write_text

EXECUTORS = ("ray", "local")


def expand_jobs(config: ExperimentConfig, grid_dir: Path) -> dict[str, ExperimentConfig]:
    """One config per combination, keyed by a readable job id."""
    universes = config.grid.universes or [config.data.universe]
    windows = config.grid.windows or [config.segments]
    jobs = {}
    for entry, seed, universe, (w, segments) in itertools.product(config.models, config.seeds, universes, enumerate(windows)):
        job_id = f"{entry.name}-seed{seed}-{universe}-w{w}"
        data = config.data.model_copy(update={"universe": universe})
        jobs[job_id] = config.model_copy(
            update={
                "name": f"{config.name}/{job_id}",
                "data": data,
                "models": [entry],
                "seeds": [seed],
                "segments": segments,
                "grid": type(config.grid)(),
                "output": str(grid_dir / "jobs" / job_id),
                "cache_dir": config.cache_dir or str(grid_dir / ".cache"),
            }
        )
    return jobs


def run_job(config_json: str) -> dict[str, Any]:
    """Run one job; never raises — failures come back as {"error": ...}."""
    from conceptalpha.experiments.orchestrate import run_experiment

    config = ExperimentConfig.model_validate_json(config_json)
    out = Path(config.output)
    try:
        result = run_experiment(config, out_dir=out, resume=True, progress=False)
        return {"ok": True, "metrics": result.metrics}
    except Exception as err:  # a failed job is reported; the grid goes on
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "error.txt", "".join(traceback.format_exception(err)))
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def run_grid(
    config_path: Path,
    overrides: list[str] = (),
    out_dir: Path | None = None,
    executor: str = "ray",
    ray_address: str | None = None,
    max_parallel: int = 2,
) -> pd.DataFrame:
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    config = load_config(config_path, list(overrides))
    grid_dir = Path(out_dir or config.output)
    jobs = expand_jobs(config, grid_dir)
    pending = {k: c for k, c in jobs.items() if not (Path(c.output) / "metrics.json").exists()}
    print(f"grid: {len(jobs)} jobs, {len(jobs) - len(pending)} already finished, running {len(pending)} with {executor}")
    payloads = {k: c.model_dump_json() for k, c in pending.items()}
    outcomes = _run_ray(payloads, ray_address, max_parallel) if executor == "ray" else {k: run_job(p) for k, p in payloads.items()}
    for job_id, outcome in outcomes.items():
        status = "ok" if outcome["ok"] else f"FAILED ({outcome['error']})"
        print(f"  {job_id}: {status}")
    table = aggregate(jobs)
    with_md = table.to_markdown(index=False) if not table.empty else "(no finished jobs)"
    (grid_dir).mkdir(parents=True, exist_ok=True)
    write_text(grid_dir / "grid_results.csv", table.to_csv(index=False))
    write_text(grid_dir / "grid_results.md", with_md + "\n")
    print(with_md)
    failed = [k for k, o in outcomes.items() if not o["ok"]]
    if failed:
        print(f"{len(failed)} job(s) failed; see {grid_dir}/jobs/<id>/error.txt; re-run to retry only those")
    return table


def _run_ray(payloads: dict[str, str], address: str | None, max_parallel: int) -> dict[str, dict]:
    if not payloads:
        return {}
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install 'conceptalpha[ray]' (or use --executor local)") from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": max_parallel, "include_dashboard": False}
        ray.init(log_to_driver=False, **kwargs)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_job)
        refs = {k: remote.remote(p) for k, p in payloads.items()}
        out = {}
        for job_id, ref in refs.items():
            try:
                out[job_id] = ray.get(ref)
            except Exception as err:  # worker crash: report and go on
                out[job_id] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        return out
    finally:
        if started_here:
            ray.shutdown()


def aggregate(jobs: dict[str, ExperimentConfig]) -> pd.DataFrame:
    """One row per finished job: its coordinates and headline test metrics."""
    rows = []
    for job_id, cfg in jobs.items():
        path = Path(cfg.output) / "metrics.json"
        if not path.exists():
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        model = cfg.models[0].name
        m = metrics["models"][model]
        rows.append(
            {
                "job": job_id,
                "model": model,
                "seed": cfg.seeds[0],
                "universe": cfg.data.universe,
                "test": f"{cfg.segments.test[0]}..{cfg.segments.test[1]}",
                **{k: m["test"][k]["mean"] for k in ("IC", "ICIR", "RankIC", "RankICIR")},
                "annual_return": m["backtest"]["annual_return"],
                "information_ratio": m["backtest"]["information_ratio"],
            }
        )
    return pd.DataFrame(rows)
