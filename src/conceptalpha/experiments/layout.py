"""Where every artifact of a run lives: the one place that names run-directory files.

Run directory::

    RUN/config.yaml                 the resolved config (what ``--resume`` compares against)
    RUN/run.lock                    held (flock) by the live run; holds its PID
    RUN/run.log                     log, one line per epoch of every job
    RUN/data.json                   data summary, concept coverage, notes
    RUN/models/<job>/               one job (model × seed [× universe × period × window]):
        checkpoint.pt, best.pt, history.json   neural models (checkpoint after every epoch)
        model.txt                              LightGBM
        explanations.parquet                   HIST's additive parts (test segment)
        job.json                               training seconds
        predictions.parquet                    written LAST: the job is finished
        error.txt                              a failed grid job's traceback
    RUN/predictions.parquet         every job's valid+test predictions
    RUN/explanations.parquet        HIST's parts of every seed
    RUN/backtest_<model>_seed<k>.parquet       daily backtest of a model/seed
    RUN/metrics.json                every metric, computed once
    RUN/results.md                  the comparison table
    RUN/report.html, figures/, comparison.md   the report, rendered from the files above
    RUN/grid_results.csv, .md       a grid's one-row-per-job table
    RUN/.cache/                     datasets (unless ``cache_dir`` is set)

A job directory is ``models/<model>/seed<k>``, then ``/<universe>`` when the grid
lists universes, ``/period<p>`` when it lists windows, ``/window<w>`` when rolling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FINISHED_MARKER = "predictions.parquet"


@dataclass(frozen=True)
class JobFiles:
    """The files of one job directory."""

    root: Path

    predictions = property(lambda self: self.root / FINISHED_MARKER)
    explanations = property(lambda self: self.root / "explanations.parquet")
    meta = property(lambda self: self.root / "job.json")
    error = property(lambda self: self.root / "error.txt")
    best = property(lambda self: self.root / "best.pt")
    gbdt_model = property(lambda self: self.root / "model.txt")

    def finished(self) -> bool:
        """A job is finished once its predictions are saved: they are written last, atomically."""
        return self.predictions.exists()


@dataclass(frozen=True)
class RunFiles:
    """The files of one run directory."""

    root: Path

    config = property(lambda self: self.root / "config.yaml")
    lock = property(lambda self: self.root / "run.lock")
    log = property(lambda self: self.root / "run.log")
    data = property(lambda self: self.root / "data.json")
    predictions = property(lambda self: self.root / "predictions.parquet")
    explanations = property(lambda self: self.root / "explanations.parquet")
    metrics = property(lambda self: self.root / "metrics.json")
    results = property(lambda self: self.root / "results.md")
    report = property(lambda self: self.root / "report.html")
    grid_csv = property(lambda self: self.root / "grid_results.csv")
    grid_md = property(lambda self: self.root / "grid_results.md")
    cache = property(lambda self: self.root / ".cache")

    def backtest(self, model: str, seed: int) -> Path:
        return self.root / f"backtest_{model}_seed{seed}.parquet"

    def backtests(self) -> list[Path]:
        return sorted(self.root.glob("backtest_*_seed*.parquet"))

    def job(self, parts: tuple[str, ...]) -> JobFiles:
        return JobFiles(self.root.joinpath("models", *parts))
