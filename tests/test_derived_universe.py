import numpy as np
import pandas as pd
import pytest

from conceptalpha.data import BarPanel, Calendar, Market, Universe
from conceptalpha.data.derived import largest_members, reselection_days
from conceptalpha.errors import UserError


def make_market(days: int = 160, stocks: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    cal = Calendar(pd.bdate_range("2020-05-01", periods=days))
    close = rng.uniform(5, 50, size=(days, stocks)).astype(np.float32)
    instruments = np.array([f"SH60000{i}" for i in range(stocks)])
    panel = BarPanel(cal, instruments, {"close": close})
    mask = np.ones((days, stocks), dtype=bool)
    return Market(panel, Universe("parent", cal, instruments, mask)), rng.uniform(1, 100, size=(days, stocks))


def test_reselection_days_are_last_trading_days_of_the_months():
    dates = pd.DatetimeIndex(["2020-06-29", "2020-06-30", "2020-07-01", "2020-12-30", "2020-12-31"])
    assert list(reselection_days(dates, (6, 12))) == [1]  # December is cut off by the calendar's end


def test_selection_holds_between_reselections():
    market, cap = make_market()
    uni = largest_members(market, cap, n=2, months=(6, 12))
    dates = market.calendar.dates
    r = int(np.flatnonzero((dates.month == 6) & (dates.day == 30))[0])
    assert uni.mask.sum(axis=1).tolist() == [2] * len(dates)
    np.testing.assert_array_equal(uni.mask[0], _top(cap[0], 2))
    np.testing.assert_array_equal(uni.mask[r], uni.mask[0])  # day r still uses the old selection
    np.testing.assert_array_equal(uni.mask[r + 1], _top(cap[r], 2))
    assert (uni.mask[r + 1 :] == uni.mask[r + 1]).all()  # no other re-selection in the window


def test_no_look_ahead_when_caps_change_after_reselection():
    market, cap = make_market()
    before = largest_members(market, cap, n=3)
    r = int(np.flatnonzero(market.calendar.dates.month == 6)[-1])
    perturbed = cap.copy()
    perturbed[r + 1 :] = perturbed[r + 1 :, ::-1] * 1000  # the future reverses the ranking
    after = largest_members(market, perturbed, n=3)
    np.testing.assert_array_equal(after.mask, before.mask)


def test_unknown_cap_uses_last_known_and_parent_exits_apply():
    market, cap = make_market()
    r = int(np.flatnonzero(market.calendar.dates.month == 6)[-1])
    cap[:, 0] = 1e9
    cap[r, 0] = np.nan  # suspended on the re-selection day: its previous cap counts
    market.universe.mask[r + 5 :, 0] = False  # leaves the parent index
    uni = largest_members(market, cap, n=2)
    assert uni.mask[r + 1 : r + 5, 0].all() and not uni.mask[r + 5 :, 0].any()
    assert uni.mask[r + 5].sum() == 1  # not replaced before the next re-selection


def test_bad_n():
    market, cap = make_market()
    with pytest.raises(UserError):
        largest_members(market, cap, n=0)


def _top(values, n):
    out = np.zeros(values.shape[0], dtype=bool)
    out[np.argsort(-values)[:n]] = True
    return out
