"""Alpha360 and Alpha158 (Qlib's definitions) computed from dense [D, N] bar arrays.

Alpha360, for the six fields CLOSE, OPEN, HIGH, LOW, VWAP, VOLUME and lags
k = 59..0 (column ``<FIELD><k>``, field-major, oldest first)::

    price field P:  Ref(P, k) / close_t
    VOLUME:         Ref(volume, k) / (volume_t + 1e-12)

Alpha158: 9 candlestick features (KMID..KSFT2), OPEN0/HIGH0/LOW0/VWAP0 and 29
rolling operators × windows 5, 10, 20, 30, 60 (ROC5 .. VSUMD60); each is
written next to its Qlib expression in :data:`ALPHA158_ROLLING`.

Arithmetic follows Qlib's dtype flow (float32 elementwise, float64 rolling
results, float32 output) so the numbers agree with pyqlib's to float32
rounding. Where a rolling result is mostly the rounding of the running sums
behind it (near-constant windows), that rounding is reproduced too, from the
first day Qlib loads (:class:`_History`). A field the data lacks (e.g.
``vwap``) gives all-NaN columns, as in Qlib. Rows: a (day, instrument) is emitted when the instrument is a universe
member that day and has a close; features read the days before the requested
start as history, and never anything after the row's day.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pandas as pd
from tqdm import tqdm

from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.errors import UserError
from conceptalpha.features import ops

FEATURE_SETS = ("alpha360", "alpha158")
ALPHA360_FIELDS = ("close", "open", "high", "low", "vwap", "volume")
ALPHA360_LAGS = 60
WINDOWS = (5, 10, 20, 30, 60)
EPS = np.float32(1e-12)
_ROW_CHUNK = 50_000  # rows per Alpha360 block: bounds the temporary gather arrays


def check_feature_set(feature_set: str) -> str:
    if feature_set not in FEATURE_SETS:
        raise UserError(f"unknown feature set {feature_set!r}; expected one of {', '.join(FEATURE_SETS)}")
    return feature_set


def feature_names(feature_set: str) -> list[str]:
    """Column names in Qlib's order."""
    if check_feature_set(feature_set) == "alpha360":
        return [f"{f.upper()}{k}" for f in ALPHA360_FIELDS for k in range(ALPHA360_LAGS - 1, -1, -1)]
    return list(ALPHA158_KBAR) + [f"{f.upper()}0" for f in ALPHA158_PRICE] + [
        f"{name}{w}" for name in ALPHA158_ROLLING for w in WINDOWS
    ]


def model_input_shape(feature_set: str, window: int | None = None) -> tuple[int, int | None]:
    """(features per step F, steps T) a model sees: Alpha360 [N, 60, 6]; Alpha158 [N, 158] flat, or
    [N, window, 158] stacked over ``window`` days (T None: flat rows)."""
    if check_feature_set(feature_set) == "alpha360":
        return len(ALPHA360_FIELDS), ALPHA360_LAGS
    return len(feature_names(feature_set)), window


# ---------------------------------------------------------------- Alpha360


def alpha360_fields(panel: BarPanel) -> np.ndarray:
    """[6, D, N] float32: close, open, high, low, vwap, volume (NaN for a field the data lacks)."""
    out = np.full((len(ALPHA360_FIELDS), *panel.shape), np.nan, dtype=np.float32)
    for f, name in enumerate(ALPHA360_FIELDS):
        if panel.has(name):
            out[f] = panel.fields[name]
    return out


def alpha360_field(fields: np.ndarray, t: np.ndarray, i: np.ndarray, f: int) -> np.ndarray:
    """One field of Alpha360 for the rows (t[r], i[r]): [R] × [R] → [R, 60] float32, oldest lag first.

    ``fields`` is :func:`alpha360_fields`' [6, D, N] array. Position p (lag
    k = 59 − p) is fields[f, t−k, i] / close[t, i] for a price field and
    volume[t−k, i] / (volume[t, i] + 1e-12) for volume; NaN when t − k < 0.
    """
    n = fields.shape[2]
    now = (t * n + i).astype(np.int64)  # flat index of (t, i) in a [D, N] field
    src = now[:, None] - (np.arange(ALPHA360_LAGS - 1, -1, -1) * n)[None, :]  # < 0 exactly when t − k < 0
    window = fields[f].ravel().take(src, mode="clip")
    if t.min(initial=ALPHA360_LAGS) < ALPHA360_LAGS - 1:
        window[src < 0] = np.nan
    denom = fields[5].ravel().take(now) + EPS if ALPHA360_FIELDS[f] == "volume" else fields[0].ravel().take(now)
    with np.errstate(divide="ignore", invalid="ignore"):
        return window / denom[:, None]


