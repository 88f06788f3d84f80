"""The contract between the dataset and everything that consumes it.

A :class:`DayData` is one trading day's cross-section: the universe members that
have a bar that day, in a fixed order. The trainer, the models and the
evaluation only ever see this record, never how it was built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd


@dataclass
class DayData:
    """One day's cross-section of N stocks.

    - ``x``: processed features, float32, [N, T, F] for sequence feature sets
      (Alpha360: T=60, F=6, oldest day first) or [N, F] for flat ones (Alpha158).
    - ``y_train``: processed training label [N] (NaN where missing).
    - ``y_raw``: raw label [N] (NaN where missing) — evaluation uses only this.
    - ``market_cap``: [N] float32, total shares × raw close (or the size proxy).
    - ``instruments``: [N] canonical symbols.
    - ``market``: the day's market vector [M] float32, or None when the dataset has no market context.
    """

    t: int
    date: pd.Timestamp
    instruments: np.ndarray
    x: np.ndarray
    y_train: np.ndarray
    y_raw: np.ndarray
    market_cap: np.ndarray
    market: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.instruments)

    @property
    def x_flat(self) -> np.ndarray:
        """Features as [N, F·T] in the table's column order (Alpha360: field-major, oldest first)."""
        if self.x.ndim == 2:
            return self.x
        return self.x.transpose(0, 2, 1).reshape(self.n, -1)


class DayDataset(Protocol):
    """What the trainer needs from a dataset."""

    label: str  # label protocol id, e.g. "t+1->t+2"
    label_norm: str  # how training labels are normalised per day ("rank" or "zscore")

    def days(self, segment: str) -> list[int]:
        """Trading-day indices of a segment ("train", "valid", "test"), in date order."""

    def day(self, t: int) -> DayData:
        """The cross-section of trading day ``t``."""
