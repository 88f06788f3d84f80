"""``conceptalpha features build``: the table written, its history, and one-line errors."""

from __future__ import annotations

import pandas as pd
import pytest

from conceptalpha.data.qlib import load_qlib, write_qlib
from conceptalpha.features.alpha import build_feature_table
from feature_markets import make_market, random_bars
from cli_helpers import run




@pytest.fixture
def provider(tmp_path):
    market = make_market(random_bars(120, 3, seed=4))
    write_qlib(market.panel, market.universe, tmp_path / "q", universe_name="csi300")
    return tmp_path / "q"


@pytest.mark.parametrize("feature_set", ["alpha360", "alpha158"])
def test_build_writes_the_table_with_history_before_start(provider, tmp_path, monkeypatch, capsys, feature_set):
    out = tmp_path / "f.parquet"
    args = ["features", "build", "--provider", str(provider), "--features", feature_set,
            "--start", "2020-04-01", "--end", "2020-05-29", "--out", str(out)]
    code, stdout, _ = run(args, monkeypatch, capsys)
    assert code == 0 and "wrote" in stdout
    table = pd.read_parquet(out)
    expected = build_feature_table(load_qlib(provider, "csi300"), feature_set, "2020-04-01", "2020-05-29")
    pd.testing.assert_frame_equal(table, expected)
    assert table.index.get_level_values("datetime").min() == pd.Timestamp("2020-04-01")
    oldest = "CLOSE59" if feature_set == "alpha360" else "ROC60"
    assert table[oldest].notna().all()  # the days before --start were loaded as history


@pytest.mark.parametrize(
    "extra, message",
    [(["--features", "alpha999"], "unknown feature set"),
     (["--start", "2031-01-01"], "no trading day"),
     (["--universe", "csi999"], "csi999")],
)
def test_bad_input_is_one_line_error(provider, tmp_path, monkeypatch, capsys, extra, message):
    args = ["features", "build", "--provider", str(provider), "--out", str(tmp_path / "f.parquet"), *extra]
    code, _, err = run(args, monkeypatch, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "f.parquet").exists()


def test_out_must_be_parquet(provider, tmp_path, monkeypatch, capsys):
    code, _, err = run(["features", "build", "--provider", str(provider), "--out", str(tmp_path / "f.csv")],
                       monkeypatch, capsys)
    assert code == 2 and ".parquet" in err