def alpha360_rows(fields: np.ndarray, t: np.ndarray, i: np.ndarray) -> np.ndarray:
    """All of Alpha360 for the rows (t[r], i[r]): [R, 6, 60] float32 (a table row reshaped)."""
    return np.stack([alpha360_field(fields, t, i, f) for f in range(len(ALPHA360_FIELDS))], axis=1)


# ---------------------------------------------------------------- Alpha158


# Inputs of the rolling statistics that pandas or Qlib compute with running sums: name → (how many days
# of Ref the expression holds, how to make it from fields with .close and .volume).
_SERIES: dict[str, tuple[int, Callable]] = {
    "close": (0, lambda f: f.close),
    "volume": (0, lambda f: f.volume),
    # Abs($close/Ref($close,1)-1)*$volume
    "chvol": (1, lambda f: np.abs(f.close / ops.shift(f.close, 1) - 1) * f.volume),
    "logvol": (0, lambda f: np.log(f.volume + np.float32(1))),  # Log($volume+1)
    "ratio": (1, lambda f: f.close / ops.shift(f.close, 1)),  # $close/Ref($close,1)
    "logratio": (1, lambda f: np.log(f.volume / ops.shift(f.volume, 1) + np.float32(1))),  # Log($volume/Ref(..)+1)
}


_MASK_ONLY = ("logvol", "ratio", "logratio")  # inputs whose Std only decides Corr's NaN (std ≤ 2e-5)


class _History:
    """Each packed cell's instrument series as Qlib loads it, to replay a running statistic on.

    pandas' rolling var/mean (Std, Corr) and Qlib's rolling regression keep
    running sums from the first day Qlib loads (the requested start less the
    expression's look-back, or the first bar), so a window's result carries
    the rounding of every day since. That is noise except on a near-constant
    window, where it is the value; those few cells are recomputed here, on
    the panel's columns from that first day, not from our packed segment's.
    """

    def __init__(self, panel: BarPanel, packing: "_Packing", start: int):
        self.fields = {k: panel.fields[k] for k in ("close", "volume") if panel.has(k)}
        self.src, self.start, self.n = packing.src, start, panel.shape[1]
        self.inside = self.src >= 0  # [H, C]: cells holding a panel day (not a gap between segments)

    def begin(self, w: int, lag: int = 0) -> int:
        """First day of a window-w expression's series with ``lag`` days of Ref: Qlib loads from
        start − (w − 1) − lag (its first ``lag`` days then lack the Ref), so values count from here."""
        return max(self.start - (w - 1) - lag, 0) + lag

    def squares(self, windows) -> np.ndarray:
        """[D, W, C] packed: Qlib's running Σ$close² of each window, computed on the panel from Qlib's first day.

        Qlib's regression sums are raw (not centred). All but Σy² are exact
        for float32 prices; Σy² rounds, and that rounding, which R² magnifies
        by (mean/std)², depends on where the series starts (see ops.regression_lanes).
        """
        close = self.fields["close"]
        days = np.arange(len(close))[:, None]
        begins = {self.begin(w) for w in windows}
        if len(begins) == 1:  # one series serves every window
            squares = ops.running_squares(np.where(days >= begins.pop(), close, np.nan), np.asarray(windows)[:, None])
        else:
            lanes = np.hstack([np.where(days >= self.begin(w), close, np.nan) for w in windows])
            squares = ops.running_squares(lanes, np.repeat(windows, self.n))
        # Either way laid out [D, W, N]: panel cell (t, i) of window k is t·W·N + k·N + i.
        day, inst = np.divmod(np.maximum(self.src, 0), self.n)
        cell = day * len(windows) * self.n + inst
        gap = self.src < 0
        return np.stack([np.where(gap, np.nan, squares.ravel().take(cell + k * self.n)) for k in range(len(windows))],
                        axis=1)

    def replay(self, cells: dict, names: tuple[str, ...], replay: Callable) -> dict:
        """{w: (t, c)} packed cells → {w: values}: ``replay`` (an ``ops.replay_*``) run on the inputs ``names``."""
        lag = max(_SERIES[k][0] for k in names)

        def series(inst, w, days):
            used, col = np.unique(inst, return_inverse=True)
            fields = SimpleNamespace(**{k: v[:days, used] for k, v in self.fields.items()})
            before = np.arange(days)[:, None] < np.array([self.begin(v, lag) for v in w])
            return tuple(np.where(before, np.nan, _SERIES[k][1](fields)[:, col]) for k in names)

        panel_cells = {w: (*np.divmod(self.src[t, c], self.n), w) for w, (t, c) in cells.items()}
        return ops.replay_cells(panel_cells, series, replay)


