"""Trading rules per market on hand-made bars: A-share boards, dates, ST, listings, rounding, exact limits;
generic markets without limits; market cost defaults; the equal-weight benchmark."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.data.universe import Universe
from conceptalpha.evaluation.backtest import EQUAL_WEIGHT_BENCHMARK, BacktestConfig, backtest
from conceptalpha.evaluation.market_rules import CnRules, GenericRules, board_of, round_to_cent

NO_COST = dict(buy_cost=0.0, sell_cost=0.0, min_cost=0.0)


def panel_of(dates, columns: dict[str, list[float]], **fields) -> BarPanel:
    """One column per symbol of raw closes over ``dates``; extra fields as {name: {symbol: values}}."""
    calendar = Calendar(pd.DatetimeIndex(dates))
    names = np.array(list(columns), dtype=object)
    arrays = {"close": np.array([columns[s] for s in names], dtype=np.float32).T}
    arrays["volume"] = np.where(np.isfinite(arrays["close"]), 100.0, np.nan).astype(np.float32)
    for name, per_symbol in fields.items():
        arrays[name] = np.array([per_symbol.get(s, [np.nan] * len(dates)) for s in names], dtype=np.float32).T
    return BarPanel(calendar, names, arrays)


def locked(panel: BarPanel, rules=CnRules()) -> tuple[np.ndarray, np.ndarray]:
    return rules.limit_locked(panel)


def test_boards_from_symbols():
    assert list(board_of(["SH600000", "SZ000001", "SZ300750", "SZ301001", "SH688001", "SH689009", "BJ430047", "AAPL"])) == [
        "main", "main", "chinext", "chinext", "star", "star", "bj", "main",
    ]


@pytest.mark.parametrize(
    ("symbol", "close", "up", "down"),
    [
        ("SH600000", 11.00, True, False),  # main board +10%
        ("SH600000", 10.99, False, False),  # one tick below the limit
        ("SH600000", 9.00, False, True),
        ("SH688001", 11.00, False, False),  # STAR: ±20%
        ("SH688001", 12.00, True, False),
        ("SH688001", 8.00, False, True),
        ("BJ430047", 12.00, False, False),  # Beijing: ±30%
        ("BJ430047", 13.00, True, False),
        ("BJ430047", 7.00, False, True),
    ],
)
def test_board_limits_on_a_plain_day(symbol, close, up, down):
    panel = panel_of(pd.bdate_range("2021-03-01", periods=2), {symbol: [10.0, close]})
    limit_up, limit_down = locked(panel)
    assert (limit_up[1, 0], limit_down[1, 0]) == (up, down)
    assert not limit_up[0, 0] and not limit_down[0, 0]  # no previous close: nothing to judge


def test_chinext_switches_from_10_to_20_percent_on_2020_08_24():
    dates = pd.DatetimeIndex(["2020-08-20", "2020-08-21", "2020-08-24", "2020-08-25"])
    panel = panel_of(dates, {"SZ300750": [10.0, 11.0, 13.2, 15.84], "SZ300001": [10.0, 11.0, 12.1, 13.31]})
    limit_up, _ = locked(panel)
    assert limit_up[1].tolist() == [True, True]  # +10% before the reform: limit
    assert limit_up[2].tolist() == [True, False]  # +20% is the limit from 2020-08-24; +10% is not
    assert limit_up[3].tolist() == [True, False]


def test_chinext_listing_after_the_reform_has_no_limit_for_five_days():
    dates = pd.bdate_range("2021-01-04", periods=8)
    nan = np.nan
    prices = [nan, 10.0, 14.0, 19.6, 27.44, 38.42, 46.1, 55.32]  # listed on day 1, +40% a day, then +20%
    panel = panel_of(dates, {"SZ300999": prices, "SH688999": prices, "SH600999": prices})
    limit_up, _ = locked(panel)
    # ChiNext and STAR: listing day and four more days free; day 6 (+20%) is at the limit
    for col in (0, 1):
        assert not limit_up[1:6, col].any()
        assert limit_up[6, col] and limit_up[7, col]
    # a main-board listing before 2023-04-10 has its ±10% limit from the second day
    assert limit_up[2:, 2].all()


def test_chinext_listing_before_the_reform_is_limited_from_its_second_day():
    dates = pd.bdate_range("2019-06-03", periods=3)
    panel = panel_of(dates, {"SZ300998": [np.nan, 10.0, 11.0]})
    assert locked(panel)[0][2, 0]


def test_main_board_listing_after_the_registration_reform_is_free_for_five_days():
    dates = pd.bdate_range("2023-06-01", periods=4)
    panel = panel_of(dates, {"SH603999": [np.nan, 10.0, 13.0, 16.9]})
    assert not locked(panel)[0].any()


def test_first_day_of_the_data_is_not_taken_for_a_listing():
    panel = panel_of(pd.bdate_range("2021-01-04", periods=2), {"SH688001": [10.0, 12.0]})
    assert locked(panel)[0][1, 0]


def test_st_limit_is_five_percent_on_the_main_board_only():
    dates = pd.bdate_range("2021-03-01", periods=2)
    st = {"SH600001": [1, 1], "SH600002": [0, 0], "SH688002": [1, 1]}
    panel = panel_of(dates, {"SH600001": [10.0, 10.5], "SH600002": [10.0, 10.5], "SH688002": [10.0, 10.5]}, st=st)
    limit_up, _ = locked(panel)
    assert limit_up[1].tolist() == [True, False, False]
    panel = panel_of(dates, {"SH600001": [10.0, 9.5]}, st={"SH600001": [1, 1]})
    assert locked(panel)[1][1, 0]


def test_limit_price_is_rounded_to_the_cent():
    assert round_to_cent(np.array([11.033, 11.035, 9.027])).tolist() == [11.03, 11.04, 9.03]
    # 10.03 × 1.1 = 11.033 → limit price 11.03: a close of 11.03 (+9.97%) is at the limit, 11.02 is not
    panel = panel_of(pd.bdate_range("2021-03-01", periods=2), {"SH600000": [10.03, 11.03], "SH600004": [10.03, 11.02]})
    assert locked(panel)[0][1].tolist() == [True, False]


def test_reference_is_the_ex_rights_previous_close():
    # Day 1 goes ex-dividend by 1.00: reference 9.00, raw close 9.90 is limit-up although below yesterday's 10.00.
    dates = pd.bdate_range("2021-03-01", periods=2)
    factor = [1.0, 11.0 / 9.9]
    adjusted = [10.0, 11.0]  # raw = adjusted / factor: 10.00 then 9.90
    panel = panel_of(dates, {"SH600000": adjusted}, factor={"SH600000": factor})
    assert locked(panel)[0][1, 0]


def test_exact_limit_fields_win_where_present():
    dates = pd.bdate_range("2021-03-01", periods=3)
    panel = panel_of(
        dates, {"SH600000": [10.0, 10.8, 11.88]}, up_limit={"SH600000": [np.nan, 10.8, np.nan]}, down_limit={"SH600000": [np.nan, 9.0, np.nan]}
    )
    limit_up, _ = locked(panel)
    assert limit_up[1, 0]  # the data's own limit price (10.80) is reached
    assert limit_up[2, 0]  # no field that day: the board rule (10.80 × 1.1 = 11.88)


def test_generic_market_has_no_limits():
    panel = panel_of(pd.bdate_range("2021-03-01", periods=2), {"AAPL": [10.0, 15.0], "GME": [10.0, 3.0]})
    limit_up, limit_down = locked(panel, GenericRules())
    assert not limit_up.any() and not limit_down.any()


def market_of(panel: BarPanel, kind: str, benchmark=None) -> Market:
    universe = Universe.everything("u", panel.calendar, panel.instruments)
    return Market(panel, universe, panel.instruments, benchmark=benchmark, kind=kind)


def scores(dates, rows: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([(dates[1], s, v) for s, v in rows.items()], columns=["datetime", "instrument", "score"])


def test_a_twelve_percent_chinext_move_after_2020_is_buyable_but_not_under_one_threshold():
    dates = pd.bdate_range("2021-03-01", periods=3)
    panel = panel_of(dates, {"SZ300750": [10.0, 11.2, 11.2], "SH600000": [10.0, 10.0, 10.0]})
    frame = scores(dates, {"SZ300750": 2.0, "SH600000": 1.0})
    board = backtest(frame, market_of(panel, "cn"), BacktestConfig(topk=1, lag=0, **NO_COST))
    assert board.daily["blocked_buys"].iloc[0] == 0 and set(board.positions["instrument"]) == {"SZ300750"}
    uniform = backtest(frame, market_of(panel, "cn"), BacktestConfig(topk=1, lag=0, limit_threshold=0.095, **NO_COST))
    assert uniform.daily["blocked_buys"].iloc[0] == 1


def test_generic_backtest_buys_a_big_mover_and_uses_the_equal_weight_benchmark():
    dates = pd.bdate_range("2021-03-01", periods=3)
    panel = panel_of(dates, {"AAPL": [10.0, 13.0, 14.3], "MSFT": [10.0, 10.0, 9.0], "GME": [5.0, 5.0, 5.5]})
    result = backtest(scores(dates, {"AAPL": 3.0, "MSFT": 2.0, "GME": 1.0}), market_of(panel, "generic"), BacktestConfig(topk=1, lag=0, **NO_COST))
    assert result.daily["blocked_buys"].iloc[0] == 0
    assert result.daily["return_gross"].iloc[0] == pytest.approx(0.10)
    assert result.daily["benchmark"].iloc[0] == pytest.approx((0.10 - 0.10 + 0.10) / 3)
    assert result.benchmark == EQUAL_WEIGHT_BENCHMARK
    cn = backtest(scores(dates, {"AAPL": 3.0}), market_of(panel, "cn"), BacktestConfig(topk=1, lag=0, **NO_COST))
    assert np.isnan(cn.daily["benchmark"].iloc[0]) and cn.benchmark == "none"


def test_market_cost_defaults_and_spread_and_per_share_commission():
    dates = pd.bdate_range("2021-03-01", periods=3)
    panel = panel_of(dates, {"AAPL": [10.0, 20.0, 20.0], "MSFT": [10.0, 10.0, 10.0]})
    frame = scores(dates, {"AAPL": 2.0, "MSFT": 1.0})
    capital = dict(capital=1_000_000.0, topk=1, lag=0)
    generic = backtest(frame, market_of(panel, "generic"), BacktestConfig(**capital))
    assert (generic.config.buy_cost, generic.config.sell_cost, generic.config.min_cost) == (0.0005, 0.0005, 0.0)
    assert generic.daily["cost"].iloc[0] == pytest.approx(0.0005)
    cn = backtest(frame, market_of(panel, "cn"), BacktestConfig(**capital))
    assert (cn.config.sell_cost, cn.config.min_cost) == (0.0015, 5.0)
    # 1,000,000 bought at a raw price of 20: 50,000 shares × 0.005 = 250; spread 0.001 → half of it: 500
    priced = backtest(frame, market_of(panel, "generic"), BacktestConfig(per_share_cost=0.005, spread=0.001, buy_cost=0.0, **capital))
    assert priced.daily["cost"].iloc[0] == pytest.approx((250.0 + 500.0) / 1_000_000)
