import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conceptalpha.data import BarPanel, Calendar, Universe, write_qlib
from conceptalpha.experiments import cli
from cli_helpers import run

runner = CliRunner()




@pytest.fixture
def provider(tmp_path):
    cal = Calendar(pd.bdate_range("2020-01-01", periods=5))
    close = np.full((5, 2), 10.0, dtype=np.float32)
    panel = BarPanel(cal, np.array(["SH600000", "SZ000001"]), {"close": close, "volume": close * 100})
    write_qlib(panel, Universe.everything("csi300", cal, panel.instruments), tmp_path / "q", universe_name="csi300")
    return tmp_path / "q"


def test_summary_json(provider, monkeypatch, capsys):
    code, out, _ = run(["data", "summary", "--provider", str(provider), "--json"], monkeypatch, capsys)
    assert code == 0
    figures = json.loads(out)
    assert figures["calendar"]["days"] == 5 and figures["members_per_day"]["median"] == 2


def test_summary_text(provider):
    result = runner.invoke(cli.app, ["data", "summary", "--provider", str(provider), "--start", "2020-01-02"])
    assert result.exit_code == 0, result.output
    assert "(4 trading days)" in result.output


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda p: (p / "features" / "sh600000" / "close.day.bin").write_bytes(b"\x00\x00"), "close.day.bin: truncated"),
        (lambda p: (p / "features" / "sh600000" / "close.day.bin").write_bytes(b""), "close.day.bin: empty"),
        (lambda p: (p / "calendars" / "day.txt").write_text("2020-01-02\n2020-01-01\n"), "day.txt: line 2"),
        (lambda p: (p / "instruments" / "csi300.txt").write_text("SH600000 2020-01-01\n"), "csi300.txt: line 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(provider, monkeypatch, capsys, breakage, expected):
    breakage(provider)
    code, out, err = run(["data", "summary", "--provider", str(provider)], monkeypatch, capsys)
    assert code == 2
    assert expected in err and err.strip().count("\n") == 0 and "Traceback" not in err


def test_bad_csv_and_unknown_universe(tmp_path, monkeypatch, capsys):
    path = tmp_path / "bars.csv"
    path.write_text("date,instrument,open,high,low,close\n2020-01-02,600000.SH,1,1,1,1\n")
    code, _, err = run(["data", "summary", "--provider", str(path), "--universe", "all"], monkeypatch, capsys)
    assert code == 2 and "missing column(s) ['volume']" in err
    code, _, err = run(["data", "summary", "--provider", str(path)], monkeypatch, capsys)
    assert code == 2 and "universe 'csi300'" in err


@pytest.mark.shared_data
def test_shared_csi300_cli(shared_data, monkeypatch, capsys):
    code, out, _ = run(["data", "summary", "--provider", str(shared_data / "cn_csi300"), "--universe", "csi300", "--json"], monkeypatch, capsys)
    figures = json.loads(out)
    assert code == 0
    assert figures["calendar"] == {"start": "2010-01-04", "end": "2020-12-31", "days": 2674}
    assert figures["members_per_day"]["median"] == 276


def test_synth_then_summary(tmp_path, monkeypatch, capsys):
    out = tmp_path / "synth"
    code, printed, _ = run(["data", "synth", "--out", str(out), "--stocks", "20", "--years", "1"], monkeypatch, capsys)
    assert code == 0 and "statistics" in json.loads(printed)
    code, printed, _ = run(
        ["data", "summary", "--provider", str(out), "--universe", "synth", "--shares", str(out / "shares.csv"), "--json"],
        monkeypatch,
        capsys,
    )
    figures = json.loads(printed)
    assert code == 0 and figures["members_per_day"]["max"] <= 20
    assert figures["market_cap"]["proxy_stock_days"] == 0
