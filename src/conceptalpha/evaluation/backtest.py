"""A daily, long-only A-share backtest of a score table (SPEC §7).

Timing. A score dated t is traded at the close of trade day τ = t + lag and the
position earns the adjusted close-to-close return τ → τ+1. The lag comes from
the label protocol (:func:`lag_for_label`): ``"t+1->t+2"`` → 1 (the score is
known after close t, traded at close t+1: Qlib's protocol), ``"t->t+1"`` → 0
(the paper's, which trades at the close the features already saw). Each row of
the daily result is dated τ+1, the day the return is earned.

Strategies (portfolio weights w are fractions of the portfolio value V):

- ``topk``: hold the ``topk`` best scores, equal weight 1/topk, rebalanced daily
  (the paper's top-30 portfolio).
- ``topk_dropout``: hold ``topk`` stocks; each day rank the holdings together
  with the best ``n_drop + (topk − held)`` non-held stocks and keep the ``topk``
  best: at most ``n_drop`` holdings are replaced per day (Qlib's TopkDropout).
  Holdings are not rebalanced; the cash from sales is split equally over the buys.

Rules on trade day τ: no bar or volume 0 → suspended, no trade; a close at the
limit-up price → cannot buy; at the limit-down price → cannot sell. Limits come
from the market's rules (:mod:`conceptalpha.evaluation.market_rules`: A-shares
by board, date, ST status and listing age; none elsewhere), or, when
``limit_threshold`` is set, from one threshold on the daily change for every
stock. A holding that left the universe is sold when it can be. A
blocked buy is not replaced by a lower-ranked stock: its slot stays in cash.
With ``topk``, if unsellable holdings leave too little room, all buys are scaled
down equally so that weights sum to at most 1.

Costs, paid in cash at the trade, per traded stock: buy_cost (or sell_cost) ×
traded value + spread / 2 × traded value + per_share_cost × shares traded (at
the raw close), at least ``min_cost``, on a portfolio worth ``capital`` × net
asset value. Unset cost fields take the market's defaults (A-shares: 0.05% buy,
0.15% sell with stamp duty, 5 minimum; other markets: 0.05% each way, no
minimum). Without a benchmark series, a market whose rules say so (every
non-A-share market) measures excess returns against the equal-weight mean
return of the universe's members. "Without cost" is the same trades with costs not subtracted
(as Qlib reports it): return_net = return_gross − cost / V exactly. No lot
rounding. A holding with no bar the next day earns 0 (its price is carried).
Cash earns nothing; it can be negative by the day's costs until the next trade.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.errors import UserError
from conceptalpha.evaluation.market_rules import MarketRules, raw_close_and_reference, rules_for, uniform_limit_locked

_LABEL = re.compile(r"^\s*t\s*(?:\+\s*(\d+))?\s*(?:->|→)\s*t\s*\+\s*(\d+)\s*$")
_TINY = 1e-12  # weights below this are rounding noise, not positions or trades


def lag_for_label(label: str) -> int:
    """Days between a score's date and the close it is traded at: ``"t+a->t+b"`` → a, ``"t->t+b"`` → 0."""
    match = _LABEL.match(label)
    if not match or int(match.group(2)) <= int(match.group(1) or 0):
        raise UserError(f"label {label!r} is not of the form 't+a->t+b' with b > a (e.g. 't+1->t+2', 't->t+1')")
    return int(match.group(1) or 0)


