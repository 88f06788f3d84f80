"""Market context: one point-in-time vector per trading day describing the whole market.

Models such as MASTER condition each stock's features on the market's state.
The vector of day t is built from data up to and including day t only
(trailing windows, ``d`` ∈ :data:`CONTEXT_WINDOWS` trading days):

Index part (when the market has a benchmark index close):

- ``index_ret1``: r_t = close_t / close_{t−1} − 1 (a missing close carries the last one);
- ``index_ret_mean{d}``, ``index_ret_std{d}``: mean and std of r over the last d days;
- ``index_close_rel{d}``: close_t / mean(close over d days) − 1;
- with an index volume: ``index_volume_rel{d}`` = log(volume_t / mean(volume over d days)).

Cross-section part (always; the universe's members that day):

- ``cs_ret_mean``, ``cs_ret_std``: mean and dispersion (std) of the members'
  close-to-close returns of day t (the equal-weighted market and its spread);
- ``cs_volume_mean``, ``cs_volume_std``: mean and dispersion of the members'
  relative volume log(volume_t / mean(volume over the last 20 days)), a
  turnover proxy that needs no share counts;
- ``cs_ret_mean_mean{d}``, ``cs_ret_mean_std{d}``, ``cs_ret_std_mean{d}``,
  ``cs_volume_mean_mean{d}``: trailing means/stds of those daily series.

The dataset normalises the vector with a robust z-score fitted on the training
days only (:mod:`conceptalpha.features.dataset`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from conceptalpha.data.panel import Market
from conceptalpha.features.ops import rolling_mean, rolling_std, shift

CONTEXT_WINDOWS = (5, 10, 20, 30, 60)
RELATIVE_VOLUME_DAYS = 20
NO_INDEX_NOTE = (
    "Market context: the data has no benchmark index, so the market vector holds the universe's "
    "cross-section part only (no index return, volatility, price or volume)."
)
NO_INDEX_VOLUME_NOTE = "Market context: the benchmark index has no volume, so the index-volume features are left out."


@dataclass
class MarketContext:
    """Raw (unnormalised) market vectors: ``values`` [D, M] float64 on the market calendar, one name per column."""

    values: np.ndarray
    names: list[str]


def market_context(market: Market) -> MarketContext:
    """The market vector of every day of ``market``'s calendar (see the module docstring)."""
    columns = _cross_section_columns(market)
    close = _on_calendar(market, market.benchmark)
    if close is not None:
        columns.update(_index_columns(close, _on_calendar(market, market.benchmark_volume)))
    names = list(columns)
    return MarketContext(np.stack([columns[k] for k in names], axis=1), names)


def context_notes(market: Market) -> list[str]:
    """What the market vector of ``market`` lacks, one sentence each (for the run's notes)."""
    if market.benchmark is None:
        return [NO_INDEX_NOTE]
    return [NO_INDEX_VOLUME_NOTE] if market.benchmark_volume is None else []


def _on_calendar(market: Market, series: pd.Series | None) -> np.ndarray | None:
    """A daily series as float64 [D] on the market calendar, carrying the last known value forward."""
    if series is None:
        return None
    values = series.copy()
    values.index = pd.DatetimeIndex(pd.to_datetime(values.index)).normalize()
    return values.reindex(market.calendar.dates).astype("float64").ffill().to_numpy()


def _index_columns(close: np.ndarray, volume: np.ndarray | None) -> dict[str, np.ndarray]:
    ret = close / shift(close, 1) - 1.0
    out = {"index_ret1": ret}
    for d in CONTEXT_WINDOWS:
        out[f"index_ret_mean{d}"] = _trailing(rolling_mean, ret, d)
        out[f"index_ret_std{d}"] = _trailing(rolling_std, ret, d)
        out[f"index_close_rel{d}"] = close / _trailing(rolling_mean, close, d) - 1.0
        if volume is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"index_volume_rel{d}"] = np.log(volume / _trailing(rolling_mean, volume, d))
    return out


def _cross_section_columns(market: Market) -> dict[str, np.ndarray]:
    close = market.panel.field("close").astype(np.float64)
    volume = market.panel.field("volume").astype(np.float64)
    members = market.universe.mask & np.isfinite(close)
    ret = np.where(members, close / shift(close, 1) - 1.0, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative_volume = np.log(volume / rolling_mean(volume, RELATIVE_VOLUME_DAYS))
    relative_volume = np.where(members & np.isfinite(relative_volume), relative_volume, np.nan)
    daily = {
        "cs_ret_mean": _row_stat(np.nanmean, ret),
        "cs_ret_std": _row_stat(np.nanstd, ret),
        "cs_volume_mean": _row_stat(np.nanmean, relative_volume),
        "cs_volume_std": _row_stat(np.nanstd, relative_volume),
    }
    out = dict(daily)
    for d in CONTEXT_WINDOWS:
        out[f"cs_ret_mean_mean{d}"] = _trailing(rolling_mean, daily["cs_ret_mean"], d)
        out[f"cs_ret_mean_std{d}"] = _trailing(rolling_std, daily["cs_ret_mean"], d)
        out[f"cs_ret_std_mean{d}"] = _trailing(rolling_mean, daily["cs_ret_std"], d)
        out[f"cs_volume_mean_mean{d}"] = _trailing(rolling_mean, daily["cs_volume_mean"], d)
    return out


def _trailing(stat, series: np.ndarray, d: int) -> np.ndarray:
    """A trailing-window operator of :mod:`~conceptalpha.features.ops` on one daily series [D] → [D]."""
    return stat(series[:, None], d)[:, 0]


def _row_stat(stat, values: np.ndarray) -> np.ndarray:
    """``stat`` over each day's finite values [D, N] → [D] (NaN on a day with none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty days give NaN, as intended
        return stat(np.where(np.isfinite(values), values, np.nan), axis=1)
