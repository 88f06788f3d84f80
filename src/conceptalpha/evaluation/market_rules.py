"""Trading rules per market: which closes are limit-locked, and the default costs.

The backtest asks a :class:`MarketRules` for two masks [D, N] — limit-up
(cannot buy) and limit-down (cannot sell) — and for the costs it uses where the
backtest config leaves them unset. ``docs/markets.md`` has the rules as a table.

A-shares (:class:`CnRules`), by board (from the symbol) and date:

- main board (SH60xxxx, SZ00xxxx): ±10%, ST ±5%; no limit in the first five
  days of listings from 2023-04-10 (registration reform);
- ChiNext (SZ300/301/302): ±10%, ST ±5% before 2020-08-24; ±20% (ST too) from
  then on, and no limit in the first five days of listings from that date;
- STAR (SH688/689): ±20% (ST too); no limit in the first five days of a listing;
- Beijing (BJ): ±30%; no limit on the listing day.

A close is locked when the raw close is at the limit price: reference × (1 ±
limit) rounded half-up to the cent, within half a cent. The reference is the
previous close on today's price basis (previous adjusted close / today's
factor: the exchange's ex-rights previous close; the previous close without a
factor). Exact ``up_limit``/``down_limit`` fields (raw limit prices) win where
the data has them. ST comes from an ``st`` field (1 = under risk warning).
A listing is the first bar in the data unless that is the data's first day.
Symbols that are not A-share codes (hand-built test markets) are main board.

Other markets (:class:`GenericRules`): no price limits, no stamp duty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from conceptalpha.data.panel import BarPanel

CHINEXT_REFORM = pd.Timestamp("2020-08-24")
MAIN_BOARD_REGISTRATION = pd.Timestamp("2023-04-10")
NO_LIMIT_DAYS = 5
HALF_CENT = 0.005
_CHINEXT_PREFIXES = ("300", "301", "302")
_STAR_PREFIXES = ("688", "689")


@dataclass(frozen=True)
class MarketRules:
    """A market's limit rule and default costs (cost rates are fractions of traded value).

    ``equal_weight_benchmark``: without a benchmark series, excess returns are
    taken against the equal-weight mean return of the universe's members.
    """

    name: str
    buy_cost: float
    sell_cost: float
    min_cost: float
    equal_weight_benchmark: bool

    def limit_locked(self, panel: BarPanel) -> tuple[np.ndarray, np.ndarray]:
        """(limit-up, limit-down) bool [D, N]: closes at which a buy / a sell is impossible."""
        none = np.zeros(panel.shape, dtype=bool)
        return none, none.copy()


@dataclass(frozen=True)
class CnRules(MarketRules):
    """A-share rules: limits by board, date, ST status and listing age (module docstring)."""

    name: str = "cn"
    buy_cost: float = 0.0005
    sell_cost: float = 0.0015  # commission + stamp duty
    min_cost: float = 5.0
    equal_weight_benchmark: bool = False

    def limit_locked(self, panel: BarPanel) -> tuple[np.ndarray, np.ndarray]:
        up_rate, down_rate = limit_rates(panel)
        close, reference = raw_close_and_reference(panel)
        up_price, down_price = round_to_cent(reference * (1 + up_rate)), round_to_cent(reference * (1 - down_rate))
        if panel.has("up_limit"):
            up_price = np.where(np.isfinite(panel.field("up_limit")), panel.field("up_limit"), up_price)
        if panel.has("down_limit"):
            down_price = np.where(np.isfinite(panel.field("down_limit")), panel.field("down_limit"), down_price)
        with np.errstate(invalid="ignore"):
            return close >= up_price - HALF_CENT, close <= down_price + HALF_CENT


@dataclass(frozen=True)
class GenericRules(MarketRules):
    """Any other market: no price limits; commission on both sides, no stamp duty."""

    name: str = "generic"
    buy_cost: float = 0.0005
    sell_cost: float = 0.0005
    min_cost: float = 0.0
    equal_weight_benchmark: bool = True


RULES: dict[str, MarketRules] = {"cn": CnRules(), "generic": GenericRules()}


def rules_for(kind: str) -> MarketRules:
    """The rules of a market kind (``Market.kind``)."""
    return RULES[kind]


def board_of(instruments) -> np.ndarray:
    """Board of each A-share symbol [N]: ``main``, ``chinext``, ``star`` or ``bj`` (non-A-share symbols: main)."""
    symbols = pd.Series(np.asarray(instruments, dtype=object)).astype(str)
    exchange, prefix = symbols.str[:2], symbols.str[2:5]
    board = np.full(len(symbols), "main", dtype=object)
    board[((exchange == "SZ") & prefix.isin(_CHINEXT_PREFIXES)).to_numpy()] = "chinext"
    board[((exchange == "SH") & prefix.isin(_STAR_PREFIXES)).to_numpy()] = "star"
    board[(exchange == "BJ").to_numpy()] = "bj"
    return board


def limit_rates(panel: BarPanel) -> tuple[np.ndarray, np.ndarray]:
    """(up, down) limit as a fraction of the reference price [D, N]; inf where there is no limit."""
    board = board_of(panel.instruments)[None, :]
    dates = panel.calendar.dates.to_numpy()[:, None]
    after_reform = dates >= CHINEXT_REFORM.to_datetime64()
    st = np.nan_to_num(panel.field("st"), nan=0.0) > 0.5 if panel.has("st") else np.zeros(panel.shape, dtype=bool)
    wide_chinext = (board == "chinext") & after_reform
    rate = np.where(board == "bj", 0.30, np.where((board == "star") | wide_chinext, 0.20, np.where(st, 0.05, 0.10)))
    rate = np.where(no_limit_days(panel, board), np.inf, rate)
    return rate, rate


def no_limit_days(panel: BarPanel, board: np.ndarray) -> np.ndarray:
    """bool [D, N]: the first days of a listing that trade without limits (module docstring)."""
    listed = np.isfinite(panel.field("close"))
    first = np.where(listed.any(axis=0), np.argmax(listed, axis=0), -1)
    is_listing = first > 0  # a first bar on the data's first day is not known to be a listing
    age = np.arange(panel.shape[0])[:, None] - first[None, :]
    listing_date = panel.calendar.dates.to_numpy()[np.maximum(first, 0)][None, :]
    five_days = (
        (board == "star")
        | ((board == "chinext") & (listing_date >= CHINEXT_REFORM.to_datetime64()))
        | ((board == "main") & (listing_date >= MAIN_BOARD_REGISTRATION.to_datetime64()))
    )
    window = np.where(five_days, NO_LIMIT_DAYS, np.where(board == "bj", 1, 0))
    return is_listing[None, :] & (age >= 0) & (age < window)


def raw_close_and_reference(panel: BarPanel) -> tuple[np.ndarray, np.ndarray]:
    """(raw close, reference price) [D, N] float64: reference = previous adjusted close / today's factor.

    On an ex-dividend day that is the exchange's ex-rights previous close; on
    other days the previous raw close. NaN on the first day and before a listing.
    """
    adjusted = pd.DataFrame(panel.field("close").astype("float64")).ffill().to_numpy()
    factor = panel.field("factor").astype("float64") if panel.has("factor") else np.ones(panel.shape)
    reference = np.full(panel.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        reference[1:] = adjusted[:-1] / factor[1:]
        close = panel.field("close").astype("float64") / factor
    return close, reference


def round_to_cent(price: np.ndarray) -> np.ndarray:
    """Half-up rounding to 0.01, as exchanges round limit prices (the 1e-9 absorbs binary error of x.xx5)."""
    return np.floor(price * 100.0 + 0.5 + 1e-9) / 100.0


def uniform_limit_locked(panel: BarPanel, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One threshold for every stock and day: daily change ≥ +threshold → up, ≤ −threshold → down.

    The change is the ``change`` field (percent or fraction, see
    :meth:`~conceptalpha.data.panel.BarPanel.change_fraction`) when present,
    else adjusted close / previous known close − 1.
    """
    change = daily_change(panel)
    with np.errstate(invalid="ignore"):
        return change >= threshold, change <= -threshold


def daily_change(panel: BarPanel) -> np.ndarray:
    """Daily price change as a fraction [D, N] (NaN where unknown)."""
    change, _ = panel.change_fraction()
    if change is not None:
        return change
    filled = pd.DataFrame(panel.field("close").astype("float64")).ffill().to_numpy()
    change = np.full_like(filled, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        change[1:] = filled[1:] / filled[:-1] - 1.0
    return np.where(np.isfinite(panel.field("close")), change, np.nan)
