"""Dense market containers: the daily bar panel and the market bundle.

Every array is indexed ``[t, i]``: trading day ``t`` of the calendar, instrument
``i`` of ``instruments``; float32 with NaN where there is no bar.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.universe import Universe
from conceptalpha.errors import UserError

PRICE_FIELDS = ("open", "high", "low", "close")


@dataclass
class BarPanel:
    """Daily bars: ``fields[name]`` is a float32 array [D, N].

    Prices (open/high/low/close/vwap) are adjusted; ``factor`` (when present) is
    the adjustment factor, so raw price = adjusted price / factor. ``volume`` is
    in shares; a suspended day has volume 0 (or no bar at all). Optional
    fields the backtest's market rules read: ``st`` (1 on days an A-share is
    under risk warning), ``up_limit``/``down_limit`` (the day's exact raw limit
    prices), ``change`` (daily change, fraction or percent).
    """

    calendar: Calendar
    instruments: np.ndarray  # [N] canonical symbols, str
    fields: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self.instruments = np.asarray(self.instruments, dtype=object)
        shape = (len(self.calendar), len(self.instruments))
        for name, arr in self.fields.items():
            if arr.shape != shape:
                raise ValueError(f"field {name!r} has shape {arr.shape}, expected {shape}")
        self._index = {sym: i for i, sym in enumerate(self.instruments)}

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.calendar), len(self.instruments)

    def field(self, name: str) -> np.ndarray:
        try:
            return self.fields[name]
        except KeyError:
            raise UserError(f"field {name!r} is not in the data (have: {', '.join(sorted(self.fields))})") from None

    def has(self, name: str) -> bool:
        return name in self.fields

    def instrument_positions(self, symbols) -> np.ndarray:
        """Column index of each symbol, -1 where the panel has no such instrument."""
        return np.array([self._index.get(s, -1) for s in symbols], dtype=np.int64)

    def raw_close(self) -> np.ndarray:
        """Unadjusted close: adjusted close / factor (the adjusted close when there is no factor)."""
        close = self.field("close")
        if "factor" not in self.fields:
            return close
        with np.errstate(divide="ignore", invalid="ignore"):
            return close / self.fields["factor"]

    def change_fraction(self) -> tuple[np.ndarray | None, str | None]:
        """The ``change`` field as a fraction [D, N] and the unit it was stored in (None, None without one).

        The unit is judged against the raw close's own change: a median ratio
        near 100 means percent (the shared A-share data's convention). Without
        comparable days, any |value| > 1.5 means percent.
        """
        if "change" not in self.fields:
            return None, None
        change = self.fields["change"].astype("float64")
        raw = pd.DataFrame(self.raw_close().astype("float64")).ffill().to_numpy()
        own = np.full_like(raw, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            own[1:] = raw[1:] / raw[:-1] - 1.0
            ratio = change / own
        comparable = np.isfinite(ratio) & (np.abs(own) > 0.002)
        if comparable.any():
            percent = 50.0 <= float(np.median(ratio[comparable])) <= 200.0
        else:
            percent = np.nanmax(np.abs(change), initial=0.0) > 1.5
        return (change / 100.0, "percent") if percent else (change, "fraction")

    def suspended(self) -> np.ndarray:
        """[D, N] bool: a bar exists but nothing traded (volume 0)."""
        volume = self.field("volume")
        return volume == 0

    def subset(self, days: slice | None = None, instruments: np.ndarray | None = None) -> "BarPanel":
        days = days if days is not None else slice(None)
        cols = slice(None) if instruments is None else self.instrument_positions(instruments)
        if not isinstance(cols, slice) and (cols < 0).any():
            raise UserError("subset asks for instruments that are not in the panel")
        return BarPanel(
            calendar=self.calendar.subset(days),
            instruments=self.instruments[cols],
            fields={k: np.ascontiguousarray(v[days][:, cols]) for k, v in self.fields.items()},
        )

    def to_frame(self) -> pd.DataFrame:
        """Long table indexed (datetime, instrument), one column per field (rows with no close dropped)."""
        index = pd.MultiIndex.from_product([self.calendar.dates, self.instruments], names=["datetime", "instrument"])
        frame = pd.DataFrame({k: v.reshape(-1) for k, v in self.fields.items()}, index=index)
        return frame[frame["close"].notna()] if "close" in frame else frame


@dataclass
class Market:
    """Everything downstream stages need about a market.

    ``universe`` is aligned to ``panel`` (same calendar and instruments);
    ``universe_members`` keeps the full member list, including members that have
    no bars (delisted names missing from the data source).
    ``shares`` (total shares by instrument, may be partial) feeds market caps;
    ``benchmark`` is the benchmark index close on the calendar, if known;
    ``benchmark_volume`` its traded volume, where the data has it.
    ``kind`` is the market whose symbols and trading rules apply: ``cn``
    (A-shares) or ``generic`` (any other); ``kind_inferred`` says it was
    inferred from the symbols (``data.market: auto``).
    """

    panel: BarPanel
    universe: Universe
    universe_members: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    shares: pd.Series | None = None
    benchmark: pd.Series | None = None
    name: str = "market"
    benchmark_volume: pd.Series | None = None
    kind: str = "cn"
    kind_inferred: bool = False

    @property
    def calendar(self) -> Calendar:
        return self.panel.calendar

    @property
    def members_without_bars(self) -> np.ndarray:
        return np.setdiff1d(self.universe_members.astype(str), self.panel.instruments.astype(str))
