"""Processors: robust z-score with clip and fill, label normalisations, drop-missing."""

from __future__ import annotations

import numpy as np
import pytest

from conceptalpha.errors import UserError
from conceptalpha.features.processors import (
    RobustZScore,
    cs_rank,
    cs_zscore,
    drop_extreme_labels,
    drop_missing,
    normalize_labels,
)


def test_robust_zscore_hand_case():
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, np.nan], [100.0, 5.0]], dtype=np.float32)
    norm = RobustZScore.fit(x, clip=3.0)
    np.testing.assert_allclose(norm.median, [3.0, 5.0])
    # MAD of column 0: |x - 3| = 2,1,0,1,97 → median 1
    assert norm.scale[0] == pytest.approx(1.4826 * (1 + 1e-12))
    z = norm.transform(np.array([[4.0, 5.0], [100.0, np.nan], [-50.0, 5.0]], dtype=np.float32))
    assert z[0, 0] == pytest.approx(1 / 1.4826, rel=1e-6)
    assert z[1, 0] == 3.0 and z[2, 0] == -3.0  # clipped
    assert z[0, 1] == 0.0  # constant feature maps to 0, not inf
    assert z[1, 1] == 0.0  # missing → 0
    assert z.dtype == np.float32


def test_all_missing_feature_and_infinities():
    x = np.array([[np.nan, 1.0], [np.nan, np.inf], [np.nan, 3.0]], dtype=np.float32)
    norm = RobustZScore.fit(x)
    assert norm.median[0] == 0 and norm.scale[0] == 1 and norm.median[1] == 2.0
    z = norm.transform(x)
    assert (z[:, 0] == 0).all() and z[1, 1] == 3.0


def test_state_round_trip_and_multi_dim_features():
    x = np.random.default_rng(0).normal(size=(50, 6, 60)).astype(np.float32)
    norm = RobustZScore.fit(x, clip=2.5)
    again = RobustZScore.from_state(norm.state())
    assert norm.median.shape == (6, 60)
    np.testing.assert_array_equal(norm.transform(x.copy()), again.transform(x.copy()))
    assert np.abs(norm.transform(x)).max() <= 2.5


def test_cross_sectional_rank_per_day():
    y = np.array([0.1, 0.3, 0.2, np.nan, 5.0, -1.0, 5.0], dtype=np.float32)
    day = np.array([0, 0, 0, 0, 1, 1, 1])
    r = cs_rank(y, day)
    np.testing.assert_allclose(r[:3], (np.array([1, 3, 2]) / 3 - 0.5) * 3.46, rtol=1e-6)
    assert np.isnan(r[3])
    np.testing.assert_allclose(r[4:], (np.array([2.5, 1, 2.5]) / 3 - 0.5) * 3.46, rtol=1e-6)


def test_cross_sectional_zscore_per_day():
    y = np.array([1.0, 2.0, 3.0, np.nan, 10.0, 30.0], dtype=np.float32)
    day = np.array([0, 0, 0, 0, 1, 1])
    z = cs_zscore(y, day)
    np.testing.assert_allclose(z[:3], [-1.0, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(z[4:], [-np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    assert np.isnan(z[3])


def test_normalize_labels_dispatch_and_drop_missing():
    y = np.array([1.0, np.nan, 2.0], dtype=np.float32)
    day = np.zeros(3, dtype=int)
    np.testing.assert_array_equal(normalize_labels(y, day, "rank"), cs_rank(y, day))
    with pytest.raises(UserError, match="label normalisation"):
        normalize_labels(y, day, "minmax")
    np.testing.assert_array_equal(drop_missing(y), [0, 2])


def test_drop_extreme_labels_drops_both_tails_then_normalises_again():
    y = np.array([0.5, -9.0, 0.1, np.nan, 7.0, 0.3, -0.2, 0.0, 0.4, -0.1, 0.2], dtype=np.float32)  # 10 present
    out = drop_extreme_labels(y, 0.2, "rank")  # 0.2 · 10 / 2 = 1 per tail: -9 and 7
    assert np.flatnonzero(np.isnan(out)).tolist() == [1, 3, 4]
    kept = np.array([0.5, 0.1, 0.3, -0.2, 0.0, 0.4, -0.1, 0.2])
    np.testing.assert_allclose(out[~np.isnan(out)], cs_rank(kept, np.zeros(8)), atol=1e-6)
    z = drop_extreme_labels(y, 0.4, "zscore")  # 2 per tail: also -0.2 and 0.5
    assert np.flatnonzero(np.isnan(z)).tolist() == [0, 1, 3, 4, 6]
    assert np.nanmean(z) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_array_equal(drop_extreme_labels(y, 0.1, "rank"), y)  # 0.5 per tail rounds to none
