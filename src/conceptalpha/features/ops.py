"""Time-series operators over dense [D, N] arrays with Qlib's expression semantics.

Every array is indexed ``[t, i]`` (trading day, instrument). Qlib evaluates an
expression on one instrument's series, which starts at the instrument's first
bar; here the whole panel is processed at once, with NaN before the first bar.
The rules reproduced (checked against pandas and pyqlib in the tests):

- ``shift(a, k)`` is ``Ref``: ``out[t] = a[t-k]``; a missing day stays missing.
- Rolling windows are trailing and use ``min_periods=1``: a window is the last
  ``w`` days, NaN values are skipped, and the result is NaN only when the
  window holds no value at all (``std``/``corr`` need two).
- ``std`` uses ddof = 1. ``rank`` is the percentile of today's value inside
  the window (ties averaged). ``quantile`` interpolates linearly.
- ``idxmax``/``idxmin`` give the 1-based position of the extreme in the
  window, oldest = 1; the window is cut at the instrument's first bar, and a
  NaN inside it counts as the extreme (NumPy's ``argmax`` rule).
- ``regression`` fits y on the window positions 1..w (NaN days skipped, their
  positions kept) and returns slope, R² and today's residual.
- ``corr`` and ``rsquare`` are NaN where an input's rolling std is ≤ 2e-5.

Elementwise arithmetic is left to NumPy on the float32 inputs (as Qlib does);
rolling outputs are float64.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NEAR_CONSTANT_STD = 2e-5


def shift(a: np.ndarray, k: int) -> np.ndarray:
    """``Ref(a, k)`` for k ≥ 0: [D, N] → [D, N], NaN for the first k days."""
    out = np.full_like(a, np.nan)
    if k == 0:
        out[:] = a
    elif k < len(a):
        out[k:] = a[:-k]
    return out


def _rolling(a: np.ndarray, w: int):
    return pd.DataFrame(a, copy=False).rolling(w, min_periods=1)


def rolling_mean(a: np.ndarray, w: int) -> np.ndarray:
    return _rolling(a, w).mean().to_numpy()


def rolling_sum(a: np.ndarray, w: int) -> np.ndarray:
    return _rolling(a, w).sum().to_numpy()


def rolling_std(a: np.ndarray, w: int) -> np.ndarray:
    """Sample standard deviation (ddof = 1) of the window's values."""
    return _rolling(a, w).std().to_numpy()


def rolling_max(a: np.ndarray, w: int) -> np.ndarray:
    return _rolling(a, w).max().to_numpy()


def rolling_min(a: np.ndarray, w: int) -> np.ndarray:
    return _rolling(a, w).min().to_numpy()


def rolling_quantile(a: np.ndarray, w: int, q: float) -> np.ndarray:
    return _rolling(a, w).quantile(q).to_numpy()


def rolling_rank(a: np.ndarray, w: int) -> np.ndarray:
    """Percentile rank of today's value among the window's values: rank / count, ties averaged."""
    return _rolling(a, w).rank(pct=True).to_numpy()


def rolling_corr(a: np.ndarray, b: np.ndarray, w: int) -> np.ndarray:
    """Pearson correlation over days where both are present; NaN where either input is near-constant."""
    corr = _rolling(a, w).corr(pd.DataFrame(b, copy=False)).to_numpy(copy=True)
    corr[_near_constant(a, w) | _near_constant(b, w)] = np.nan
    return corr


def _near_constant(a: np.ndarray, w: int) -> np.ndarray:
    return np.isclose(rolling_std(a, w), 0.0, atol=NEAR_CONSTANT_STD)


def first_bar(a: np.ndarray) -> np.ndarray:
    """[N] index of each column's first non-NaN day (len(a) when it has none)."""
    present = ~np.isnan(a)
    return np.where(present.any(axis=0), present.argmax(axis=0), len(a))


def since_first_bar(a: np.ndarray, first: np.ndarray) -> np.ndarray:
    """[D, N] bool: the day is on or after the instrument's first bar."""
    return np.arange(len(a))[:, None] >= first[None, :]


def rolling_idxmax(a: np.ndarray, w: int, first: np.ndarray) -> np.ndarray:
    """1-based position of the window's maximum (oldest = 1), window cut at ``first``."""
    return _rolling_argext(a, w, first, np.argmax, -np.inf)


def rolling_idxmin(a: np.ndarray, w: int, first: np.ndarray) -> np.ndarray:
    return _rolling_argext(a, w, first, np.argmin, np.inf)


def _rolling_argext(a, w, first, argext, never_chosen) -> np.ndarray:
    d = len(a)
    # Days before the first bar (and the left padding) can never be the extreme;
    # NaN days inside the series stay NaN so that argext picks them as NumPy does.
    series = np.where(since_first_bar(a, first), a.astype(np.float64), never_chosen).T  # [N, D]
    padded = np.concatenate([np.full((series.shape[0], w - 1), never_chosen), series], axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, w, axis=1)  # [N, D, w]
    position = argext(windows, axis=2).T.astype(np.float64) + 1.0  # [D, N]
    before_first = np.clip(first[None, :] - (np.arange(d)[:, None] - (w - 1)), 0, w)
    position -= before_first
    has_value = rolling_sum(np.isfinite(a).astype(np.float64), w) > 0
    return np.where(has_value & since_first_bar(a, first), position, np.nan)


def regression(y: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rolling least squares of y on the window position x ∈ {1..w} (today = w).

    With n non-NaN days in the window and sums Sx, Sxx, Sy, Syy, Sxy over them:
    slope = (n·Sxy − Sx·Sy) / (n·Sxx − Sx²),
    R² = (n·Sxy − Sx·Sy)² / ((n·Sxx − Sx²)(n·Syy − Sy²)),
    residual = y_t − (slope·w + Sy/n − slope·Sx/n).
    The sums are updated day by day (each step moves every kept day one
    position older), vectorised over instruments. R² is NaN where y's rolling
    std is ≤ 2e-5. Returns three float64 [D, N] arrays.
    """
    y = y.astype(np.float64)
    d, n_inst = y.shape
    slope, rsq, resid = (np.full((d, n_inst), np.nan) for _ in range(3))
    n = np.zeros(n_inst)
    sx, sxx, sy, syy, sxy = (np.zeros(n_inst) for _ in range(5))
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(d):
            # Age every kept day by one position: x → x − 1.
            sxy = sxy - sy
            sxx = sxx + n - 2 * sx
            sx = sx - n
            if t >= w:
                old = y[t - w]
                kept = ~np.isnan(old)
                n = n - kept
                sy = np.where(kept, sy - old, sy)
                syy = np.where(kept, syy - old * old, syy)
            new = y[t]
            got = ~np.isnan(new)
            n = n + got
            sx = np.where(got, sx + w, sx)
            sxx = np.where(got, sxx + w * w, sxx)
            sy = np.where(got, sy + new, sy)
            syy = np.where(got, syy + new * new, syy)
            sxy = np.where(got, sxy + w * new, sxy)
            cov = n * sxy - sx * sy
            var_x = n * sxx - sx * sx
            slope[t] = cov / var_x
            r = cov / np.sqrt(var_x * (n * syy - sy * sy))
            rsq[t] = r * r
            resid[t] = new - (slope[t] * w + (sy / n - slope[t] * (sx / n)))
    rsq[_near_constant(y, w)] = np.nan
    return slope, rsq, resid
