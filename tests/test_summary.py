import numpy as np
import pandas as pd
import pytest

from conceptalpha.data import BarPanel, Calendar, Market, Universe
from conceptalpha.data.loader import load_market, load_membership
from conceptalpha.data.summary import format_summary, summarize


def tiny_market():
    cal = Calendar(pd.bdate_range("2020-01-01", periods=4))
    close = np.array([[1.0, 2.0], [1.0, np.nan], [1.0, 2.0], [np.nan, 2.0]], dtype=np.float32)
    volume = np.array([[5.0, 0.0], [5.0, np.nan], [0.0, 5.0], [np.nan, 5.0]], dtype=np.float32)
    panel = BarPanel(cal, np.array(["SH600000", "SZ000001"]), {"close": close, "volume": volume, "vwap": np.full_like(close, np.nan)})
    # Full membership has a third member, SH601988, with no bars at all, on days 2-3.
    full_mask = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)
    membership = Universe("u", cal, np.array(["SH600000", "SZ000001", "SH601988"]), full_mask)
    market = Market(
        panel,
        membership.reindex(panel.instruments),
        universe_members=np.array(["SH600000", "SZ000001", "SH601988"], dtype=object),
        shares=pd.Series({"SH600000": 10.0}),
        name="u",
    )
    return market, membership


def test_figures_on_hand_counted_market():
    market, membership = tiny_market()
    s = summarize(market, membership)
    assert s["calendar"] == {"start": "2020-01-01", "end": "2020-01-06", "days": 4}
    assert s["members_per_day"] == {"min": 2, "median": 2.0, "max": 3}
    assert s["members_with_bars_per_day"] == {"min": 1, "median": 1.5, "max": 2}
    assert s["members_without_bars"] == {"count": 1, "symbols": ["SH601988"]}
    assert s["member_days"] == 9
    assert s["missing_bar_share"] == pytest.approx(3 / 9)  # SZ000001 day 1, SH601988 days 2-3
    assert s["suspended_share"] == pytest.approx(2 / 9)  # SZ000001 day 0, SH600000 day 2
    assert s["market_cap"]["proxy_stock_days"] == 3 and s["market_cap"]["stocks_with_shares"] == 1
    assert s["fields_all_missing"] == ["vwap"]
    assert s["warnings"]["members_without_bars"] == 1
    text = format_summary(s)
    assert "2020-01-01 .. 2020-01-06 (4 trading days)" in text and "SH601988" in text


def test_without_membership_counts_members_with_bars_only():
    market, _ = tiny_market()
    s = summarize(market)
    assert s["members_per_day"]["max"] == 2


@pytest.mark.shared_data
def test_shared_csi300_summary(shared_data):
    provider = shared_data / "cn_csi300"
    market = load_market(provider, "csi300")
    s = summarize(market, load_membership(provider, "csi300", market.calendar))
    assert s["calendar"] == {"start": "2010-01-04", "end": "2020-12-31", "days": 2674}
    assert s["members_per_day"]["median"] == 276
    assert (s["members_per_day"]["min"], s["members_per_day"]["max"]) == (264, 300)
    assert s["members_with_bars_per_day"]["min"] == 252
    assert s["members_without_bars"]["count"] == 38
    assert 0 < s["suspended_share"] < 0.1
