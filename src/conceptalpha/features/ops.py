"""Time-series operators over dense [D, N] arrays with Qlib's expression semantics.

Every array is indexed ``[t, i]`` (trading day, instrument). Qlib evaluates an
expression on one instrument's series, which starts at the instrument's first
bar; here the whole panel is processed at once, with NaN before the first bar.
The rules reproduced (checked against pandas and pyqlib in the tests):

- ``shift(a, k)`` is ``Ref``: ``out[t] = a[t-k]``; a missing day stays missing.
- Rolling windows are trailing and use ``min_periods=1``: a window is the last
  ``w`` days, NaN values are skipped, and the result is NaN only when the
  window holds no value at all (``std``/``corr`` need two).
- ``std`` uses ddof = 1 and is exactly 0 on a window of equal values. ``rank`` is the percentile of today's value inside
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


class _Columns:
    """All instruments as one long series: per column, w−1 NaN then its D values.

    One pandas rolling call then covers every instrument (far fewer Python
    calls than column by column). The NaN gap is a whole window long, so no
    window mixes two instruments' values; a window over the gap holds only the
    column's first days, like the start of Qlib's per-instrument series.
    """

    def __init__(self, a: np.ndarray, w: int):
        self.d, self.n, self.w = a.shape[0], a.shape[1], w
        padded = np.full((self.n, self.d + w - 1), np.nan)
        padded[:, w - 1 :] = a.T
        self.series = pd.Series(padded.ravel(), copy=False)

    def rolling(self):
        return self.series.rolling(self.w, min_periods=1)

    def unpack(self, result: pd.Series) -> np.ndarray:
        """Long series → [D, N] float64."""
        return np.array(result.to_numpy().reshape(self.n, -1)[:, self.w - 1 :].T, order="C")


def _rolling_apply(a: np.ndarray, w: int, method: str, *args, **kwargs) -> np.ndarray:
    cols = _Columns(a, w)
    return cols.unpack(getattr(cols.rolling(), method)(*args, **kwargs))


def rolling_mean(a: np.ndarray, w: int) -> np.ndarray:
    return _rolling_apply(a, w, "mean")


def rolling_sum(a: np.ndarray, w: int) -> np.ndarray:
    return _rolling_apply(a, w, "sum")


def rolling_std(a: np.ndarray, w: int) -> np.ndarray:
    """Sample standard deviation (ddof = 1) of the window's values; exactly 0 when they are all equal.

    pandas' running sums can leave a residue on a constant window (a long
    suspension: 60 zero volumes), and how much depends on the pandas version;
    pandas 2 (what Qlib runs on) returns 0 there, and so do we, on any version.
    """
    cols = _Columns(a, w)
    std = cols.unpack(cols.rolling().std())
    constant = cols.unpack(cols.rolling().max()) == cols.unpack(cols.rolling().min())
    std[constant & ~np.isnan(std)] = 0.0
    return std


def rolling_max(a: np.ndarray, w: int) -> np.ndarray:
    return _rolling_apply(a, w, "max")


def rolling_min(a: np.ndarray, w: int) -> np.ndarray:
    return _rolling_apply(a, w, "min")


def rolling_quantile(a: np.ndarray, w: int, q: float) -> np.ndarray:
    return _rolling_apply(a, w, "quantile", q)


def rolling_rank(a: np.ndarray, w: int) -> np.ndarray:
    """Percentile rank of today's value among the window's values: rank / count, ties averaged."""
    return _rolling_apply(a, w, "rank", pct=True)


def rolling_corr(a: np.ndarray, b: np.ndarray, w: int) -> np.ndarray:
    """Pearson correlation over days where both are present; NaN where either input is near-constant."""
    corr = _rolling_apply(a, w, "corr", _Columns(b, w).series)
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


def rolling_idxmax(a: np.ndarray, windows, first: np.ndarray) -> dict[int, np.ndarray]:
    """{w: [D, N]} 1-based position of the window's maximum (oldest = 1), window cut at ``first``."""
    return _rolling_arg_extreme(a, windows, first, sign=1)


def rolling_idxmin(a: np.ndarray, windows, first: np.ndarray) -> dict[int, np.ndarray]:
    return _rolling_arg_extreme(a, windows, first, sign=-1)


def _rolling_arg_extreme(a: np.ndarray, windows, first: np.ndarray, sign: int) -> dict[int, np.ndarray]:
    """One pass from today back to the oldest lag of the largest window.

    The candidate moves to an older day when that day is NaN or ≥ the
    candidate (so the oldest extreme wins, and the oldest NaN beats any
    number: NumPy's argmax rule); a NaN candidate is never replaced by a
    number. Days before the first bar are −∞ and never counted.
    """
    d, n = a.shape
    longest = max(windows)
    since = since_first_bar(a, first)
    padded = np.full((longest - 1 + d, n), -np.inf, dtype=np.float32)
    padded[longest - 1 :] = np.where(since, np.float32(sign) * a, -np.inf)
    best = np.full((d, n), -np.inf, dtype=np.float32)
    best_lag = np.zeros((d, n), dtype=np.int16)
    count = np.zeros((d, n), dtype=np.int16)
    out = {}
    with np.errstate(invalid="ignore"):
        for lag in range(longest):
            v = padded[longest - 1 - lag : longest - 1 - lag + d]
            take = np.isnan(v) | ((v >= best) & ~np.isnan(best))
            np.copyto(best, v, where=take)
            np.copyto(best_lag, np.int16(lag), where=take)
            count += np.isfinite(v)
            w = lag + 1
            if w in windows:
                cut = np.clip(first[None, :] - (np.arange(d)[:, None] - (w - 1)), 0, w)
                out[w] = np.where((count > 0) & since, (w - best_lag - cut).astype(np.float64), np.nan)
    return out


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
