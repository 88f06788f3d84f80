"""Time-series operators over dense [D, N] arrays with Qlib's expression semantics.

Every array is indexed ``[t, i]`` (trading day, column). Qlib evaluates an
expression on one instrument's series, which starts at the instrument's first
bar; here whole arrays are processed at once, with NaN before the first bar
(``first``: per column, or per cell when several series share a column).
The rules reproduced (checked against pandas and pyqlib in the tests):

- ``shift(a, k)`` is ``Ref``: ``out[t] = a[t-k]``; a missing day stays missing.
- Rolling windows are trailing and use ``min_periods=1``: a window is the last
  ``w`` days, NaN values are skipped, and the result is NaN only when the
  window holds no value at all (``std``/``corr`` need two).
- ``std`` uses ddof = 1; it is exact on near-constant windows and 0 on a
  window of equal values (:meth:`Rolling.std`). ``rank`` is the percentile of
  today's value inside the window (ties averaged). ``quantile`` interpolates
  linearly.
- ``idxmax``/``idxmin`` give the 1-based position of the extreme in the
  window, oldest = 1; the window is cut at the series' first bar, and a
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


class Rolling:
    """Trailing-window statistics of one [D, N] array; the cumulative sums behind them serve every window length.

    Sums and means are differences of running totals (counts exact). Their
    error is about D·eps relative to the window's sum of |values|: negligible
    for the non-negative inputs Alpha158 sums (prices, volumes, gains, 0/1
    flags), and exactly 0 on a window of zeros.
    """

    def __init__(self, a: np.ndarray, first: np.ndarray | None = None):
        self.a = a
        self.first = first_bar(a) if first is None else first  # [N], or [D, N] per cell
        self._totals: tuple[np.ndarray, np.ndarray] | None = None
        self._run: np.ndarray | None = None

    def _window_totals(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        if self._totals is None:
            d, n = self.a.shape
            present = ~np.isnan(self.a)
            totals = np.zeros((d + 1, n))
            np.cumsum(np.where(present, self.a, 0.0), axis=0, out=totals[1:])
            counts = np.zeros((d + 1, n), dtype=np.int32)
            np.cumsum(present, axis=0, out=counts[1:])
            self._totals = totals, counts
        totals, counts = self._totals
        start = np.maximum(np.arange(1, len(self.a) + 1) - w, 0)
        return totals[1:] - totals[start], counts[1:] - counts[start]

    def count(self, w: int) -> np.ndarray:
        """How many values the window holds."""
        return self._window_totals(w)[1]

    def sum(self, w: int) -> np.ndarray:
        """Sum of the window's values (NaN when it has none)."""
        sums, counts = self._window_totals(w)
        sums[counts == 0] = np.nan
        return sums

    def mean(self, w: int) -> np.ndarray:
        sums, counts = self._window_totals(w)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts

    def std(self, w: int) -> np.ndarray:
        """Sample standard deviation (ddof = 1), accurate on near-constant windows.

        pandas' running variance loses precision when the spread is tiny next
        to the values (a price of 487 moving by one float32 step: true std
        1.5e-5, pandas 3 says 2.2e-5), and may leave a residue on a window of
        equal values (60 zero volumes of a suspension: 0.6). Those windows get
        a direct two-pass computation; a window of equal values is exactly 0.
        """
        cols = _Columns(self.a, w)
        std = cols.unpack(cols.rolling().std())
        constant = self.constant(w)
        std[constant & ~np.isnan(std)] = 0.0
        with np.errstate(invalid="ignore"):
            fragile = ~constant & (std <= STD_RECHECK * np.abs(self.mean(w)))
        t, j = np.nonzero(fragile)
        if len(t):
            std[t, j] = _two_pass_std(self.a, w, t, j)
        return std

    def constant(self, w: int) -> np.ndarray:
        """[D, N] bool: the window's values (≥ 2, none missing after the first bar) are all equal."""
        days = np.arange(len(self.a))[:, None]
        if self._run is None:
            changed = np.ones(self.a.shape, dtype=bool)
            changed[1:] = ~(self.a[1:] == self.a[:-1])  # NaN compares unequal: it breaks a run
            run_start = np.maximum.accumulate(np.where(changed, days, 0), axis=0)
            self._run = days - run_start + 1  # equal values ending today
        values = np.minimum(w, days - self.first + 1)
        return (values >= 2) & (self._run >= values) & ~np.isnan(self.a)


