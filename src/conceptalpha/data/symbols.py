"""One spelling for every A-share symbol: ``SH600000``, ``SZ000001``, ``BJ430047``.

Accepted inputs: ``600000.SH`` / ``600000.sh``, ``SH600000`` / ``sh600000``,
``600000`` (exchange inferred from the first digit: 6, 9 → SH; 0, 2, 3 → SZ;
4, 8 → BJ), and integers that lost their leading zeros (``1`` → ``000001``)
only when given as numbers. Anything else is an error, never a guess.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from conceptalpha.errors import UserError

_EXCHANGES = ("SH", "SZ", "BJ")
_BY_FIRST_DIGIT = {"6": "SH", "9": "SH", "0": "SZ", "2": "SZ", "3": "SZ", "4": "BJ", "8": "BJ"}
_PREFIXED = re.compile(r"^(SH|SZ|BJ)(\d{6})$")
_SUFFIXED = re.compile(r"^(\d{6})\.(SH|SZ|BJ|SS)$")
_BARE = re.compile(r"^\d{6}$")


def exchange_of(code: str) -> str:
    """Exchange of a 6-digit code from its first digit."""
    try:
        return _BY_FIRST_DIGIT[code[0]]
    except (KeyError, IndexError):
        raise UserError(f"cannot infer the exchange of code {code!r} (first digit must be one of 0,2,3,4,6,8,9)") from None


def _normalize_one(symbol: str) -> str | None:
    s = symbol.strip().upper()
    if m := _PREFIXED.match(s):
        return m.group(1) + m.group(2)
    if m := _SUFFIXED.match(s):
        exchange = "SH" if m.group(2) == "SS" else m.group(2)
        return exchange + m.group(1)
    if _BARE.match(s) and s[0] in _BY_FIRST_DIGIT:
        return _BY_FIRST_DIGIT[s[0]] + s
    return None


def normalize_symbol(symbol: object) -> str:
    """Canonical form of one symbol; :class:`UserError` when it is not a recognisable A-share symbol."""
    text = _as_text(symbol)
    canon = _normalize_one(text) if text is not None else None
    if canon is None:
        raise UserError(
            f"unrecognised symbol {symbol!r}: expected forms like 600000.SH, SH600000, sh600000 or 600000"
        )
    return canon


def normalize_symbols(symbols) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised over unique values: returns (canonical symbols, ok mask).

    Where ``ok`` is False the canonical entry is None; callers count and list
    those instead of dropping them silently.
    """
    codes, uniques = pd.factorize(pd.Series(symbols, dtype=object), use_na_sentinel=False)
    canon_unique = np.array(
        [(_normalize_one(t) if (t := _as_text(u)) is not None else None) for u in uniques], dtype=object
    )
    ok_unique = np.array([c is not None for c in canon_unique], dtype=bool)
    return canon_unique[codes], ok_unique[codes]


def _as_text(symbol: object) -> str | None:
    if isinstance(symbol, (bool, np.bool_)):
        return None
    if isinstance(symbol, (int, np.integer)):
        return f"{int(symbol):06d}" if 0 <= int(symbol) < 1_000_000 else None
    if isinstance(symbol, str):
        return symbol
    return None
