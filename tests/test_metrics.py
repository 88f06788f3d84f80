"""Factor metrics against independent computations (scipy, pandas, by hand), with ties and NaNs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conceptalpha.errors import UserError
from conceptalpha.evaluation.metrics import (
    daily_ic,
    factor_summary,
    ic_summary,
    long_short_spread,
    precision_recall_at_k,
    quantile_groups,
    quantile_returns,
    rank_autocorrelation,
    top_group_turnover,
)


def random_predictions(days=12, n=23, seed=0) -> pd.DataFrame:
    """Scores rounded to one decimal (many ties), labels with ties, ~10% NaN in each."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2019-12-20", periods=days)  # spans two years
    frame = pd.DataFrame(
        {
            "datetime": np.repeat(dates, n),
            "instrument": np.tile([f"S{i:02d}" for i in range(n)], days),
            "score": np.round(rng.normal(size=days * n), 1),
            "label": np.round(rng.normal(0, 0.02, size=days * n), 3),
        }
    )
    frame.loc[rng.random(len(frame)) < 0.1, "score"] = np.nan
    frame.loc[rng.random(len(frame)) < 0.1, "label"] = np.nan
    return frame.sample(frac=1.0, random_state=1)  # row order must not matter


def per_day(frame):
    for date, day in frame.dropna(subset=["score", "label"]).groupby("datetime"):
        yield date, day.sort_values("instrument")


def test_ic_and_rank_ic_match_scipy_with_ties_and_nans():
    frame = random_predictions()
    ic, rank_ic = daily_ic(frame, "pearson"), daily_ic(frame, "spearman")
    for date, day in per_day(frame):
        assert ic[date] == pytest.approx(stats.pearsonr(day["score"], day["label"])[0], abs=1e-12)
        assert rank_ic[date] == pytest.approx(stats.spearmanr(day["score"], day["label"])[0], abs=1e-12)


def test_ic_is_nan_on_degenerate_days_and_summary_skips_them():
    frame = pd.DataFrame(
        {
            "datetime": pd.to_datetime(["2020-01-02"] * 3 + ["2020-01-03"] * 3 + ["2020-01-06"] * 2 + ["2020-01-07"] * 3),
            "instrument": list("ABC") + list("ABC") + list("AB") + list("ABC"),
            "score": [0.1, 0.1, 0.1, 1, 2, 3, 1, np.nan, 1, 2, 3],
            "label": [0.1, 0.2, 0.3, 1, 2, 4, 1, 2, 3, 2, 1],
        }
    )
    ic = daily_ic(frame)
    assert np.isnan(ic[pd.Timestamp("2020-01-02")])  # constant score
    assert np.isnan(ic[pd.Timestamp("2020-01-06")])  # one valid row
    assert ic[pd.Timestamp("2020-01-07")] == pytest.approx(-1.0)
    summary = ic_summary(ic)
    values = ic.dropna().to_numpy()
    assert summary["n_days"] == 2
    assert summary["mean"] == pytest.approx(values.mean())
    assert summary["std"] == pytest.approx(values.std(ddof=1))
    assert summary["t_stat"] == pytest.approx(values.mean() / values.std(ddof=1) * np.sqrt(2))


def test_ic_summary_by_hand():
    ic = pd.Series([0.1, 0.3, np.nan, 0.2])
    summary = ic_summary(ic)
    assert summary["mean"] == pytest.approx(0.2)
    assert summary["std"] == pytest.approx(0.1)
    assert summary["ir"] == pytest.approx(2.0)
    assert summary["t_stat"] == pytest.approx(2.0 * np.sqrt(3))
    assert summary["positive_share"] == 1.0


def test_precision_and_recall_by_hand_with_ties():
    frame = pd.DataFrame(
        {
            "datetime": pd.Timestamp("2020-01-02"),
            "instrument": ["E", "D", "C", "B", "A", "F"],
            "score": [5.0, 4.0, 4.0, 3.0, 2.0, np.nan],
            "label": [0.01, -0.01, 0.02, 0.03, -0.02, 0.05],
        }
    )
    precision, recall = precision_recall_at_k(frame, ks=(1, 2, 3, 10))
    # order: E(5), C(4, tie with D broken by name), D(4), B(3), A(2); F has no score
    assert precision.iloc[0].tolist() == pytest.approx([1.0, 1.0, 2 / 3, 3 / 5])
    # three valid stocks with label > 0: E, C, B
    assert recall.iloc[0].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1.0])


