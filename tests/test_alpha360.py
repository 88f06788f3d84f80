"""Alpha360: names, hand-computed values, rows, errors, no look-ahead, and pyqlib when installed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conceptalpha.errors import UserError
from conceptalpha.features.alpha import alpha360_fields, alpha360_rows, build_feature_table, feature_names
from feature_markets import make_market, perturb_after, random_bars


def test_names_are_field_major_oldest_first():
    names = feature_names("alpha360")
    assert len(names) == 360 and len(set(names)) == 360
    assert names[:2] == ["CLOSE59", "CLOSE58"] and names[59] == "CLOSE0"
    assert names[60] == "OPEN59" and names[299] == "VWAP0" and names[-1] == "VOLUME0"


def test_values_match_hand_computation():
    bars = random_bars(70, 2, vwap=True)
    table = build_feature_table(make_market(bars), "alpha360")
    date = table.index.get_level_values("datetime").unique()[65]
    row = table.loc[(date, "SH600001")]
    c, v = bars["close"][:, 1], bars["volume"][:, 1]
    assert row["CLOSE59"] == np.float32(c[6] / c[65])
    assert row["CLOSE0"] == 1.0
    assert row["OPEN0"] == np.float32(bars["open"][65, 1] / c[65])
    assert row["HIGH10"] == np.float32(bars["high"][55, 1] / c[65])
    assert row["LOW1"] == np.float32(bars["low"][64, 1] / c[65])
    assert row["VWAP30"] == np.float32(bars["vwap"][35, 1] / c[65])
    assert row["VOLUME3"] == np.float32(v[62] / (v[65] + np.float32(1e-12)))


def test_early_days_and_missing_days_are_nan():
    bars = random_bars(30, 1)
    bars["close"][5, 0] = np.nan  # a day without a bar
    table = build_feature_table(make_market(bars), "alpha360")
    dates = table.index.get_level_values("datetime")
    assert pd.Timestamp("2020-01-08") not in set(dates)  # day 5 has no close: no row
    row = table.iloc[10]  # day 11 (day 5 dropped)
    assert row[[f"CLOSE{k}" for k in range(12, 60)]].isna().all()
    assert np.isnan(row["CLOSE6"])  # Ref(close, 6) at day 11 is day 5: missing stays missing
    assert row["CLOSE11"] == np.float32(bars["close"][0, 0] / bars["close"][11, 0])
    assert row[[f"VWAP{k}" for k in range(60)]].isna().all()  # the data has no vwap


def test_rows_are_members_with_a_close_sorted_by_day_then_symbol():
    bars = random_bars(8, 3)
    mask = np.ones((8, 3), dtype=bool)
    mask[:4, 0] = False
    bars["close"][6, 2] = np.nan
    market = make_market(bars, mask, instruments=["SZ000002", "SH600000", "SH600001"])
    table = build_feature_table(market, "alpha360", "2020-01-02", None)
    idx = table.index
    assert idx.names == ["datetime", "instrument"]
    assert idx.is_monotonic_increasing
    assert len(table) == 7 * 3 - 3 - 1
    assert ("2020-01-02", "SZ000002") not in idx
    assert table.dtypes.unique().tolist() == [np.float32]


def test_on_the_fly_rows_equal_the_table():
    bars = random_bars(80, 4, vwap=True)
    market = make_market(bars)
    table = build_feature_table(market, "alpha360")
    t = np.arange(80).repeat(4)
    i = np.tile(np.arange(4), 80)
    rows = alpha360_rows(alpha360_fields(market.panel), t, i).reshape(len(t), -1)
    np.testing.assert_array_equal(rows, table.to_numpy())


def test_no_look_ahead():
    bars = random_bars(90, 3)
    cut = 70
    before = build_feature_table(make_market(bars), "alpha360")
    after = build_feature_table(make_market(perturb_after(bars, cut)), "alpha360")
    last = before.index.get_level_values("datetime").unique()[cut]
    pd.testing.assert_frame_equal(before.loc[:last], after.loc[:last])
    assert not before.loc[last:].iloc[3:].equals(after.loc[last:].iloc[3:])


def test_bad_requests_are_user_errors():
    market = make_market(random_bars(10, 2))
    with pytest.raises(UserError, match="unknown feature set"):
        build_feature_table(market, "alpha999")
    with pytest.raises(UserError, match="no trading day"):
        build_feature_table(market, "alpha360", "2031-01-01", "2031-02-01")
    empty = make_market(random_bars(10, 2), mask=np.zeros((10, 2), dtype=bool))
    with pytest.raises(UserError, match="no member"):
        build_feature_table(empty, "alpha360")


def test_matches_pyqlib(tmp_path):
    from qlib_compare import compare_with_qlib

    compare_with_qlib(tmp_path, "alpha360")
