"""A long bar table (CSV or Parquet), as exported from Tushare, AKShare or Wind, → :class:`Market`.

One row per (date, instrument): ``date, instrument, open, high, low, close,
volume`` and optionally ``vwap``, ``factor``, ``change``, ``st`` (0/1) and
``up_limit``/``down_limit`` (the day's raw limit prices). Column names are matched
case-insensitively; ``datetime``/``trade_date`` are accepted for ``date`` and
``symbol``/``ts_code``/``code`` for ``instrument``. Dates may be ``2020-01-02``
or ``20200102``. The calendar is the set of dates in the table.

Every row is a bar, so it must be complete: prices finite and > 0, volume
finite and >= 0, factor (when given) finite and > 0; vwap, change, st and the
limit prices may be empty. Errors
name the file and the line (CSV: line 1 is the header).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.panel import PRICE_FIELDS, BarPanel, Market
from conceptalpha.data.qlib import MARKET_DEFAULT, benchmark_symbol, read_instruments, typical_price
from conceptalpha.data.symbols import normalize_symbols, resolve_market
from conceptalpha.data.universe import Universe
from conceptalpha.errors import DataError

TABLE_SUFFIXES = (".csv", ".parquet")
REQUIRED = ("date", "instrument", *PRICE_FIELDS, "volume")
OPTIONAL = ("vwap", "factor", "change", "st", "up_limit", "down_limit")
MISSING_TEXT = ("", "nan", "na", "null", "none")
ALIASES = {"datetime": "date", "trade_date": "date", "symbol": "instrument", "ts_code": "instrument", "code": "instrument"}


def load_table(
    path: str | Path,
    universe_intervals: str | Path | None = None,
    start=None,
    end=None,
    benchmark: str | None = None,
    vwap_proxy: bool = False,
    market: str = "auto",
) -> Market:
    """Read a long bar table into a :class:`Market`.

    - ``universe_intervals``: membership intervals, either a Qlib instruments
      file (``.txt``: ``SYMBOL<TAB>start<TAB>end``) or a CSV with columns
      ``instrument,start,end``. Without it, the universe is every instrument on
      every day it has a bar. With it, the panel holds the members that have bars.
    - ``benchmark``: a symbol whose rows become ``Market.benchmark`` (close) instead of panel columns
      (the loader's market default means none: a table has a benchmark only when one is named).
    - ``vwap``: missing column → NaN, or (high + low + close) / 3 with ``vwap_proxy`` (a proxy, not a traded average).
    - ``market``: ``cn``, ``generic`` or ``auto`` (from the table's instruments, the benchmark's rows excluded).
    """
    path = Path(path)
    table, kind = _validated(path, _read(path), benchmark, market)
    bench_symbol = None if benchmark == MARKET_DEFAULT else benchmark_symbol(benchmark, kind)  # a table names its own
    is_bench = (table["instrument"] == bench_symbol).to_numpy()
    full_calendar = Calendar(pd.DatetimeIndex(np.unique(table["date"].to_numpy())))
    window = full_calendar.window(start, end)
    calendar = full_calendar.subset(window)
    bars = table[~is_bench & table["date"].between(calendar.start, calendar.end).to_numpy()]

    if universe_intervals is None:
        instruments = np.unique(bars["instrument"].to_numpy().astype(str)).astype(object)
        members = instruments
    else:
        membership = _membership(Path(universe_intervals), calendar, kind)
        members = membership.instruments[membership.mask.any(axis=0)]
        instruments = np.intersect1d(members.astype(str), bars["instrument"].to_numpy().astype(str)).astype(object)
        bars = bars[bars["instrument"].isin(instruments).to_numpy()]

    fields = _pivot(bars, calendar, instruments)
    if "vwap" not in fields:
        fields["vwap"] = (
            typical_price(fields["high"], fields["low"], fields["close"])
            if vwap_proxy
            else np.full((len(calendar), len(instruments)), np.nan, dtype=np.float32)
        )
    panel = BarPanel(calendar, instruments, fields)
    universe = (
        Universe(path.stem, calendar, instruments, np.isfinite(fields["close"]))
        if universe_intervals is None
        else membership.reindex(instruments)
    )
    bench = None
    if is_bench.any():
        rows = table[is_bench]
        bench = pd.Series(rows["close"].to_numpy(), index=pd.DatetimeIndex(rows["date"]), name=bench_symbol)
        bench = bench.reindex(calendar.dates).astype(np.float32)
    elif bench_symbol is not None:
        raise DataError(path, f"benchmark {benchmark!r}: no row has this instrument")
    return Market(
        panel=panel, universe=universe, universe_members=members, benchmark=bench, name=universe.name,
        kind=kind, kind_inferred=market == "auto",
    )


def _market_of(path: Path, table: pd.DataFrame, benchmark: str | None, market: str) -> str:
    """The table's market: ``market``, or for ``auto`` the one its instruments (benchmark rows aside) belong to."""
    symbols = table["instrument"].astype(str).str.strip()
    is_bench = symbols.str.upper() == str(benchmark).strip().upper()
    lines = np.arange(len(table)) + table.attrs["first_line"]
    return resolve_market(market, symbols[~is_bench].to_numpy(), str(path), lines[~is_bench.to_numpy()])


def read_intervals(path: Path, market: str = "cn") -> pd.DataFrame:
    """Membership intervals of ``market`` from a Qlib instruments ``.txt`` or a CSV ``instrument,start,end``."""
    if path.suffix.lower() == ".txt":
        return read_instruments(path, market)
    table = _read(path)
    missing = {"instrument", "start", "end"} - set(table.columns)
    if missing:
        raise DataError(path, f"missing column(s) {sorted(missing)}; expected instrument,start,end")
    canon, ok = normalize_symbols(table["instrument"].to_numpy(), market)
    starts = pd.to_datetime(table["start"], errors="coerce", format="mixed")
    ends = pd.to_datetime(table["end"], errors="coerce", format="mixed")
    bad = ~ok | starts.isna().to_numpy() | ends.isna().to_numpy() | (starts > ends).to_numpy()
    _fail_first(path, bad, "not a known symbol with dates start <= end")
    return pd.DataFrame({"instrument": canon.astype(str), "start": starts, "end": ends})


def _membership(path: Path, calendar: Calendar, market: str) -> Universe:
    return Universe.from_intervals(path.stem, calendar, read_intervals(path, market))


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(path, "file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pd.read_parquet(path)
        elif suffix == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        else:
            raise DataError(path, "expected a .csv or .parquet file")
    except (ValueError, OSError) as err:
        raise DataError(path, f"cannot read as a table: {err}") from None
    table.columns = [ALIASES.get(c, c) for c in (str(c).strip().lower() for c in table.columns)]
    if table.columns.duplicated().any():
        raise DataError(path, f"repeated column names {list(table.columns[table.columns.duplicated()])}")
    table.attrs["first_line"] = 2 if suffix == ".csv" else 0
    return table


def _validated(path: Path, table: pd.DataFrame, benchmark: str | None, market: str) -> tuple[pd.DataFrame, str]:
    """Typed copy (date, canonical instrument, float fields) after checking every row, and its market."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; expected {', '.join(REQUIRED)}[, vwap, factor]")
    if table.empty:
        raise DataError(path, "no rows")
    first_line = table.attrs["first_line"]
    text_date = table["date"].astype(str).str.strip()
    _fail_first(path, (text_date.str.lower() == "date").to_numpy(), "repeats the header row", first_line)
    dates = pd.to_datetime(text_date, errors="coerce", format="mixed")
    _fail_first(path, dates.isna().to_numpy(), "date is not a date", first_line)
    market = _market_of(path, table, benchmark, market)
    canon, ok = normalize_symbols(table["instrument"].to_numpy(), market)
    _fail_first(path, ~ok, f"instrument is not a recognisable {market} symbol", first_line)

    out = pd.DataFrame({"date": dates.dt.normalize(), "instrument": canon.astype(str)})
    for name in [*REQUIRED[2:], *(c for c in OPTIONAL if c in table.columns)]:
        out[name] = _number_column(path, table[name], name, first_line)
    _fail_first(path, out.duplicated(["date", "instrument"]).to_numpy(), "repeats an earlier (date, instrument)", first_line)
    return out, market


def _number_column(path: Path, column: pd.Series, name: str, first_line: int) -> np.ndarray:
    text = column.astype(str).str.strip()
    empty = text.str.lower().isin(MISSING_TEXT) | column.isna().to_numpy()
    values = pd.to_numeric(text.where(~empty), errors="coerce").to_numpy(dtype=np.float64)
    _fail_first(path, np.isnan(values) & ~empty.to_numpy(), f"{name} is not a number", first_line)
    if name in ("vwap", "up_limit", "down_limit"):
        bad = np.isinf(values) | (values <= 0)
        what = f"{name} must be > 0 (or empty)"
    elif name == "change":
        bad = np.isinf(values)
        what = "change must be a finite number (or empty)"
    elif name == "st":
        bad = ~np.isnan(values) & (values != 0) & (values != 1)
        what = "st must be 0 or 1 (or empty)"
    elif name == "volume":
        bad = ~np.isfinite(values) | (values < 0)
        what = "volume must be a finite number >= 0"
    else:
        bad = ~np.isfinite(values) | (values <= 0)
        what = f"{name} must be a finite number > 0"
    _fail_first(path, bad, what, first_line)
    return values


def _fail_first(path: Path, bad: np.ndarray, what: str, first_line: int = 2) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = f"line {i + first_line}" if first_line else f"row {i}"
        raise DataError(path, f"{where}: {what}")


def _pivot(bars: pd.DataFrame, calendar: Calendar, instruments: np.ndarray) -> dict[str, np.ndarray]:
    """Long rows → {field: float32 [D, N]} with NaN where there is no row."""
    t = calendar.dates.get_indexer(pd.DatetimeIndex(bars["date"]))
    i = pd.Index(instruments.astype(str)).get_indexer(bars["instrument"].to_numpy().astype(str))
    fields = {}
    for name in bars.columns.drop(["date", "instrument"]):
        arr = np.full((len(calendar), len(instruments)), np.nan, dtype=np.float32)
        arr[t, i] = bars[name].to_numpy(dtype=np.float32)
        fields[name] = arr
    return fields
