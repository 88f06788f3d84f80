import numpy as np
import pandas as pd
import pytest

from conceptalpha.data.table import load_table
from conceptalpha.errors import DataError

HEADER = "date,instrument,open,high,low,close,volume,factor\n"
ROWS = [
    "2020-01-02,600000.SH,10,11,9,10.5,100,2",
    "2020-01-02,000001.SZ,5,5.5,4.5,5,200,1",
    "2020-01-03,600000.SH,10.5,11,10,10.8,0,2",
    "2020-01-06,000001.SZ,5,5.2,4.8,5.1,300,1",
    "2020-01-06,600000.SH,10.8,11.2,10.6,11,150,2",
    "2020-01-06,000300.SH,4000,4050,3990,4020,1e9,1",
]


def write(tmp_path, rows=ROWS, header=HEADER, name="bars.csv"):
    path = tmp_path / name
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def test_csv_pivot_without_universe(tmp_path):
    market = load_table(write(tmp_path), benchmark="SH000300")
    assert list(market.panel.instruments) == ["SH600000", "SZ000001"]
    assert [str(d.date()) for d in market.calendar.dates] == ["2020-01-02", "2020-01-03", "2020-01-06"]
    np.testing.assert_array_equal(market.panel.fields["close"], np.array([[10.5, 5], [10.8, np.nan], [11, 5.1]], dtype=np.float32))
    np.testing.assert_array_equal(market.universe.mask, [[True, True], [True, False], [True, True]])
    assert market.benchmark.isna().tolist() == [True, True, False]
    assert np.isnan(market.panel.fields["vwap"]).all()
    np.testing.assert_allclose(market.panel.raw_close()[0], [5.25, 5.0])


def test_parquet_with_universe_file_window_and_proxy(tmp_path):
    frame = pd.read_csv(write(tmp_path), dtype={"date": str})
    frame["date"] = frame["date"].str.replace("-", "")  # Tushare style 20200102
    frame.to_parquet(tmp_path / "bars.parquet")
    uni = tmp_path / "members.csv"
    uni.write_text("instrument,start,end\nSH600000,2020-01-01,2020-01-03\nSH601988,2020-01-01,2020-12-31\n")
    market = load_table(tmp_path / "bars.parquet", universe_intervals=uni, start="2020-01-03", vwap_proxy=True)
    assert list(market.panel.instruments) == ["SH600000"]
    assert list(market.members_without_bars) == ["SH601988"]
    np.testing.assert_array_equal(market.universe.mask[:, 0], [True, False])
    np.testing.assert_allclose(market.panel.fields["vwap"][0, 0], (11 + 10 + 10.8) / 3, rtol=1e-6)


@pytest.mark.parametrize(
    ("rows", "header", "match"),
    [
        (ROWS, "date,instrument,open,high,low,volume\n", r"missing column\(s\) \['close'\]"),
        ([*ROWS[:2], HEADER.strip(), *ROWS[2:]], HEADER, "line 4: repeats the header row"),
        ([ROWS[0], "2020-01-03,600000.SH,10,11,9,nan,100,2"], HEADER, "line 3: close must be"),
        ([ROWS[0], "2020-01-03,600000.SH,10,11,9,inf,100,2"], HEADER, "line 3: close must be"),
        ([ROWS[0], "2020-01-03,600000.SH,10,11,-9,10,100,2"], HEADER, "line 3: low must be"),
        ([ROWS[0], "2020-01-03,600000.SH,10,11,9,10,-1,2"], HEADER, "line 3: volume"),
        ([ROWS[0], "2020-01-03,600000.SH,10,11,9,abc,1,2"], HEADER, "line 3: close is not a number"),
        ([ROWS[0], "2020-13-45,600000.SH,10,11,9,10,1,2"], HEADER, "line 3: date"),
        ([ROWS[0], "2020-01-03,AAPL,10,11,9,10,1,2"], HEADER, "line 3: .AAPL. is not an A-share code but line 2"),
        ([ROWS[0], "2020-01-03,a b,10,11,9,10,1,2"], HEADER, "line 3: .a b. is not an A-share code"),
        ([ROWS[0], ROWS[0]], HEADER, "line 3: repeats an earlier"),
        ([], HEADER, "no rows"),
    ],
)
def test_bad_tables(tmp_path, rows, header, match):
    with pytest.raises(DataError, match=match) as err:
        load_table(write(tmp_path, rows, header))
    assert "bars.csv" in str(err.value) and "\n" not in str(err.value)


def test_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match=r"\.csv or \.parquet"):
        load_table(write(tmp_path, name="bars.xlsx"))