class BacktestConfig(BaseModel):
    """Strategy, costs and market rules of a backtest (module docstring has the details)."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["topk", "topk_dropout"] = Field("topk", description="topk: equal weight, daily rebalance; topk_dropout: Qlib's.")
    topk: int = Field(30, ge=1, description="Number of stocks held.")
    n_drop: int = Field(5, ge=1, description="topk_dropout: most holdings replaced per day.")
    buy_cost: float | None = Field(None, ge=0, description="Cost rate on bought value (None: the market's, A-shares 0.0005).")
    sell_cost: float | None = Field(
        None, ge=0, description="Cost rate on sold value (None: the market's, A-shares 0.0015 with stamp duty, others 0.0005)."
    )
    min_cost: float | None = Field(None, ge=0, description="Minimum cost per traded stock, in currency (None: A-shares 5, others 0).")
    per_share_cost: float = Field(0.0, ge=0, description="Commission per share traded, in currency (priced at the raw close).")
    spread: float = Field(0.0, ge=0, description="Bid-ask spread as a fraction of price; half is paid on each trade.")
    capital: float = Field(100_000_000.0, gt=0, description="Initial portfolio value, in currency.")
    limit_threshold: float | None = Field(
        None, gt=0, description="One |daily change| limit for every stock (None: the market's rules, e.g. A-share boards)."
    )
    lag: int = Field(1, ge=0, description="Trade at close of (score date + lag): 1 for label t+1->t+2, 0 for t->t+1.")
    days_per_year: int = Field(238, ge=1, description="Trading days per year for annualisation (Qlib: 238).")

    @classmethod
    def for_label(cls, label: str, **fields) -> "BacktestConfig":
        """A config whose lag matches the label protocol, unless ``fields`` set ``lag``."""
        return cls(**{"lag": lag_for_label(label), **fields})

    def with_market_costs(self, rules: MarketRules) -> "BacktestConfig":
        """This config with unset cost fields taken from the market's rules."""
        unset = {k: getattr(rules, k) for k in ("buy_cost", "sell_cost", "min_cost") if getattr(self, k) is None}
        return self.model_copy(update=unset)


@dataclass
class TradingRules:
    """What can be done on each day [D, N]: from a bar panel, a universe mask and the market's rules."""

    asset_return: np.ndarray  # float64: adjusted close t → t+1 (0 where unknown); last row 0
    can_buy: np.ndarray  # bool
    can_sell: np.ndarray  # bool
    member: np.ndarray  # bool
    price: np.ndarray  # float64 raw close (prices per-share costs)

    @classmethod
    def from_market(cls, market: Market, limit_threshold: float | None = None, rules: MarketRules | None = None) -> "TradingRules":
        """``limit_threshold`` set: one limit on the daily change for all; else the limits of ``rules``
        (default: the rules of ``market.kind``)."""
        panel = market.panel
        close = pd.DataFrame(panel.field("close").astype("float64")).ffill().to_numpy()
        asset_return = np.zeros_like(close)
        with np.errstate(divide="ignore", invalid="ignore"):
            asset_return[:-1] = close[1:] / close[:-1] - 1.0
        asset_return[~np.isfinite(asset_return)] = 0.0
        if limit_threshold is not None:
            limit_up, limit_down = uniform_limit_locked(panel, limit_threshold)
        else:
            limit_up, limit_down = (rules or rules_for(market.kind)).limit_locked(panel)
        tradable = np.isfinite(panel.field("close"))
        if panel.has("volume"):
            tradable &= np.nan_to_num(panel.field("volume"), nan=0.0) > 0
        return cls(
            asset_return=asset_return,
            can_buy=tradable & ~limit_up,
            can_sell=tradable & ~limit_down,
            member=market.universe.mask,
            price=raw_close_and_reference(panel)[0],
        )


def one_run_scores(table: pd.DataFrame, name: str, verb: str) -> pd.DataFrame:
    """``table`` with columns datetime, instrument, score (a (datetime, instrument) index is reset), checked to
    hold one row per (datetime, instrument), i.e. one model and seed; ``UserError`` naming ``name`` (and asking
    to ``verb`` one model and seed at a time) otherwise."""
    frame = table.reset_index() if "datetime" not in table.columns else table
    missing = {"datetime", "instrument", "score"} - set(frame.columns)
    if missing:
        raise UserError(f"{name} lacks columns {sorted(missing)}")
    if frame.duplicated(["datetime", "instrument"]).any():
        raise UserError(f"{name} has duplicate (datetime, instrument) rows; {verb} one model and seed at a time")
    return frame


def score_matrix(scores: pd.DataFrame, panel: BarPanel) -> tuple[np.ndarray, int]:
    """Dense scores [D, N] on the panel's calendar (NaN = no score) and the count of rows for unknown instruments."""
    frame = one_run_scores(scores, "score table", "backtest")
    stamps = pd.DatetimeIndex(pd.to_datetime(frame["datetime"])).normalize()
    day = panel.calendar.dates.get_indexer(stamps)
    if (day < 0).any():
        raise UserError(f"score date {stamps[day < 0][0].date()} is not a trading day of the market calendar")
    col = panel.instrument_positions(frame["instrument"].astype(str))
    known = col >= 0
    matrix = np.full(panel.shape, np.nan)
    matrix[day[known], col[known]] = frame["score"].to_numpy(dtype="float64")[known]
    return matrix, int((~known).sum())