STD_RECHECK = 1e-3  # std / |mean| below which pandas' running variance is recomputed directly


def _two_pass_std(a: np.ndarray, w: int, t: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Std (ddof = 1) of the windows ending at (t[k], j[k]): mean first, then squared deviations."""
    src = t[:, None] - np.arange(w)[None, :]
    window = np.where(src >= 0, a[np.maximum(src, 0), j[:, None]], np.nan).astype(np.float64)
    n = (~np.isnan(window)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(window, axis=1) / n
        return np.sqrt(np.nansum((window - mean[:, None]) ** 2, axis=1) / (n - 1))


def rolling_sum(a: np.ndarray, w: int) -> np.ndarray:
    return Rolling(a).sum(w)


def rolling_mean(a: np.ndarray, w: int) -> np.ndarray:
    return Rolling(a).mean(w)


def rolling_std(a: np.ndarray, w: int) -> np.ndarray:
    return Rolling(a).std(w)


def rolling_max(a: np.ndarray, w: int) -> np.ndarray:
    return _rolling_apply(a, w, "max")


def rolling_min(a: np.ndarray, w: int) -> np.ndarray:
    return _rolling_apply(a, w, "min")


def rolling_quantile(a: np.ndarray, w: int, q: float) -> np.ndarray:
    return _rolling_apply(a, w, "quantile", q)


def rolling_rank(a: np.ndarray, w: int) -> np.ndarray:
    """Percentile rank of today's value among the window's values: rank / count, ties averaged."""
    return rolling_ranks(a, (w,))[w]


def rolling_ranks(a: np.ndarray, windows) -> dict[int, np.ndarray]:
    """{w: [D, N]} (L + (E + 1)/2) / n, with L values below today's, E equal (today included), n present.

    That is pandas' ``rank(pct=True)`` (average rank of ties over the count);
    one pass back over the longest window's lags serves every window.
    """
    d, n = a.shape
    longest = max(windows)
    padded = np.full((longest - 1 + d, n), np.nan, dtype=a.dtype)
    padded[longest - 1 :] = a
    below, equal, present = (np.zeros((d, n), dtype=np.int16) for _ in range(3))
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for lag in range(longest):
            v = padded[longest - 1 - lag : longest - 1 - lag + d]
            below += v < a
            equal += v == a
            present += ~np.isnan(v)
            if lag + 1 in windows:
                out[lag + 1] = np.where(np.isnan(a), np.nan, (below + (equal + 1) / 2) / present)
    return out


def rolling_corr(a: np.ndarray, b: np.ndarray, w: int, std_a: np.ndarray | None = None,
                 std_b: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation over days where both are present; NaN where either input is near-constant.

    ``std_a``/``std_b``: the inputs' :func:`rolling_std` when already at hand.
    """
    corr = _rolling_apply(a, w, "corr", _Columns(b, w).series)
    corr[near_constant(a, w, std_a) | near_constant(b, w, std_b)] = np.nan
    return corr


def near_constant(a: np.ndarray, w: int, std: np.ndarray | None = None) -> np.ndarray:
    """[D, N] bool: the window's std (ddof = 1) is ≤ 2e-5."""
    return np.isclose(rolling_std(a, w) if std is None else std, 0.0, atol=NEAR_CONSTANT_STD)


def first_bar(a: np.ndarray) -> np.ndarray:
    """[N] index of each column's first non-NaN day (len(a) when it has none)."""
    present = ~np.isnan(a)
    return np.where(present.any(axis=0), present.argmax(axis=0), len(a))


def since_first_bar(a: np.ndarray, first: np.ndarray) -> np.ndarray:
    """[D, N] bool: the day is on or after the series' first bar (``first``: [N], or [D, N] per cell)."""
    return np.arange(len(a))[:, None] >= first


def rolling_idxmax(a: np.ndarray, windows, first: np.ndarray) -> dict[int, np.ndarray]:
    """{w: [D, N]} 1-based position of the window's maximum (oldest = 1), window cut at ``first`` ([N] or [D, N])."""
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
    values = Rolling(a, first)
    out = {}
    with np.errstate(invalid="ignore"):
        for lag in range(longest):
            v = padded[longest - 1 - lag : longest - 1 - lag + d]
            take = np.isnan(v) | ((v >= best) & ~np.isnan(best))
            np.copyto(best, v, where=take)
            np.copyto(best_lag, np.int16(lag), where=take)
            w = lag + 1
            if w in windows:
                cut = np.clip(first - (np.arange(d)[:, None] - (w - 1)), 0, w)
                has_value = values.count(w) > 0
                out[w] = np.where(has_value & since, (w - best_lag - cut).astype(np.float64), np.nan)
    return out


def regression(y: np.ndarray, windows, std_y: dict[int, np.ndarray] | None = None) -> dict[int, tuple]:
    """Rolling least squares of y on the window position x ∈ {1..w} (today = w), for each w in ``windows``.

    With n non-NaN days in the window and sums Sx, Sxx, Sy, Syy, Sxy over them:
    slope = (n·Sxy − Sx·Sy) / (n·Sxx − Sx²),
    R² = (n·Sxy − Sx·Sy)² / ((n·Sxx − Sx²)(n·Syy − Sy²)),
    residual = y_t − (slope·w + Sy/n − slope·Sx/n).
    The sums are updated day by day (each step moves every kept day one
    position older), vectorised over instruments and windows. R² is NaN where
    y's rolling std is ≤ 2e-5 (``std_y``: {w: that rolling std}, when at hand).
    Returns {w: (slope, R², residual)}, float64 [D, N] arrays.
    """
    y = y.astype(np.float64)
    d, n_inst = y.shape
    ws = np.asarray(windows)[:, None]  # [W, 1]
    slope, rsq, resid = (np.full((d, len(ws), n_inst), np.nan) for _ in range(3))
    n = np.zeros((len(ws), n_inst))
    sx, sxx, sy, syy, sxy = (np.zeros((len(ws), n_inst)) for _ in range(5))
    # A missing day adds (and later removes) exactly 0 to every sum: y0 is y with NaN → 0, got marks real days.
    got_all = (~np.isnan(y)).astype(np.float64)
    y0 = np.where(got_all > 0, y, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(d):
            # Age every kept day by one position: x → x − 1.
            sxy = sxy - sy
            sxx = sxx + n - 2 * sx
            sx = sx - n
            src = t - ws[:, 0]
            leaving = np.maximum(src, 0)
            kept = np.where((src >= 0)[:, None], got_all[leaving], 0.0)  # the day leaving each window
            old = y0[leaving] * kept
            n = n - kept
            sy = sy - old
            syy = syy - old * old
            new, got = y0[t], got_all[t]
            n = n + got
            sx = sx + ws * got
            sxx = sxx + (ws * ws) * got
            sy = sy + new
            syy = syy + new * new
            sxy = sxy + ws * new
            cov = n * sxy - sx * sy
            var_x = n * sxx - sx * sx
            slope[t] = cov / var_x
            r = cov / np.sqrt(var_x * (n * syy - sy * sy))
            rsq[t] = r * r
            resid[t] = y[t] - (slope[t] * ws + (sy / n - slope[t] * (sx / n)))
    out = {}
    for k, w in enumerate(windows):
        r2 = np.ascontiguousarray(rsq[:, k])
        r2[near_constant(y, w, None if std_y is None else std_y[w])] = np.nan
        out[w] = (np.ascontiguousarray(slope[:, k]), r2, np.ascontiguousarray(resid[:, k]))
    return out
