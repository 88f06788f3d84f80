"""Derived universes: the N largest members of an index, re-selected on a fixed schedule.

CSI100 ≈ the 100 largest CSI300 members by market cap, re-selected each June and December.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from conceptalpha.data.panel import Market
from conceptalpha.data.universe import Universe
from conceptalpha.errors import UserError


def reselection_days(dates: pd.DatetimeIndex, months: tuple[int, ...]) -> np.ndarray:
    """Indices of the last trading day of each calendar month in ``months`` (a month cut off by the calendar's end excluded)."""
    periods = dates.to_period("M")
    last_of_month = np.flatnonzero(np.append(periods[1:] != periods[:-1], False))
    return last_of_month[np.isin(dates[last_of_month].month, months)]


def largest_members(
    market: Market,
    market_cap: np.ndarray,
    n: int = 100,
    months: tuple[int, ...] = (6, 12),
    name: str = "csi100",
) -> Universe:
    """The ``n`` members of ``market.universe`` with the largest cap, re-selected on a schedule.

    - ``market_cap``: float [D, N] aligned with ``market.panel`` (NaN = unknown).
    - Re-selection day r = last trading day of each month in ``months``. The
      ranking uses each member's latest known cap on or before r (forward-filled
      over missing days, never beyond r), among the members on day r.
      The selection holds from r + 1 to the next re-selection day (inclusive).
    - Before the first re-selection, the ranking of the first trading day is
      used from that day on (information of day 0 only: no look-ahead, but the
      first period is not a real index review).
    - On every day the result is also restricted to the parent's members: a
      stock leaving the parent index leaves the derived one too, unreplaced until
      the next re-selection. Days can therefore hold fewer than ``n`` stocks.
    """
    if n < 1:
        raise UserError(f"derived universe {name!r}: n must be >= 1, got {n}")
    parent = market.universe
    if market_cap.shape != parent.mask.shape:
        raise ValueError(f"market_cap has shape {market_cap.shape}, expected {parent.mask.shape}")
    known_cap = pd.DataFrame(market_cap).ffill().to_numpy()
    selection_days = np.concatenate([[0], reselection_days(market.calendar.dates, tuple(months))])
    effective_from = np.concatenate([[0], selection_days[1:] + 1])
    chosen = np.zeros_like(parent.mask)
    for day, first, last in zip(selection_days, effective_from, np.append(effective_from[1:], len(parent.mask))):
        chosen[first:last] = _top_n(known_cap[day], parent.mask[day], n)
    return Universe(name, parent.calendar, parent.instruments, chosen & parent.mask)


def _top_n(cap: np.ndarray, eligible: np.ndarray, n: int) -> np.ndarray:
    """[N] bool: the ``n`` eligible stocks with the largest finite cap (ties by column order)."""
    score = np.where(eligible & np.isfinite(cap), cap, -np.inf)
    order = np.argsort(-score, kind="stable")[:n]
    out = np.zeros(cap.shape[0], dtype=bool)
    out[order[np.isfinite(score[order])]] = True
    return out
