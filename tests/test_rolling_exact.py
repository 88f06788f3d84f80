"""Near-constant windows: pyqlib's values there are rounding carried from the whole series, and ours reproduce them.

pyqlib computes Std and Corr with pandas 2's running kernels and Rsquare with its
own running sums, all started at the first day it loads. The reference values
below were recorded from pandas 2.3.3 and pyqlib 0.9.7 (the versions the
comparison environment runs) on :func:`stuck_after_history`; they are also
checked live when that pandas or qlib is installed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conceptalpha.features import ops
from conceptalpha.features.alpha import build_feature_table
from feature_markets import make_market, random_bars

DAYS = (245, 262, 281, 299)
JOINS = 240  # the day instrument 1 enters the universe in the market test
PANDAS_2 = int(pd.__version__.split(".")[0]) < 3

# pandas 2.3.3, whole series: .rolling(10, min_periods=1).std() and .rolling(20, min_periods=1).corr(log(volume+1))
STD10 = {245: 4.927499012042591, 262: 0.0011007487410764835, 281: 0.0008690500502851853, 299: 0.0011854451065636043}
CORR20 = {245: 0.18395863273296867, 262: 0.39737475668277644, 281: -0.2260921412189629, 299: 0.030382810056108222}
# pyqlib 0.9.7, whole series: qlib.data._libs.rolling.rolling_rsquare(close, 30)
RSQR30 = {245: 0.028837231421923442, 262: 0.4180847652092157, 281: 0.022785050329511485, 299: 0.11120611228823252}


def stuck_after_history(days: int = 300, seed: int = 10) -> np.ndarray:
    """Float32 closes: 240 volatile days, then 60 within about 1e-5 of one level."""
    rng = np.random.default_rng(seed)
    history = (1500 * np.exp(np.cumsum(rng.normal(0, 0.05, days - 60)))).astype(np.float32)
    tail = (history[-1] * (1 + np.float32(1e-5) * rng.normal(0, 1, 60))).astype(np.float32)
    return np.concatenate([history, tail])


def volumes(days: int = 300, seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).integers(1_000, 100_000, days).astype(np.float32)


def log_volume() -> np.ndarray:
    return np.log(volumes() + np.float32(1))


def at_days(values: np.ndarray) -> np.ndarray:
    return np.array([values[t] for t in DAYS])


def test_std_carries_pandas_rounding_on_near_constant_windows():
    close = stuck_after_history()
    got = ops.rolling_std(close[:, None], 10)[:, 0]
    exact = np.array([np.std(close[t - 9 : t + 1].astype(np.float64), ddof=1) for t in DAYS])
    np.testing.assert_allclose(at_days(got), list(STD10.values()), rtol=1e-12)
    assert np.abs(at_days(got)[1:] / exact[1:] - 1).min() > 1e-4  # the rounding is visible
    # The installed pandas agrees on every day (pandas 3.1.1 too, on this series).
    want = pd.Series(close.astype(np.float64)).rolling(10, min_periods=1).std().to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_corr_replay_matches_pandas_2():
    close, logvol = stuck_after_history()[:, None], log_volume()[:, None]
    got = ops.replay_corr(close, logvol, [20])[:, 0]
    np.testing.assert_allclose(at_days(got), list(CORR20.values()), rtol=1e-12)
    if PANDAS_2:
        want = pd.Series(close[:, 0].astype(np.float64)).rolling(20, min_periods=1).corr(
            pd.Series(logvol[:, 0].astype(np.float64)))
        np.testing.assert_allclose(got, want.to_numpy(), rtol=1e-12)


def test_std_replay_matches_pandas_2_with_gaps_and_infinities():
    a = stuck_after_history()[:, None].astype(np.float64).repeat(3, axis=1)
    a[:30, 1] = np.nan  # starts late
    a[100:105, 2] = np.nan  # a gap that empties the window
    a[150, 2] = np.inf  # skipped, as pandas does
    got = ops.replay_std(a, [5, 10, 5])
    if PANDAS_2:
        for j, w in enumerate((5, 10, 5)):
            want = pd.Series(a[:, j]).rolling(w, min_periods=1).std().to_numpy()
            np.testing.assert_allclose(got[:, j], want, rtol=1e-12)
    np.testing.assert_allclose(got[:, 0], ops.rolling_std(a[:, :1], 5)[:, 0], rtol=1e-12)
    assert np.isnan(got[:31, 1]).all() and np.isnan(got[104:106, 2]).all() and not np.isnan(got[106:, 2]).any()


def test_regression_sums_match_qlib():
    close = stuck_after_history()
    slope, r2, resid = ops.regression_lanes(close[:, None], [30])
    np.testing.assert_allclose(at_days(r2[:, 0]), list(RSQR30.values()), rtol=1e-12)
    squares = ops.running_squares(close[:, None], [30])
    _, r2_given, _ = ops.regression_lanes(close[:, None], [30], squares)
    np.testing.assert_array_equal(r2_given, r2)
    try:
        from qlib.data._libs.rolling import rolling_resi, rolling_rsquare, rolling_slope
    except ImportError:
        return
    x = close.astype(np.float64)
    np.testing.assert_array_equal(slope[:, 0], rolling_slope(x, 30))
    np.testing.assert_array_equal(r2[:, 0], rolling_rsquare(x, 30))
    np.testing.assert_array_equal(resid[:, 0], rolling_resi(x, 30))


def late_stuck_market():
    """Instrument 1: bars from day 0, in the universe from day 240, its last 60 closes near-constant."""
    bars = random_bars(300, 2, seed=4)
    close = stuck_after_history()
    for name in ("open", "high", "low", "close"):
        bars[name][:, 1] = close
    bars["volume"][:, 1] = volumes()
    mask = np.ones((300, 2), dtype=bool)
    mask[:JOINS, 1] = False
    return make_market(bars, mask)


def test_alpha158_counts_rounding_from_the_first_day_qlib_loads():
    """Instrument 1 joins the universe on day 240: we compute its features from day 179 on, Qlib's series
    from day 0. On its near-constant windows STD, CORR and RSQR must still be Qlib's."""
    close = stuck_after_history()
    table = build_feature_table(late_stuck_market(), "alpha158")
    rows = table.xs("SH600001", level="instrument").iloc[[t - JOINS for t in DAYS]]
    np.testing.assert_allclose(rows["STD10"], np.float32(list(STD10.values()) / at_days(close)), rtol=1e-6)
    np.testing.assert_allclose(rows["CORR20"], np.float32(list(CORR20.values())), rtol=1e-6)
    np.testing.assert_allclose(rows["RSQR30"], np.float32(list(RSQR30.values())), rtol=1e-6)
    # From the day our packed series starts, the rounding (and the values) would differ.
    late = ops.replay_std(close[JOINS - 61 :, None], [10])[:, 0]
    assert not np.allclose(at_days(np.r_[np.full(JOINS - 61, np.nan), late])[1:], list(STD10.values())[1:], rtol=1e-5)


def test_matches_pyqlib_on_a_late_near_constant_instrument(tmp_path):
    from qlib_compare import compare_with_qlib

    compare_with_qlib(tmp_path, "alpha158", late_stuck_market())
