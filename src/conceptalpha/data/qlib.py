"""Qlib's local binary layout, read and written without importing Qlib.

Layout of a provider directory::

    calendars/day.txt                 one trading date per line (YYYY-MM-DD), increasing
    instruments/<name>.txt            SYMBOL<TAB>start<TAB>end per membership interval
    features/<symbol>/<field>.day.bin little-endian float32: element 0 is the calendar
                                      index of the first value, then one value per
                                      consecutive trading day

Feature folders may be spelt in lower case (``sh600000``, ``aapl``: Qlib's own
dumps) or upper case (``SH600000``, ``AAPL``); they are matched to instruments
case-insensitively through the market's canonical spelling
(:mod:`conceptalpha.data.symbols`).
NaN inside a ``.bin`` file is a missing bar (Qlib's own convention), not an error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.data.symbols import normalize_symbols, resolve_market
from conceptalpha.data.universe import Universe
from conceptalpha.errors import DataError, UserError

BIN_SUFFIX = ".day.bin"
QLIB_SUBDIRS = ("calendars", "instruments", "features")
POSITIVE_FIELDS = ("open", "high", "low", "close", "vwap", "factor", "up_limit", "down_limit")
MARKET_DEFAULT = "market default"
DEFAULT_BENCHMARK = {"cn": "SH000300", "generic": None}
NON_NEGATIVE_FIELDS = ("volume",)


# ---------------------------------------------------------------- writing


def write_qlib(
    panel: BarPanel,
    universe: Universe,
    out_dir: str | Path,
    universe_name: str = "all",
    benchmark: pd.Series | None = None,
    benchmark_symbol: str = "SH000300",
) -> None:
    """Write ``panel`` (and its universe and benchmark) as a Qlib provider directory.

    - ``calendars/day.txt``: the panel's calendar.
    - ``instruments/<universe_name>.txt``: the membership intervals of ``universe``
      (runs of True in its mask, one line per run).
    - ``instruments/all.txt``: every instrument with data, first to last day with
      a value, plus the benchmark (as in Qlib's dumps, the benchmark is in
      ``all.txt`` only); when ``universe_name == "all"`` the universe intervals
      plus the benchmark instead.
    - ``features/<lower-case symbol>/<field>.day.bin`` for every panel field, with
      leading and trailing NaN trimmed (a field that is all NaN gets no file).
    - The benchmark close (a series indexed by date) as instrument ``benchmark_symbol``.

    Atomic: everything is written into a temporary folder first; the Qlib
    sub-folders then replace those of ``out_dir`` (other files in ``out_dir`` are kept).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_tree(tmp, panel, universe, universe_name, benchmark, benchmark_symbol)
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_tree(
    root: Path,
    panel: BarPanel,
    universe: Universe,
    universe_name: str,
    benchmark: pd.Series | None,
    benchmark_symbol: str,
) -> None:
    # Files go straight into the private temporary tree; atomicity comes from the final rename.
    dates = panel.calendar.dates
    (root / "calendars").mkdir()
    (root / "calendars" / "day.txt").write_text("".join(f"{d:%Y-%m-%d}\n" for d in dates), encoding="utf-8")

    fields = dict(panel.fields)
    instruments = list(panel.instruments)
    bench_rows: list[tuple[str, int, int]] = []
    if benchmark is not None:
        bench = benchmark.reindex(dates).to_numpy(dtype=np.float32)[:, None]
        _write_bins(root / "features", [benchmark_symbol], {"close": bench})
        bench_rows = _intervals(_span_mask(bench), [benchmark_symbol])
    _write_bins(root / "features", instruments, fields)

    (root / "instruments").mkdir()
    member_rows = _intervals(universe.mask, list(universe.instruments))
    if universe_name == "all":
        _write_instruments(root / "instruments" / "all.txt", member_rows + bench_rows, dates)
    else:
        _write_instruments(root / "instruments" / f"{universe_name}.txt", member_rows, dates)
        has_value = np.zeros(panel.shape, dtype=bool)
        for arr in fields.values():
            has_value |= np.isfinite(arr)
        data_rows = _intervals(_span_mask(np.where(has_value, 1.0, np.nan)), instruments)
        _write_instruments(root / "instruments" / "all.txt", data_rows + bench_rows, dates)


def _span_mask(values: np.ndarray) -> np.ndarray:
    """[D, N] bool: True from each column's first finite value to its last (one interval per column)."""
    finite = np.isfinite(values)
    seen_before = np.cumsum(finite, axis=0) > 0
    seen_after = np.cumsum(finite[::-1], axis=0)[::-1] > 0
    return seen_before & seen_after


