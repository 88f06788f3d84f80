"""Exports: Qlib's pred.pkl layout and the alphalens factor series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conceptalpha.errors import UserError
from conceptalpha.evaluation.export import export_qlib_pred, qlib_pred_frame, to_alphalens_factor


def predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "datetime": ["2020-01-03", "2020-01-02", "2020-01-02", "2020-01-03"],
            "instrument": ["SH600000", "SZ000001", "SH600000", "SZ000001"],
            "score": [0.3, 0.2, np.nan, -0.1],
            "label": [0.01, 0.02, 0.03, 0.04],
            "model": "HIST",
        }
    )


def test_pred_pkl_has_qlib_layout(tmp_path):
    path = export_qlib_pred(predictions(), tmp_path / "out" / "pred.pkl")
    loaded = pd.read_pickle(path)  # our own file, just written
    assert list(loaded.columns) == ["score"]
    assert loaded.index.names == ["datetime", "instrument"]
    assert loaded.index.is_monotonic_increasing
    assert loaded.loc[(pd.Timestamp("2020-01-03"), "SH600000"), "score"] == pytest.approx(0.3)
    assert loaded["score"].dtype == np.float64
    assert len(loaded) == 4 and list(tmp_path.joinpath("out").iterdir()) == [path]


def test_alphalens_factor_is_a_date_asset_series_without_nans():
    factor = to_alphalens_factor(predictions())
    assert isinstance(factor, pd.Series)
    assert factor.index.names == ["date", "asset"]
    assert len(factor) == 3
    assert factor[(pd.Timestamp("2020-01-03"), "SZ000001")] == pytest.approx(-0.1)
    assert isinstance(factor.index.get_level_values("date"), pd.DatetimeIndex)


def test_multiindex_input_and_bad_tables():
    indexed = predictions().assign(datetime=lambda f: pd.to_datetime(f["datetime"])).set_index(["datetime", "instrument"])
    pd.testing.assert_frame_equal(qlib_pred_frame(indexed), qlib_pred_frame(predictions()))
    with pytest.raises(UserError, match="duplicate"):
        qlib_pred_frame(pd.concat([predictions(), predictions()]))
    with pytest.raises(UserError, match="score"):
        to_alphalens_factor(predictions().drop(columns="score"))


def test_parquet_export_round_trips_and_other_suffixes_are_refused(tmp_path):
    path = export_qlib_pred(predictions(), tmp_path / "pred.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), qlib_pred_frame(predictions()), check_index_type=False)
    with pytest.raises(UserError, match=r"\.pkl or \.parquet"):
        export_qlib_pred(predictions(), tmp_path / "pred.csv")
