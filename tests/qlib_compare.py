"""Compare our feature tables with pyqlib's handlers on a tiny market (skipped when qlib is absent)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conceptalpha.features.alpha import build_feature_table
from feature_markets import make_market, random_bars


def awkward_market():
    """Random bars with suspensions (volume 0, close carried), a late listing and a gap in membership."""
    bars = random_bars(160, 5, seed=7)
    bars["volume"][40:52, 1] = 0
    bars["close"][40:52, 1] = bars["close"][39, 1]
    for name in ("open", "high", "low"):
        bars[name][40:52, 1] = bars["close"][39, 1]
    for v in bars.values():
        v[:30, 3] = np.nan  # listed on day 30
    mask = np.ones((160, 5), dtype=bool)
    mask[60:90, 2] = False
    return make_market(bars, mask)


def compare_with_qlib(tmp_path, feature_set: str, market=None) -> None:
    qlib = pytest.importorskip("qlib")
    from qlib.contrib.data.handler import Alpha158, Alpha360

    from conceptalpha.data.qlib import write_qlib

    market = awkward_market() if market is None else market
    write_qlib(market.panel, market.universe, tmp_path / "q", universe_name="test")
    qlib.init(provider_uri=str(tmp_path / "q"), region="cn", kernels=1)
    handler = (Alpha360 if feature_set == "alpha360" else Alpha158)(
        instruments="test", infer_processors=[], learn_processors=[]
    )
    theirs = handler.fetch(col_set="feature")
    ours = build_feature_table(market, feature_set)
    theirs.index = theirs.index.set_levels(theirs.index.levels[1].str.upper(), level=1)
    assert list(theirs.columns) == list(ours.columns)
    assert theirs.index.equals(ours.index)
    a, b = theirs.to_numpy(np.float64), ours.to_numpy(np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=0)
    assert pd.notna(b).any()