def _intervals(mask: np.ndarray, instruments: list[str]) -> list[tuple[str, int, int]]:
    """Runs of True in each column of ``mask`` [D, N] as (symbol, first day, last day), by symbol then time."""
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1]), dtype=np.int8)
    padded[1:-1] = mask
    step = np.diff(padded, axis=0).T  # [N, D+1]
    col_s, starts = np.nonzero(step == 1)
    col_e, ends = np.nonzero(step == -1)
    return [(instruments[c], int(s), int(e) - 1) for c, s, e in zip(col_s, starts, ends)]


def _write_instruments(path: Path, rows: list[tuple[str, int, int]], dates: pd.DatetimeIndex) -> None:
    rows = sorted(rows)
    path.write_text("".join(f"{s}\t{dates[a]:%Y-%m-%d}\t{dates[b]:%Y-%m-%d}\n" for s, a, b in rows), encoding="utf-8")


def _write_bins(features: Path, instruments: list[str], fields: dict[str, np.ndarray]) -> None:
    """One ``.bin`` per (instrument, field) holding the span from its first to its last finite value."""
    for name, arr in fields.items():
        finite = np.isfinite(arr)
        any_value = finite.any(axis=0)
        first = np.argmax(finite, axis=0)
        last = arr.shape[0] - 1 - np.argmax(finite[::-1], axis=0)
        for i in np.flatnonzero(any_value):
            folder = features / instruments[i].lower()
            folder.mkdir(parents=True, exist_ok=True)
            values = arr[first[i] : last[i] + 1, i]
            payload = np.concatenate([np.array([first[i]], dtype="<f4"), values.astype("<f4")])
            payload.tofile(folder / f"{name}{BIN_SUFFIX}")


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Move the freshly written Qlib folders into ``out_dir``, replacing older ones."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        tmp.mkdir()  # the caller removes it
        return
    if not out_dir.is_dir():
        raise UserError(f"{out_dir} exists and is not a directory")
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    try:
        for sub in QLIB_SUBDIRS:
            if (out_dir / sub).exists():
                os.replace(out_dir / sub, trash / sub)
            os.replace(tmp / sub, out_dir / sub)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------- reading


