"""Time-series operators over dense [D, N] arrays with Qlib's expression semantics.

Every array is indexed ``[t, i]`` (trading day, column). Qlib evaluates an
expression on one instrument's series, which starts at the instrument's first
bar; here whole arrays are processed at once, with NaN before the first bar
(``first``: per column, or per cell when several series share a column).
The rules reproduced (checked against pandas and pyqlib in the tests):

- ``shift(a, k)`` is ``Ref``: ``out[t] = a[t-k]``; a missing day stays missing.
- Rolling windows are trailing and use ``min_periods=1``: a window is the last
  ``w`` days, NaN (and ±inf) values are skipped, and the result is NaN only
  when the window holds no value at all (``std``/``corr`` need two).
- ``std`` uses ddof = 1 and carries pandas 2's rounding, which on a
  near-constant window is most of the value (:meth:`Rolling.stds`); a window
  of equal values gives 0. ``rank`` is the percentile of today's value inside
  the window (ties averaged). ``quantile`` interpolates linearly.
- ``idxmax``/``idxmin`` give the 1-based position of the extreme in the
  window, oldest = 1; the window is cut at the series' first bar, and a
  NaN inside it counts as the extreme (NumPy's ``argmax`` rule).
- ``regression`` fits y on the window positions 1..w (NaN days skipped, their
  positions kept) and returns slope, R² and today's residual, from running
  sums updated as Qlib's are.
- ``corr`` and ``rsquare`` are NaN where an input's rolling std is ≤ 2e-5.

Elementwise arithmetic is left to NumPy on the float32 inputs (as Qlib does);
rolling outputs are float64.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NEAR_CONSTANT_STD = 2e-5
LONGEST_WINDOW = 60
FRAGILE_STD = 1e-4  # std / |mean| up to which pandas' running variance is replayed rather than approximated
# |corr|·(std/|mean| of x)·(std/|mean| of y) below which a correlation is replayed too: its numerator
# mean(xy) − mean(x)·mean(y) then cancels so far that pandas' rounding shows (~10·eps / that product, relative).
FRAGILE_CORR = 1e-8


def shift(a: np.ndarray, k: int) -> np.ndarray:
    """``Ref(a, k)`` for k ≥ 0: [D, N] → [D, N], NaN for the first k days."""
    out = np.full_like(a, np.nan)
    if k == 0:
        out[:] = a
    elif k < len(a):
        out[k:] = a[:-k]
    return out


class _Columns:
    """All instruments as one long series: per column, ``gap`` NaN then its D values.

    One pandas rolling call then covers every instrument (far fewer Python
    calls than column by column). A gap of w − 1 or more NaN keeps every
    window of w days inside one column; a window over the gap holds only the
    column's first days, like the start of Qlib's per-instrument series.
    """

    def __init__(self, a: np.ndarray, gap: int):
        self.d, self.n, self.gap = a.shape[0], a.shape[1], gap
        padded = np.full((self.n, self.d + gap), np.nan)
        padded[:, gap:] = a.T
        self.series = pd.Series(padded.ravel(), copy=False)

    def rolling(self, w: int):
        if w > self.gap + 1:
            raise ValueError(f"window {w} is longer than the gap between columns + 1 ({self.gap + 1})")
        return self.series.rolling(w, min_periods=1)

    def unpack(self, result: pd.Series) -> np.ndarray:
        """Long series → [D, N] float64."""
        return np.array(result.to_numpy().reshape(self.n, -1)[:, self.gap :].T, order="C")


class Rolling:
    """Trailing-window statistics of one [D, N] array; the cumulative sums behind them serve every window length.

    Sums and means are differences of running totals (counts exact). Their
    error is about D·eps relative to the window's sum of |values|: negligible
    for the non-negative inputs Alpha158 sums (prices, volumes, gains, 0/1
    flags), and exactly 0 on a window of zeros.
    """

    def __init__(self, a: np.ndarray):
        self.a = a
        self._totals: tuple[np.ndarray, np.ndarray] | None = None
        self._window: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None
        self._run: np.ndarray | None = None
        self._columns: _Columns | None = None

    def _window_totals(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(sum, count) of the window's values (the last window length asked for is kept)."""
        if self._window is None or self._window[0] != w:
            if self._totals is None:
                present = np.isfinite(self.a)
                self._totals = (_running(np.add, np.where(present, self.a, 0.0), np.float64),
                                _running(np.add, present, np.int32))
            self._window = w, tuple(_window_difference(total, w) for total in self._totals)
        return self._window[1]

    def count(self, w: int) -> np.ndarray:
        """How many values the window holds."""
        return self._window_totals(w)[1]

    def sum(self, w: int) -> np.ndarray:
        """Sum of the window's values (NaN when it has none)."""
        sums, counts = self._window_totals(w)
        return np.where(counts == 0, np.nan, sums)

    def mean(self, w: int) -> np.ndarray:
        sums, counts = self._window_totals(w)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts

    def columns(self) -> _Columns:
        """This array as one long series for pandas' kernels, gaps long enough for any Alpha158 window."""
        if self._columns is None:
            self._columns = _Columns(self.a, LONGEST_WINDOW - 1)
        return self._columns

    def std(self, w: int) -> np.ndarray:
        """Sample standard deviation (ddof = 1) as pandas 2 computes it, each column taken as a whole series."""
        stds, spreads = self.stds((w,))
        cells = np.nonzero(spreads[w] <= FRAGILE_STD)
        if len(cells[0]):
            series = lambda j, lane_w, days: (self.a[:days, j],)
            stds[w][cells] = replay_cells({w: (*cells, w)}, series, replay_std)[w]
        return stds[w]

    def stds(self, windows) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """({w: rolling std}, {w: std / |mean|}): std (ddof = 1) from a fast kernel, and how far to trust it.

        pandas' running variance carries the rounding of the whole series
        before the window. Next to a normal window's variance that is noise
        (< 1e-6 relative), but on a window of nearly equal values (std ≤
        1e-4·|mean|: fragile) it is much of the value; there pandas 2's
        sequence must be replayed (:func:`replay_std`) from the series' start.
        A window of equal values is exactly 0, as in pandas (its spread: ∞, nothing to replay).
        """
        stds, spreads = {}, {}
        for w in windows:
            cols = self.columns()
            std = cols.unpack(cols.rolling(w).std())
            constant = self.constant(w)
            std[constant & ~np.isnan(std)] = 0.0
            with np.errstate(invalid="ignore", divide="ignore"):
                spreads[w] = np.where(constant, np.inf, std / np.abs(self.mean(w))).astype(np.float32)
            stds[w] = std
        return stds, spreads

    def rough_stds(self, windows) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """Like :meth:`stds`, from running sums of (x − column mean) and its square, without the replays' precision.

        Cheaper; off by about 1e-7 of the column's spread where a window's own
        spread is tiny. That tells std ≤ 2e-5 (Qlib's near-constant test) from
        std well away from it; cells close to the line are the caller's to
        recompute.
        """
        present = np.isfinite(self.a)
        with np.errstate(invalid="ignore"):
            centre = np.nanmean(np.where(present, self.a, np.nan), axis=0, dtype=np.float64)
        x = np.where(present, self.a - np.nan_to_num(centre), 0.0)
        s1, s2 = _running(np.add, x), _running(np.add, x * x)
        stds, spreads = {}, {}
        for w in windows:
            n = self.count(w)
            total = _window_difference(s1, w)
            with np.errstate(invalid="ignore", divide="ignore"):
                var = (_window_difference(s2, w) - total * total / n) / (n - 1)
                stds[w] = np.where(n < 2, np.nan, np.sqrt(np.maximum(var, 0.0)))
                spreads[w] = (stds[w] / np.abs(total / n + centre)).astype(np.float32)
        return stds, spreads

    def constant(self, w: int) -> np.ndarray:
        """[D, N] bool: the window holds ≥ 2 values, all equal (missing days skipped: pandas' run of equal values)."""
        if self._run is None:
            self._run = _equal_run(self.a)
        n = self.count(w)
        return (n >= 2) & (self._run >= n)


