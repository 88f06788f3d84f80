import numpy as np
import pandas as pd
import pytest

from conceptalpha.data import Calendar, Universe
from conceptalpha.errors import UserError


def test_calendar_rejects_unsorted_and_duplicates():
    with pytest.raises(UserError):
        Calendar(pd.DatetimeIndex(["2020-01-03", "2020-01-02"]))
    with pytest.raises(UserError):
        Calendar(pd.DatetimeIndex(["2020-01-02", "2020-01-02"]))


def test_universe_maps_non_trading_interval_dates_onto_calendar():
    cal = Calendar(pd.DatetimeIndex(["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]))
    intervals = pd.DataFrame(
        {
            "instrument": ["SH600000", "SZ000001", "SZ000001"],
            "start": ["2020-01-04", "2020-01-01", "2020-01-07"],  # Saturday → Monday
            "end": ["2020-01-31", "2020-01-02", "2020-01-07"],
        }
    )
    uni = Universe.from_intervals("u", cal, intervals)
    assert list(uni.instruments) == ["SH600000", "SZ000001"]
    np.testing.assert_array_equal(uni.mask[:, 0], [False, False, True, True])
    np.testing.assert_array_equal(uni.mask[:, 1], [True, False, False, True])


def test_calendar_window_outside_range_is_an_error():
    cal = Calendar(pd.DatetimeIndex(["2020-01-02", "2020-01-03"]))
    assert cal.window("2020-01-01", "2020-01-02") == slice(0, 1)
    with pytest.raises(UserError):
        cal.window("2021-01-01", "2021-02-01")