def read_calendar(path: str | Path) -> Calendar:
    """``calendars/day.txt``: one date per line, strictly increasing (errors name the line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "calendar file not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DataError(path, "calendar is empty")
    dates = pd.to_datetime(pd.Series(lines), errors="coerce", format="mixed")
    bad = np.flatnonzero(dates.isna().to_numpy())
    if bad.size:
        raise DataError(path, f"line {bad[0] + 1}: {lines[bad[0]]!r} is not a date")
    values = dates.dt.normalize().to_numpy()
    steps = np.diff(values)
    if (steps == np.timedelta64(0)).any():
        i = int(np.flatnonzero(steps == np.timedelta64(0))[0]) + 1
        raise DataError(path, f"line {i + 1}: duplicate date {lines[i]}")
    if (steps < np.timedelta64(0)).any():
        i = int(np.flatnonzero(steps < np.timedelta64(0))[0]) + 1
        raise DataError(path, f"line {i + 1}: date {lines[i]} comes after {lines[i - 1]} (dates must be increasing)")
    return Calendar(pd.DatetimeIndex(values))


def read_instruments(path: str | Path, market: str = "cn") -> pd.DataFrame:
    """An instruments file → table (instrument, start, end) with canonical symbols of ``market``.

    Each non-blank line is ``SYMBOL start end`` separated by tabs (or spaces);
    anything else is an error naming the line. ``market`` may be ``auto``
    (:func:`~conceptalpha.data.symbols.resolve_market`); the market used is in
    ``table.attrs["market"]``.
    """
    path = Path(path)
    if not path.is_file():
        others = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        raise DataError(path, "instruments file not found" + (f" (universes there: {', '.join(others)})" if others else ""))
    rows, numbers = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise DataError(path, f"line {number}: expected 'SYMBOL<TAB>start<TAB>end', got {line.strip()!r}")
        rows.append(parts)
        numbers.append(number)
    if not rows:
        raise DataError(path, "instruments file is empty")
    table = pd.DataFrame(rows, columns=["instrument", "start", "end"])
    market = resolve_market(market, table["instrument"], str(path), numbers)
    canon, ok = normalize_symbols(table["instrument"], market)
    starts = pd.to_datetime(table["start"], errors="coerce", format="mixed")
    ends = pd.to_datetime(table["end"], errors="coerce", format="mixed")
    bad = ~ok | starts.isna().to_numpy() | ends.isna().to_numpy() | (starts > ends).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            path,
            f"line {numbers[i]}: {' '.join(rows[i])!r} is not 'SYMBOL start end' with a known symbol and start <= end",
        )
    out = pd.DataFrame({"instrument": canon.astype(str), "start": starts, "end": ends})
    out.attrs["market"] = market
    return out


def feature_folders(features: str | Path, market: str = "cn") -> dict[str, Path]:
    """Canonical symbol → its feature folder, for every folder whose name is a symbol of ``market``.

    Generic market: two folders whose names differ only in case (``aapl/`` and
    ``AAPL/``) are an error: either could be the instrument's.
    """
    features = Path(features)
    if not features.is_dir():
        raise DataError(features, "features folder not found")
    entries = sorted((e for e in os.scandir(features) if e.is_dir()), key=lambda e: e.name)
    canon, ok = normalize_symbols([e.name for e in entries], market)
    folders: dict[str, Path] = {}
    for entry, symbol, good in zip(entries, canon, ok):
        if good and market == "generic" and symbol in folders:
            raise DataError(features, f"folders {folders[symbol].name!r} and {entry.name!r} differ only in case; keep one")
        if good:
            folders.setdefault(symbol, Path(entry.path))
    return folders


def read_bin(path: Path, n_days: int) -> tuple[int, np.ndarray]:
    """One ``.bin`` file → (calendar index of its first value, float32 values)."""
    raw = path.read_bytes()
    if len(raw) % 4:
        raise DataError(path, f"truncated: {len(raw)} bytes is not a whole number of float32 values")
    if len(raw) < 8:
        raise DataError(path, "empty: no values after the start-index header")
    data = np.frombuffer(raw, dtype="<f4")
    start = float(data[0])
    values = data[1:]
    if not (np.isfinite(start) and start == int(start) and 0 <= start < n_days):
        raise DataError(path, f"header {start!r} is not a calendar index in 0..{n_days - 1}")
    if int(start) + values.size > n_days:
        raise DataError(
            path, f"{values.size} values from calendar index {int(start)} run past the calendar's {n_days} days"
        )
    return int(start), values


def load_qlib(
    provider: str | Path,
    universe: str = "csi300",
    start=None,
    end=None,
    fields: Sequence[str] | None = None,
    benchmark: str | None = MARKET_DEFAULT,
    vwap_proxy: bool = False,
    market: str = "auto",
) -> Market:
    """Read a Qlib provider directory into a :class:`Market`.

    - ``universe``: name of ``instruments/<universe>.txt`` (``csi300``, ``all``, ...).
    - Panel instruments: the universe's members that have a feature folder;
      ``Market.universe_members``: every member with a membership day in the window.
    - ``fields``: default every field found in the members' folders, plus ``vwap``.
      A field an instrument lacks is NaN for it. ``vwap`` absent from the data is
      all NaN, unless ``vwap_proxy`` is set: then vwap := (high + low + close) / 3
      (the "typical price", a proxy, not a traded average price). A real vwap
      field always wins over the proxy.
    - ``benchmark``: symbol whose ``close`` becomes ``Market.benchmark`` (and whose
      ``volume``, if present, ``Market.benchmark_volume``); it is never a panel
      instrument. The market's default (``SH000300`` for cn, none for generic)
      may be absent from the data; a benchmark named here must exist.
    - ``market``: ``cn``, ``generic`` or ``auto`` (from the instruments file's
      symbols); the result is ``Market.kind``.
    """
    root = Path(provider)
    full_calendar = read_calendar(root / "calendars" / "day.txt")
    intervals = read_instruments(root / "instruments" / f"{universe}.txt", market)
    kind = intervals.attrs["market"]
    window = full_calendar.window(start, end)
    calendar = full_calendar.subset(window)
    members_full = Universe.from_intervals(universe, full_calendar, intervals).subset(window)
    folders = feature_folders(root / "features", kind)
    bench_symbol = benchmark_symbol(benchmark, kind)
    in_window = members_full.mask.any(axis=0) & (members_full.instruments != bench_symbol)
    members = members_full.instruments[in_window]
    with_bars = np.array([s for s in members if s in folders], dtype=object)
    if members.size and not with_bars.size:
        raise DataError(
            root / "features",
            f"no feature folder for any of the {members.size} instruments of {universe}.txt in the window "
            f"(e.g. {members[0]!r}; folders are matched case-insensitively)",
        )
    member_folders = [folders[s] for s in with_bars]
    present = _fields_present(member_folders)
    names = _field_names(fields, present, root / "features")
    arrays = {
        name: np.ascontiguousarray(_read_field(name, member_folders, len(full_calendar))[window])
        for name in names
        if name in present
    }
    if "vwap" in names and "vwap" not in present:
        arrays["vwap"] = (
            _typical_price_of(arrays, member_folders, len(full_calendar), window)
            if vwap_proxy
            else np.full((len(calendar), len(with_bars)), np.nan, dtype=np.float32)
        )
    panel = BarPanel(calendar, with_bars, {name: arrays[name] for name in names})

    bench, bench_volume = None, None
    if bench_symbol is not None and bench_symbol in folders:
        close = _read_field("close", [folders[bench_symbol]], len(full_calendar))[window, 0]
        bench = pd.Series(close, index=calendar.dates, name=bench_symbol)
        if "volume" in _fields_present([folders[bench_symbol]]):
            volume = _read_field("volume", [folders[bench_symbol]], len(full_calendar))[window, 0]
            bench_volume = pd.Series(volume, index=calendar.dates, name=bench_symbol)
    elif bench_symbol is not None and benchmark != MARKET_DEFAULT:
        raise DataError(root / "features", f"benchmark {benchmark!r}: no feature folder {bench_symbol.lower()}/ (or any case of it)")
    return Market(
        panel=panel,
        universe=members_full.reindex(with_bars),
        universe_members=members,
        benchmark=bench,
        name=universe,
        benchmark_volume=bench_volume,
        kind=kind,
        kind_inferred=market == "auto",
    )


def benchmark_symbol(benchmark: str | None, market: str) -> str | None:
    """Canonical symbol of a benchmark setting: the market's default, none, or a symbol of ``market``."""
    if benchmark == MARKET_DEFAULT:
        return DEFAULT_BENCHMARK[market]
    if benchmark is None:
        return None
    canon, ok = normalize_symbols([benchmark], market)
    if not ok[0]:
        raise UserError(f"benchmark {benchmark!r} is not a symbol of the {market} market")
    return canon[0]