class _Bars:
    """The float32 [D, N] inputs of Alpha158 and the sub-expressions several features share.

    Shared results are cached under ``"<name>:<detail>"`` keys and dropped after
    the last operator that uses ``<name>`` (:data:`_LAST_USER`).
    """

    def __init__(self, fields: dict[str, np.ndarray], first: np.ndarray, history: _History):
        self.open, self.high, self.low, self.close = (fields[k] for k in ("open", "high", "low", "close"))
        self.vwap, self.volume = fields["vwap"], fields["volume"]
        self.first = first  # [D, N]: where each cell's series starts
        self.history = history
        self.volume_denom = self.volume + EPS
        self.range_denom = self.high - self.low + EPS
        self._cache: dict[str, object] = {}

    def shared(self, key: str, make: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def release_after(self, operator: str) -> None:
        """Drop the shared arrays no operator after ``operator`` needs."""
        for key in [k for k in self._cache if _LAST_USER[k.split(":")[0]] == operator]:
            del self._cache[key]

    def rolling(self, name: str, make: Callable[[], np.ndarray] | None = None) -> ops.Rolling:
        """Window statistics of a named input (its running sums are shared by all windows)."""
        make = make or (lambda: _SERIES[name][1](self))
        return self.shared(f"{name}:", lambda: ops.Rolling(make()))

    def stds(self, name: str) -> tuple[dict, dict]:
        """({w: Std(name, w)}, {w: std / |mean|}) for all windows, pandas 2's values (see ops.Rolling.stds).

        Fragile windows are replayed from Qlib's first day. An input whose Std
        only decides Corr's NaN (std ≤ 2e-5) gets a rough std, replayed near that line.
        """

        def make():
            if name in _MASK_ONLY:
                stds, spreads = self.rolling(name).rough_stds(WINDOWS)
                redo = {w: np.abs(s - ops.NEAR_CONSTANT_STD) <= 0.5 * ops.NEAR_CONSTANT_STD for w, s in stds.items()}
            else:
                stds, spreads = self.rolling(name).stds(WINDOWS)
                redo = {w: s <= ops.FRAGILE_STD for w, s in spreads.items()}
            self._replay_into(stds, redo, (name,), ops.replay_std)
            return stds, spreads

        return self.shared(f"{name}:stds", make)

    def std(self, name: str, w: int) -> np.ndarray:
        return self.stds(name)[0][w]

    def _replay_into(self, target: dict, where: dict, names: tuple[str, ...], replay: Callable) -> None:
        """Overwrite target[w] where where[w] is set with ``replay`` run on Qlib's series of the inputs ``names``."""
        # Gap cells (between packed segments) are never read; replaying them would ask for panel day −1.
        where = {w: m & self.history.inside for w, m in where.items()}
        cells = {w: np.nonzero(m) for w, m in where.items() if m.any()}
        if cells:
            for w, values in self.history.replay(cells, names, replay).items():
                target[w][cells[w]] = values

    def regression(self, w: int):
        return self.shared("reg:", self._regressions)[w]

    def _regressions(self) -> dict[int, tuple]:
        """Slope, Rsquare, Resi of $close with Qlib's running sums (Σ$close² over Qlib's series: _History.squares)."""
        return ops.regression(self.close, WINDOWS, self.stds("close")[0], syy=self.history.squares(WINDOWS))

    def corr(self, x: str, y: str, w: int) -> np.ndarray:
        return self.shared(f"{x}:corr", lambda: self._corrs(x, y))[w]

    def _corrs(self, x: str, y: str) -> dict[int, np.ndarray]:
        """Corr(x, y, w) for all windows: pandas' kernel, replayed as pandas 2 from Qlib's first day where
        x or y is fragile or the correlation ill-conditioned (ops.FRAGILE_CORR)."""
        (std_x, spread_x), (std_y, spread_y) = self.stds(x), self.stds(y)
        a, b = self.rolling(x), self.rolling(y)
        corrs, redo = {}, {}
        for w in WINDOWS:
            c = corrs[w] = ops.rolling_corr(a, b, w, std_a=std_x[w], std_b=std_y[w])
            with np.errstate(invalid="ignore"):
                fragile = (np.minimum(spread_x[w], spread_y[w]) <= ops.FRAGILE_STD) | (
                    np.abs(c) * spread_x[w] * spread_y[w] < ops.FRAGILE_CORR)
            redo[w] = fragile & ~np.isnan(c)
        self._replay_into(corrs, redo, (x, y), ops.replay_corr)
        return corrs

    def quantiles(self, w: int) -> list[np.ndarray]:
        """Quantile($close, w, 0.8) and Quantile($close, w, 0.2)."""
        return self.shared(f"qtl:{w}", lambda: ops.rolling_quantiles(self.close, w, (0.8, 0.2)))

    def minmax(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        high, low = self.rolling("high", lambda: self.high), self.rolling("low", lambda: self.low)
        return self.shared(f"minmax:{w}", lambda: (ops.rolling_max(high, w), ops.rolling_min(low, w)))

    def idx(self, which: str, w: int) -> np.ndarray:
        if which == "max":
            high = self.rolling("high", lambda: self.high)
            return self.shared("imax:", lambda: ops.rolling_idxmax(high, WINDOWS, self.first))[w]
        low = self.rolling("low", lambda: self.low)
        return self.shared("imin:", lambda: ops.rolling_idxmin(low, WINDOWS, self.first))[w]

    def count_mean(self, greater: bool, w: int) -> np.ndarray:
        """Mean($close>Ref($close, 1), w) (or <): 1/0 from the first bar on; before it Qlib has no row."""

        def flags():
            prev = ops.shift(self.close, 1)
            hit = self.close > prev if greater else self.close < prev
            return np.where(ops.since_first_bar(self.close, self.first), hit, np.nan)

        return self.rolling(f"flag_{greater}", flags).mean(w)

    def sums(self, name: str, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sum of gains, Sum of losses, Sum of |changes| + 1e-12 of $close or $volume over w days."""

        def series():
            a = self.close if name == "close" else self.volume
            prev = ops.shift(a, 1)
            return tuple(ops.Rolling(x) for x in (np.maximum(a - prev, 0), np.maximum(prev - a, 0), np.abs(a - prev)))

        gains, losses, changes = self.shared(f"{name}_sums:", series)
        return self.shared(f"{name}_sums:{w}", lambda: (gains.sum(w), losses.sum(w), changes.sum(w) + 1e-12))


ALPHA158_KBAR: dict[str, Callable[[_Bars], np.ndarray]] = {
    "KMID": lambda b: (b.close - b.open) / b.open,  # ($close-$open)/$open
    "KLEN": lambda b: (b.high - b.low) / b.open,  # ($high-$low)/$open
    "KMID2": lambda b: (b.close - b.open) / b.range_denom,  # ($close-$open)/($high-$low+1e-12)
    "KUP": lambda b: (b.high - np.maximum(b.open, b.close)) / b.open,  # ($high-Greater($open, $close))/$open
    "KUP2": lambda b: (b.high - np.maximum(b.open, b.close)) / b.range_denom,
    "KLOW": lambda b: (np.minimum(b.open, b.close) - b.low) / b.open,  # (Less($open, $close)-$low)/$open
    "KLOW2": lambda b: (np.minimum(b.open, b.close) - b.low) / b.range_denom,
    "KSFT": lambda b: (2 * b.close - b.high - b.low) / b.open,  # (2*$close-$high-$low)/$open
    "KSFT2": lambda b: (2 * b.close - b.high - b.low) / b.range_denom,
}

ALPHA158_PRICE = ("open", "high", "low", "vwap")  # $field/$close

RollingFeature = Callable[[_Bars, int], np.ndarray]
ALPHA158_ROLLING: dict[str, RollingFeature] = {
    # Ref($close, d)/$close
    "ROC": lambda b, w: ops.shift(b.close, w) / b.close,
    # Mean($close, d)/$close
    "MA": lambda b, w: b.rolling("close").mean(w) / b.close,
    # Std($close, d)/$close
    "STD": lambda b, w: b.std("close", w) / b.close,
    # Slope($close, d)/$close
    "BETA": lambda b, w: b.regression(w)[0] / b.close,
    # Rsquare($close, d)
    "RSQR": lambda b, w: b.regression(w)[1],
    # Resi($close, d)/$close
    "RESI": lambda b, w: b.regression(w)[2] / b.close,
    # Max($high, d)/$close
    "MAX": lambda b, w: b.minmax(w)[0] / b.close,
    # Min($low, d)/$close
    "MIN": lambda b, w: b.minmax(w)[1] / b.close,
    # Quantile($close, d, 0.8)/$close
    "QTLU": lambda b, w: b.quantiles(w)[0] / b.close,
    # Quantile($close, d, 0.2)/$close
    "QTLD": lambda b, w: b.quantiles(w)[1] / b.close,
    # Rank($close, d)
    "RANK": lambda b, w: b.shared("rank:", lambda: ops.rolling_ranks(b.close, WINDOWS))[w],
    # ($close-Min($low, d))/(Max($high, d)-Min($low, d)+1e-12)
    "RSV": lambda b, w: (b.close - b.minmax(w)[1]) / (b.minmax(w)[0] - b.minmax(w)[1] + 1e-12),
    # IdxMax($high, d)/d
    "IMAX": lambda b, w: b.idx("max", w) / w,
    # IdxMin($low, d)/d
    "IMIN": lambda b, w: b.idx("min", w) / w,
    # (IdxMax($high, d)-IdxMin($low, d))/d
    "IMXD": lambda b, w: (b.idx("max", w) - b.idx("min", w)) / w,
    # Corr($close, Log($volume+1), d)
    "CORR": lambda b, w: b.corr("close", "logvol", w),
    # Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), d)
    "CORD": lambda b, w: b.corr("ratio", "logratio", w),
    # Mean($close>Ref($close, 1), d)
    "CNTP": lambda b, w: b.count_mean(True, w),
    # Mean($close<Ref($close, 1), d)
    "CNTN": lambda b, w: b.count_mean(False, w),
    # Mean($close>Ref($close, 1), d)-Mean($close<Ref($close, 1), d)
    "CNTD": lambda b, w: b.count_mean(True, w) - b.count_mean(False, w),
    # Sum(Greater($close-Ref($close, 1), 0), d)/(Sum(Abs($close-Ref($close, 1)), d)+1e-12)
    "SUMP": lambda b, w: b.sums("close", w)[0] / b.sums("close", w)[2],
    # Sum(Greater(Ref($close, 1)-$close, 0), d)/(Sum(Abs($close-Ref($close, 1)), d)+1e-12)
    "SUMN": lambda b, w: b.sums("close", w)[1] / b.sums("close", w)[2],
    # (Sum(Greater($close-Ref($close, 1), 0), d)-Sum(Greater(Ref($close, 1)-$close, 0), d))/(Sum(Abs(...), d)+1e-12)
    "SUMD": lambda b, w: (b.sums("close", w)[0] - b.sums("close", w)[1]) / b.sums("close", w)[2],
    # Mean($volume, d)/($volume+1e-12)
    "VMA": lambda b, w: b.rolling("volume").mean(w) / b.volume_denom,
    # Std($volume, d)/($volume+1e-12)
    "VSTD": lambda b, w: b.std("volume", w) / b.volume_denom,
    # Std(Abs($close/Ref($close, 1)-1)*$volume, d)/(Mean(Abs($close/Ref($close, 1)-1)*$volume, d)+1e-12)
    "WVMA": lambda b, w: b.std("chvol", w) / (b.rolling("chvol").mean(w) + 1e-12),
    # the same three sums of $volume
    "VSUMP": lambda b, w: b.sums("volume", w)[0] / b.sums("volume", w)[2],
    "VSUMN": lambda b, w: b.sums("volume", w)[1] / b.sums("volume", w)[2],
    "VSUMD": lambda b, w: (b.sums("volume", w)[0] - b.sums("volume", w)[1]) / b.sums("volume", w)[2],
}

# The last operator that uses each shared input or result (see _Bars.release_after).
_LAST_USER = {
    "close": "CORR", "reg": "RESI", "qtl": "QTLD", "rank": "RANK", "minmax": "RSV", "high": "IMXD",
    "low": "IMXD", "imax": "IMXD", "imin": "IMXD", "logvol": "CORR", "ratio": "CORD", "logratio": "CORD",
    "flag_True": "CNTD", "flag_False": "CNTD", "close_sums": "SUMD", "volume": "VSTD", "chvol": "WVMA",
    "volume_sums": "VSUMD",
}


class _Packing:
    """Instrument histories laid end to end down the columns of a shorter [H, C] array.

    Only the days a table needs are computed: for each instrument, from
    ``HISTORY`` days before its first requested row (or its first bar) to its
    last requested row. The segments are packed first-fit (longest first) into
    columns of the calendar's length, separated by ``HISTORY`` + 1 NaN rows, so
    no window or ``Ref`` reaches from one segment into the next. On the CSI300
    data this halves the cells every Alpha158 operator runs over.
    """

    HISTORY = 61  # days before a row that any Alpha158 feature reads (window 60 over Ref(., 1))

    def __init__(self, close: np.ndarray, t: np.ndarray, i: np.ndarray):
        d, n = close.shape
        first_bar = ops.first_bar(close)
        lo = np.full(n, d)
        np.minimum.at(lo, i, t)
        hi = np.full(n, -1)
        np.maximum.at(hi, i, t)
        used = np.flatnonzero(hi >= 0)
        lo[used] = np.maximum(lo[used] - self.HISTORY, first_bar[used])
        placed = self._place(hi[used] - lo[used] + 1, d)
        columns = 1 + max(c for c, _ in placed)
        self.src = np.full((d, columns), -1, dtype=np.int64)  # flat panel index of each cell, -1 in gaps
        self.first = np.full((d, columns), d, dtype=np.int64)  # row where the cell's segment starts
        for inst, (c, row) in zip(used, placed):
            length = hi[inst] - lo[inst] + 1
            self.src[row : row + length, c] = np.arange(lo[inst], hi[inst] + 1) * n + inst
            self.first[row : row + length, c] = row
        for c in range(columns):  # a gap row belongs to the segment below it (it is never after its start)
            col = self.first[:, c]
            col[:] = np.minimum.accumulate(col[::-1])[::-1]
        self.dest = np.full(d * n, -1, dtype=np.int64)  # packed flat index of each panel cell
        inside = self.src >= 0
        self.dest[self.src[inside]] = np.flatnonzero(inside.ravel())
        self.shape = (d, columns)

    @classmethod
    def _place(cls, lengths: np.ndarray, height: int) -> list[tuple[int, int]]:
        """(column, first row) of each segment, first-fit decreasing."""
        fill: list[int] = []
        placed: list[tuple[int, int]] = [(0, 0)] * len(lengths)
        for k in np.argsort(-lengths, kind="stable"):
            for c, used in enumerate(fill):
                if used + cls.HISTORY + 1 + lengths[k] <= height:
                    placed[k] = (c, used + cls.HISTORY + 1)
                    fill[c] = used + cls.HISTORY + 1 + lengths[k]
                    break
            else:
                placed[k] = (len(fill), 0)
                fill.append(int(lengths[k]))
        return placed

    def pack(self, a: np.ndarray) -> np.ndarray:
        """[D, N] panel array → [H, C] packed (NaN in the gaps)."""
        return np.where(self.src >= 0, a.ravel().take(np.maximum(self.src, 0)), np.float32(np.nan)).astype(a.dtype)


def alpha158_rows(panel: BarPanel, t: np.ndarray, i: np.ndarray, start: int | None = None):
    """Yield (name, values [R]) for the rows (t[r], i[r]), the 158 features in Qlib's order.

    Values are float32 or float64 (Qlib's float64 results before its cast); store them as float32.
    ``start``: the day index Qlib would be asked to start at (default: the first row's day).
    """
    packing = _Packing(panel.field("close"), t, i)
    missing = np.full(packing.shape, np.nan, dtype=np.float32)
    fields = {k: packing.pack(panel.fields[k]) if panel.has(k) else missing for k in ALPHA360_FIELDS}
    bars = _Bars(fields, packing.first, _History(panel, packing, int(t.min()) if start is None else start))
    rows = packing.dest[t * panel.shape[1] + i]
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, make in ALPHA158_KBAR.items():
            yield name, make(bars).ravel().take(rows)
        for field in ALPHA158_PRICE:
            yield f"{field.upper()}0", (getattr(bars, field) / bars.close).ravel().take(rows)
        for name, make in ALPHA158_ROLLING.items():
            for w in WINDOWS:
                yield f"{name}{w}", make(bars, w).ravel().take(rows)
            bars.release_after(name)


# ---------------------------------------------------------------- tables


def member_mask(market: Market) -> np.ndarray:
    """[D, N] bool: the instrument is a universe member that day and has a close (the rows features are emitted for).

    A suspended day (volume 0, previous close carried) keeps the stock in the cross-section.
    """
    return market.universe.mask & ~np.isnan(market.panel.field("close"))


def rows_of(mask: np.ndarray, instruments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(t, i) of the True cells of a [D, N] mask, ordered by day, then instrument symbol."""
    order = np.argsort(instruments.astype(str), kind="stable")
    t, pos = np.nonzero(mask[:, order])
    return t, order[pos]


def member_rows(market: Market, days: slice) -> tuple[np.ndarray, np.ndarray]:
    """(t, i) of the rows a table emits in ``days`` (see :func:`member_mask`); raises when there is none."""
    in_days = np.zeros(len(market.calendar), dtype=bool)
    in_days[days] = True
    t, i = rows_of(member_mask(market) & in_days[:, None], market.panel.instruments)
    if len(t) == 0:
        dates = market.calendar.dates[days]
        raise UserError(
            f"universe {market.universe.name!r} has no member with a close between "
            f"{dates[0].date()} and {dates[-1].date()}"
        )
    return t, i


def feature_rows(panel: BarPanel, feature_set: str, t: np.ndarray, i: np.ndarray, progress: bool = False,
                 start: int | None = None) -> np.ndarray:
    """Unprocessed features of the rows (t[r], i[r]): [R, F] float32, Qlib's column order.

    Alpha360 comes row-major (a row is one gather of 60-day windows), Alpha158
    column-major (a column is one [D, N] expression); either way a
    DataFrame wraps the array without copying it. ``start``: Alpha158's
    :func:`alpha158_rows`.
    """
    names = feature_names(feature_set)
    bar = tqdm(total=len(names), desc=feature_set, disable=None if progress else True, leave=False)
    if feature_set == "alpha360":
        values = np.empty((len(t), len(names)), dtype=np.float32)
        fields = alpha360_fields(panel)
        for lo in range(0, len(t), _ROW_CHUNK):
            rows = slice(lo, lo + _ROW_CHUNK)
            for f in range(len(ALPHA360_FIELDS)):
                values[rows, f * ALPHA360_LAGS : (f + 1) * ALPHA360_LAGS] = alpha360_field(fields, t[rows], i[rows], f)
        bar.update(len(names))
    else:
        columns = np.empty((len(names), len(t)), dtype=np.float32)
        for j, (_, column) in enumerate(alpha158_rows(panel, t, i, start)):
            columns[j] = column
            bar.update()
        values = columns.T
    bar.close()
    return values


def build_feature_table(
    market: Market, feature_set: str, start: str | pd.Timestamp | None = None, end: str | pd.Timestamp | None = None
) -> pd.DataFrame:
    """Unprocessed feature table indexed (datetime, instrument), Qlib's column names, float32.

    Rows are the universe members with a close on each trading day in
    [start, end]; days before ``start`` only serve as history.
    """
    check_feature_set(feature_set)
    days = market.calendar.window(start, end)
    t, i = member_rows(market, days)
    index = pd.MultiIndex.from_arrays(
        [market.calendar.dates[t], market.panel.instruments[i].astype(str)], names=["datetime", "instrument"]
    )
    values = feature_rows(market.panel, feature_set, t, i, start=days.start)
    return pd.DataFrame(values, index=index, columns=feature_names(feature_set), copy=False)
