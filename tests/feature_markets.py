"""Tiny hand-made markets for the feature, label and dataset tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.data.universe import Universe


def random_bars(days: int, n: int, seed: int = 0, vwap: bool = False) -> dict[str, np.ndarray]:
    """Positive float32 OHLCV random walks [days, n] with high ≥ max(open, close), low ≤ min(open, close)."""
    rng = np.random.default_rng(seed)
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, (days, n)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.01, (days, n)))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, (days, n)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, (days, n)))
    volume = rng.integers(1_000, 100_000, (days, n)).astype(float)
    bars = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    if vwap:
        bars["vwap"] = (high + low + close) / 3
    return {k: v.astype(np.float32) for k, v in bars.items()}


def make_market(bars: dict[str, np.ndarray], mask: np.ndarray | None = None, instruments=None,
                start: str = "2020-01-01") -> Market:
    days, n = bars["close"].shape
    calendar = Calendar(pd.bdate_range(start, periods=days))
    instruments = np.array(instruments if instruments is not None else [f"SH60000{k}" for k in range(n)], dtype=object)
    mask = np.ones((days, n), dtype=bool) if mask is None else mask
    return Market(
        panel=BarPanel(calendar, instruments, {k: np.asarray(v, dtype=np.float32) for k, v in bars.items()}),
        universe=Universe("test", calendar, instruments, mask),
        universe_members=instruments,
    )


def perturb_after(bars: dict[str, np.ndarray], t: int, seed: int = 1) -> dict[str, np.ndarray]:
    """A copy of ``bars`` with every value after day t scaled by random factors."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in bars.items()}
    for v in out.values():
        v[t + 1 :] *= rng.uniform(0.5, 1.5, v[t + 1 :].shape).astype(np.float32)
    return out
