import numpy as np
import pandas as pd
import pytest

from conceptalpha.data import BarPanel, Calendar, Universe
from conceptalpha.data.qlib import load_qlib, read_calendar, read_instruments, write_qlib
from conceptalpha.errors import DataError, UserError

DATES = pd.bdate_range("2020-01-01", periods=6)


def tiny_panel() -> tuple[BarPanel, Universe]:
    cal = Calendar(DATES)
    close = np.array(
        [
            [10.0, np.nan, 5.0],
            [10.5, np.nan, 5.1],
            [11.0, 20.0, np.nan],  # a missing bar inside SZ300750's span
            [11.5, 21.0, 5.3],
            [np.nan, 22.0, 5.4],
            [np.nan, 23.0, 5.5],
        ],
        dtype=np.float32,
    )
    fields = {
        "close": close,
        "open": close * 0.99,
        "high": close * 1.01,
        "low": close * 0.98,
        "volume": np.where(np.isnan(close), np.nan, 100.0).astype(np.float32),
        "factor": np.where(np.isnan(close), np.nan, 2.0).astype(np.float32),
    }
    fields["volume"][3, 0] = 0.0  # suspended day
    panel = BarPanel(cal, np.array(["SH600000", "SZ000001", "SZ300750"]), fields)
    mask = np.zeros((6, 3), dtype=bool)
    mask[:4, 0] = True
    mask[2:, 1] = True
    mask[[0, 1, 4, 5], 2] = True  # two membership intervals
    return panel, Universe("test", cal, panel.instruments, mask)


@pytest.fixture
def provider(tmp_path):
    panel, uni = tiny_panel()
    bench = pd.Series(np.arange(1.0, 7.0), index=DATES)
    write_qlib(panel, uni, tmp_path / "qlib", universe_name="test", benchmark=bench)
    return tmp_path / "qlib", panel, uni


def test_writer_layout(provider):
    root, _, _ = provider
    assert (root / "calendars" / "day.txt").read_text().splitlines()[0] == "2020-01-01"
    lines = (root / "instruments" / "test.txt").read_text().splitlines()
    assert "SZ300750\t2020-01-01\t2020-01-02" in lines and "SZ300750\t2020-01-07\t2020-01-08" in lines
    assert not any(ln.startswith("SH000300") for ln in lines)
    all_lines = (root / "instruments" / "all.txt").read_text().splitlines()
    assert "SH000300\t2020-01-01\t2020-01-08" in all_lines
    assert "SH600000\t2020-01-01\t2020-01-06" in all_lines
    raw = np.fromfile(root / "features" / "sz000001" / "close.day.bin", dtype="<f4")
    np.testing.assert_array_equal(raw, [2.0, 20.0, 21.0, 22.0, 23.0])  # leading NaN trimmed, header = index 2


def test_round_trip(provider):
    root, panel, uni = provider
    market = load_qlib(root, universe="test")
    assert list(market.panel.instruments) == list(panel.instruments)
    for name in panel.fields:
        np.testing.assert_array_equal(market.panel.fields[name], panel.fields[name])
    np.testing.assert_array_equal(market.universe.mask, uni.mask)
    assert np.isnan(market.panel.fields["vwap"]).all()  # no vwap in the data → NaN, not invented
    np.testing.assert_array_equal(market.benchmark.to_numpy(), np.arange(1.0, 7.0))
    assert "SH000300" not in set(market.panel.instruments)


def test_window_fields_and_vwap_proxy(provider):
    root, panel, _ = provider
    market = load_qlib(root, universe="test", start="2020-01-02", end="2020-01-06", fields=["close", "high", "low", "vwap"], vwap_proxy=True)
    assert len(market.calendar) == 3 and sorted(market.panel.fields) == ["close", "high", "low", "vwap"]
    expected = (panel.fields["high"] + panel.fields["low"] + panel.fields["close"])[1:4] / 3
    np.testing.assert_allclose(market.panel.fields["vwap"], expected, rtol=1e-6)
    with pytest.raises(UserError, match="amount"):
        load_qlib(root, universe="test", fields=["close", "amount"])


def test_upper_case_folders_and_members_without_bars(provider):
    root, _, _ = provider
    (root / "features" / "sh600000").rename(root / "features" / "SH600000")
    with open(root / "instruments" / "test.txt", "a") as f:
        f.write("SH601988\t2020-01-01\t2020-01-08\n")
    market = load_qlib(root, universe="test")
    assert "SH600000" in set(market.panel.instruments)
    assert list(market.members_without_bars) == ["SH601988"]


def test_truncated_and_empty_bins(provider):
    root, _, _ = provider
    path = root / "features" / "sz000001" / "close.day.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataError, match="close.day.bin: truncated"):
        load_qlib(root, universe="test")
    path.write_bytes(b"")
    with pytest.raises(DataError, match="close.day.bin: empty"):
        load_qlib(root, universe="test")
    np.array([4.0, 1.0, 2.0, 3.0], dtype="<f4").tofile(path)  # runs past a 6-day calendar
    with pytest.raises(DataError, match="run past"):
        load_qlib(root, universe="test")


@pytest.mark.parametrize(
    ("values", "message"),
    [([0.0, np.inf], "infinite"), ([0.0, -1.0], "<= 0")],
)
def test_bad_prices(provider, values, message):
    root, _, _ = provider
    np.array(values, dtype="<f4").tofile(root / "features" / "sz000001" / "close.day.bin")
    with pytest.raises(DataError, match=message):
        load_qlib(root, universe="test")


def test_calendar_errors(tmp_path):
    path = tmp_path / "day.txt"
    path.write_text("2020-01-02\n2020-01-01\n")
    with pytest.raises(DataError, match="line 2: .*increasing"):
        read_calendar(path)
    path.write_text("2020-01-01\n2020-01-01\n")
    with pytest.raises(DataError, match="line 2: duplicate"):
        read_calendar(path)
    path.write_text("2020-01-01\nnot-a-date\n")
    with pytest.raises(DataError, match="line 2"):
        read_calendar(path)
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_calendar(path)


def test_instruments_errors(tmp_path):
    path = tmp_path / "csi300.txt"
    path.write_text("SH600000\t2020-01-01\t2020-02-01\nSH600004 2020-01-01\n")
    with pytest.raises(DataError, match="line 2: expected"):
        read_instruments(path)
    path.write_text("SH600000\t2020-03-01\t2020-02-01\n")
    with pytest.raises(DataError, match="line 1"):
        read_instruments(path)
    path.write_text("sh600000\t2020-01-01\t2020-02-01\n\n000001.SZ 2020-01-01 2020-02-01\n")
    assert list(read_instruments(path)["instrument"]) == ["SH600000", "SZ000001"]


@pytest.mark.shared_data
def test_shared_csi300(shared_data):
    market = load_qlib(shared_data / "cn_csi300")
    assert len(market.calendar) == 2674
    assert market.panel.shape[1] == 644 and len(market.members_without_bars) == 38
    assert market.benchmark is not None and market.benchmark.notna().all()


def test_writer_replaces_qlib_folders_and_keeps_other_files(provider):
    root, panel, uni = provider
    (root / "concepts.csv").write_text("x\n")
    write_qlib(panel.subset(days=slice(0, 3)), uni.subset(slice(0, 3)), root, universe_name="test")
    assert (root / "concepts.csv").exists()
    assert len(read_calendar(root / "calendars" / "day.txt")) == 3
    assert not (root / "features" / "sh000300").exists()
