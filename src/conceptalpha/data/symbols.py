"""One spelling per symbol, by market.

- ``cn`` (A-shares): ``SH600000``, ``SZ000001``, ``BJ430047``. Accepted inputs:
  ``600000.SH`` / ``600000.sh``, ``SH600000`` / ``sh600000``, ``600000``
  (exchange inferred from the first digit: 6, 9 → SH; 0, 2, 3 → SZ; 4, 8 → BJ),
  and integers that lost their leading zeros (``1`` → ``000001``) only when
  given as numbers. Anything else is an error, never a guess.
- ``generic`` (any other market): the ticker as given, stripped and upper-cased
  (``aapl`` → ``AAPL``; ``BRK.B``, ``0700.HK``, ``BTC-USD``, ``ES=F``, ``^GSPC``
  are kept). A ticker is letters, digits and the punctuation of :data:`_GENERIC`;
  whitespace or path separators are errors.
- ``auto``: ``cn`` when every symbol is an A-share code, else ``generic``
  (:func:`resolve_market`); a mix of both is an error.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from conceptalpha.errors import DataError, UserError

_EXCHANGES = ("SH", "SZ", "BJ")
_BY_FIRST_DIGIT = {"6": "SH", "9": "SH", "0": "SZ", "2": "SZ", "3": "SZ", "4": "BJ", "8": "BJ"}
_PREFIXED = re.compile(r"^(SH|SZ|BJ)(\d{6})$")
_SUFFIXED = re.compile(r"^(\d{6})\.(SH|SZ|BJ|SS)$")
_BARE = re.compile(r"^\d{6}$")
_GENERIC = re.compile(r"^[A-Z0-9^][A-Z0-9.\-=^_&!$#@+]{0,31}$")
MARKETS = ("cn", "generic")
MARKET_CHOICES = (*MARKETS, "auto")


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


def _generic_one(symbol: str) -> str | None:
    s = symbol.strip().upper()
    return s if _GENERIC.match(s) else None


def _text_only(symbol: object) -> str | None:
    return symbol if isinstance(symbol, str) else None


_NORMALIZERS = {"cn": _normalize_one, "generic": _generic_one}


def normalize_symbol(symbol: object, market: str = "cn") -> str:
    """Canonical form of one symbol; :class:`UserError` when it is not a recognisable symbol of ``market``."""
    canon, ok = normalize_symbols([symbol], market)
    if not ok[0]:
        expected = "600000.SH, SH600000, sh600000 or 600000" if market == "cn" else "AAPL, BRK.B, 0700.HK or BTC-USD"
        raise UserError(f"unrecognised symbol {symbol!r}: expected forms like {expected}")
    return canon[0]


def normalize_symbols(symbols, market: str = "cn") -> tuple[np.ndarray, np.ndarray]:
    """Vectorised over unique values: returns (canonical symbols, ok mask) for ``market`` (cn or generic).

    Where ``ok`` is False the canonical entry is None; callers count and list
    those instead of dropping them silently.
    """
    normalize, as_text = _NORMALIZERS[_known_market(market)], _AS_TEXT[market]
    codes, uniques = pd.factorize(pd.Series(symbols, dtype=object), use_na_sentinel=False)
    canon_unique = np.array([(normalize(t) if (t := as_text(u)) is not None else None) for u in uniques], dtype=object)
    ok_unique = np.array([c is not None for c in canon_unique], dtype=bool)
    return canon_unique[codes], ok_unique[codes]


def market_of(canonical_symbols) -> str:
    """``cn`` when every (already canonical) symbol is an A-share code, else ``generic``."""
    return "cn" if normalize_symbols(canonical_symbols, "cn")[1].all() else "generic"


def resolve_market(market: str, symbols, where: str, lines=None) -> str:
    """``cn`` or ``generic`` for the raw ``symbols`` of one universe, checking they fit.

    ``auto`` → ``cn`` when every symbol is an A-share code, ``generic`` when none
    is; a mix is an error. ``cn`` with a non-A-share code is an error that says
    so and suggests ``data.market: generic``; ``generic`` rejects tickers that
    differ only in case (``BRK.B`` and ``brk.b``: which folder is meant?).
    ``where`` is the file named by the :class:`DataError`; ``lines`` (one per
    symbol) the line numbers it quotes.
    """
    market = _known_market(market, allow_auto=True)
    raw = pd.Series(symbols, dtype=object)
    line = pd.Series(lines if lines is not None else np.arange(1, len(raw) + 1))

    def at(mask: np.ndarray) -> str:
        i = int(np.flatnonzero(mask)[0])
        return f"line {line.iloc[i]}: {raw.iloc[i]!r}"

    _, is_cn = normalize_symbols(raw, "cn")
    if market == "auto":
        if is_cn.all():
            return "cn"
        if is_cn.any():
            raise DataError(
                where,
                f"{at(~is_cn)} is not an A-share code but {at(is_cn)} is: one universe holds one market "
                "(split it, or set data.market: generic to read every code as a plain ticker)",
            )
        market = "generic"
    if market == "cn" and not is_cn.all():
        raise DataError(
            where,
            f"{at(~is_cn)} is not an A-share code (like SH600000, 600000.SH or 000001); "
            "for any other market set data.market: generic (or auto)",
        )
    if market == "generic":
        canon, ok = normalize_symbols(raw, "generic")
        if not ok.all():
            raise DataError(where, f"{at(~ok)} is not a ticker (letters, digits and . - = ^ _ & only, no spaces)")
        spelling = raw.astype(str).str.strip()
        first_spelling = spelling.groupby(canon).transform("first")
        clash = (spelling != first_spelling).to_numpy()
        if clash.any():
            i = int(np.flatnonzero(clash)[0])
            raise DataError(
                where, f"{at(clash)} is the ticker {first_spelling.iloc[i]!r} spelt in another case; keep one spelling"
            )
    return market


def _known_market(market: str, allow_auto: bool = False) -> str:
    choices = MARKET_CHOICES if allow_auto else MARKETS
    if market not in choices:
        raise UserError(f"unknown market {market!r}; expected one of {', '.join(choices)}")
    return market


def _as_text(symbol: object) -> str | None:
    if isinstance(symbol, (bool, np.bool_)):
        return None
    if isinstance(symbol, (int, np.integer)):
        return f"{int(symbol):06d}" if 0 <= int(symbol) < 1_000_000 else None
    if isinstance(symbol, str):
        return symbol
    return None


_AS_TEXT = {"cn": _as_text, "generic": _text_only}  # cn also reads integers that lost their zeros
