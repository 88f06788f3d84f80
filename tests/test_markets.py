"""Markets other than A-shares: symbols, a hand-made US Qlib folder, bad input, the US-style synthetic
market, and a HIST + LightGBM run end to end on the generic path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conceptalpha.concepts.graph import build_concept_graph
from conceptalpha.concepts.sources import read_source
from conceptalpha.data.loader import load_market, load_membership
from conceptalpha.data.summary import format_summary, summarize
from conceptalpha.data.symbols import normalize_symbols, resolve_market
from conceptalpha.data.synthetic import SynthConfig, generate
from conceptalpha.errors import DataError, UserError
from conceptalpha.experiments.config import load_config
from cli_helpers import run

REPO = Path(__file__).resolve().parents[1]
DAYS = pd.bdate_range("2017-01-02", periods=12)
US_LINES = ["AAPL", "AABA", "BRK.B", "MSFT"]


def write_bin(folder: Path, field: str, first: int, values) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.concatenate([[first], values]).astype("<f4").tofile(folder / f"{field}.day.bin")


def write_us_folder(root: Path, instruments=US_LINES, folders=("aapl", "aaba", "brk.b", "msft"), extra=None) -> Path:
    """Qlib layout as a US dump writes it: lower-case folders, open/high/low/close/volume/factor, no vwap/change."""
    (root / "calendars").mkdir(parents=True)
    (root / "calendars" / "day.txt").write_text("".join(f"{d:%Y-%m-%d}\n" for d in DAYS))
    (root / "instruments").mkdir()
    lines = [f"{s}\t2017-01-02\t2017-01-17\n" for s in instruments]
    (root / "instruments" / "nasdaq.txt").write_text("".join(lines))
    rng = np.random.default_rng(0)
    for i, name in enumerate([*folders, "spy"]):
        close = 100.0 * (1 + i) * np.cumprod(1 + rng.normal(0, 0.02, len(DAYS)))
        for field, values in {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                              "volume": np.full(len(DAYS), 1e6), "factor": np.ones(len(DAYS))}.items():
            write_bin(root / "features" / name, field, 0, values)
    for (name, field), values in (extra or {}).items():
        write_bin(root / "features" / name, field, 0, values)
    return root


@pytest.mark.parametrize(
    ("raw", "canon"),
    [("aapl", "AAPL"), (" BRK.B ", "BRK.B"), ("0700.hk", "0700.HK"), ("btc-usd", "BTC-USD"), ("ES=F", "ES=F"), ("^gspc", "^GSPC")],
)
def test_generic_tickers_are_kept_upper_case(raw, canon):
    symbols, ok = normalize_symbols([raw], "generic")
    assert ok[0] and symbols[0] == canon


def test_auto_market_is_cn_only_when_every_code_is_an_a_share():
    assert resolve_market("auto", ["600000.SH", "sz000001"], "f") == "cn"
    assert resolve_market("auto", ["AAPL", "0700.HK"], "f") == "generic"
    with pytest.raises(DataError, match=r"line 2: 'AAPL' is not an A-share code but line 1: 'SH600000' is: one universe holds one market"):
        resolve_market("auto", ["SH600000", "AAPL"], "f")
    with pytest.raises(DataError, match="line 1: 'a b' is not a ticker"):
        resolve_market("generic", ["a b"], "f")


def test_hand_made_us_folder_loads_as_a_generic_market(tmp_path):
    root = write_us_folder(tmp_path / "us")
    market = load_market(root, "nasdaq", market="auto", benchmark="SPY")
    assert market.kind == "generic" and market.kind_inferred
    assert sorted(market.panel.instruments) == ["AABA", "AAPL", "BRK.B", "MSFT"]
    assert str(market.benchmark.name) == "SPY" and market.benchmark.notna().all()
    assert "SPY" not in set(market.panel.instruments)
    assert not np.isfinite(market.panel.field("vwap")).any()  # no vwap in the data, no proxy asked for
    text = format_summary(summarize(market, load_membership(root, "nasdaq", market.calendar, market.kind)))
    assert "market: generic, tickers as given, no price limits (auto: not every instrument is an A-share code)" in text
    assert "benchmark: SPY (12 days)" in text
    assert "fields with no value at all: vwap" in text


def test_data_summary_cli_on_the_us_folder(tmp_path, monkeypatch, capsys):
    root = write_us_folder(tmp_path / "us")
    code, out, err = run(["data", "summary", "--provider", root, "--universe", "nasdaq", "--json"], monkeypatch, capsys)
    assert code == 0, err
    figures = json.loads(out)
    assert figures["market"] == {"kind": "generic", "inferred": True} and figures["benchmark"] is None


def test_cn_market_given_us_tickers_names_the_cause(tmp_path, monkeypatch, capsys):
    root = write_us_folder(tmp_path / "us", instruments=["AABA", "AAPL"])
    code, _, err = run(["data", "summary", "--provider", root, "--universe", "nasdaq", "--market", "cn"], monkeypatch, capsys)
    assert code == 2
    assert "line 1: 'AABA' is not an A-share code" in err and "data.market: generic" in err
    assert "known symbol" not in err and len(err.strip().splitlines()) == 1


def test_mixed_markets_in_one_universe_are_an_error(tmp_path):
    root = write_us_folder(tmp_path / "us", instruments=["AAPL", "SH600000"])
    with pytest.raises(DataError, match="one universe holds one market"):
        load_market(root, "nasdaq")


def test_tickers_differing_only_in_case_are_an_error(tmp_path):
    root = write_us_folder(tmp_path / "us", instruments=["AAPL", "aapl", "MSFT"])
    with pytest.raises(DataError, match=r"line 2: 'aapl' is the ticker 'AAPL' spelt in another case"):
        load_market(root, "nasdaq")
    root = write_us_folder(tmp_path / "us2", folders=("aapl", "AAPL", "aaba", "brk.b", "msft"))
    with pytest.raises(DataError, match="folders 'AAPL' and 'aapl' differ only in case"):
        load_market(root, "nasdaq")


def test_a_missing_ticker_folder_is_a_counted_warning_and_no_folder_at_all_an_error(tmp_path):
    root = write_us_folder(tmp_path / "us", folders=("aapl", "msft"))
    market = load_market(root, "nasdaq")
    figures = summarize(market, load_membership(root, "nasdaq", market.calendar, market.kind))
    assert figures["members_without_bars"] == {"count": 2, "symbols": ["AABA", "BRK.B"]}
    assert figures["warnings"]["members_without_bars"] == 2
    root = write_us_folder(tmp_path / "none", folders=("goog",))
    with pytest.raises(DataError, match="no feature folder for any of the 4 instruments of nasdaq.txt"):
        load_market(root, "nasdaq")


def test_a_named_benchmark_must_exist(tmp_path):
    root = write_us_folder(tmp_path / "us")
    with pytest.raises(DataError, match="benchmark 'QQQ': no feature folder qqq/"):
        load_market(root, "nasdaq", benchmark="QQQ")


@pytest.mark.parametrize(("scale", "unit", "warned"), [(100.0, "percent", 1), (1.0, "fraction", 0)])
def test_change_field_unit_is_reported(tmp_path, scale, unit, warned):
    close = 100.0 * np.cumprod(1 + np.r_[0.0, np.full(len(DAYS) - 1, 0.01)])
    change = np.r_[np.nan, close[1:] / close[:-1] - 1] * scale
    root = write_us_folder(tmp_path / "us", extra={("aapl", "close"): close, ("aapl", "change"): change})
    figures = summarize(load_market(root, "nasdaq"))
    assert figures["change_field"] == unit and figures["warnings"]["change_field_in_percent"] == warned


def test_concept_or_share_table_that_matches_no_instrument_is_an_error(tmp_path):
    root = write_us_folder(tmp_path / "us")
    market = load_market(root, "nasdaq")
    table = tmp_path / "industries.csv"
    table.write_text("instrument,concept\nsh600000,banks\nsz000001,banks\n")
    source = read_source("table", table, market=market.kind)
    with pytest.raises(UserError, match="industries.csv: none of its symbols .* is an instrument of universe 'nasdaq'"):
        build_concept_graph([source], market.universe)
    # a US industry table read for an A-share market: every symbol unparsed, same error (not an empty graph)
    table.write_text("instrument,concept\nAAPL,tech\nMSFT,tech\n")
    cn_universe = load_market(write_us_folder(tmp_path / "cn", instruments=["SH600000"], folders=("sh600000",)), "nasdaq").universe
    with pytest.raises(UserError, match="none of its symbols \\(e.g. 'AAPL'\\)"):
        build_concept_graph([read_source("table", table)], cn_universe)
    shares = tmp_path / "shares.csv"
    shares.write_text("instrument,shares\nGOOG,100\n")
    with pytest.raises(UserError, match="shares.csv: none of its 1 symbols"):
        load_market(root, "nasdaq", shares=[shares])


def test_industry_table_builds_the_graph_on_lower_case_tickers(tmp_path):
    root = write_us_folder(tmp_path / "us")
    market = load_market(root, "nasdaq")
    table = tmp_path / "industries.csv"
    table.write_text("instrument,concept,kind\naapl,tech,industry\nmsft,tech,industry\nbrk.b,finance,industry\naaba,tech,industry\n")
    graph = build_concept_graph([read_source("table", table, market=market.kind)], market.universe, min_members=2)
    assert graph.concepts["name"].tolist() == ["tech"]
    assert graph.instrument_concepts("aapl")["name"].tolist() == ["tech"]


def test_st_table_marks_the_st_field(tmp_path):
    root = write_us_folder(tmp_path / "cn", instruments=["SH600000", "SZ000001"], folders=("sh600000", "sz000001"))
    st = tmp_path / "st.csv"
    st.write_text("instrument,start,end\n600000.SH,2017-01-05,2017-01-10\n")
    market = load_market(root, "nasdaq", st_table=st)
    assert market.kind == "cn"
    marked = market.panel.field("st")
    assert marked[:, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0] and not marked[:, 1].any()


def test_us_synthetic_market_uses_tickers_an_industry_table_and_no_benchmark():
    sm = generate(SynthConfig(market="us", n_stocks=40, n_years=0.2))
    assert sm.market.kind == "generic" and sm.market.benchmark is None
    assert resolve_market("auto", sm.market.panel.instruments, "synthetic") == "generic"
    assert "ABB" in set(sm.market.panel.instruments) and any(s.endswith(".B") for s in sm.market.panel.instruments)
    assert set(sm.concepts["kind"]) == {"industry"}
    cn = generate(SynthConfig(n_stocks=40, n_years=0.2))
    assert cn.market.kind == "cn" and set(cn.concepts["kind"]) == {"industry", "concept"}


def test_shipped_us_example_config_points_at_a_folder_with_set():
    config = load_config(REPO / "configs" / "us_example.yaml", ["data.provider=/data/us", "data.universe=nasdaq", "data.benchmark=SPY"])
    assert [m.name for m in config.models] == ["HIST", "GRU", "LightGBM"]
    assert (config.data.provider, config.data.market, config.data.benchmark) == ("/data/us", "auto", "SPY")
    assert load_config(REPO / "configs" / "us_example.yaml").data.synthetic.market == "us"


def test_generic_market_end_to_end_with_hist_and_lightgbm(tmp_path, monkeypatch, capsys):
    code, out, err = run(["data", "synth", "--out", tmp_path / "us", "--market", "us", "--stocks", "40", "--years", "1"], monkeypatch, capsys)
    assert code == 0, err
    code, out, err = run(["data", "summary", "--provider", tmp_path / "us", "--universe", "synth"], monkeypatch, capsys)
    assert code == 0 and "market: generic" in out and "benchmark: none" in out
    config = tmp_path / "us.yaml"
    config.write_text(json.dumps({
        "name": "us_tiny",
        "data": {"provider": str(tmp_path / "us"), "universe": "synth", "shares": [str(tmp_path / "us" / "shares.csv")]},
        "concepts": {"sources": [f"table:{tmp_path / 'us' / 'industries.csv'}"], "min_members": 2},
        "segments": {"train": ["2010-01-01", "2010-07-31"], "valid": ["2010-08-01", "2010-09-30"], "test": ["2010-10-01", "2010-12-10"]},
        "models": [{"name": "HIST", "params": {"hidden_size": 8, "num_layers": 1}}, {"name": "LightGBM", "params": {"num_boost_round": 10}}],
        "trainer": {"max_epochs": 1, "patience": 1, "show_progress": False},
        "backtest": {"topk": 5},
    }))
    code, out, err = run(["run", config, "--out", tmp_path / "run", "--quiet"], monkeypatch, capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"HIST", "LightGBM"}
    assert any("Market generic (inferred from the symbols)" in n and "equal-weight mean" in n for n in metrics["notes"])
    preds = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert preds["instrument"].isin(pd.read_csv(tmp_path / "us" / "industries.csv")["instrument"]).all()
    daily = pd.read_parquet(tmp_path / "run" / "backtest_HIST_seed0.parquet")
    assert daily["benchmark"].notna().all()  # the equal-weight mean stands in for a missing index
    assert "equal-weight mean" in (tmp_path / "run" / "report.html").read_text()


def test_bar_tables_carry_us_tickers_and_the_limit_columns(tmp_path):
    from conceptalpha.data.table import load_table
    from conceptalpha.evaluation.market_rules import CnRules

    us = tmp_path / "us.csv"
    us.write_text(
        "date,instrument,open,high,low,close,volume\n"
        "2020-01-02,aapl,10,11,9,10,100\n2020-01-02,SPY,300,301,299,300,1e6\n"
        "2020-01-03,aapl,10,13,9,12.5,100\n2020-01-03,SPY,300,303,299,302,1e6\n"
    )
    market = load_table(us, benchmark="SPY")
    assert (market.kind, list(market.panel.instruments), str(market.benchmark.name)) == ("generic", ["AAPL"], "SPY")
    cn = tmp_path / "cn.csv"
    cn.write_text(
        "date,instrument,open,high,low,close,volume,up_limit,down_limit,st\n"
        "2020-01-02,600000.SH,10,10,10,10,100,,,0\n"
        "2020-01-03,600000.SH,10,10.5,10,10.5,100,10.5,9.5,1\n"
    )
    panel = load_table(cn).panel
    assert panel.field("st").tolist() == [[0.0], [1.0]]
    assert CnRules().limit_locked(panel)[0][:, 0].tolist() == [False, True]
    cn.write_text("date,instrument,open,high,low,close,volume,st\n2020-01-02,600000.SH,10,10,10,10,100,2\n")
    with pytest.raises(DataError, match="line 2: st must be 0 or 1"):
        load_table(cn)


def test_a_missing_universe_lists_the_ones_there(tmp_path):
    root = write_us_folder(tmp_path / "us")
    with pytest.raises(DataError, match=r"csi300.txt: instruments file not found \(universes there: nasdaq\)"):
        load_market(root, "csi300")
