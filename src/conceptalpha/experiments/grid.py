"""Grids: models × seeds × universes × windows, each cell judged on its own.

A grid is a run whose jobs (:func:`~conceptalpha.experiments.jobs.expand_jobs`,
with the grid's ``universes`` and ``windows``) go through the same executors into
the same job directories, with two differences: a failed job is recorded in its
job directory's ``error.txt`` and the others go on, and the result is one row per
cell (model, seed, universe, window) in ``GRID_DIR/grid_results.csv`` and ``.md``.
Re-running a grid trains only the unfinished jobs.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd

from conceptalpha.errors import UserError
from conceptalpha.evaluation.summary import grid_row, summarise_run
from conceptalpha.experiments.config import ExperimentConfig, load_config
from conceptalpha.experiments.executors import EXECUTORS, make_executor, signals_interrupt
from conceptalpha.experiments.jobs import Job, expand_jobs
from conceptalpha.experiments.layout import RunFiles
from conceptalpha.experiments.orchestrate import RunInterrupted, backtests, claim_run_dir, hold_run_dir
from conceptalpha.experiments.runner import JobContext, load_job, setup_run_log
from conceptalpha.io import write_text


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
    config = config.model_copy(update={"output": str(grid_dir)})
    files = RunFiles(grid_dir)
    jobs = expand_jobs(config)
    with hold_run_dir(files.lock), signals_interrupt() as received:
        try:
            claim_run_dir(grid_dir, config, resume=True)
            setup_run_log(files.log)
            finished = sum(files.job(job.dir_parts).finished() for job in jobs)
            print(f"grid: {len(jobs)} jobs, {finished} already finished, running {len(jobs) - finished} with {executor}")
            failures = make_executor(executor, max_parallel, progress=False, ray_address=ray_address).run(config, grid_dir, jobs, keep_going=True)
        except KeyboardInterrupt:
            raise RunInterrupted(received[0] if received else signal.SIGINT, "the same conceptalpha grid command") from None
    for failure in failures:
        write_text(files.job(failure.job.dir_parts).error, failure.traceback or failure.message)
        print(f"  {failure.job.id}: FAILED ({failure.message})")
    table = grid_table(config, jobs, files)
    text = table.to_markdown(index=False) if not table.empty else "(no finished jobs)"
    write_text(files.grid_csv, table.to_csv(index=False))
    write_text(files.grid_md, text + "\n")
    print(text)
    if failures:
        print(f"{len(failures)} job(s) failed; see error.txt in their job directories under {grid_dir}/models; re-run to retry only those")
    return table


def grid_table(config: ExperimentConfig, jobs: list[Job], files: RunFiles) -> pd.DataFrame:
    """One row per cell whose jobs all finished: its coordinates and headline test metrics."""
    cells: dict[str, list[Job]] = {}
    for job in jobs:
        cells.setdefault(job.cell, []).append(job)
    context, bt_config, rows = JobContext(config), config.backtest_settings(), []
    periods = config.grid.windows or [config.segments]
    for cell, cell_jobs in cells.items():
        if not all(files.job(job.dir_parts).finished() for job in cell_jobs):
            continue
        predictions = pd.concat([load_job(job, files.job(job.dir_parts))[0] for job in cell_jobs], ignore_index=True)
        first = cell_jobs[0]
        metrics = summarise_run(predictions, backtests(predictions, context.inputs(first.universe), bt_config), days_per_year=bt_config.days_per_year)
        test = periods[first.period].test
        coordinates = {"job": cell, "model": first.model, "seed": first.seed, "universe": first.universe, "test": f"{test[0]}..{test[1]}"}
        rows.append(grid_row(coordinates, metrics))
    return pd.DataFrame(rows)
