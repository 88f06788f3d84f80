"""Feature and label processors. Feature statistics are fitted on the training window only.

- :class:`RobustZScore`: per feature, z = (x − median) / (1.4826 · MAD + 1e-12·1.4826),
  clipped to ±clip, then missing → 0 (:func:`fill_missing`). The tiny epsilon keeps
  constant features (e.g. CLOSE0 ≡ 1) finite: they map to 0.
- Labels, per day (a cross-section): :func:`cs_rank` (rank_pct − 0.5) · 3.46 or
  :func:`cs_zscore` (y − mean) / std (ddof = 1); missing labels stay NaN and are
  dropped by the trainer (:func:`drop_missing`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from conceptalpha.errors import UserError

MAD_TO_STD = 1.4826
MAD_EPS = 1e-12
RANK_SCALE = 3.46
LABEL_NORMS = ("rank", "zscore")


@dataclass
class RobustZScore:
    """Per-feature median and scale, arrays of the feature shape (e.g. [158] or [6, 60])."""

    median: np.ndarray
    scale: np.ndarray
    clip: float = 3.0

    @classmethod
    def fit(cls, x: np.ndarray, clip: float = 3.0) -> "RobustZScore":
        """x: [R, *F] training samples. Features with no finite value get median 0, scale 1."""
        x = np.where(np.isfinite(x), x, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN features are handled below
            median = np.nanmedian(x, axis=0)
            mad = np.nanmedian(np.abs(x - median), axis=0)
        empty = np.isnan(median)
        median = np.where(empty, 0.0, median)
        scale = np.where(empty, 1.0, (mad + MAD_EPS) * MAD_TO_STD)
        return cls(median=median.astype(np.float32), scale=scale.astype(np.float32), clip=float(clip))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """[R, *F] → [R, *F] float32: robust z-score, clipped to ±clip, missing → 0."""
        with np.errstate(all="ignore"):
            z = (x - self.median) / self.scale
        return fill_missing(np.clip(z, -self.clip, self.clip, out=z).astype(np.float32, copy=False))

    def state(self) -> dict[str, np.ndarray]:
        return {"median": self.median, "scale": self.scale, "clip": np.float64(self.clip)}

    @classmethod
    def from_state(cls, state) -> "RobustZScore":
        return cls(median=np.asarray(state["median"]), scale=np.asarray(state["scale"]), clip=float(state["clip"]))


def fill_missing(x: np.ndarray, value: float = 0.0) -> np.ndarray:
    """NaN → value, in place."""
    x[np.isnan(x)] = value
    return x


def cs_rank(y: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Per day: (percentile rank − 0.5) · 3.46, ties averaged, rank_pct = rank / count. NaN stays NaN."""
    pct = pd.Series(y).groupby(day).rank(pct=True).to_numpy()
    return ((pct - 0.5) * RANK_SCALE).astype(np.float32)


def cs_zscore(y: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Per day: (y − mean) / std with ddof = 1 over the day's non-missing labels."""
    grouped = pd.Series(y, dtype=np.float64).groupby(day)
    mean = grouped.transform("mean").to_numpy()
    std = grouped.transform("std").to_numpy()
    with np.errstate(all="ignore"):
        return ((y - mean) / std).astype(np.float32)


def normalize_labels(y: np.ndarray, day: np.ndarray, how: str) -> np.ndarray:
    """Cross-sectional label normalisation of rows grouped by ``day`` ([R] → [R])."""
    if how == "rank":
        return cs_rank(y, day)
    if how == "zscore":
        return cs_zscore(y, day)
    raise UserError(f"unknown label normalisation {how!r}; expected one of {', '.join(LABEL_NORMS)}")


def drop_extreme_labels(y: np.ndarray, share: float, how: str) -> np.ndarray:
    """One day's labels [N] without the ``share`` most extreme, normalised again.

    Of the n present labels, the ⌊n·share/2⌋ lowest and as many highest become
    NaN (ties broken by position); the rest are normalised again with ``how``.
    Labels the dataset already normalised monotonically give the same result
    as normalising the kept raw labels.
    """
    present = np.flatnonzero(~np.isnan(y))
    per_tail = int(len(present) * share / 2)
    if per_tail == 0:
        return y
    order = present[np.argsort(y[present], kind="stable")]
    kept = y.astype(np.float32, copy=True)
    kept[order[:per_tail]] = np.nan
    kept[order[-per_tail:]] = np.nan
    return normalize_labels(kept, np.zeros(len(y), dtype=np.int64), how)


def drop_missing(y: np.ndarray) -> np.ndarray:
    """Indices of the rows whose label is present (training drops the rest)."""
    return np.flatnonzero(~np.isnan(y))