def _top_indices(values: np.ndarray, eligible: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest eligible values, best first; ties by index (stable)."""
    candidates = np.flatnonzero(eligible)
    order = np.argsort(-values[candidates], kind="stable")
    return candidates[order[:k]]


@dataclass
class _Trades:
    weights: np.ndarray  # post-trade weights [N]
    blocked_buys: int
    blocked_sells: int


def _topk_trades(w: np.ndarray, score: np.ndarray, day: int, rules: TradingRules, config: BacktestConfig) -> _Trades:
    """Equal weight 1/topk on the best scores, moving each weight only in a direction the rules allow."""
    target = np.zeros_like(w)
    target[_top_indices(score, np.isfinite(score), config.topk)] = 1.0 / config.topk
    buy, sell = target > w + _TINY, target < w - _TINY
    blocked_buy, blocked_sell = buy & ~rules.can_buy[day], sell & ~rules.can_sell[day]
    new = np.where(blocked_buy | blocked_sell, w, target)
    increase = np.where(buy & ~blocked_buy, new - w, 0.0)
    excess = new.sum() - 1.0
    if excess > _TINY and increase.sum() > 0:
        new = new - increase * min(excess / increase.sum(), 1.0)
    # Count refused openings and closings; a blocked resize of a kept holding is not counted.
    return _Trades(new, int((blocked_buy & (w <= _TINY)).sum()), int((blocked_sell & (target == 0)).sum()))


def _dropout_trades(w: np.ndarray, cash: float, score: np.ndarray, day: int, rules: TradingRules, config: BacktestConfig) -> _Trades:
    """TopkDropout: replace at most n_drop holdings by better non-held stocks; sell holdings that left the universe."""
    held = w > _TINY
    forced = held & ~rules.member[day]
    ranked_held = held & ~forced
    n_new = config.n_drop + max(config.topk - int(ranked_held.sum()), 0)
    candidates = _top_indices(score, np.isfinite(score) & ~held, n_new)
    pool = np.zeros_like(held)
    pool[candidates] = True
    pool |= ranked_held
    keep = np.zeros_like(held)
    keep[_top_indices(np.where(np.isfinite(score), score, -np.inf), pool, config.topk)] = True
    want_sell = (ranked_held & ~keep) | forced
    sell = want_sell & rules.can_sell[day]
    slots = config.topk - int(held.sum() - sell.sum())
    want_buy = candidates[keep[candidates]][: max(slots, 0)]
    buyable = want_buy[rules.can_buy[day][want_buy]]
    new = np.where(sell, 0.0, w)
    new[buyable] = max(cash + w[sell].sum(), 0.0) / max(len(want_buy), 1)
    return _Trades(new, len(want_buy) - len(buyable), int((want_sell & ~sell).sum()))


def _cost_fraction(old: np.ndarray, new: np.ndarray, value: float, price: np.ndarray, config: BacktestConfig) -> float:
    """Costs of moving weights old → new on a portfolio worth ``value``, as a fraction of it."""
    delta = new - old
    traded = np.abs(delta) > _TINY
    rate = np.where(delta > 0, config.buy_cost, config.sell_cost) + config.spread / 2
    traded_value = np.abs(delta) * value
    per_stock = rate * traded_value
    if config.per_share_cost:
        per_stock = per_stock + config.per_share_cost * np.divide(traded_value, price, out=np.zeros_like(price), where=price > 0)
    per_stock = np.maximum(per_stock, config.min_cost)
    return float(per_stock[traded].sum() / value)


@dataclass
class BacktestResult:
    """Daily results (indexed by the date the return is earned) and the held positions.

    ``daily`` columns: trade_date, return_gross, return_net, cost (fraction of
    value), turnover (Σ|Δw|: bought + sold value / portfolio value), benchmark,
    excess_gross, excess_net, n_holdings, cash, nav, blocked_buys (new positions
    refused: limit-up or suspended), blocked_sells (exits refused: limit-down or
    suspended).
    ``positions``: long table (trade_date, instrument, weight) of post-trade weights.
    ``benchmark``: what the benchmark column is (the index's symbol, the
    equal-weight universe mean, or none).
    """

    daily: pd.DataFrame
    positions: pd.DataFrame
    config: BacktestConfig
    unknown_instrument_rows: int = 0
    benchmark: str = "none"

    def summary(self, with_cost: bool = True) -> dict[str, float]:
        return summarize_backtest(self.daily, with_cost, self.config.days_per_year)


def backtest(
    scores: pd.DataFrame, market: Market, config: BacktestConfig | None = None, rules: MarketRules | None = None
) -> BacktestResult:
    """Simulate the strategy on ``market`` from a score table (datetime, instrument, score) of one model and seed.

    ``rules``: the market's trading rules (default: those of ``market.kind``).
    Trade days run from the first score date + lag to the last score date + lag
    (and at most the calendar's second-to-last day). A trade day whose signal day
    has no score at all keeps the positions unchanged.
    """
    rules = rules or rules_for(market.kind)
    config = (config or BacktestConfig()).with_market_costs(rules)
    panel = market.panel
    matrix, unknown = score_matrix(scores, panel)
    signal_days = np.flatnonzero(np.isfinite(matrix).any(axis=1))
    if len(signal_days) == 0:
        raise UserError("no score falls on a known instrument of the market: nothing to backtest")
    first, last = signal_days[0] + config.lag, min(signal_days[-1] + config.lag, len(panel.calendar) - 2)
    if first > last:
        raise UserError("the scores end too late in the market calendar to earn any return")
    trading = TradingRules.from_market(market, config.limit_threshold, rules)
    benchmark, benchmark_name = benchmark_returns(market), benchmark_label(market, rules)
    if market.benchmark is None and rules.equal_weight_benchmark:
        benchmark = equal_weight_returns(market, trading.asset_return)
    rows, positions = _simulate(matrix, trading, benchmark, range(first, last + 1), config)
    daily = pd.DataFrame(rows, index=pd.DatetimeIndex(panel.calendar.dates[[r["day"] + 1 for r in rows]], name="datetime"))
    daily["trade_date"] = panel.calendar.dates[daily.pop("day").to_numpy()]
    daily["excess_gross"] = daily["return_gross"] - daily["benchmark"]
    daily["excess_net"] = daily["return_net"] - daily["benchmark"]
    position_frame = pd.DataFrame(
        {
            "trade_date": panel.calendar.dates[[p[0] for p in positions]],
            "instrument": panel.instruments[[p[1] for p in positions]].astype(str),
            "weight": [p[2] for p in positions],
        }
    )
    return BacktestResult(daily, position_frame, config, unknown, benchmark_name)


def _simulate(matrix: np.ndarray, rules: TradingRules, benchmark: np.ndarray, days: range, config: BacktestConfig):
    """The day loop (vectorised across stocks): returns daily rows and (day, stock, weight) positions."""
    n = matrix.shape[1]
    w, cash, nav = np.zeros(n), 1.0, 1.0
    rows, positions = [], []
    for day in days:
        signal = matrix[day - config.lag]
        if np.isfinite(signal).any():
            score = np.where(rules.member[day], signal, np.nan)
            if config.strategy == "topk":
                trades = _topk_trades(w, score, day, rules, config)
            else:
                trades = _dropout_trades(w, cash, score, day, rules, config)
        else:
            trades = _Trades(w, 0, 0)
        new = trades.weights
        cost = _cost_fraction(w, new, config.capital * nav, rules.price[day], config)
        turnover = float(np.abs(new - w).sum())
        cash = cash + w.sum() - new.sum() - cost
        gross = float(new @ rules.asset_return[day])
        net = gross - cost
        held = np.flatnonzero(new > _TINY)
        positions.extend((day, i, float(new[i])) for i in held)
        rows.append(
            {
                "day": day, "return_gross": gross, "return_net": net, "cost": cost, "turnover": turnover,
                "benchmark": benchmark[day], "n_holdings": len(held), "cash": cash,
                "blocked_buys": trades.blocked_buys, "blocked_sells": trades.blocked_sells, "nav": nav * (1 + net),
            }
        )
        w = new * (1.0 + rules.asset_return[day]) / (1.0 + net)
        cash = cash / (1.0 + net)
        nav *= 1.0 + net
    return rows, positions


def benchmark_returns(market: Market) -> np.ndarray:
    """Benchmark close-to-close return t → t+1 on the market calendar [D] (NaN without a benchmark)."""
    dates = market.calendar.dates
    if market.benchmark is None:
        return np.full(len(dates), np.nan)
    close = market.benchmark.copy()
    close.index = pd.DatetimeIndex(pd.to_datetime(close.index)).normalize()
    close = close.reindex(dates).astype("float64").ffill().to_numpy()
    out = np.full(len(dates), np.nan)
    out[:-1] = close[1:] / close[:-1] - 1.0
    return out


EQUAL_WEIGHT_BENCHMARK = "equal-weight mean of the universe's members"


def benchmark_label(market: Market, rules: MarketRules) -> str:
    """What a backtest of ``market`` under ``rules`` compares against."""
    if market.benchmark is not None:
        return str(market.benchmark.name)
    return EQUAL_WEIGHT_BENCHMARK if rules.equal_weight_benchmark else "none"


def equal_weight_returns(market: Market, asset_return: np.ndarray) -> np.ndarray:
    """Equal-weight mean return t → t+1 of the members on day t with a bar on t and t+1 [D] (NaN with none)."""
    listed = np.isfinite(market.panel.field("close"))
    counted = market.universe.mask.copy()
    counted[:-1] &= listed[:-1] & listed[1:]
    counted[-1] = False
    n = counted.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(counted, asset_return, 0.0).sum(axis=1) / n, np.nan)


def _max_drawdown(returns: pd.Series) -> float:
    """Largest fall of the compounded value from its running peak (≤ 0)."""
    wealth = np.concatenate([[1.0], (1.0 + returns.to_numpy()).cumprod()])
    return float((wealth / np.maximum.accumulate(wealth) - 1.0).min())


def _annualized(returns: pd.Series, days_per_year: int) -> dict[str, float]:
    """Return statistics of a daily series; all NaN when any day is unknown (e.g. no benchmark)."""
    n = len(returns)
    if n == 0 or returns.isna().any():
        keys = ("cumulative_return", "annualized_return", "annualized_return_mean", "volatility", "ratio", "max_drawdown")
        return dict.fromkeys(keys, float("nan"))
    cumulative = float((1.0 + returns).prod() - 1.0)
    volatility = float(returns.std(ddof=1) * np.sqrt(days_per_year)) if n > 1 else float("nan")
    mean_annual = float(returns.mean() * days_per_year)
    return {
        "cumulative_return": cumulative,
        "annualized_return": float((1.0 + cumulative) ** (days_per_year / n) - 1.0) if n else float("nan"),
        "annualized_return_mean": mean_annual,
        "volatility": volatility,
        "ratio": mean_annual / volatility if volatility and np.isfinite(volatility) and volatility > 0 else float("nan"),
        "max_drawdown": _max_drawdown(returns),
    }


def summarize_backtest(daily: pd.DataFrame, with_cost: bool = True, days_per_year: int = 238) -> dict[str, float]:
    """Performance of a daily backtest frame, with or without costs.

    annualized_return = (1 + cumulative)^(days_per_year/n) − 1 (compounded);
    annualized_return_mean = days_per_year × mean daily return (Qlib's);
    volatility = std × √days_per_year; sharpe = annualized_return_mean / volatility
    (no risk-free rate). The excess_* keys do the same on the daily excess over
    the benchmark (arithmetic: r − r_bench); information_ratio = excess mean /
    excess std × √days_per_year.
    """
    returns = daily["return_net" if with_cost else "return_gross"].astype("float64")
    excess = daily["excess_net" if with_cost else "excess_gross"].astype("float64")
    own = _annualized(returns, days_per_year)
    rel = _annualized(excess, days_per_year)
    bench = _annualized(daily["benchmark"].astype("float64"), days_per_year)
    return {
        "cumulative_return": own["cumulative_return"],
        "annualized_return": own["annualized_return"],
        "annualized_return_mean": own["annualized_return_mean"],
        "volatility": own["volatility"],
        "sharpe": own["ratio"],
        "max_drawdown": own["max_drawdown"],
        "benchmark_cumulative_return": bench["cumulative_return"],
        "benchmark_annualized_return": bench["annualized_return"],
        "excess_cumulative_return": rel["cumulative_return"],
        "excess_annualized_return": rel["annualized_return_mean"],
        "tracking_error": rel["volatility"],
        "information_ratio": rel["ratio"],
        "excess_max_drawdown": rel["max_drawdown"],
        "mean_turnover": float(daily["turnover"].mean()),
        "total_cost": float(daily["cost"].sum()) if with_cost else 0.0,
        "n_days": int(len(daily)),
    }
