"""``conceptalpha concepts build | show`` end to end, and the coverage figure on the shared CSI300 data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conceptalpha.concepts.graph import ConceptGraph
from conceptalpha.data import BarPanel, Calendar, Universe, write_qlib
from cli_helpers import run




@pytest.fixture
def provider(tmp_path):
    """Three stocks over 6 days; SZ000001 joins the universe on day 3; SH600002 has no bar on day 0."""
    cal = Calendar(pd.bdate_range("2020-01-01", periods=6))
    close = np.full((6, 3), 10.0, dtype=np.float32)
    close[0, 2] = np.nan
    instruments = np.array(["SH600000", "SZ000001", "SH600002"], dtype=object)
    panel = BarPanel(cal, instruments, {"close": close, "volume": np.nan_to_num(close) * 100})
    mask = np.ones((6, 3), dtype=bool)
    mask[:3, 1] = False
    write_qlib(panel, Universe("csi300", cal, instruments, mask), tmp_path / "q", universe_name="csi300")
    return tmp_path / "q"


@pytest.fixture
def concept_table(tmp_path):
    path = tmp_path / "concepts.csv"
    path.write_text(
        "instrument,concept,kind\nSH600000,banks,industry\nSZ000001,banks,industry\nSH600000,fintech,concept\n"
        "SH600002,fintech,concept\nBAD1,fintech,concept\nSH600009,banks,industry\n",
        encoding="utf-8",
    )
    return path


def test_build_writes_graph_and_prints_report(provider, concept_table, tmp_path, monkeypatch, capsys):
    out = tmp_path / "graphs" / "g.npz"
    code, text, err = run(["concepts", "build", "--provider", provider, "--universe", "csi300",
                           "--source", f"table:{concept_table}", "--min-members", 2, "--out", out], monkeypatch, capsys)
    assert code == 0, err
    assert "100.00% of active member-days" in text and "BAD1" in text and "look-ahead" in text
    graph = ConceptGraph.load(out)
    assert graph.concepts["label"].tolist() == ["table:concept:fintech", "table:industry:banks"]
    assert graph.membership("2020-01-01", ["SH600000", "SZ000001"]).toarray().tolist() == [[1, 1], [0, 1]]


def test_build_json_report(provider, concept_table, tmp_path, monkeypatch, capsys):
    code, text, _ = run(["concepts", "build", "--provider", provider, "--source", f"table:{concept_table}",
                         "--min-members", 1, "--out", tmp_path / "g.npz", "--json"], monkeypatch, capsys)
    report = json.loads(text)
    assert code == 0
    assert report["universe"]["active_member_days"] == 6 + 3 + 5
    assert report["sources"]["table"]["unparsed_symbols"]["listed"] == {"BAD1": 1}
    assert report["sources"]["table"]["links_outside_universe"] == 1  # SH600009 is not a member


def test_show_instrument_and_report(provider, concept_table, tmp_path, monkeypatch, capsys):
    out = tmp_path / "g.npz"
    run(["concepts", "build", "--provider", provider, "--source", f"table:{concept_table}",
         "--min-members", 2, "--out", out], monkeypatch, capsys)
    code, text, _ = run(["concepts", "show", out, "--instrument", "600000.SH"], monkeypatch, capsys)
    assert code == 0 and "table:industry:banks" in text and "table:concept:fintech" in text
    code, text, _ = run(["concepts", "show", out, "--instrument", "SZ000001", "--json"], monkeypatch, capsys)
    assert [row["name"] for row in json.loads(text)] == ["banks"]
    code, text, _ = run(["concepts", "show", out], monkeypatch, capsys)
    assert code == 0 and "coverage:" in text


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("wind:x.csv", "unknown concept source kind 'wind'"),
        ("eastmoney", "expected KIND:PATH"),
        ("tushare_concepts:{tmp}/missing.csv", "missing.csv: file not found"),
        ("eastmoney:{table}", "missing column(s) ['股票代码', '板块名称']"),
    ],
)
def test_bad_sources_exit_2_with_one_line(provider, concept_table, tmp_path, monkeypatch, capsys, source, expected):
    out = tmp_path / "g.npz"
    source = source.format(tmp=tmp_path, table=concept_table)
    code, _, err = run(["concepts", "build", "--provider", provider, "--source", source, "--out", out], monkeypatch, capsys)
    assert code == 2 and expected in err and err.strip().count("\n") == 0
    assert not out.exists()


def test_show_rejects_a_file_that_is_not_a_graph(tmp_path, monkeypatch, capsys):
    junk = tmp_path / "junk.npz"
    junk.write_text("x")
    code, _, err = run(["concepts", "show", junk], monkeypatch, capsys)
    assert code == 2 and "not a concept graph" in err


@pytest.mark.shared_data
def test_shared_csi300_coverage(shared_data, tmp_path, monkeypatch, capsys):
    """Tushare concepts + EastMoney + Tushare industries on CSI300 2010–2020: ≥ 95% of member-days with bars covered."""
    meta = shared_data / "cn_meta"
    sources = [f"tushare_concepts:{meta / 'tushare_concepts_csi300_2019.csv'}",
               f"eastmoney:{meta / 'eastmoney_concepts_2025.csv'}",
               f"tushare_industry:{meta / 'tushare_industry_csi300_2019.csv'}",
               f"tushare_basic:{meta / 'tushare_stock_basic_2026.csv'}"]
    args = ["concepts", "build", "--provider", shared_data / "cn_csi300", "--universe", "csi300", "--out", tmp_path / "g.npz", "--json"]
    for spec in sources:
        args += ["--source", spec]
    code, text, err = run(args, monkeypatch, capsys)
    assert code == 0, err
    report = json.loads(text)
    assert report["universe"]["start"] == "2010-01-04" and report["universe"]["end"] == "2020-12-31"
    assert report["coverage"]["share_covered"] >= 0.95
    assert report["universe"]["active_member_days"] < report["universe"]["member_days"]  # delisted names have no bars
    assert report["concepts"]["by_kind"]["industry"] > 20 and report["concepts"]["by_kind"]["concept"] > 100
    graph = ConceptGraph.load(tmp_path / "g.npz")
    maotai = graph.instrument_concepts("SH600519")
    assert "tushare_industry:industry:白酒" in set(maotai["label"])


def test_the_no_concepts_note_is_given_only_when_a_model_reads_concepts(provider):
    from conceptalpha.experiments.config import validate_config
    from conceptalpha.experiments.runner import load_inputs

    base = {
        "name": "t",
        "data": {"provider": str(provider), "universe": "csi300", "start": "2020-01-01", "end": "2020-01-08"},
        "segments": {"train": ["2020-01-01", "2020-01-02"], "valid": ["2020-01-03", "2020-01-06"], "test": ["2020-01-07", "2020-01-08"]},
    }
    notes = {models[0]: load_inputs(validate_config({**base, "models": models})).notes for models in (["HIST"], ["GRU"])}
    assert any("No concept source configured" in note for note in notes["HIST"])
    assert not any("concept" in note.lower() for note in notes["GRU"])