def test_precision_at_k_matches_pandas_nlargest():
    frame = random_predictions(n=40)
    precision, recall = precision_recall_at_k(frame, ks=(5, 10))
    for date, day in per_day(frame):
        top = day.sort_values(["score", "instrument"], ascending=[False, True]).head(5)
        assert precision.loc[date, 5] == pytest.approx((top["label"] > 0).mean())
        assert recall.loc[date, 5] == pytest.approx((top["label"] > 0).sum() / (day["label"] > 0).sum())


def test_quantile_groups_match_qcut_of_ranks():
    frame = random_predictions(n=37)
    grouped = quantile_groups(frame, 5)
    for date, day in per_day(frame):
        expected = pd.qcut(day["score"].rank(method="first"), 5, labels=False) + 1
        got = grouped[grouped["datetime"] == date].set_index("instrument")["group"]
        assert got.reindex(day["instrument"]).tolist() == expected.tolist()


def test_quantile_returns_and_long_short_by_hand():
    frame = pd.DataFrame(
        {
            "datetime": pd.Timestamp("2020-01-02"),
            "instrument": list("ABCDEFGHIJ"),
            "score": np.arange(10.0),
            "label": [1.0, 3.0, 0.0, 0.0, 5.0, 5.0, 0.0, 2.0, 4.0, 8.0],
        }
    )
    q = quantile_returns(frame, 5)
    assert q.iloc[0].tolist() == pytest.approx([2.0, 0.0, 5.0, 1.0, 6.0])
    assert long_short_spread(q).iloc[0] == pytest.approx(4.0)


def test_top_group_turnover_by_hand():
    days = pd.to_datetime(["2020-01-02"] * 4 + ["2020-01-03"] * 4 + ["2020-01-06"] * 4)
    frame = pd.DataFrame(
        {
            "datetime": days,
            "instrument": list("ABCD") * 3,
            "score": [4, 3, 2, 1, 3, 4, 2, 1, 1, 2, 3, 4],
            "label": 0.0,
        }
    )
    turnover = top_group_turnover(frame, n_groups=2)  # top half: {A,B}, {A,B}, {C,D}
    assert np.isnan(turnover.iloc[0])
    assert turnover.iloc[1:].tolist() == [0.0, 1.0]


def test_rank_autocorrelation_matches_scipy_over_common_instruments():
    frame = random_predictions()
    auto = rank_autocorrelation(frame)
    valid = frame.dropna(subset=["score", "label"])
    wide = valid.pivot(index="datetime", columns="instrument", values="score")
    for i in range(1, len(wide)):
        pair = pd.concat([wide.iloc[i], wide.iloc[i - 1]], axis=1).dropna()
        assert auto.iloc[i] == pytest.approx(stats.spearmanr(pair.iloc[:, 0], pair.iloc[:, 1])[0], abs=1e-12)
    assert np.isnan(auto.iloc[0])


def test_factor_summary_whole_window_and_by_year():
    frame = random_predictions()
    summary = factor_summary(frame)
    assert set(summary["by_year"]) == {2019, 2020}
    ic = daily_ic(frame)
    assert summary["all"]["IC"] == pytest.approx(ic.mean())
    assert summary["by_year"][2020]["IC"] == pytest.approx(ic[ic.index.year == 2020].mean())
    assert summary["by_year"][2019]["n_days"] + summary["by_year"][2020]["n_days"] == summary["all"]["n_days"]
    for k in (1, 3, 5, 10, 20, 30, 50, 100):
        assert f"precision@{k}" in summary["all"] and f"recall@{k}" in summary["all"]


def test_accepts_a_multiindex_and_rejects_bad_tables():
    frame = random_predictions()
    indexed = frame.set_index(["datetime", "instrument"])
    pd.testing.assert_series_equal(daily_ic(indexed), daily_ic(frame))
    with pytest.raises(UserError, match="label"):
        daily_ic(frame.drop(columns="label"))
    with pytest.raises(UserError, match="duplicate"):
        daily_ic(pd.concat([frame, frame]))
    with pytest.raises(UserError, match="method"):
        daily_ic(frame, "kendall")
