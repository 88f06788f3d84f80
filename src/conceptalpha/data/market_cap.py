"""Total shares from share tables, and market capitalisation with a no-look-ahead size proxy.

Market cap m[t, i] = total shares[i] × raw close[t, i] (raw close = adjusted
close / factor). Share counts come from snapshot tables (one count per stock,
applied to every day: a known simplification, share counts do change).

Where a stock's share count is unknown, its size is proxied by its traded value:

    tv[t, i]    = mean over the last ``proxy_window`` trading days up to t of raw close × volume
                  (days without a bar skipped; volume taken as given, in shares)
    ratio[t]    = median over stocks with known shares of m[t, i] / tv[t, i]
    proxy[t, i] = ratio[t] × tv[t, i]        (= tv[t, i] when no stock has known shares)

The ratio puts the proxy on the scale of real caps on the same day, so real
and proxied caps can be mixed in one cap-weighted mean. Only data up to day t is used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from conceptalpha.data.panel import BarPanel
from conceptalpha.data.symbols import normalize_symbols
from conceptalpha.errors import DataError

_UNITS = {"": 1.0, "万": 1e4, "亿": 1e8}
_EQUITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(万|亿)?\s*(?:股)?\s*$")
_UNKNOWN = {"-", "--", ""}


@dataclass
class MarketCap:
    """``values`` float32 [D, N] (NaN where unknown); ``proxy_used`` bool [D, N] marks proxied stock-days with a bar."""

    values: np.ndarray
    proxy_used: np.ndarray
    proxy_stock_days: int
    proxy_share: float  # proxied stock-days / stock-days with a bar


def parse_equity(text: object) -> float:
    """``16.31亿`` → 1.631e9, ``6120.00万`` → 6.12e7, ``1234`` → 1234.0; ``-``/empty → NaN; else ValueError."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return np.nan
    s = str(text).strip()
    if s in _UNKNOWN:
        return np.nan
    m = _EQUITY.match(s)
    if m is None:
        raise ValueError(s)
    return float(m.group(1)) * _UNITS[m.group(2) or ""]


def read_shares(path: str | Path, market: str = "cn") -> pd.Series:
    """Total shares by canonical symbol of ``market`` from a share table (CSV or Parquet), kind auto-detected by its columns.

    - Tushare industry tables: ``ts_code``, ``total_shares_10k`` (units of 10,000 shares).
    - Company profile tables: ``symbol`` (6 digits), optional ``market`` (SH/SZ),
      ``equity`` as text (``16.31亿``, ``6120.00万``; ``-`` = unknown).
    - Generic: ``instrument``, ``shares``.

    Unknown counts are dropped; a symbol listed twice keeps its first known count.
    """
    path = Path(path)
    table = _read_table(path)
    columns = set(table.columns)
    if {"ts_code", "total_shares_10k"} <= columns:
        symbols, shares = table["ts_code"], _numbers(path, table["total_shares_10k"], "total_shares_10k") * 1e4
    elif {"symbol", "equity"} <= columns:
        symbols = table["symbol"].str.strip().str.zfill(6)
        if "market" in columns:
            exchange = table["market"].fillna("").str.strip().str.upper()
            symbols = symbols.where(~exchange.isin(["SH", "SZ", "BJ"]), exchange + symbols)
        shares = _equities(path, table["equity"])
    elif {"instrument", "shares"} <= columns:
        symbols, shares = table["instrument"], _numbers(path, table["shares"], "shares")
    else:
        raise DataError(
            path,
            f"unknown share table (columns {sorted(columns)}); expected ts_code+total_shares_10k, "
            "symbol+equity, or instrument+shares",
        )
    canon, ok = normalize_symbols(symbols.to_numpy(), market)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataError(path, f"row {i + 2}: unrecognised symbol {symbols.iloc[i]!r}")
    out = pd.Series(shares.to_numpy(dtype=float), index=pd.Index(canon.astype(str), name="instrument"), name="shares")
    out = out[out.notna()]
    return out[~out.index.duplicated(keep="first")]


def merge_shares(sources: Sequence[pd.Series]) -> pd.Series | None:
    """One share count per symbol; the first source that knows a symbol wins (later ones only fill gaps)."""
    merged: pd.Series | None = None
    for series in sources:
        merged = series if merged is None else merged.combine_first(series[~series.index.isin(merged.index)])
    return merged


def market_cap(panel: BarPanel, shares: pd.Series | None, proxy_window: int = 20) -> MarketCap:
    """Market cap [D, N] = shares × raw close, with the traded-value proxy where shares are unknown (module doc)."""
    raw_close = panel.raw_close().astype(np.float64)
    share_counts = np.full(panel.shape[1], np.nan) if shares is None else shares.reindex(panel.instruments).to_numpy(float)
    real = raw_close * share_counts[None, :]
    has_bar = np.isfinite(raw_close)
    needs_proxy = has_bar & ~np.isfinite(share_counts)[None, :]
    values = real
    if needs_proxy.any():
        traded = _trailing_mean(raw_close * panel.field("volume"), proxy_window)
        values = np.where(needs_proxy, _scale_to_caps(traded, real) * traded, real)
    stock_days = int(has_bar.sum())
    proxy_days = int(needs_proxy.sum())
    return MarketCap(
        values=values.astype(np.float32),
        proxy_used=needs_proxy,
        proxy_stock_days=proxy_days,
        proxy_share=proxy_days / stock_days if stock_days else 0.0,
    )


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """[D, N] mean of the finite values among the last ``window`` rows up to each row (NaN when none)."""
    return pd.DataFrame(values).rolling(window, min_periods=1).mean().to_numpy()


def _scale_to_caps(traded: np.ndarray, real: np.ndarray) -> np.ndarray:
    """[D, 1] day's median of real cap / traded value over stocks with both (1 when no such stock that day)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = real / traded
    ratio[~np.isfinite(ratio) | (ratio <= 0)] = np.nan
    has_any = np.isfinite(ratio).any(axis=1)
    out = np.ones(ratio.shape[0])
    out[has_any] = np.nanmedian(ratio[has_any], axis=1)
    return out[:, None]


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(path, "share table not found")
    try:
        if path.suffix.lower() == ".parquet":
            table = pd.read_parquet(path).astype("string").fillna("")
        else:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as err:
        raise DataError(path, f"cannot read as a table: {err}") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    return table


def _numbers(path: Path, column: pd.Series, name: str) -> pd.Series:
    text = column.str.strip()
    values = pd.to_numeric(text.where(~text.isin(_UNKNOWN)), errors="coerce")
    bad = values.isna() & ~text.isin(_UNKNOWN) | (values <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(path, f"row {i + 2}: {name} {column.iloc[i]!r} is not a positive number")
    return values


def _equities(path: Path, column: pd.Series) -> pd.Series:
    uniques = column.unique()
    parsed = {}
    for text in uniques:
        try:
            parsed[text] = parse_equity(text)
        except ValueError:
            i = int(np.flatnonzero((column == text).to_numpy())[0])
            raise DataError(path, f"row {i + 2}: equity {text!r} is not like '16.31亿', '6120.00万' or '-'") from None
    return column.map(parsed)
