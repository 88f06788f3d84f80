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
rounding. A field the data lacks (e.g. ``vwap``) gives all-NaN columns, as in
Qlib. Rows: a (day, instrument) is emitted when the instrument is a universe
member that day and has a close; features use the full history before the
requested start (never anything after the row's day).
"""

from __future__ import annotations

from collections.abc import Callable

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


class _Bars:
    """The float32 [D, N] inputs of Alpha158 and the sub-expressions several features share."""

    def __init__(self, panel: BarPanel):
        missing = np.full(panel.shape, np.nan, dtype=np.float32)

        def field(name: str) -> np.ndarray:
            return panel.fields[name] if panel.has(name) else missing

        self.open, self.high, self.low, self.close = field("open"), field("high"), field("low"), field("close")
        self.vwap, self.volume = field("vwap"), field("volume")
        self.first = ops.first_bar(self.close)
        self.volume_denom = self.volume + EPS
        self.range_denom = self.high - self.low + EPS
        self._cache: dict[str, np.ndarray] = {}

    def shared(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def release_after(self, operator: str) -> None:
        """Drop the shared arrays no operator after ``operator`` needs."""
        for key in [k for k in self._cache if _LAST_USER[k.split(":")[0]] == operator]:
            del self._cache[key]

    def up_down(self, a: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greater(a − Ref(a,1), 0), Greater(Ref(a,1) − a, 0), Abs(a − Ref(a,1)) (float32)."""

        def make():
            prev = ops.shift(a, 1)
            return np.maximum(a - prev, 0), np.maximum(prev - a, 0), np.abs(a - prev)

        return self.shared(f"updown_{key}:", make)

    def compare_prev(self, greater: bool) -> np.ndarray:
        """close > Ref(close,1) (or <) as 1/0 from the first bar on, NaN before (Qlib: no row)."""
        prev = ops.shift(self.close, 1)
        hit = self.close > prev if greater else self.close < prev
        return np.where(ops.since_first_bar(self.close, self.first), hit, np.nan)

    def regression(self, w: int):
        return self.shared(f"reg:{w}", lambda: ops.regression(self.close, w))

    def count_mean(self, greater: bool, w: int) -> np.ndarray:
        return self.shared(f"cnt:{greater}{w}", lambda: ops.rolling_mean(self.compare_prev(greater), w))

    def idx(self, which: str, w: int) -> np.ndarray:
        if which == "max":
            return self.shared("imax:", lambda: ops.rolling_idxmax(self.high, WINDOWS, self.first))[w]
        return self.shared("imin:", lambda: ops.rolling_idxmin(self.low, WINDOWS, self.first))[w]

    def minmax(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        return self.shared(f"minmax:{w}", lambda: (ops.rolling_max(self.high, w), ops.rolling_min(self.low, w)))

    def change_volume(self) -> np.ndarray:
        """Abs(close/Ref(close,1) − 1) · volume (float32)."""
        return self.shared("chvol:", lambda: np.abs(self.close / ops.shift(self.close, 1) - 1) * self.volume)

    def sums(self, a: np.ndarray, key: str, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rolling sums of gains, losses and absolute changes of ``a`` over w days."""

        def make():
            up, down, absolute = self.up_down(a, key)
            return ops.rolling_sum(up, w), ops.rolling_sum(down, w), ops.rolling_sum(absolute, w) + 1e-12

        return self.shared(f"sums_{key}:{w}", make)


ALPHA158_KBAR: dict[str, Callable[[_Bars], np.ndarray]] = {
    "KMID": lambda b: (b.close - b.open) / b.open,  # ($close-$open)/$open
    "KLEN": lambda b: (b.high - b.low) / b.open,  # ($high-$low)/$open
    "KMID2": lambda b: (b.close - b.open) / b.range_denom,  # ($close-$open)/($high-$low+1e-12)
    "KUP": lambda b: (b.high - np.maximum(b.open, b.close)) / b.open,
    "KUP2": lambda b: (b.high - np.maximum(b.open, b.close)) / b.range_denom,
    "KLOW": lambda b: (np.minimum(b.open, b.close) - b.low) / b.open,
    "KLOW2": lambda b: (np.minimum(b.open, b.close) - b.low) / b.range_denom,
    "KSFT": lambda b: (2 * b.close - b.high - b.low) / b.open,  # (2*$close-$high-$low)/$open
    "KSFT2": lambda b: (2 * b.close - b.high - b.low) / b.range_denom,
}

ALPHA158_PRICE = ("open", "high", "low", "vwap")  # $field/$close

Rolling = Callable[[_Bars, int], np.ndarray]
ALPHA158_ROLLING: dict[str, Rolling] = {
    # Ref($close, d)/$close
    "ROC": lambda b, w: ops.shift(b.close, w) / b.close,
    # Mean($close, d)/$close
    "MA": lambda b, w: ops.rolling_mean(b.close, w) / b.close,
    # Std($close, d)/$close
    "STD": lambda b, w: ops.rolling_std(b.close, w) / b.close,
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
    "QTLU": lambda b, w: ops.rolling_quantile(b.close, w, 0.8) / b.close,
    # Quantile($close, d, 0.2)/$close
    "QTLD": lambda b, w: ops.rolling_quantile(b.close, w, 0.2) / b.close,
    # Rank($close, d)
    "RANK": lambda b, w: ops.rolling_rank(b.close, w),
    # ($close-Min($low, d))/(Max($high, d)-Min($low, d)+1e-12)
    "RSV": lambda b, w: (b.close - b.minmax(w)[1]) / (b.minmax(w)[0] - b.minmax(w)[1] + 1e-12),
    # IdxMax($high, d)/d
    "IMAX": lambda b, w: b.idx("max", w) / w,
    # IdxMin($low, d)/d
    "IMIN": lambda b, w: b.idx("min", w) / w,
    # (IdxMax($high, d)-IdxMin($low, d))/d
    "IMXD": lambda b, w: (b.idx("max", w) - b.idx("min", w)) / w,
    # Corr($close, Log($volume+1), d)
    "CORR": lambda b, w: ops.rolling_corr(b.close, np.log(b.volume + np.float32(1)), w),
    # Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), d)
    "CORD": lambda b, w: ops.rolling_corr(
        b.close / ops.shift(b.close, 1), np.log(b.volume / ops.shift(b.volume, 1) + np.float32(1)), w
    ),
    # Mean($close>Ref($close, 1), d)
    "CNTP": lambda b, w: b.count_mean(True, w),
    # Mean($close<Ref($close, 1), d)
    "CNTN": lambda b, w: b.count_mean(False, w),
    # Mean($close>Ref($close, 1), d)-Mean($close<Ref($close, 1), d)
    "CNTD": lambda b, w: b.count_mean(True, w) - b.count_mean(False, w),
    # Sum(Greater($close-Ref($close, 1), 0), d)/(Sum(Abs($close-Ref($close, 1)), d)+1e-12)
    "SUMP": lambda b, w: b.sums(b.close, "close", w)[0] / b.sums(b.close, "close", w)[2],
    # Sum(Greater(Ref($close, 1)-$close, 0), d)/(Sum(Abs($close-Ref($close, 1)), d)+1e-12)
    "SUMN": lambda b, w: b.sums(b.close, "close", w)[1] / b.sums(b.close, "close", w)[2],
    # (Sum(Greater(..., 0), d)-Sum(Greater(Ref-..., 0), d))/(Sum(Abs(...), d)+1e-12)
    "SUMD": lambda b, w: (b.sums(b.close, "close", w)[0] - b.sums(b.close, "close", w)[1])
    / b.sums(b.close, "close", w)[2],
    # Mean($volume, d)/($volume+1e-12)
    "VMA": lambda b, w: ops.rolling_mean(b.volume, w) / b.volume_denom,
    # Std($volume, d)/($volume+1e-12)
    "VSTD": lambda b, w: ops.rolling_std(b.volume, w) / b.volume_denom,
    # Std(Abs($close/Ref($close, 1)-1)*$volume, d)/(Mean(Abs($close/Ref($close, 1)-1)*$volume, d)+1e-12)
    "WVMA": lambda b, w: ops.rolling_std(b.change_volume(), w) / (ops.rolling_mean(b.change_volume(), w) + 1e-12),
    # Sum(Greater($volume-Ref($volume, 1), 0), d)/(Sum(Abs($volume-Ref($volume, 1)), d)+1e-12)
    "VSUMP": lambda b, w: b.sums(b.volume, "volume", w)[0] / b.sums(b.volume, "volume", w)[2],
    "VSUMN": lambda b, w: b.sums(b.volume, "volume", w)[1] / b.sums(b.volume, "volume", w)[2],
    "VSUMD": lambda b, w: (b.sums(b.volume, "volume", w)[0] - b.sums(b.volume, "volume", w)[1])
    / b.sums(b.volume, "volume", w)[2],
}


# Which operator is the last to use each shared sub-expression (see _Bars).
_LAST_USER = {
    "reg": "RESI", "minmax": "RSV", "imax": "IMXD", "imin": "IMXD", "cnt": "CNTD", "chvol": "WVMA",
    "updown_close": "SUMD", "sums_close": "SUMD", "updown_volume": "VSUMD", "sums_volume": "VSUMD",
}


def alpha158_columns(panel: BarPanel):
    """Yield (name, float32 [D, N] array) for the 158 features in Qlib's order."""
    bars = _Bars(panel)
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, make in ALPHA158_KBAR.items():
            yield name, make(bars).astype(np.float32, copy=False)
        for field in ALPHA158_PRICE:
            yield f"{field.upper()}0", (getattr(bars, field) / bars.close).astype(np.float32, copy=False)
        for name, make in ALPHA158_ROLLING.items():
            for w in WINDOWS:
                yield f"{name}{w}", make(bars, w).astype(np.float32, copy=False)
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


def feature_rows(panel: BarPanel, feature_set: str, t: np.ndarray, i: np.ndarray, progress: bool = False) -> np.ndarray:
    """Unprocessed features of the rows (t[r], i[r]): [R, F] float32, Qlib's column order.

    Alpha360 comes row-major (a row is one gather of 60-day windows), Alpha158
    column-major (a column is one [D, N] expression); either way a
    DataFrame wraps the array without copying it.
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
        flat = t * panel.shape[1] + i
        for j, (_, column) in enumerate(alpha158_columns(panel)):
            columns[j] = column.ravel().take(flat)
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
    t, i = member_rows(market, market.calendar.window(start, end))
    index = pd.MultiIndex.from_arrays(
        [market.calendar.dates[t], market.panel.instruments[i].astype(str)], names=["datetime", "instrument"]
    )
    values = feature_rows(market.panel, feature_set, t, i)
    return pd.DataFrame(values, index=index, columns=feature_names(feature_set), copy=False)
