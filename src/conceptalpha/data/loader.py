"""One entry point for market data: a Qlib provider directory or a long bar table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.market_cap import merge_shares, read_shares
from conceptalpha.data.panel import Market
from conceptalpha.data.qlib import load_qlib, load_qlib_membership
from conceptalpha.data.table import TABLE_SUFFIXES, load_table, read_intervals
from conceptalpha.data.universe import Universe
from conceptalpha.errors import UserError

EVERY_INSTRUMENT = "all"


def load_market(
    provider: str | Path,
    universe: str = "csi300",
    start=None,
    end=None,
    shares: Sequence[str | Path] = (),
    st_table: str | Path | None = None,
    **kw,
) -> Market:
    """Read market data and attach share counts.

    - ``provider`` a directory with ``calendars/`` → :func:`~conceptalpha.data.qlib.load_qlib`
      (``universe`` names ``instruments/<universe>.txt``);
    - ``provider`` a ``.csv``/``.parquet`` file → :func:`~conceptalpha.data.table.load_table`
      (``universe`` is ``all``, a path to an intervals file, or the stem of an
      intervals file ``<universe>.txt``/``.csv`` next to the table).
    - ``shares``: share tables, merged with :func:`~conceptalpha.data.market_cap.merge_shares`
      (the first table that knows a stock wins) into ``Market.shares``; symbols
      are read in the market's spelling, and a table that names no instrument
      of the data is an error.
    - ``st_table``: a dated table of A-share risk-warning (ST) spells
      (``instrument,start,end``), marked as 1 in the panel's ``st`` field.
    ``kw`` goes to the reader (``fields``, ``benchmark``, ``vwap_proxy``, ``market``).
    """
    path = Path(provider)
    if _is_qlib(path):
        market = load_qlib(path, universe, start, end, **kw)
    elif _is_table(path):
        market = load_table(path, table_universe_file(path, universe), start, end, **kw)
    else:
        raise UserError(
            f"{path}: not market data (expected a Qlib directory with calendars/day.txt, or a .csv/.parquet bar table)"
        )
    tables = [read_shares(p, market.kind) for p in shares]
    for path, table in zip(shares, tables):
        known = table.index.isin(market.universe_members) | table.index.isin(market.panel.instruments)
        if len(table) and not known.any():
            raise UserError(
                f"{path}: none of its {len(table)} symbols (e.g. {table.index[0]!r}) is an instrument of universe "
                f"{universe!r} (e.g. {market.panel.instruments[0]!r}); wrong file or wrong data.market?"
            )
    market.shares = merge_shares(tables)
    if st_table is not None:
        mark_st(market, Path(st_table))
    return market


def mark_st(market: Market, path: Path) -> None:
    """Set the panel's ``st`` field to 1 on the days of ``path``'s spells (kept where the data already marks ST)."""
    intervals = read_intervals(path, market.kind)
    panel = market.panel
    spells = Universe.from_intervals("st", market.calendar, intervals).reindex(panel.instruments).mask
    if len(intervals) and not intervals["instrument"].isin(panel.instruments).any():
        raise UserError(f"{path}: none of its symbols (e.g. {intervals['instrument'].iloc[0]!r}) has bars in the data")
    marked = np.nan_to_num(panel.fields["st"], nan=0.0) > 0.5 if panel.has("st") else False
    panel.fields["st"] = (spells | marked).astype(np.float32)


def load_membership(provider: str | Path, universe: str, calendar: Calendar, market: str = "auto") -> Universe | None:
    """Full point-in-time membership on ``calendar``, members without bars included (None: every instrument)."""
    path = Path(provider)
    if _is_qlib(path):
        return load_qlib_membership(path, universe, calendar, market)
    intervals_file = table_universe_file(path, universe)
    if intervals_file is None:
        return None
    return Universe.from_intervals(intervals_file.stem, calendar, read_intervals(intervals_file, market))


def table_universe_file(table: Path, universe: str) -> Path | None:
    """The intervals file a bar table's ``universe`` names (None for ``all``)."""
    if universe == EVERY_INSTRUMENT:
        return None
    candidates = [Path(universe), table.parent / f"{universe}.txt", table.parent / f"{universe}.csv"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"universe {universe!r}: no intervals file {universe!r}, {candidates[1]} or {candidates[2]} "
        f"(use universe '{EVERY_INSTRUMENT}' for every instrument of the table)"
    )


def _is_qlib(path: Path) -> bool:
    return path.is_dir() and (path / "calendars").is_dir()


def _is_table(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TABLE_SUFFIXES