def load_qlib_membership(provider: str | Path, universe: str, calendar: Calendar, market: str = "auto") -> Universe:
    """Membership of ``instruments/<universe>.txt`` on ``calendar``, over all members (with or without bars)."""
    intervals = read_instruments(Path(provider) / "instruments" / f"{universe}.txt", market)
    return Universe.from_intervals(universe, calendar, intervals)


def _fields_present(folders: list[Path]) -> set[str]:
    return {f.name[: -len(BIN_SUFFIX)] for folder in folders for f in os.scandir(folder) if f.name.endswith(BIN_SUFFIX)}


def _field_names(fields: Sequence[str] | None, present: set[str], features: Path) -> list[str]:
    if fields is None:
        return sorted(present | {"vwap"})
    unknown = [f for f in fields if f not in present and f != "vwap"]
    if unknown:
        raise UserError(f"{features}: no instrument has field(s) {unknown} (found: {sorted(present)})")
    return list(dict.fromkeys(fields))


def _read_field(name: str, folders: list[Path], n_days: int) -> np.ndarray:
    """[n_days, N] float32 for one field; NaN where an instrument has no value (or no file)."""
    out = np.full((len(folders), n_days), np.nan, dtype=np.float32)  # row-major per instrument: contiguous writes
    paths = [folder / f"{name}{BIN_SUFFIX}" for folder in folders]
    for i, path in enumerate(paths):
        if path.is_file():
            first, values = read_bin(path, n_days)
            out[i, first : first + values.size] = values
    _check_values(name, out, paths)
    return out.T


def _check_values(name: str, values: np.ndarray, paths: list[Path]) -> None:
    """Reject inf anywhere, non-positive prices/factors and negative volumes (NaN = missing is fine)."""
    problems = [(np.isinf(values), "infinite value")]
    if name in POSITIVE_FIELDS:
        problems.append((values <= 0, "price/factor <= 0"))
    if name in NON_NEGATIVE_FIELDS:
        problems.append((values < 0, "negative volume"))
    for bad, what in problems:
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size:
            i = int(rows[0])
            t = int(np.flatnonzero(bad[i])[0])
            raise DataError(paths[i], f"{what} {values[i, t]} at calendar index {t}")


def typical_price(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """(high + low + close) / 3, float32: the documented stand-in for a missing vwap (a proxy, not a traded average)."""
    return ((high + low + close) / np.float32(3)).astype(np.float32)


def _typical_price_of(arrays: dict[str, np.ndarray], folders: list[Path], n_days: int, window: slice) -> np.ndarray:
    parts = [arrays[k] if k in arrays else _read_field(k, folders, n_days)[window] for k in ("high", "low", "close")]
    return typical_price(*parts)