def _running(ufunc, a: np.ndarray, dtype=None) -> np.ndarray:
    """``ufunc.accumulate`` along days (axis 0), one row at a time: NumPy's own is many times slower on wide arrays."""
    out = np.empty(a.shape, dtype=dtype or a.dtype)
    if len(a):
        out[0] = a[0]
    for t in range(1, len(a)):
        ufunc(out[t - 1], a[t], out=out[t])
    return out


def _window_difference(total: np.ndarray, w: int) -> np.ndarray:
    """total[t] − total[t − w] (total[t] itself for t < w) of a cumulative sum along days."""
    out = np.empty_like(total)
    out[:w] = total[:w]
    np.subtract(total[w:], total[:-w], out=out[w:])
    return out


def _equal_run(a: np.ndarray) -> np.ndarray:
    """[D, ...] how many values (missing days skipped) up to each day equal the latest one, back to a change."""
    return _latest_run(a)[1]


def _latest_run(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[D, ...] the latest value up to each day (missing days skipped) and how many values in a row equal it."""
    latest, run = np.empty(a.shape, dtype=np.float64), np.empty(a.shape, dtype=np.int32)
    last, length = np.full(a.shape[1:], np.nan), np.zeros(a.shape[1:], dtype=np.int32)
    present = np.isfinite(a)
    for t in range(len(a)):
        length = np.where(present[t], np.where(a[t] == last, length + 1, 1), length)
        np.copyto(last, a[t], where=present[t])
        latest[t], run[t] = last, length
    return latest, run


def replay_cells(cells: dict, series, replay) -> dict:
    """Recompute the cells {key: (t, j, w)} with ``replay`` (e.g. :func:`replay_std`), a lane per (column j, window w).

    ``series(j, w, days)`` gives the lanes' inputs: a tuple of [days, L]
    arrays (column j[l], window w[l]), days = 1 + the last t; ``replay(*inputs,
    windows, at=(days, lanes))`` returns the values at those cells. One pass
    over time serves every lane. Returns {key: values at its cells}.
    """
    t = np.concatenate([c[0] for c in cells.values()])
    if t.min() < 0:  # a negative day would silently read the series' last days
        raise ValueError(f"replay_cells: day {int(t.min())} is before the series' start")
    j = np.concatenate([c[1] for c in cells.values()])
    w = np.concatenate([np.full(len(c[0]), c[2]) for c in cells.values()])
    pairs, lane = np.unique(np.stack([j, w]), axis=1, return_inverse=True)
    out = np.asarray(replay(*series(pairs[0], pairs[1], int(t.max()) + 1), pairs[1], at=(t, lane.ravel())))
    return dict(zip(cells, np.split(out, np.cumsum([len(c[0]) for c in cells.values()])[:-1], axis=-1)))


def rolling_sum(a: np.ndarray, w: int) -> np.ndarray:
    return Rolling(a).sum(w)


def rolling_mean(a: np.ndarray, w: int) -> np.ndarray:
    return Rolling(a).mean(w)


def rolling_std(a: np.ndarray, w: int) -> np.ndarray:
    return Rolling(a).std(w)


def rolling_max(a: np.ndarray | Rolling, w: int) -> np.ndarray:
    cols = _as_rolling(a).columns()
    return cols.unpack(cols.rolling(w).max())


def rolling_min(a: np.ndarray | Rolling, w: int) -> np.ndarray:
    cols = _as_rolling(a).columns()
    return cols.unpack(cols.rolling(w).min())


def _as_rolling(a: np.ndarray | Rolling) -> Rolling:
    """An array's :class:`Rolling` (pass one to share its long series and running sums between calls)."""
    return a if isinstance(a, Rolling) else Rolling(a)


def rolling_quantile(a: np.ndarray, w: int, q: float) -> np.ndarray:
    return rolling_quantiles(a, w, (q,))[0]


def rolling_quantiles(a: np.ndarray, w: int, qs, rows: int = 128) -> list[np.ndarray]:
    """[D, N] window quantiles for each q in ``qs``, interpolated linearly as pandas does.

    With n values in the window and sorted values v: i + f = q·(n − 1)
    (i whole, 0 ≤ f < 1), the quantile is v[i] when f = 0, else
    v[i] + (v[i+1] − v[i])·f. One sort of every window (blocks of ``rows``
    days, NaN sorting last) serves all the q's.
    """
    d, n_cols = a.shape
    padded = np.full((d + w - 1, n_cols), np.nan, dtype=a.dtype)
    padded[w - 1 :] = a
    windows = np.lib.stride_tricks.sliding_window_view(padded, w, axis=0)  # [D, N, w], oldest first
    count = Rolling(a).count(w)[..., None]
    out = [np.empty((d, n_cols)) for _ in qs]
    for lo in range(0, d, rows):
        block = np.sort(windows[lo : lo + rows], axis=-1)
        n = count[lo : lo + rows]
        for q, target in zip(qs, out):
            position = q * (n - 1.0)
            low = np.maximum(position.astype(np.int64), 0)
            v_low = np.take_along_axis(block, low, axis=-1).astype(np.float64)
            v_high = np.take_along_axis(block, np.minimum(low + 1, w - 1), axis=-1).astype(np.float64)
            fraction = position - low
            value = np.where(fraction == 0, v_low, v_low + (v_high - v_low) * fraction)
            target[lo : lo + rows] = np.where(n > 0, value, np.nan)[..., 0]
    return out


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


def rolling_corr(a: np.ndarray | Rolling, b: np.ndarray | Rolling, w: int, std_a: np.ndarray | None = None,
                 std_b: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation over days where both are present; NaN where either input is near-constant.

    ``std_a``/``std_b``: the inputs' :func:`rolling_std` when already at hand.
    """
    a, b = _as_rolling(a), _as_rolling(b)
    cols = a.columns()
    corr = cols.unpack(cols.rolling(w).corr(b.columns().series))
    a, b = a.a, b.a
    corr[near_constant(a, w, std_a) | near_constant(b, w, std_b)] = np.nan
    return corr


def near_constant(a: np.ndarray, w: int, std: np.ndarray | None = None) -> np.ndarray:
    """[D, N] bool: the window's std (ddof = 1) is ≤ 2e-5."""
    return is_near_constant(rolling_std(a, w) if std is None else std)


def is_near_constant(std: np.ndarray) -> np.ndarray:
    """Qlib's ``np.isclose(std, 0, atol=2e-5)``."""
    with np.errstate(invalid="ignore"):
        return np.abs(std) <= NEAR_CONSTANT_STD


def first_bar(a: np.ndarray) -> np.ndarray:
    """[N] index of each column's first non-NaN day (len(a) when it has none)."""
    present = ~np.isnan(a)
    return np.where(present.any(axis=0), present.argmax(axis=0), len(a))


def since_first_bar(a: np.ndarray, first: np.ndarray) -> np.ndarray:
    """[D, N] bool: the day is on or after the series' first bar (``first``: [N], or [D, N] per cell)."""
    return np.arange(len(a))[:, None] >= first


def rolling_idxmax(a: np.ndarray | Rolling, windows, first: np.ndarray) -> dict[int, np.ndarray]:
    """{w: [D, N]} 1-based position of the window's maximum (oldest = 1), window cut at ``first`` ([N] or [D, N])."""
    return _rolling_arg_extreme(a, windows, first, sign=1)


def rolling_idxmin(a: np.ndarray | Rolling, windows, first: np.ndarray) -> dict[int, np.ndarray]:
    return _rolling_arg_extreme(a, windows, first, sign=-1)


def _rolling_arg_extreme(a: np.ndarray | Rolling, windows, first: np.ndarray, sign: int,
                         rows: int = 256) -> dict[int, np.ndarray]:
    """One pass from today back to the oldest lag of the largest window (in blocks of ``rows`` days, to stay in cache).

    The candidate moves to an older day when that day is ≥ the candidate, so
    the oldest extreme wins. A NaN counts as +∞: the oldest NaN beats any
    number and is never replaced by one (NumPy's argmax rule). Days before the
    first bar are −∞ and never counted. Lags only grow, so the candidate's lag
    is a running maximum of lag·(moved).
    """
    values = _as_rolling(a)
    a = values.a
    d, n = a.shape
    longest = max(windows)
    since = since_first_bar(a, first)
    padded = np.full((longest - 1 + d, n), -np.inf, dtype=np.float32)
    padded[longest - 1 :] = np.where(since, np.where(np.isnan(a), np.inf, np.float32(sign) * a), -np.inf)
    lags = {w: np.empty((d, n), dtype=np.int16) for w in windows}
    for lo in range(0, d, rows):
        hi = min(lo + rows, d)
        best = np.full((hi - lo, n), -np.inf, dtype=np.float32)
        best_lag, moved_lag = (np.zeros((hi - lo, n), dtype=np.int16) for _ in range(2))
        moved = np.empty((hi - lo, n), dtype=bool)
        for lag in range(longest):
            v = padded[longest - 1 - lag + lo : longest - 1 - lag + hi]
            np.greater_equal(v, best, out=moved)
            np.maximum(best, v, out=best)
            np.multiply(moved, np.int16(lag), out=moved_lag)
            np.maximum(best_lag, moved_lag, out=best_lag)
            if lag + 1 in lags:
                lags[lag + 1][lo:hi] = best_lag
    out = {}
    for w, best_lag in lags.items():
        cut = np.clip(first - (np.arange(d)[:, None] - (w - 1)), 0, w)
        has_value = values.count(w) > 0
        out[w] = np.where(has_value & since, (w - best_lag - cut).astype(np.float64), np.nan)
    return out


def regression(y: np.ndarray, windows, std_y: dict[int, np.ndarray] | None = None,
               syy: np.ndarray | None = None) -> dict[int, tuple]:
    """Rolling least squares of y on the window position x ∈ {1..w} (today = w), for each w in ``windows``.

    See :func:`regression_lanes`; here every column is run with every window.
    R² is NaN where y's rolling std is ≤ 2e-5 (``std_y``: {w: that rolling
    std}, when at hand). ``syy``: [D, W, N] Σy² to use (see regression_lanes).
    Returns {w: (slope, R², residual)}, float64 [D, N] arrays (views into [D, W, N] ones).
    """
    fits = regression_lanes(y, np.asarray(windows)[:, None], syy)
    out = {}
    for k, w in enumerate(windows):
        slope, r2, resid = (f[:, k] for f in fits)
        r2[near_constant(y, w, None if std_y is None else std_y[w])] = np.nan
        out[w] = (slope, r2, resid)
    return out


def regression_lanes(y: np.ndarray, windows, syy_qlib: np.ndarray | None = None, at=None) -> tuple:
    """Slope, R² and today's residual of y on x ∈ {1..w}, for lanes of (column of y, window).

    ``windows``: [K] (column k with window windows[k]) or [W, 1] (every
    column with every window); y: [T, K]. With n non-NaN days in the window
    and sums Sx, Sxx, Sy, Syy, Sxy over them:
    slope = (n·Sxy − Sx·Sy) / (n·Sxx − Sx²),
    R² = (n·Sxy − Sx·Sy)² / ((n·Sxx − Sx²)(n·Syy − Sy²)),
    residual = y_t − (slope·w + Sy/n − slope·Sx/n).
    The sums are running totals updated day by day in Qlib's order (age every
    kept day by one position, drop the day leaving, add today). For float32
    inputs all but Syy are exact (whole numbers, or sums of float32 values
    that fit float64's mantissa), so only Syy's rounding depends on where the
    series starts: ``syy_qlib`` ([T, *lanes], :func:`running_squares` of Qlib's
    series) replaces ours if given. Returns three float64 [T, *lanes] arrays, or
    [3, K] values at the cells ``at`` = (days, lanes).
    """
    y = np.asarray(y, dtype=np.float64)
    windows = np.asarray(windows)
    t_len, k = y.shape
    lanes = np.broadcast_shapes(windows.shape, (k,))
    pad = int(windows.max())
    got = np.vstack([np.zeros((pad, k), dtype=bool), ~np.isnan(y)])  # padded: row pad + t is day t
    y0 = np.where(got, np.vstack([np.zeros((pad, k)), y]), 0.0)  # a missing day adds (and later removes) 0
    leaving = (pad - windows) * k + np.arange(k)  # flat index into y0 of the day leaving at t = 0
    w = np.broadcast_to(windows, lanes).astype(np.float64)
    w2 = w * w
    n, sx, sxx, sy, syy, sxy, a, b, c, d = (np.zeros(lanes) for _ in range(10))
    slope, rsq, resid = (np.empty((t_len,) + lanes) for _ in range(3))
    y0_flat, got_flat = y0.ravel(), got.ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(t_len):
            # Age every kept day by one position: x → x − 1.
            np.subtract(sxy, sy, out=sxy)
            np.multiply(sx, 2.0, out=a)
            np.add(sxx, n, out=sxx)
            np.subtract(sxx, a, out=sxx)
            np.subtract(sx, n, out=sx)
            # Drop the day leaving the window, add today (at x = w).
            old, gone = y0_flat.take(leaving + t * k), got_flat.take(leaving + t * k)
            new, came = y0[pad + t], got[pad + t]
            np.subtract(n, gone, out=n)
            np.subtract(sy, old, out=sy)
            np.add(n, came, out=n)
            np.multiply(w, came, out=a)
            np.add(sx, a, out=sx)
            np.multiply(w2, came, out=a)
            np.add(sxx, a, out=sxx)
            np.add(sy, new, out=sy)
            np.multiply(w, new, out=a)
            np.add(sxy, a, out=sxy)
            if syy_qlib is None:
                np.multiply(old, old, out=a)
                np.subtract(syy, a, out=syy)
                np.multiply(new, new, out=b)
                np.add(syy, b, out=syy)
            # The fit: a = n·Sxy − Sx·Sy, b = n·Sxx − Sx², c = n·Syy − Sy².
            np.multiply(n, sxy, out=a)
            np.multiply(sx, sy, out=d)
            np.subtract(a, d, out=a)
            np.multiply(n, sxx, out=b)
            np.multiply(sx, sx, out=d)
            np.subtract(b, d, out=b)
            np.divide(a, b, out=slope[t])
            np.multiply(n, syy if syy_qlib is None else syy_qlib[t], out=c)
            np.multiply(sy, sy, out=d)
            np.subtract(c, d, out=c)
            np.multiply(b, c, out=c)
            np.sqrt(c, out=c)
            np.divide(a, c, out=c)
            np.multiply(c, c, out=rsq[t])
            np.divide(sy, n, out=a)
            np.divide(sx, n, out=b)
            np.multiply(slope[t], b, out=b)
            np.subtract(a, b, out=a)
            np.multiply(slope[t], w, out=b)
            np.add(b, a, out=b)
            np.subtract(new, b, out=resid[t])
    resid[np.broadcast_to(~got[pad:].reshape((t_len,) + (1,) * (len(lanes) - 1) + (k,)), resid.shape)] = np.nan
    return (slope, rsq, resid) if at is None else np.stack([_at(f, at) for f in (slope, rsq, resid)])


def running_squares(y: np.ndarray, windows) -> np.ndarray:
    """[T, *lanes] Qlib's running Σy² over each lane's window (lanes as in :func:`regression_lanes`).

    Each day drops the leaving day's y² and adds today's, in float64 (a
    missing day counts 0): the same rounding as Qlib's, given the same series.
    """
    y = np.asarray(y, dtype=np.float64)
    windows = np.asarray(windows)
    t_len, k = y.shape
    pad = int(windows.max())
    squares = np.vstack([np.zeros((pad, k)), np.where(np.isnan(y), 0.0, y * y)])
    leaving = (pad - windows) * k + np.arange(k)
    total = np.zeros(np.broadcast_shapes(windows.shape, (k,)))
    out = np.empty((t_len,) + total.shape)
    flat = squares.ravel()
    for t in range(t_len):
        np.subtract(total, flat.take(leaving + t * k), out=total)
        np.add(total, squares[pad + t], out=total)
        out[t] = total
    return out


# ---------------------------------------------------------------- pandas 2's running statistics, replayed
#
# pandas 2 (the version pyqlib runs on) updates a rolling mean or variance day
# by day: remove the value leaving the window, add the one entering. The
# replays below perform the same floating-point operations in the same order,
# vectorised across lanes (one column, one window each) and sequential in
# time; what needs no running state (counts, runs of equal values) is
# computed up front.


class _Flow:
    """What enters and leaves each lane's window every day, for [T, ...L] values (±inf count as missing, as pandas)."""

    def __init__(self, values: np.ndarray, windows: np.ndarray):
        self.entering = np.array(values, dtype=np.float64)
        self.entering[np.isinf(self.entering)] = np.nan
        self.present = ~np.isnan(self.entering)
        self.leaving = np.full(values.shape, np.nan)  # entering[t − w]
        for w in np.unique(windows):
            lanes = windows == w
            self.leaving[w:][..., lanes] = self.entering[:-w][..., lanes]
        self.gone = ~np.isnan(self.leaving)
        # values in the window after day t
        self.count = _running(np.add, self.present, np.int32) - _running(np.add, self.gone, np.int32)
        self.latest, self.run = _latest_run(self.entering)

    def __getitem__(self, lanes) -> "_Flow":
        """The same flow restricted to some lanes (an index into the axes after time)."""
        part = object.__new__(_Flow)
        for k, v in vars(self).items():
            setattr(part, k, v[(slice(None),) + lanes])
        return part


def _any_per_day(mask: np.ndarray) -> np.ndarray:
    """[T] whether any lane of the [T, ...L] mask is set that day (also for no days or no lanes)."""
    return mask.any(axis=tuple(range(1, mask.ndim)))


def _sums_kahan(flow: _Flow) -> np.ndarray:
    """[T, ...L] pandas' running sum after each day: Kahan-compensated, one compensation for adds, one for removes."""
    shape = flow.entering.shape[1:]
    total, c_add, c_remove, y, s, c = (np.zeros(shape) for _ in range(6))
    out = np.empty(flow.entering.shape)
    removing = -flow.leaving
    any_in, any_out = (_any_per_day(m) for m in (flow.present, flow.gone))
    for t in range(len(out)):
        for active, v, ok, comp in ((any_out[t], removing[t], flow.gone[t], c_remove),
                                    (any_in[t], flow.entering[t], flow.present[t], c_add)):
            if active:
                np.subtract(v, comp, out=y)
                np.add(total, y, out=s)
                np.subtract(s, total, out=c)
                np.subtract(c, y, out=c)
                np.copyto(comp, c, where=ok)
                np.copyto(total, s, where=ok)
        out[t] = total
    return out


def _squared_deviations_welford(flow: _Flow) -> np.ndarray:
    """[T, ...L] pandas' running sum of squared deviations after each day (Welford, Kahan-style compensation).

    A removal moves the mean by −(v − mean)/n and the sum by −(v − old mean)(v − new mean), an
    addition the other way; a window left empty resets mean and sum to 0.
    """
    shape = flow.entering.shape[1:]
    mean, m2, c_add, c_remove = (np.zeros(shape) for _ in range(4))
    old, y, d, c, new_mean = (np.empty(shape) for _ in range(5))
    n_removed = flow.count - flow.present  # values left after the day's removal
    live = flow.gone & (n_removed > 0)
    emptied = flow.gone & (n_removed == 0)
    any_live, any_emptied, any_in = (_any_per_day(m) for m in (live, emptied, flow.present))
    out = np.empty(flow.entering.shape)

    def step(v, n, ok, comp, move):
        np.subtract(mean, comp, out=old)
        np.subtract(v, comp, out=y)
        np.subtract(y, mean, out=d)
        np.add(d, mean, out=c)
        np.subtract(c, y, out=c)
        np.divide(d, n, out=d)
        move(mean, d, out=new_mean)
        np.subtract(v, old, out=old)
        np.subtract(v, new_mean, out=y)
        np.multiply(old, y, out=old)
        move(m2, old, out=y)
        np.copyto(comp, c, where=ok)
        np.copyto(mean, new_mean, where=ok)
        np.copyto(m2, y, where=ok)

    with np.errstate(invalid="ignore", divide="ignore"):
        for t in range(len(out)):
            if any_live[t]:
                step(flow.leaving[t], n_removed[t], live[t], c_remove, np.subtract)
            if any_emptied[t]:
                np.copyto(mean, 0.0, where=emptied[t])
                np.copyto(m2, 0.0, where=emptied[t])
            if any_in[t]:
                step(flow.entering[t], flow.count[t], flow.present[t], c_add, np.add)
            out[t] = m2
    return out


def _at(a: np.ndarray, at) -> np.ndarray:
    """The cells ``at`` = (days, lanes) of a [T, ...L] array ([K, ...]); all of it when ``at`` is None."""
    return a if at is None else a[at[0], ..., at[1]]


def _pandas_var(flow: _Flow, at=None) -> np.ndarray:
    """pandas 2's rolling var (ddof = 1): NaN under two values, 0 when a run of equal values fills the window."""
    m2 = _at(_squared_deviations_welford(flow), at)
    run, n = _at(flow.run, at), _at(flow.count, at)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n < 2, np.nan, np.where(run >= n, 0.0, m2 / (n - 1)))


def _pandas_mean(flow: _Flow, at=None) -> np.ndarray:
    """pandas 2's rolling mean: clamped to the values' sign when they share one; a run of equal values gives it."""
    total = _at(_sums_kahan(flow), at)
    latest, run = _at(flow.latest, at), _at(flow.run, at)
    n = _at(flow.count, at)
    negative = _at(_running(np.add, flow.present & np.signbit(flow.entering), np.int32)
                   - _running(np.add, flow.gone & np.signbit(flow.leaving), np.int32), at)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = total / n
    m[(negative == 0) & (m < 0) | (negative == n) & (m > 0)] = 0.0
    return np.where(n < 1, np.nan, np.where(run >= n, latest, m))


def replay_std(values: np.ndarray, windows, at=None) -> np.ndarray:
    """pandas 2's ``Series.rolling(w, min_periods=1).std()`` of each column of [T, L] ``values``, w = windows[l].

    The same operations in the same order, so the result carries the same
    rounding, which on a near-constant window is most of the value.
    ``at`` = (days, lanes): return only those cells.
    """
    var = _pandas_var(_Flow(values, np.asarray(windows)), at)
    with np.errstate(invalid="ignore"):
        return np.where(var < 0, 0.0, np.sqrt(var))


def replay_corr(x: np.ndarray, y: np.ndarray, windows, at=None) -> np.ndarray:
    """pandas 2's ``x.rolling(w, min_periods=1).corr(y)`` of each column pair of [T, L] arrays, w = windows[l].

    As pandas: a day counts when both are present (and finite); corr =
    (mean(xy) − mean(x)·mean(y))·n/(n − 1) / √(var(x)·var(y)), each rolling
    statistic from its own running state. ``at`` = (days, lanes): return only those cells.
    """
    with np.errstate(invalid="ignore"):
        x, y = (np.asarray(a, dtype=np.float64) for a in (x + 0 * y, y + 0 * x))
        x[np.isinf(x)] = np.nan
        y[np.isinf(y)] = np.nan
    flow = _Flow(np.stack([x * y, x, y], axis=1), np.asarray(windows))
    mean, var, n = _pandas_mean(flow, at), _pandas_var(flow[1:,], at), _at(flow.count, at)[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = (mean[:, 0] - mean[:, 1] * mean[:, 2]) * (n / (n - 1))
        return cov / (var[:, 0] * var[:, 1]) ** 0.5
