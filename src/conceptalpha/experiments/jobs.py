"""A config expanded into jobs: model × seed × universe × period × rolling window.

``run``, ``grid``, ``demo`` and ``predict`` all find their jobs here. A *period* is
one of the grid's ``windows`` (the run's own ``segments`` when the grid lists
none); a rolling *window* is one walk-forward step inside a period.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd

from conceptalpha.experiments.config import ExperimentConfig, Segments

SegmentDates = dict[str, tuple[str, str]]


@dataclass(frozen=True)
class Job:
    """One model trained with one seed on one universe and one set of segments."""

    model_index: int
    model: str
    seed: int
    universe: str
    period: int
    window: int
    segments: tuple[tuple[str, tuple[str, str]], ...]
    dir_parts: tuple[str, ...]
    rolling: bool = False

    @property
    def cell(self) -> str:
        """The grid cell (model, seed, universe, period) the job belongs to; its rolling windows share it."""
        return f"{self.model}-seed{self.seed}-{self.universe}-w{self.period}"

    @property
    def id(self) -> str:
        return self.cell + (f"-r{self.window}" if self.rolling else "")

    @property
    def segment_dates(self) -> SegmentDates:
        return dict(self.segments)

    def describe(self) -> str:
        """How log lines name the job."""
        where = self.dir_parts[2:]
        return f"{self.model} seed {self.seed}" + (f" ({', '.join(where)})" if where else "")


def expand_jobs(config: ExperimentConfig) -> list[Job]:
    """Every job of a config, in the order a serial run trains them (window by window)."""
    universes = config.grid.universes or [config.data.universe]
    periods = config.grid.windows or [config.segments]
    jobs = []
    for universe, (p, period) in itertools.product(universes, enumerate(periods)):
        for w, segments in enumerate(windows(config, period)):
            for (i, entry), seed in itertools.product(enumerate(config.models), config.seeds):
                parts = (entry.name, f"seed{seed}")
                parts += (universe,) if config.grid.universes else ()
                parts += (f"period{p}",) if config.grid.windows else ()
                parts += (f"window{w}",) if config.rolling.enabled else ()
                jobs.append(Job(i, entry.name, seed, universe, p, w, tuple(segments.items()), parts, config.rolling.enabled))
    return jobs


def config_for_universe(config: ExperimentConfig, universe: str) -> ExperimentConfig:
    """The config whose data section loads ``universe``."""
    if universe == config.data.universe:
        return config
    return config.model_copy(update={"data": config.data.model_copy(update={"universe": universe})})


def windows(config: ExperimentConfig, period: Segments | None = None) -> list[SegmentDates]:
    """Segments of each training window of a period: one for a plain run, several for walk-forward retraining.

    Rolling: test windows of ``step_months`` from the period's test start to its
    test end; each is preceded by ``valid_months`` of validation and ``train_months``
    of training (``fixed``) or everything from the period's train start (``expanding``).
    """
    seg = period or config.segments
    if not config.rolling.enabled:
        return [seg.model_dump()]
    roll = config.rolling
    test_start, test_end = pd.Timestamp(seg.test[0]), pd.Timestamp(seg.test[1])
    out = []
    start = test_start
    while start <= test_end:
        stop = min(start + pd.DateOffset(months=roll.step_months) - pd.Timedelta(days=1), test_end)
        valid_start = start - pd.DateOffset(months=roll.valid_months)
        train_start = pd.Timestamp(seg.train[0]) if roll.mode == "expanding" else valid_start - pd.DateOffset(months=roll.train_months)
        out.append(
            {
                "train": (_d(train_start), _d(valid_start - pd.Timedelta(days=1))),
                "valid": (_d(valid_start), _d(start - pd.Timedelta(days=1))),
                "test": (_d(start), _d(stop)),
            }
        )
        start = stop + pd.Timedelta(days=1)
    return out


def _d(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d")
