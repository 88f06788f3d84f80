"""One experiment end to end: jobs (model × seed × window) → executor → predictions → metrics, backtests, report.

The run directory's files are named in :mod:`conceptalpha.experiments.layout`;
docs/runs.md describes resuming, stopping, locks and workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from conceptalpha.errors import UserError
from conceptalpha.evaluation.summary import backtest_key, oracle_rows, parse_backtest_key, results_table, summarise_run
from conceptalpha.experiments.config import ExperimentConfig, dump_config
from conceptalpha.experiments.executors import make_executor, set_threads, signals_interrupt
from conceptalpha.experiments.jobs import Job, expand_jobs
from conceptalpha.experiments.layout import RunFiles
from conceptalpha.experiments.run_report import build_report
from conceptalpha.experiments.runner import Inputs, JobContext, load_job, setup_run_log, write_parquet
from conceptalpha.io import write_json, write_text

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
log = logging.getLogger("conceptalpha")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    table: str


# ---------------------------------------------------------------- run


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped a run; its checkpoints are kept for ``--resume``."""

    def __init__(self, signum: int, resume_with: str):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}: finished jobs and checkpoints are kept; resume with: {resume_with}")


def run_experiment(config: ExperimentConfig, out_dir: str | Path | None = None, resume: bool = False, progress: bool = True) -> RunResult:
    """Train every job of the config (``workers`` at once), then judge them once: metrics, backtests, report."""
    run_dir = Path(out_dir or config.output)
    config = config.model_copy(update={"output": str(run_dir)})
    if config.grid.universes or config.grid.windows:
        raise UserError("the config lists grid universes/windows: run it with `conceptalpha grid`")
    files = RunFiles(run_dir)
    with hold_run_dir(files.lock), signals_interrupt() as received:
        try:
            claim_run_dir(run_dir, config, resume)
            setup_run_log(files.log, epochs_on_console=not (progress and config.workers < 2))
            set_threads(config.threads)
            log.info("run %s → %s", config.name, run_dir)
            jobs = expand_jobs(config)
            context = JobContext(config)
            make_executor("local", config.workers, progress, context).run(config, run_dir, jobs, keep_going=False)
            return _judge(config, context, jobs, files)
        except KeyboardInterrupt:
            raise RunInterrupted(received[0] if received else signal.SIGINT, f"conceptalpha run {files.config} --resume") from None


def _judge(config: ExperimentConfig, context: JobContext, jobs: list[Job], files: RunFiles) -> RunResult:
    """Collect the finished jobs, compute every metric once, write the run's tables and report."""
    predictions, explanations, seconds = [], [], {}
    for job in jobs:
        preds, expl, secs = load_job(job, files.job(job.dir_parts))
        predictions.append(preds)
        if expl is not None:
            explanations.append(expl)
        seconds.setdefault(job.model, []).append(secs)
    predictions = pd.concat(predictions, ignore_index=True)
    write_parquet(files.predictions, predictions)
    if explanations:
        write_parquet(files.explanations, pd.concat(explanations, ignore_index=True))
    inputs = context.inputs(config.data.universe)
    bt_config = config.backtest_settings()
    dailies = backtests(predictions, inputs, bt_config)
    for key, daily in dailies.items():
        write_parquet(files.backtest(*parse_backtest_key(key)), daily.reset_index())
    metrics = {
        "name": config.name,
        "label": config.features.label,
        "universe": inputs.market.universe.name,
        "segments": config.segments.model_dump(),
        "rolling": config.rolling.enabled,
        "notes": inputs.notes,
        **summarise_run(predictions, dailies, _oracle(predictions, inputs), seconds, bt_config.days_per_year),
    }
    write_json(files.metrics, metrics)
    write_json(files.data, {"notes": inputs.notes, "concepts": inputs.graph.report()})
    table = results_table(metrics)
    write_text(files.results, table + "\n")
    build_report(files.root)
    return RunResult(files.root, metrics, table)


@contextlib.contextmanager
def hold_run_dir(lock: Path) -> Iterator[None]:
    """Hold the run directory's lock for the block; fail at once when a live run holds it.

    The lock is an ``flock`` on ``run.lock``, which names the holder's PID: the
    kernel drops it when the holder dies, so a dead run's lock is taken over.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise UserError(f"{lock.parent} is in use by a running conceptalpha process (PID {holder}, lock {lock}); wait for it or stop it") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        os.close(fd)  # closing releases the flock


def claim_run_dir(run_dir: Path, config: ExperimentConfig, resume: bool) -> None:
    """Save the config in a new run directory; an existing one must hold the same config and be resumed."""
    saved = RunFiles(run_dir).config
    text = dump_config(config)
    if saved.exists() and not _same_run(saved, config):
        raise UserError(
            f"{run_dir} holds a run of a different config; use another --out (or delete it) to start a new run"
        )
    if saved.exists() and not resume:
        raise UserError(
            f"{run_dir} already holds this run; pass --resume to continue it (finished models are reused, "
            "unfinished ones resume from their last checkpoint) or choose another --out"
        )
    write_text(saved, text)


def _same_run(saved: Path, config: ExperimentConfig) -> bool:
    """Whether a saved config describes this run (where the directory lives does not count)."""
    import yaml

    before = yaml.safe_load(saved.read_text(encoding="utf-8"))
    now = config.model_dump(mode="json")
    before.pop("output", None)
    now.pop("output", None)
    return before == now


# ---------------------------------------------------------------- evaluation


def backtests(predictions: pd.DataFrame, inputs: Inputs, bt_config) -> dict[str, pd.DataFrame]:
    """The daily backtest of each model/seed's test predictions, keyed ``<model>_seed<k>``."""
    from conceptalpha.evaluation.backtest import backtest

    test = predictions[predictions["segment"] == "test"]
    return {
        backtest_key(model, int(seed)): backtest(frame[["datetime", "instrument", "score"]], inputs.market, bt_config).daily
        for (model, seed), frame in test.groupby(["model", "seed"], sort=False)
    }


def _oracle(predictions: pd.DataFrame, inputs: Inputs) -> pd.DataFrame | None:
    """The synthetic market's oracle scores on the rows the models were scored on (None on real data)."""
    if inputs.oracle is None:
        return None
    rows = oracle_rows(predictions)
    panel = inputs.market.panel
    t = panel.calendar.dates.get_indexer(pd.to_datetime(rows["datetime"]))
    i = panel.instrument_positions(rows["instrument"].to_numpy())
    return rows[["datetime", "instrument", "label"]].assign(score=inputs.oracle[t, i])


def print_summary(result: RunResult) -> None:
    print(result.table)
    print(f"\nrun directory: {result.run_dir}")
    report = RunFiles(result.run_dir).report
    if report.exists():
        print(f"report: {report.resolve()}")
