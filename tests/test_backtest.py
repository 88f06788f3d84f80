"""Backtests on tiny markets whose right answer is known by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.data.universe import Universe
from conceptalpha.errors import UserError
from conceptalpha.evaluation.backtest import BacktestConfig, backtest, lag_for_label, summarize_backtest

DATES = pd.bdate_range("2020-01-06", periods=6)
NO_COST = dict(buy_cost=0.0, sell_cost=0.0, min_cost=0.0)
UNIFORM = dict(limit_threshold=0.095)  # one limit on the `change` field for every stock, instead of board rules


def make_market(close, volume=None, change=None, mask=None, benchmark=None) -> Market:
    """A market over DATES with instruments A, B, C, ... from a close matrix [D, N]."""
    close = np.asarray(close, dtype=np.float32)
    days, n = close.shape
    calendar = Calendar(DATES[:days])
    names = np.array([chr(ord("A") + i) for i in range(n)], dtype=object)
    fields = {"close": close, "volume": np.ones_like(close) if volume is None else np.asarray(volume, np.float32)}
    if change is not None:
        fields["change"] = np.asarray(change, np.float32)
    universe = Universe.everything("u", calendar, names) if mask is None else Universe("u", calendar, names, np.asarray(mask))
    bench = None if benchmark is None else pd.Series(benchmark, index=calendar.dates)
    return Market(BarPanel(calendar, names, fields), universe, names, benchmark=bench)


def scores_frame(rows: dict[int, dict[str, float]]) -> pd.DataFrame:
    """{day index: {instrument: score}} → a (datetime, instrument, score) table."""
    return pd.DataFrame(
        [(DATES[d], s, v) for d, per_day in rows.items() for s, v in per_day.items()],
        columns=["datetime", "instrument", "score"],
    )


CLOSE = [
    [10.0, 20.0, 30.0, 40.0],
    [11.0, 20.0, 27.0, 40.0],
    [11.0, 22.0, 27.0, 44.0],
    [12.1, 22.0, 29.7, 40.0],
]


def test_lag_follows_the_label_protocol():
    assert lag_for_label("t+1->t+2") == 1
    assert lag_for_label("t->t+1") == 0
    assert lag_for_label("t+1→t+6") == 1
    assert BacktestConfig.for_label("t->t+1", topk=10).lag == 0
    assert BacktestConfig.for_label("t->t+1", lag=2).lag == 2  # a lag set explicitly wins over the label's
    with pytest.raises(UserError, match="label"):
        lag_for_label("next day")


def test_topk_earns_the_mean_of_its_stocks_next_return_dated_when_earned():
    market = make_market(CLOSE)
    result = backtest(scores_frame({0: {"A": 3, "B": 2, "C": 1, "D": 0}}), market, BacktestConfig(topk=2, lag=0, **NO_COST))
    daily = result.daily
    assert list(daily.index) == [DATES[1]]
    assert daily["trade_date"].iloc[0] == DATES[0]
    assert daily["return_gross"].iloc[0] == pytest.approx((0.1 + 0.0) / 2)
    assert daily["n_holdings"].iloc[0] == 2


def test_lag_one_trades_a_day_later():
    market = make_market(CLOSE)
    result = backtest(scores_frame({0: {"A": 3, "B": 2, "C": 1, "D": 0}}), market, BacktestConfig(topk=2, lag=1, **NO_COST))
    assert list(result.daily.index) == [DATES[2]]
    # held A, B from close day 1 to close day 2: A +0%, B +10%
    assert result.daily["return_gross"].iloc[0] == pytest.approx(0.05)


def test_limit_up_blocks_the_buy_and_the_slot_stays_in_cash():
    change = np.zeros((4, 4))
    change[0, 0] = 0.10  # A is limit-up on the trade day
    market = make_market(CLOSE, change=change)
    result = backtest(scores_frame({0: {"A": 3, "B": 2, "C": 1, "D": 0}}), market, BacktestConfig(topk=2, lag=0, **NO_COST, **UNIFORM))
    row = result.daily.iloc[0]
    assert row["blocked_buys"] == 1
    assert row["n_holdings"] == 1
    assert row["return_gross"] == pytest.approx(0.5 * 0.0)  # only B (flat), half the money idle
    assert row["cash"] == pytest.approx(0.5)
    assert set(result.positions["instrument"]) == {"B"}


def test_limit_down_blocks_the_sell():
    change = np.zeros((4, 4))
    change[1, 2] = -0.10  # C is limit-down on day 1 (27 from 30)
    market = make_market(CLOSE, change=change)
    scores = scores_frame({0: {"C": 3, "D": 2, "A": 1, "B": 0}, 1: {"A": 3, "B": 2, "C": 1, "D": 0}})
    result = backtest(scores, market, BacktestConfig(topk=2, lag=0, **NO_COST, **UNIFORM))
    day1 = result.positions[result.positions["trade_date"] == DATES[1]].set_index("instrument")["weight"]
    # after day 0: C (0.5 × 0.9) and D (0.5 × 1.0), value 0.95 → weights 0.45/0.95 and 0.5/0.95
    assert day1["C"] == pytest.approx(0.45 / 0.95)
    assert "D" not in day1.index  # D was sold
    assert result.daily["blocked_sells"].iloc[1] == 1
    # room left for buys: 1 − w_C, shared by A and B (each wanted 0.5)
    assert day1["A"] == pytest.approx((1 - 0.45 / 0.95) / 2)
    assert day1.sum() == pytest.approx(1.0)


def test_percent_change_field_is_understood():
    change = np.zeros((4, 4))
    change[0, 0] = 10.0  # percent, as the shared A-share data stores it
    change[1, 1] = -2.0
    market = make_market(CLOSE, change=change)
    result = backtest(scores_frame({0: {"A": 3, "B": 2, "C": 1, "D": 0}}), market, BacktestConfig(topk=2, lag=0, **NO_COST, **UNIFORM))
    assert result.daily["blocked_buys"].iloc[0] == 1


def test_without_change_field_limit_comes_from_close():
    close = [[10.0, 20.0, 30.0], [11.0, 20.0, 30.0], [11.0, 20.0, 30.0]]
    market = make_market(close)
    result = backtest(scores_frame({1: {"A": 3, "B": 2, "C": 1}}), market, BacktestConfig(topk=1, lag=0, **NO_COST))
    assert result.daily["blocked_buys"].iloc[0] == 1  # A rose 10% on day 1


def test_suspended_stock_is_not_traded():
    volume = np.ones((4, 4))
    volume[0, 0] = 0.0
    market = make_market(CLOSE, volume=volume)
    result = backtest(scores_frame({0: {"A": 3, "B": 2, "C": 1, "D": 0}}), market, BacktestConfig(topk=2, lag=0, **NO_COST))
    assert set(result.positions["instrument"]) == {"B"}
    assert result.daily["blocked_buys"].iloc[0] == 1


def test_costs_reduce_return_by_exactly_traded_value_times_rate():
    market = make_market(CLOSE)
    config = BacktestConfig(topk=2, lag=0, buy_cost=0.001, sell_cost=0.003, min_cost=0.0)
    scores = scores_frame({0: {"A": 3, "B": 2, "C": 1, "D": 0}, 1: {"C": 3, "D": 2, "A": 1, "B": 0}})
    daily = backtest(scores, market, config).daily
    assert daily["cost"].iloc[0] == pytest.approx(1.0 * 0.001)  # bought the whole portfolio
    assert daily["return_net"].iloc[0] == pytest.approx(daily["return_gross"].iloc[0] - 0.001)
    # day 1: A grew to 0.55/(1.05 − 0.001), B is 0.5/(1.049); sell both, buy C and D at 0.5 each
    value = 1.05 - 0.001
    sold, bought = (0.55 + 0.5) / value, 1.0
    assert daily["cost"].iloc[1] == pytest.approx(sold * 0.003 + bought * 0.001)
    assert daily["turnover"].iloc[1] == pytest.approx(sold + bought)
    assert daily["return_net"].iloc[1] == pytest.approx(daily["return_gross"].iloc[1] - daily["cost"].iloc[1])
    gross_only = backtest(scores, market, BacktestConfig(topk=2, lag=0, **NO_COST)).daily
    assert gross_only["return_gross"].iloc[0] == pytest.approx(daily["return_gross"].iloc[0])


def test_minimum_cost_per_trade():
    market = make_market(CLOSE)
    config = BacktestConfig(topk=2, lag=0, buy_cost=0.0005, sell_cost=0.0015, min_cost=5.0, capital=1000.0)
    daily = backtest(scores_frame({0: {"A": 3, "B": 2}}), market, config).daily
    # two buys of 500 each: 0.25 by rate, 5 by minimum → 10 on 1000
    assert daily["cost"].iloc[0] == pytest.approx(10.0 / 1000.0)


def test_benchmark_excess_is_return_minus_index_return():
    market = make_market(CLOSE, benchmark=[100.0, 102.0, 101.0, 101.0])
    result = backtest(scores_frame({0: {"A": 3, "B": 2, "C": 1, "D": 0}}), market, BacktestConfig(topk=2, lag=0, **NO_COST))
    row = result.daily.iloc[0]
    assert row["benchmark"] == pytest.approx(0.02)
    assert row["excess_net"] == pytest.approx(0.05 - 0.02)


def test_stock_leaving_the_universe_is_sold():
    mask = np.ones((4, 4), dtype=bool)
    mask[1:, 0] = False  # A leaves after day 0
    market = make_market(CLOSE, mask=mask)
    scores = scores_frame({0: {"A": 3, "B": 2}, 1: {"A": 3, "B": 2}})  # a stale score for A
    for strategy in ("topk", "topk_dropout"):
        result = backtest(scores, market, BacktestConfig(strategy=strategy, topk=2, lag=0, **NO_COST))
        day1 = result.positions[result.positions["trade_date"] == DATES[1]]
        assert "A" not in set(day1["instrument"]), strategy


def random_market(days=30, n=25, seed=0):
    rng = np.random.default_rng(seed)
    close = 10 * np.cumprod(1 + rng.normal(0, 0.02, size=(days, n)), axis=0)
    dates = pd.bdate_range("2021-01-04", periods=days)
    calendar = Calendar(dates)
    names = np.array([f"S{i:02d}" for i in range(n)], dtype=object)
    market = Market(
        BarPanel(calendar, names, {"close": close.astype(np.float32), "volume": np.ones((days, n), np.float32)}),
        Universe.everything("u", calendar, names),
        names,
    )
    index = pd.MultiIndex.from_product([dates, names], names=["datetime", "instrument"])
    scores = pd.DataFrame({"score": rng.normal(size=days * n)}, index=index).reset_index()
    return market, scores


def test_topk_gross_return_matches_an_independent_pandas_computation():
    market, scores = random_market()
    daily = backtest(scores, market, BacktestConfig(topk=5, lag=1, **NO_COST)).daily
    close = pd.DataFrame(market.panel.fields["close"].astype("float64"), index=market.calendar.dates, columns=market.panel.instruments)
    forward = close.shift(-1) / close - 1  # return earned from close τ to close τ+1
    wide = scores.pivot(index="datetime", columns="instrument", values="score")
    expected = {}
    for t in range(len(wide) - 2):
        top = wide.iloc[t].nlargest(5).index
        expected[close.index[t + 2]] = forward.iloc[t + 1][top].mean()
    expected = pd.Series(expected)
    np.testing.assert_allclose(daily["return_gross"].reindex(expected.index).to_numpy(), expected.to_numpy(), rtol=1e-5)


def test_topk_dropout_replaces_at_most_n_drop_per_day():
    market, scores = random_market(days=40, n=30, seed=1)
    result = backtest(scores, market, BacktestConfig(strategy="topk_dropout", topk=6, n_drop=2, lag=0, **NO_COST))
    held = result.positions.groupby("trade_date")["instrument"].apply(set)
    assert (result.daily["n_holdings"] == 6).all()
    for before, after in zip(held.iloc[:-1], held.iloc[1:]):
        assert len(before - after) <= 2
    assert any(len(b - a) == 2 for b, a in zip(held.iloc[:-1], held.iloc[1:]))


def test_topk_dropout_keeps_holdings_that_still_rank_high():
    market = make_market(CLOSE)
    scores = scores_frame({0: {"A": 4, "B": 3, "C": 2, "D": 1}, 1: {"C": 4, "D": 3, "A": 2, "B": 1}})
    result = backtest(scores, market, BacktestConfig(strategy="topk_dropout", topk=2, n_drop=1, lag=0, **NO_COST))
    day1 = set(result.positions[result.positions["trade_date"] == DATES[1]]["instrument"])
    assert day1 == {"A", "C"}  # B (worst held) dropped for C (best new); only one replacement


def test_summary_with_and_without_cost():
    market, scores = random_market(days=60)
    result = backtest(scores, market, BacktestConfig(topk=5, lag=1))
    gross, net = result.summary(with_cost=False), result.summary(with_cost=True)
    assert net["cumulative_return"] < gross["cumulative_return"]
    daily = result.daily
    assert net["cumulative_return"] == pytest.approx(np.prod(1 + daily["return_net"]) - 1)
    assert net["annualized_return_mean"] == pytest.approx(238 * daily["return_net"].mean())
    assert net["annualized_return"] == pytest.approx((1 + net["cumulative_return"]) ** (238 / len(daily)) - 1)
    assert net["sharpe"] == pytest.approx(daily["return_net"].mean() / daily["return_net"].std() * np.sqrt(238))
    wealth = np.cumprod(1 + daily["return_net"].to_numpy())
    assert net["max_drawdown"] == pytest.approx(min(0.0, (wealth / np.maximum.accumulate(wealth) - 1).min()))
    assert daily["nav"].iloc[-1] == pytest.approx(1 + net["cumulative_return"])


def test_max_drawdown_by_hand():
    daily = pd.DataFrame(
        {"return_net": [0.1, -0.5, 0.2], "return_gross": [0.1, -0.5, 0.2], "excess_net": 0.0, "excess_gross": 0.0,
         "benchmark": 0.0, "turnover": 0.0, "cost": 0.0}
    )
    assert summarize_backtest(daily)["max_drawdown"] == pytest.approx(-0.5)


def test_reproducible_and_rejects_bad_input():
    market, scores = random_market()
    a = backtest(scores, market, BacktestConfig(strategy="topk_dropout", topk=5)).daily
    b = backtest(scores, market, BacktestConfig(strategy="topk_dropout", topk=5)).daily
    pd.testing.assert_frame_equal(a, b)
    off_calendar = scores.assign(datetime=scores["datetime"] + pd.Timedelta(days=1))
    with pytest.raises(UserError, match="not a trading day"):
        backtest(off_calendar[off_calendar["datetime"].dt.day_of_week == 5], market)
    with pytest.raises(UserError, match="duplicate"):
        backtest(pd.concat([scores, scores]), market)
    with pytest.raises(Exception):
        BacktestConfig(strategy="long_short")
