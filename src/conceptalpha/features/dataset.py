"""The daily cross-section dataset: features, labels and market caps per trading day, cached on disk.

Rows: on each day of a segment, the universe members that have a close
(:func:`~conceptalpha.features.alpha.member_mask`; a suspended day keeps the
stock, its label is still defined by prices). Per row:

- ``x``: Alpha360 as [T=60, F=6] (oldest day first; built on the fly from the
  [D, N, 6] bar array, exactly the table's values) or Alpha158 as [158], then
  the robust z-score fitted on the train segment's rows, clipped, missing → 0.
  With ``window: T`` (Alpha158 only) a row is the stock's last T days of
  Alpha158 rows, [T, 158], oldest first; a day without a bar (or before the
  data) is all zeros. The earlier days' rows are computed for every stock
  with a bar then, member or not, and use nothing after their own day.
- ``market`` (``market_context: true``): the day's market vector [M]
  (:mod:`~conceptalpha.features.market_context`), robust z-scored on the
  train segment's days, clipped, missing → 0; the same for every stock.
- ``y_raw``: the label (:mod:`~conceptalpha.features.labels`), for evaluation.
- ``y_train``: y_raw, purged (NaN) where the label reaches past its segment's
  last day (so no training label depends on validation/test prices), then
  normalised per day (rank or z-score). The trainer drops NaN labels.
- ``market_cap``: from :func:`conceptalpha.data.market_cap.market_cap` unless given.

Cache: ``<cache_dir>/<feature_set>-<key>.npz`` (NumPy arrays + JSON metadata,
no pickle, written atomically). The key hashes the content of every input
array (calendar, instruments, all bar fields, universe mask, market caps) and
the configuration (feature set, label, processors, segments), so a changed
input rebuilds whatever file it came from, and an unchanged one loads.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tqdm import tqdm

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.panel import Market
from conceptalpha.errors import UserError
from conceptalpha.features import alpha
from conceptalpha.features.daydata import DayData
from conceptalpha.features.labels import DEFAULT_LABEL, LabelSpec, parse_label, raw_label
from conceptalpha.features.market_context import market_context
from conceptalpha.features.processors import LABEL_NORMS, RobustZScore, normalize_labels
from conceptalpha.io import atomic_path

CACHE_VERSION = 1
DEFAULT_SEGMENTS = {
    "train": ("2010-01-01", "2014-12-31"),
    "valid": ("2015-01-01", "2016-12-31"),
    "test": ("2017-01-01", "2020-12-31"),
}


class DatasetConfig(BaseModel):
    """What a dataset is built from, besides the market itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_set: str = "alpha360"
    label: str = DEFAULT_LABEL
    segments: dict[str, tuple[str, str]] = Field(default_factory=lambda: dict(DEFAULT_SEGMENTS))
    label_norm: str = "rank"
    feature_clip: float = Field(3.0, gt=0)
    purge_labels: bool = True  # drop training labels that reach past their segment's end
    window: int | None = Field(None, ge=1)  # Alpha158 only: stack the last `window` days' rows
    market_context: bool = False  # add the day's market vector

    @field_validator("feature_set")
    @classmethod
    def _known_feature_set(cls, v: str) -> str:
        return alpha.check_feature_set(v)

    @field_validator("label")
    @classmethod
    def _known_label(cls, v: str) -> str:
        return parse_label(v).id

    @field_validator("label_norm")
    @classmethod
    def _known_norm(cls, v: str) -> str:
        if v not in LABEL_NORMS:
            raise UserError(f"unknown label_norm {v!r}; expected one of {', '.join(LABEL_NORMS)}")
        return v

    @model_validator(mode="after")
    def _window_needs_flat_features(self) -> "DatasetConfig":
        if self.window is not None and self.feature_set != "alpha158":
            raise UserError(
                f"window: {self.window} stacks Alpha158 rows; feature_set {self.feature_set!r} is already a sequence"
            )
        return self

    @field_validator("segments")
    @classmethod
    def _has_train(cls, v: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        if "train" not in v:
            raise UserError(f"segments must include 'train' (processors are fitted on it); got {sorted(v)}")
        for name, (start, end) in v.items():
            if pd.Timestamp(start) > pd.Timestamp(end):
                raise UserError(f"segment {name!r}: start {start} is after end {end}")
        return v


class DailyDataset:
    """One cross-section per trading day (implements ``DayDataset``). Build with :func:`build_dataset`."""

    def __init__(self, *, config: DatasetConfig, calendar: Calendar, instruments: np.ndarray,
                 segment_days: dict[str, slice], arrays: dict[str, np.ndarray], normalizer: RobustZScore,
                 cache_key: str, fields: np.ndarray | None):
        self.config = config
        self.label = config.label
        self.label_norm = config.label_norm
        self.feature_set = config.feature_set
        self.feature_names = alpha.feature_names(config.feature_set)
        self.calendar = calendar
        self.instruments = instruments
        self.cache_key = cache_key
        self.normalizer = normalizer
        self._segment_days = segment_days
        self._arrays = arrays
        self._fields = fields
        self._day_start = np.searchsorted(arrays["rows_t"], np.arange(len(calendar) + 1))

    @property
    def seq_len(self) -> int | None:
        return alpha.model_input_shape(self.feature_set, self.config.window)[1]

    @property
    def market_names(self) -> list[str]:
        """Names of the market vector's entries (empty without ``market_context``)."""
        return [str(name) for name in self._arrays.get("market_names", [])]

    @property
    def d_market(self) -> int:
        return len(self.market_names)

    @property
    def d_feat(self) -> int:
        return alpha.model_input_shape(self.feature_set, self.config.window)[0]

    @property
    def segments(self) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
        """Actual first and last trading day of each segment."""
        dates = self.calendar.dates
        return {name: (dates[s.start], dates[s.stop - 1]) for name, s in self._segment_days.items()}

    @property
    def fitted(self) -> dict:
        """Processor state: the feature normaliser (fitted on train rows) and the label protocol."""
        train = self.segments["train"]
        return {
            "feature_median": self.normalizer.median,
            "feature_scale": self.normalizer.scale,
            "feature_clip": self.normalizer.clip,
            "fit_window": (str(train[0].date()), str(train[1].date())),
            "label": self.label,
            "label_norm": self.config.label_norm,
            "purge_labels": self.config.purge_labels,
        }

    def days(self, segment: str) -> list[int]:
        """Trading-day indices of a segment that have at least one row, in date order."""
        if segment not in self._segment_days:
            raise UserError(f"unknown segment {segment!r}; have {', '.join(self._segment_days)}")
        s = self._segment_days[segment]
        counts = np.diff(self._day_start)[s]
        return [int(t) for t in np.arange(s.start, s.stop)[counts > 0]]

    def day(self, t: int) -> DayData:
        lo, hi = int(self._day_start[t]), int(self._day_start[t + 1])
        if lo == hi:
            raise UserError(f"day {t} ({self.calendar.dates[t].date()}) has no rows in this dataset's segments")
        rows = slice(lo, hi)
        a = self._arrays
        return DayData(
            t=int(t),
            date=self.calendar.dates[t],
            instruments=self.instruments[a["rows_i"][rows]],
            x=self._features(rows),
            y_train=a["y_train"][rows],
            y_raw=a["y_raw"][rows],
            market_cap=a["market_cap"][rows],
            market=a["market"][t] if "market" in a else None,
        )

    def _features(self, rows: slice) -> np.ndarray:
        if "window_rows" in self._arrays:
            return stack_windows(self._arrays["x"], self._arrays["window_rows"][rows])
        if self._fields is None:
            return np.ascontiguousarray(self._arrays["x"][rows])  # stored column-major
        a = self._arrays
        window = alpha.alpha360_rows(self._fields, a["rows_t"][rows], a["rows_i"][rows])  # [n, 6, 60]
        return np.ascontiguousarray(self.normalizer.transform(window).transpose(0, 2, 1))


def build_dataset(market: Market, config: DatasetConfig, cache_dir: str | Path | None = None,
                  market_cap: np.ndarray | None = None) -> DailyDataset:
    """Build (or load from ``cache_dir``) the daily dataset of ``market`` under ``config``."""
    spec = parse_label(config.label)
    segment_days = _segment_days(market.calendar, config.segments)
    caps = _market_caps(market, market_cap)
    key = _cache_key(market, config, segment_days, caps)
    fields = alpha.alpha360_fields(market.panel) if config.feature_set == "alpha360" else None
    path = None if cache_dir is None else Path(cache_dir) / f"{config.feature_set}-{key[:24]}.npz"
    arrays = _load_cache(path) if path is not None else None
    if arrays is None:
        arrays = _build_arrays(market, config, spec, segment_days, caps, fields)
        if path is not None:
            _save_cache(path, arrays, config, key)
    normalizer = RobustZScore.from_state({"median": arrays["median"], "scale": arrays["scale"],
                                         "clip": config.feature_clip})
    return DailyDataset(config=config, calendar=market.calendar, instruments=market.panel.instruments,
                        segment_days=segment_days, arrays=arrays, normalizer=normalizer, cache_key=key,
                        fields=fields)


def _segment_days(calendar: Calendar, segments: dict[str, tuple[str, str]]) -> dict[str, slice]:
    days = {name: calendar.window(start, end) for name, (start, end) in segments.items()}
    ordered = sorted(days.items(), key=lambda kv: kv[1].start)
    for (a, sa), (b, sb) in zip(ordered, ordered[1:]):
        if sb.start < sa.stop:
            raise UserError(f"segments {a!r} and {b!r} overlap")
    return days


def _market_caps(market: Market, given: np.ndarray | None) -> np.ndarray:
    if given is None:
        from conceptalpha.data.market_cap import market_cap

        return market_cap(market.panel, market.shares).values
    given = np.asarray(given, dtype=np.float32)
    if given.shape != market.panel.shape:
        raise UserError(f"market_cap has shape {given.shape}, expected {market.panel.shape} (days × instruments)")
    return given


def _build_arrays(market: Market, config: DatasetConfig, spec: LabelSpec, segment_days: dict[str, slice],
                  caps: np.ndarray, fields: np.ndarray | None) -> dict[str, np.ndarray]:
    d = len(market.calendar)
    segment_end = np.full(d, -1, dtype=np.int64)  # last day of the segment a day belongs to
    for s in segment_days.values():
        segment_end[s] = s.stop - 1
    t, i = alpha.rows_of(alpha.member_mask(market) & (segment_end >= 0)[:, None], market.panel.instruments)
    if len(t) == 0:
        raise UserError(f"universe {market.universe.name!r} has no member with a close in any segment")
    train = segment_days["train"]
    is_train = (t >= train.start) & (t < train.stop)
    if not is_train.any():
        raise UserError(f"the train segment {config.segments['train']} has no member with a close")
    y_raw = raw_label(market.panel.field("close"), spec)[t, i]
    y_purged = np.where(config.purge_labels & (t + spec.reach > segment_end[t]), np.nan, y_raw)
    arrays = {
        "rows_t": t.astype(np.int64),
        "rows_i": i.astype(np.int64),
        "y_raw": y_raw,
        "y_train": normalize_labels(y_purged, t, config.label_norm),
        "market_cap": caps[t, i],
    }
    if fields is not None:
        normalizer = _fit_alpha360(fields, t[is_train], i[is_train], config.feature_clip)
    elif config.window is None:
        x = alpha.feature_rows(market.panel, "alpha158", t, i, progress=True)
        normalizer = RobustZScore.fit(x[is_train], config.feature_clip)
        arrays["x"] = normalizer.transform(x)
    else:
        history_t, history_i, arrays["window_rows"] = window_rows(market, t, i, config.window)
        x = alpha.feature_rows(market.panel, "alpha158", np.concatenate([t, history_t]),
                               np.concatenate([i, history_i]), progress=True, start=int(t.min()))
        normalizer = RobustZScore.fit(x[: len(t)][is_train], config.feature_clip)
        arrays["x"] = normalizer.transform(x)
    arrays["median"], arrays["scale"] = normalizer.median, normalizer.scale
    if config.market_context:
        arrays.update(_market_arrays(market, train, config.feature_clip))
    return arrays


def window_rows(market: Market, t: np.ndarray, i: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows a ``window``-day stack of the rows (t, i) reads.

    Returns (history_t, history_i, index [R, window]): the extra rows — days
    within ``window − 1`` days before a row's day on which its stock has a close
    and which are not rows themselves — and, per row, the positions of its
    window's rows (oldest first) in the concatenation rows ++ history rows,
    −1 where the stock has no close that day or the day is before the data.
    """
    d, n = market.panel.shape
    is_row = np.zeros((d, n), dtype=bool)
    is_row[t, i] = True
    needed = np.zeros((d, n), dtype=bool)
    for lag in range(1, window):
        needed[:-lag] |= is_row[lag:]
    needed &= ~is_row & np.isfinite(market.panel.field("close"))
    history_t, history_i = np.nonzero(needed)
    position = np.full((d, n), -1, dtype=np.int64)
    position[t, i] = np.arange(len(t))
    position[history_t, history_i] = len(t) + np.arange(len(history_t))
    days = t[:, None] + np.arange(1 - window, 1)[None, :]  # [R, window], oldest first
    index = np.where(days >= 0, position[np.maximum(days, 0), i[:, None]], -1)
    return history_t.astype(np.int64), history_i.astype(np.int64), index


def stack_windows(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows x [R', F] gathered by ``index`` [n, T] → [n, T, F] float32; index −1 gives a row of zeros."""
    out = x[np.maximum(index, 0)]
    out[index < 0] = 0.0
    return out


def _market_arrays(market: Market, train: slice, clip: float) -> dict[str, np.ndarray]:
    """The market vector of every day [D, M], normalised on the train segment's days."""
    context = market_context(market)
    normalizer = RobustZScore.fit(context.values[train], clip)
    return {
        "market": normalizer.transform(context.values),
        "market_median": normalizer.median,
        "market_scale": normalizer.scale,
        "market_names": np.array(context.names),
    }


def _fit_alpha360(fields: np.ndarray, t: np.ndarray, i: np.ndarray, clip: float) -> RobustZScore:
    """Per (field, lag) median/MAD over the training rows, one field at a time (bounded memory)."""
    per_field = [
        RobustZScore.fit(alpha.alpha360_field(fields, t, i, f), clip)
        for f in tqdm(range(len(alpha.ALPHA360_FIELDS)), desc="fit alpha360", disable=None, leave=False)
    ]
    return RobustZScore(np.stack([p.median for p in per_field]), np.stack([p.scale for p in per_field]), clip)


def _cache_key(market: Market, config: DatasetConfig, segment_days: dict[str, slice], caps: np.ndarray) -> str:
    dates = market.calendar.dates
    material = {
        "version": CACHE_VERSION,
        "config": _keyed_config(config),
        "segment_days": {k: [str(dates[s.start].date()), str(dates[s.stop - 1].date())] for k, s in segment_days.items()},
        "data": market_digest(market, caps),
    }
    if config.market_context:
        material["benchmark"] = benchmark_digest(market)
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _keyed_config(config: DatasetConfig) -> dict:
    """The config as the cache key sees it: options added later count only when set, so older caches stay valid."""
    dumped = config.model_dump()
    for name in ("window", "market_context"):
        if dumped[name] == DatasetConfig.model_fields[name].default:
            del dumped[name]
    return dumped


def benchmark_digest(market: Market) -> str:
    """Content hash of the benchmark index close and volume (what the market context reads besides the panel)."""
    h = hashlib.blake2b(digest_size=20)
    for series in (market.benchmark, market.benchmark_volume):
        if series is None:
            h.update(b"none")
        else:
            h.update(pd.DatetimeIndex(series.index).asi8.tobytes())
            h.update(np.ascontiguousarray(series.to_numpy(dtype=np.float64)).tobytes())
    return h.hexdigest()


def market_digest(market: Market, caps: np.ndarray) -> str:
    """Content hash of everything the dataset reads from the market (and the market caps)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(market.calendar.dates.asi8.tobytes())
    h.update("\0".join(market.panel.instruments.astype(str)).encode())
    for name in sorted(market.panel.fields):
        h.update(name.encode())
        h.update(np.ascontiguousarray(market.panel.fields[name]).tobytes())
    h.update(market.universe.name.encode())
    h.update(np.packbits(market.universe.mask).tobytes())
    h.update(np.ascontiguousarray(caps, dtype=np.float32).tobytes())
    return h.hexdigest()


def _save_cache(path: Path, arrays: dict[str, np.ndarray], config: DatasetConfig, key: str) -> None:
    meta = json.dumps({"cache_key": key, "version": CACHE_VERSION, "config": config.model_dump()}, default=str)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, meta=np.array(meta), **arrays)


def _load_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is absent or unreadable (it is then rebuilt)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files if k != "meta"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
