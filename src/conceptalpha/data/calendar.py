"""The trading calendar: sorted, unique trading dates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from conceptalpha.errors import UserError


@dataclass(frozen=True)
class Calendar:
    """Trading dates, strictly increasing. Index ``t`` of a panel's first axis is ``dates[t]``."""

    dates: pd.DatetimeIndex

    def __post_init__(self) -> None:
        dates = pd.DatetimeIndex(self.dates).normalize()
        object.__setattr__(self, "dates", dates)
        if not dates.is_monotonic_increasing or dates.has_duplicates:
            raise UserError("calendar dates must be strictly increasing with no duplicates")

    def __len__(self) -> int:
        return len(self.dates)

    @property
    def start(self) -> pd.Timestamp:
        return self.dates[0]

    @property
    def end(self) -> pd.Timestamp:
        return self.dates[-1]

    def index_of(self, date: str | pd.Timestamp) -> int:
        """Index of a date that must be a trading day."""
        ts = pd.Timestamp(date).normalize()
        i = int(self.dates.searchsorted(ts))
        if i >= len(self.dates) or self.dates[i] != ts:
            raise UserError(f"{ts.date()} is not a trading day of the calendar ({self.start.date()}..{self.end.date()})")
        return i

    def first_on_or_after(self, dates) -> np.ndarray:
        """Index of the first trading day on or after each date (len(self) when past the end)."""
        return self.dates.searchsorted(pd.DatetimeIndex(pd.to_datetime(dates)).normalize(), side="left")

    def last_on_or_before(self, dates) -> np.ndarray:
        """Index of the last trading day on or before each date (-1 when before the start)."""
        return self.dates.searchsorted(pd.DatetimeIndex(pd.to_datetime(dates)).normalize(), side="right") - 1

    def window(self, start: str | pd.Timestamp | None, end: str | pd.Timestamp | None) -> slice:
        """Slice of trading-day indices within [start, end] (either may be None = open).

        A request entirely outside the calendar is an error, not an empty slice.
        """
        lo = 0 if start is None else int(self.first_on_or_after([start])[0])
        hi = len(self) - 1 if end is None else int(self.last_on_or_before([end])[0])
        if lo > hi:
            raise UserError(
                f"no trading day between {start} and {end}; the calendar covers "
                f"{self.start.date()}..{self.end.date()}"
            )
        return slice(lo, hi + 1)

    def subset(self, sl: slice) -> "Calendar":
        return Calendar(self.dates[sl])
