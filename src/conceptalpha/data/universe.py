"""Point-in-time universes: membership intervals → a per-day boolean mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from conceptalpha.data.calendar import Calendar
from conceptalpha.errors import UserError


@dataclass
class Universe:
    """``mask[t, i]`` is True when ``instruments[i]`` is a member on trading day ``t``."""

    name: str
    calendar: Calendar
    instruments: np.ndarray
    mask: np.ndarray  # bool [D, N]

    def __post_init__(self) -> None:
        self.instruments = np.asarray(self.instruments, dtype=object)
        if self.mask.shape != (len(self.calendar), len(self.instruments)):
            raise ValueError(f"universe mask has shape {self.mask.shape}")

    @classmethod
    def from_intervals(cls, name: str, calendar: Calendar, intervals: pd.DataFrame) -> "Universe":
        """Build from a table (instrument, start, end), end inclusive.

        Interval dates need not be trading days: a start maps to the first
        trading day on or after it, an end to the last trading day on or before it.
        A stock may have several intervals.
        """
        missing = {"instrument", "start", "end"} - set(intervals.columns)
        if missing:
            raise UserError(f"universe {name!r}: interval table lacks columns {sorted(missing)}")
        instruments, codes = np.unique(intervals["instrument"].astype(str).to_numpy(), return_inverse=True)
        lo = calendar.first_on_or_after(intervals["start"])
        hi = calendar.last_on_or_before(intervals["end"])
        # Difference array: +1 at each interval's first day, -1 after its last day.
        diff = np.zeros((len(calendar) + 1, len(instruments)), dtype=np.int32)
        keep = lo <= hi
        np.add.at(diff, (lo[keep], codes[keep]), 1)
        np.add.at(diff, (hi[keep] + 1, codes[keep]), -1)
        mask = np.cumsum(diff[:-1], axis=0) > 0
        return cls(name=name, calendar=calendar, instruments=instruments.astype(object), mask=mask)

    @classmethod
    def everything(cls, name: str, calendar: Calendar, instruments: np.ndarray) -> "Universe":
        return cls(name, calendar, instruments, np.ones((len(calendar), len(instruments)), dtype=bool))

    def reindex(self, instruments: np.ndarray) -> "Universe":
        """The same membership on another instrument list (absent instruments are never members)."""
        pos = {s: i for i, s in enumerate(self.instruments)}
        idx = np.array([pos.get(s, -1) for s in instruments], dtype=np.int64)
        mask = np.zeros((len(self.calendar), len(instruments)), dtype=bool)
        present = idx >= 0
        mask[:, present] = self.mask[:, idx[present]]
        return Universe(self.name, self.calendar, np.asarray(instruments, dtype=object), mask)

    def subset(self, days: slice) -> "Universe":
        return Universe(self.name, self.calendar.subset(days), self.instruments, self.mask[days])

    def members_on(self, t: int) -> np.ndarray:
        return self.instruments[self.mask[t]]

    def members_per_day(self) -> np.ndarray:
        return self.mask.sum(axis=1)
