"""Alpha158: names, hand-computed values, operator semantics, no look-ahead, and pyqlib when installed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conceptalpha.features import ops
from conceptalpha.features.alpha import build_feature_table, feature_names, feature_rows
from feature_markets import make_market, perturb_after, random_bars

T, I = 75, 1  # the hand-checked row: day 75 of instrument 1


@pytest.fixture(scope="module")
def case():
    bars = random_bars(90, 3, seed=3)
    table = build_feature_table(make_market(bars), "alpha158")
    date = table.index.get_level_values("datetime").unique()[T]
    b = {k: v[:, I].astype(np.float64) for k, v in bars.items()}
    return b, table.loc[(date, f"SH60000{I}")]


def test_names_in_qlib_order():
    names = feature_names("alpha158")
    assert len(names) == 158 and len(set(names)) == 158
    assert names[:9] == ["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2"]
    assert names[9:13] == ["OPEN0", "HIGH0", "LOW0", "VWAP0"]
    assert names[13:18] == ["ROC5", "ROC10", "ROC20", "ROC30", "ROC60"]
    assert names[13 + 5 * 7 : 13 + 5 * 8] == [f"MIN{w}" for w in (5, 10, 20, 30, 60)]
    assert names[-1] == "VSUMD60"


def _window(x, w):
    return x[T - w + 1 : T + 1]


def _expected(b, w):
    """Each rolling feature at (T, I) from its definition, in float64."""
    c, h, lo, v = b["close"], b["high"], b["low"], b["volume"]
    y, x = _window(c, w), np.arange(1, w + 1)
    slope, intercept = np.polyfit(x, y, 1)
    ret, dv = c[1:] / c[:-1], v[1:] - v[:-1]
    dc = c[1:] - c[:-1]
    dcw, dvw = dc[T - w : T], dv[T - w : T]
    chv = np.abs(ret - 1) * v[1:]
    rank = pd.Series(y).rank().iloc[-1] / w
    return {
        "ROC": c[T - w] / c[T],
        "MA": y.mean() / c[T],
        "STD": y.std(ddof=1) / c[T],
        "BETA": slope / c[T],
        "RSQR": np.corrcoef(x, y)[0, 1] ** 2,
        "RESI": (y[-1] - (slope * w + intercept)) / c[T],
        "MAX": _window(h, w).max() / c[T],
        "MIN": _window(lo, w).min() / c[T],
        "QTLU": np.quantile(y, 0.8) / c[T],
        "QTLD": np.quantile(y, 0.2) / c[T],
        "RANK": rank,
        "RSV": (c[T] - _window(lo, w).min()) / (_window(h, w).max() - _window(lo, w).min() + 1e-12),
        "IMAX": (np.argmax(_window(h, w)) + 1) / w,
        "IMIN": (np.argmin(_window(lo, w)) + 1) / w,
        "IMXD": (np.argmax(_window(h, w)) - np.argmin(_window(lo, w))) / w,
        "CORR": np.corrcoef(y, np.log(_window(v, w) + 1))[0, 1],
        "CORD": np.corrcoef(ret[T - w : T], np.log(v[1:] / v[:-1] + 1)[T - w : T])[0, 1],
        "CNTP": np.mean(dcw > 0),
        "CNTN": np.mean(dcw < 0),
        "CNTD": np.mean(dcw > 0) - np.mean(dcw < 0),
        "SUMP": np.maximum(dcw, 0).sum() / (np.abs(dcw).sum() + 1e-12),
        "SUMN": np.maximum(-dcw, 0).sum() / (np.abs(dcw).sum() + 1e-12),
        "SUMD": (np.maximum(dcw, 0).sum() - np.maximum(-dcw, 0).sum()) / (np.abs(dcw).sum() + 1e-12),
        "VMA": _window(v, w).mean() / v[T],
        "VSTD": _window(v, w).std(ddof=1) / v[T],
        "WVMA": chv[T - w : T].std(ddof=1) / (chv[T - w : T].mean() + 1e-12),
        "VSUMP": np.maximum(dvw, 0).sum() / (np.abs(dvw).sum() + 1e-12),
        "VSUMN": np.maximum(-dvw, 0).sum() / (np.abs(dvw).sum() + 1e-12),
        "VSUMD": (np.maximum(dvw, 0).sum() - np.maximum(-dvw, 0).sum()) / (np.abs(dvw).sum() + 1e-12),
    }


@pytest.mark.parametrize("w", [5, 10, 20, 30, 60])
def test_rolling_features_match_their_definitions(case, w):
    b, row = case
    for name, value in _expected(b, w).items():
        assert row[f"{name}{w}"] == pytest.approx(value, rel=2e-5, abs=1e-6), f"{name}{w}"


def test_candlestick_and_price_features(case):
    b, row = case
    o, h, lo, c = (b[k][T] for k in ("open", "high", "low", "close"))
    rng = h - lo + 1e-12
    expected = {
        "KMID": (c - o) / o, "KLEN": (h - lo) / o, "KMID2": (c - o) / rng,
        "KUP": (h - max(o, c)) / o, "KUP2": (h - max(o, c)) / rng,
        "KLOW": (min(o, c) - lo) / o, "KLOW2": (min(o, c) - lo) / rng,
        "KSFT": (2 * c - h - lo) / o, "KSFT2": (2 * c - h - lo) / rng,
        "OPEN0": o / c, "HIGH0": h / c, "LOW0": lo / c,
    }
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, rel=1e-5), name
    assert np.isnan(row["VWAP0"])


def _late_series_with_gaps(seed=0):
    rng = np.random.default_rng(seed)
    a = (10 + rng.normal(0, 1, (120, 4)).cumsum(axis=0)).astype(np.float32)
    a[:25, 1] = np.nan  # starts late
    a[[50, 51, 80], 2] = np.nan  # missing days inside
    a[60:70, 3] = a[59, 3]  # constant stretch
    return a


@pytest.mark.parametrize("w", [5, 20, 60])
def test_rolling_ops_equal_pandas_on_each_series(w):
    a = _late_series_with_gaps()
    b = np.log(np.abs(a) + 1).astype(np.float32)
    for j in range(a.shape[1]):
        s = pd.Series(a[:, j].astype(np.float64))
        r = s.rolling(w, min_periods=1)
        for got, want in [
            (ops.rolling_mean(a, w), r.mean()), (ops.rolling_sum(a, w), r.sum()), (ops.rolling_std(a, w), r.std()),
            (ops.rolling_max(a, w), r.max()), (ops.rolling_min(a, w), r.min()),
            (ops.rolling_quantile(a, w, 0.8), r.quantile(0.8)), (ops.rolling_rank(a, w), r.rank(pct=True)),
        ]:
            np.testing.assert_allclose(got[:, j], want.to_numpy(), rtol=1e-12, atol=1e-12)
        corr = r.corr(pd.Series(b[:, j].astype(np.float64))).to_numpy()
        np.testing.assert_allclose(ops.rolling_corr(a, b, w)[:, j][~np.isnan(ops.rolling_corr(a, b, w)[:, j])],
                                   corr[~np.isnan(ops.rolling_corr(a, b, w)[:, j])], rtol=1e-10)


@pytest.mark.parametrize("w", [5, 20])
def test_idxmax_follows_numpy_argmax_on_the_series_from_its_first_bar(w):
    a = _late_series_with_gaps()
    first = ops.first_bar(a)
    got = ops.rolling_idxmax(a, (w,), first)[w]
    got_min = ops.rolling_idxmin(a, (w,), first)[w]
    for j in range(a.shape[1]):
        s = pd.Series(a[first[j] :, j].astype(np.float64)).rolling(w, min_periods=1)
        np.testing.assert_array_equal(got[first[j] :, j], s.apply(lambda x: x.argmax() + 1, raw=True).to_numpy())
        np.testing.assert_array_equal(got_min[first[j] :, j], s.apply(lambda x: x.argmin() + 1, raw=True).to_numpy())
        assert np.isnan(got[: first[j], j]).all()


def test_regression_skips_missing_days_but_keeps_their_positions():
    a = _late_series_with_gaps()
    w = 10
    slope, rsq, resid = ops.regression(a, (w,))[w]
    for t in (35, 55, 85):
        y = a[t - w + 1 : t + 1, 2].astype(np.float64)
        x = np.arange(1, w + 1)
        ok = ~np.isnan(y)
        k, c = np.polyfit(x[ok], y[ok], 1)
        assert slope[t, 2] == pytest.approx(k, rel=1e-9)
        assert rsq[t, 2] == pytest.approx(np.corrcoef(x[ok], y[ok])[0, 1] ** 2, rel=1e-9)
        if ok[-1]:
            assert resid[t, 2] == pytest.approx(y[-1] - (k * w + c), rel=1e-6, abs=1e-9)
    assert np.isnan(rsq[68:70, 3]).all()  # windows of one repeated value (days 59..69): R² undefined
    assert np.isnan(resid[50, 2])  # today's value missing


def test_count_features_treat_the_first_day_as_no_change():
    bars = random_bars(12, 1, seed=5)
    table = build_feature_table(make_market(bars), "alpha158")
    c = bars["close"][:, 0].astype(np.float64)
    up = np.r_[0.0, (c[1:] > c[:-1]).astype(float)]  # day 0: close > NaN is False (Qlib)
    np.testing.assert_allclose(table["CNTP5"].to_numpy()[:3], [up[:k + 1].mean() for k in range(3)], rtol=1e-6)
    assert table["MA5"].iloc[2] == pytest.approx(c[:3].mean() / c[2], rel=1e-6)  # min_periods = 1
    assert np.isnan(table["STD5"].iloc[0])  # one value: no sample std


def test_no_look_ahead():
    bars = random_bars(100, 3, seed=2)
    cut = 80
    before = build_feature_table(make_market(bars), "alpha158")
    after = build_feature_table(make_market(perturb_after(bars, cut)), "alpha158")
    last = before.index.get_level_values("datetime").unique()[cut]
    pd.testing.assert_frame_equal(before.loc[:last], after.loc[:last])
    assert not before.loc[last:].iloc[3:].equals(after.loc[last:].iloc[3:])


def test_matches_pyqlib(tmp_path):
    from qlib_compare import compare_with_qlib

    compare_with_qlib(tmp_path, "alpha158")


def test_a_nearly_constant_segment_end_packed_above_another_segment_is_not_replayed_in_the_gap():
    """Regression: the gap rows after a packed segment hold windows of its last values; a nearly
    constant tail made them 'fragile', so they were replayed from panel day −1 (an empty series:
    ValueError in the Welford replay, seen in rolling Alpha158 windows on CSI300)."""
    bars = random_bars(300, 2, seed=1)
    for k in ("open", "high", "low", "close"):  # days 77..80 of instrument 0: std/mean ≈ 5e-6
        bars[k][77:81, 0] = bars[k][76, 0] * 1.3 + np.array([0, 1e-3, 0, 1e-3], np.float32)
    panel = make_market(bars).panel
    t = np.r_[np.arange(62, 81), np.arange(250, 261)]  # short segments: both packed into one column
    i = np.r_[np.zeros(19, int), np.ones(11, int)]
    both = feature_rows(panel, "alpha158", t, i, start=62)
    alone = [feature_rows(panel, "alpha158", t[i == k], i[i == k], start=62) for k in (0, 1)]
    np.testing.assert_array_equal(both, np.vstack(alone))  # packing changes no value


def test_replays_refuse_days_before_the_series_start():
    series = lambda j, w, days: (np.ones((days, len(j))),)
    with pytest.raises(ValueError, match="before the series' start"):
        ops.replay_cells({5: (np.array([-1]), np.array([0]), 5)}, series, ops.replay_std)


def test_replays_and_running_sums_of_no_days_or_no_lanes_are_empty():
    assert ops.replay_std(np.empty((0, 2)), [5, 5]).shape == (0, 2)
    assert ops.replay_std(np.empty((4, 0)), np.empty(0, int)).shape == (4, 0)
    assert ops.replay_corr(np.empty((0, 2)), np.empty((0, 2)), [5, 5]).shape == (0, 2)
    assert all(f.shape == (0, 2, 3) for f in ops.regression_lanes(np.empty((0, 3)), np.array([[5], [10]])))
    assert ops.running_squares(np.empty((0, 3)), np.array([[5], [10]])).shape == (0, 2, 3)
