import numpy as np
import pandas as pd
import pytest

from conceptalpha.data import BarPanel, Calendar
from conceptalpha.data.market_cap import market_cap, merge_shares, parse_equity, read_shares
from conceptalpha.errors import DataError


def test_parse_equity_units():
    assert parse_equity("16.31亿") == pytest.approx(1.631e9)
    assert parse_equity("6120.00万") == pytest.approx(6.12e7)
    assert parse_equity("1234") == 1234.0
    assert np.isnan(parse_equity("-"))
    with pytest.raises(ValueError):
        parse_equity("12 shares")


def test_read_the_three_table_kinds(tmp_path):
    tushare = tmp_path / "tushare_industry.csv"
    tushare.write_text("name,ts_code,industry,total_shares_10k\nA,000001.SZ,bank,100.5\nB,600000.SH,bank,\n", encoding="utf-8")
    s = read_shares(tushare)
    assert s.to_dict() == {"SZ000001": pytest.approx(1.005e6)}  # the blank count is unknown, dropped

    profile = tmp_path / "company_profile.csv"
    profile.write_text(
        'symbol,market,co_name,equity,co_intro\n000001,SZ,A,16.31亿,"line one\nline two"\n600000,SH,B,-,x\n300659,SZ,C,6120.00万,y\n',
        encoding="utf-8",
    )
    s = read_shares(profile)
    assert s.to_dict() == {"SZ000001": pytest.approx(1.631e9), "SZ300659": pytest.approx(6.12e7)}

    generic = tmp_path / "shares.csv"
    generic.write_text("instrument,shares\nSH600000,5e9\nsz000001,1e9\n")
    assert read_shares(generic).to_dict() == {"SH600000": 5e9, "SZ000001": 1e9}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("instrument,shares\nSH600000,abc\n", "row 2: shares 'abc'"),
        ("instrument,shares\nSH600000,-5\n", "row 2"),
        ("instrument,shares\nXYZ,5\n", "row 2: unrecognised symbol"),
        ("code,count\nSH600000,5\n", "unknown share table"),
        ("symbol,equity\n600000,12股票\n", "row 2: equity"),
    ],
)
def test_bad_share_tables(tmp_path, text, match):
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        read_shares(path)


def test_merge_first_source_wins():
    a = pd.Series({"SH600000": 1.0})
    b = pd.Series({"SH600000": 2.0, "SZ000001": 3.0})
    assert merge_shares([a, b]).to_dict() == {"SH600000": 1.0, "SZ000001": 3.0}
    assert merge_shares([]) is None


def _panel(close, volume, factor=None):
    close = np.asarray(close, dtype=np.float32)
    fields = {"close": close, "volume": np.asarray(volume, dtype=np.float32)}
    if factor is not None:
        fields["factor"] = np.asarray(factor, dtype=np.float32)
    cal = Calendar(pd.bdate_range("2020-01-01", periods=close.shape[0]))
    return BarPanel(cal, np.array(["SH600000", "SZ000001", "SZ000002"][: close.shape[1]]), fields)


def test_cap_is_shares_times_raw_close():
    panel = _panel([[20.0, 4.0], [22.0, np.nan]], [[1, 1], [1, 1]], factor=[[2.0, 1.0], [2.0, 1.0]])
    cap = market_cap(panel, pd.Series({"SH600000": 100.0, "SZ000001": 10.0}))
    np.testing.assert_allclose(cap.values, [[1000.0, 40.0], [1100.0, np.nan]])
    assert cap.proxy_stock_days == 0 and not cap.proxy_used.any()


def test_proxy_scaled_counted_and_without_look_ahead():
    close = np.array([[10.0, 5.0], [10.0, 5.0], [10.0, 5.0], [10.0, 5.0]])
    volume = np.array([[100.0, 100.0], [100.0, 300.0], [100.0, 500.0], [100.0, 700.0]])
    panel = _panel(close, volume)
    cap = market_cap(panel, pd.Series({"SH600000": 1000.0}), proxy_window=2)
    # Known stock: cap 10,000, traded value 1,000 → ratio 10. Unknown: 10 × trailing 2-day mean of 5 × volume.
    np.testing.assert_allclose(cap.values[:, 1], [5000.0, 10000.0, 20000.0, 30000.0])
    assert cap.proxy_stock_days == 4 and cap.proxy_share == 0.5
    perturbed = volume.copy()
    perturbed[3] *= 50  # the future must not move earlier caps
    later = market_cap(_panel(close, perturbed), pd.Series({"SH600000": 1000.0}), proxy_window=2)
    np.testing.assert_array_equal(later.values[:3], cap.values[:3])


def test_proxy_without_any_known_shares_is_traded_value():
    cap = market_cap(_panel([[2.0], [2.0]], [[10.0], [30.0]]), None, proxy_window=5)
    np.testing.assert_allclose(cap.values[:, 0], [20.0, 40.0])
    assert cap.proxy_share == 1.0


@pytest.mark.shared_data
def test_shared_share_tables_cover_most_csi300_stock_days(shared_data):
    from conceptalpha.data.qlib import load_qlib

    meta = shared_data / "cn_meta"
    names = ["tushare_industry_csi300_2019.csv", "tushare_industry_csi500_2019.csv", "company_profile_2017.csv"]
    shares = merge_shares([read_shares(meta / n) for n in names])
    market = load_qlib(shared_data / "cn_csi300", fields=["close", "volume", "factor"])
    cap = market_cap(market.panel, shares)
    assert 0 < cap.proxy_share < 0.10
