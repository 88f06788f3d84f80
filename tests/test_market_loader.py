import numpy as np
import pandas as pd
import pytest

from conceptalpha.data import BarPanel, Calendar, Universe, load_market, load_membership, write_qlib
from conceptalpha.errors import UserError


@pytest.fixture
def sources(tmp_path):
    cal = Calendar(pd.bdate_range("2020-01-01", periods=3))
    close = np.array([[10.0, 5.0], [11.0, 5.0], [12.0, np.nan]], dtype=np.float32)
    panel = BarPanel(cal, np.array(["SH600000", "SZ000001"]), {"close": close, "volume": close, "open": close, "high": close, "low": close})
    uni = Universe("csi300", cal, panel.instruments, np.array([[1, 0], [1, 1], [1, 1]], dtype=bool))
    write_qlib(panel, uni, tmp_path / "qlib", universe_name="csi300")
    frame = panel.to_frame().reset_index().rename(columns={"datetime": "date"})
    frame.to_csv(tmp_path / "bars.csv", index=False)
    (tmp_path / "csi300.txt").write_text((tmp_path / "qlib" / "instruments" / "csi300.txt").read_text())
    (tmp_path / "shares_a.csv").write_text("instrument,shares\nSH600000,100\n")
    (tmp_path / "shares_b.csv").write_text("instrument,shares\nSH600000,999\nSZ000001,50\n")
    return tmp_path


def test_both_sources_give_the_same_market(sources):
    shares = [sources / "shares_a.csv", sources / "shares_b.csv"]
    from_qlib = load_market(sources / "qlib", "csi300", shares=shares)
    from_table = load_market(sources / "bars.csv", "csi300", shares=shares)
    for m in (from_qlib, from_table):
        assert list(m.panel.instruments) == ["SH600000", "SZ000001"]
        np.testing.assert_array_equal(m.universe.mask, [[1, 0], [1, 1], [1, 1]])
        assert m.shares.to_dict() == {"SH600000": 100.0, "SZ000001": 50.0}
    np.testing.assert_array_equal(from_qlib.panel.fields["close"], from_table.panel.fields["close"])
    assert load_membership(sources / "bars.csv", "all", from_table.calendar) is None
    assert load_membership(sources / "qlib", "csi300", from_qlib.calendar).mask.sum() == 5


def test_unknown_provider(tmp_path):
    with pytest.raises(UserError, match="not market data"):
        load_market(tmp_path)
