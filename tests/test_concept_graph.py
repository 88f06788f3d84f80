"""The concept graph: merge and min-member rules, dated links, sparse output, persistence, report."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conceptalpha.concepts.graph import ConceptGraph, build_concept_graph
from conceptalpha.concepts.report import report_text
from conceptalpha.concepts.sources import from_frame
from conceptalpha.data.calendar import Calendar
from conceptalpha.data.universe import Universe
from conceptalpha.errors import DataError, UserError

CAL = Calendar(pd.bdate_range("2020-01-01", periods=10))  # 2020-01-01 (Wed) .. 2020-01-14 (Tue)
STOCKS = ["SH600000", "SH600001", "SH600002", "SZ000001"]


def universe(intervals: dict[str, tuple[str, str]] | None = None) -> Universe:
    intervals = intervals or {s: ("2020-01-01", "2020-01-14") for s in STOCKS}
    table = pd.DataFrame([(s, a, b) for s, (a, b) in intervals.items()], columns=["instrument", "start", "end"])
    return Universe.from_intervals("test", CAL, table)


def table(rows: list[tuple], source: str = "table"):
    columns = ["instrument", "concept", "kind", "start", "end"][: len(rows[0])]
    return from_frame(pd.DataFrame(rows, columns=columns), source=source)


def dense(graph: ConceptGraph, day, instruments=STOCKS) -> pd.DataFrame:
    m = graph.membership(day, instruments).toarray()
    return pd.DataFrame(m, index=list(instruments), columns=graph.concepts["label"])


def test_merge_prefixes_labels_by_source_and_kind():
    a = table([("SH600000", "银行", "industry"), ("SH600001", "银行", "industry")], "tushare_industry")
    b = table([("SH600000", "银行", "concept"), ("SH600001", "银行", "concept")], "eastmoney")
    graph = build_concept_graph([a, b], universe(), min_members=2)
    assert graph.concepts["label"].tolist() == ["tushare_industry:industry:银行", "eastmoney:concept:银行"]
    assert graph.concepts["id"].tolist() == [0, 1]
    assert dense(graph, 0).loc["SH600000"].tolist() == [1.0, 1.0]


def test_duplicate_source_names_are_rejected():
    a = table([("SH600000", "x")], "eastmoney")
    with pytest.raises(UserError, match="more than once"):
        build_concept_graph([a, a], universe(), min_members=1)


def test_min_members_counts_only_universe_members_with_bars():
    # "small" has 2 members in the universe; SZ300001 is never a member.
    rows = [("SH600000", "small"), ("SH600001", "small"), ("SZ300001", "small"),
            ("SH600000", "big"), ("SH600001", "big"), ("SH600002", "big")]
    assert build_concept_graph([table(rows)], universe(), min_members=3).concepts["name"].tolist() == ["big"]
    assert build_concept_graph([table(rows)], universe(), min_members=2).concepts["name"].tolist() == ["big", "small"]
    has_bars = np.ones((len(CAL), len(STOCKS)), dtype=bool)
    has_bars[:, STOCKS.index("SH600002")] = False  # a member with no bars at all
    empty = build_concept_graph([table(rows)], universe(), has_bars=has_bars, min_members=3)
    assert empty.concepts.empty
    assert empty.membership(0, STOCKS).shape == (len(STOCKS), 0)
    assert empty.report()["coverage"]["share_covered"] == 0.0


def test_member_outside_its_link_interval_does_not_count():
    uni = universe({"SH600000": ("2020-01-01", "2020-01-14"), "SH600001": ("2020-01-01", "2020-01-03")})
    rows = [("SH600000", "c", "concept", None, None), ("SH600001", "c", "concept", "2020-01-06", None)]
    graph = build_concept_graph([table(rows)], uni, min_members=2)
    assert graph.concepts.empty
    assert graph.report()["sources"]["table"]["links_outside_universe"] == 1


def test_dated_membership_on_both_sides_of_boundaries():
    rows = [("SH600000", "dated", "concept", "2020-01-06", "2020-01-08"), ("SH600001", "dated", "concept", None, None)]
    graph = build_concept_graph([table(rows)], universe(), min_members=1)
    col = "table:concept:dated"
    day = {d: dense(graph, d).loc["SH600000", col] for d in ["2020-01-03", "2020-01-06", "2020-01-08", "2020-01-09"]}
    assert day == {"2020-01-03": 0.0, "2020-01-06": 1.0, "2020-01-08": 1.0, "2020-01-09": 0.0}
    assert dense(graph, CAL.index_of("2020-01-07")).loc["SH600000", col] == 1.0  # int t = calendar index
    assert dense(graph, "2020-01-03").loc["SH600001", col] == 1.0  # snapshot link: always valid


def test_overlapping_intervals_count_once():
    rows = [("SH600000", "c", "concept", "2020-01-01", "2020-01-08"), ("SH600000", "c", "concept", "2020-01-06", None)]
    graph = build_concept_graph([table(rows)], universe(), min_members=1)
    assert graph.membership("2020-01-07", ["SH600000"]).toarray().tolist() == [[1.0]]


def test_membership_is_sparse_in_query_order_with_empty_rows_for_unknowns():
    rows = [("SH600000", "a"), ("SH600001", "a"), ("SH600001", "b"), ("SZ000001", "b")]
    graph = build_concept_graph([table(rows)], universe(), min_members=1)
    query = ["SZ000001", "UNKNOWN", "SH600001", "SH600002", "SZ000001"]
    m = graph.membership(0, query)
    assert isinstance(m, sp.csr_matrix) and m.dtype == np.float32 and m.shape == (5, 2)
    assert m.toarray().tolist() == [[0, 1], [0, 0], [1, 1], [0, 0], [0, 1]]
    assert m.nnz == 4
    tensor = graph.membership_tensor(0, query)
    assert tensor.is_sparse and tensor.to_dense().numpy().tolist() == m.toarray().tolist()


def test_day_outside_the_calendar_index_is_an_error():
    graph = build_concept_graph([table([("SH600000", "a")])], universe(), min_members=1)
    with pytest.raises(UserError, match="outside the graph's calendar"):
        graph.membership(len(CAL), STOCKS)


def test_instrument_concepts_lists_links_and_sizes():
    rows = [("SH600000", "a", "concept", "2020-01-06", None), ("SH600001", "a", "concept", None, None),
            ("SH600000", "ind", "industry", None, None)]
    graph = build_concept_graph([table(rows)], universe(), min_members=1)
    info = graph.instrument_concepts("600000.SH").set_index("name")
    assert info.loc["a", "size"] == 2 and info.loc["ind", "kind"] == "industry"
    assert info.loc["a", "start"] == pd.Timestamp("2020-01-06") and pd.isna(info.loc["ind", "start"])
    assert graph.instrument_concepts("SZ000001").empty


def test_save_load_round_trip(tmp_path):
    rows = [("SH600000", "a", "concept", "2020-01-06", "2020-01-08"), ("SH600001", "a", "concept", None, None),
            ("SH600000", "银行", "industry", None, None)]
    graph = build_concept_graph([table(rows)], universe(), min_members=1)
    path = tmp_path / "graph.npz"
    graph.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.npz"]  # no temp file left
    loaded = ConceptGraph.load(path)
    pd.testing.assert_frame_equal(loaded.concepts, graph.concepts)
    for day in range(len(CAL)):
        assert (loaded.membership(day, STOCKS) != graph.membership(day, STOCKS)).nnz == 0
    assert loaded.report() == json.loads(json.dumps(graph.report()))
    assert loaded.calendar.dates.equals(CAL.dates) and loaded.min_members == 1


def test_load_rejects_other_files(tmp_path):
    other = tmp_path / "x.npz"
    np.savez(other, a=np.arange(3))
    with pytest.raises(DataError, match="not a concept graph"):
        ConceptGraph.load(other)
    np.savez(tmp_path / "partial.npz", format=np.array("conceptalpha-concept-graph/1"))
    with pytest.raises(DataError, match="lacks arrays"):
        ConceptGraph.load(tmp_path / "partial.npz")
    (tmp_path / "junk.npz").write_text("hello")
    with pytest.raises(DataError, match="not a concept graph"):
        ConceptGraph.load(tmp_path / "junk.npz")


def test_report_counts_uncovered_member_days():
    # SH600002 has no concept; SZ000001 is covered only from 2020-01-06 (days 3..9).
    rows = [("SH600000", "a", "concept", None, None), ("SH600001", "a", "concept", None, None),
            ("SZ000001", "a", "concept", "2020-01-06", None), ("SZ300001", "a", "concept", None, None)]
    graph = build_concept_graph([table(rows)], universe(), min_members=1)
    report = graph.report()
    cov = report["coverage"]
    assert cov["active_member_days"] == 40
    assert cov["uncovered"] == 10 + 3
    assert cov["share_covered"] == pytest.approx(27 / 40)
    assert cov["instruments_without_any_concept"] == ["SH600002"]
    assert cov["uncovered_days_by_instrument"] == {"SH600002": 10, "SZ000001": 3}
    assert report["concepts"]["members_per_concept"]["max"] == 3.0
    assert report["sources"]["table"]["links_outside_universe"] == 1
    assert not any("look-ahead" in w for w in report["warnings"])  # a dated source is not a snapshot
    text = report_text(report)
    assert "67.50% of active member-days" in text and "SH600002" in text


def test_report_per_source_shares_and_snapshot_warning():
    a = table([("SH600000", "x"), ("SH600001", "x")], "first")
    b = table([("SH600002", "y"), ("SH600001", "y"), ("SH600000", "y")], "second")
    report = build_concept_graph([a, b], universe(), min_members=1).report()
    assert report["sources"]["first"]["share_of_links"] == pytest.approx(2 / 5)
    assert report["sources"]["second"]["coverage_alone"] == pytest.approx(3 / 4)
    assert "first, second" in report["warnings"][0] and "look-ahead" in report["warnings"][0]


def test_query_memory_is_proportional_to_links_not_n_times_c():
    """5,000 stocks × 5,000 concepts: the query allocates O(links), far below a dense N×C float32 (100 MB)."""
    n, c, per_stock = 5000, 5000, 4
    rng = np.random.default_rng(0)
    stocks = [f"SH{600000 + i:06d}" for i in range(n)]
    concepts = rng.integers(0, c, size=(n, per_stock))
    rows = pd.DataFrame({"instrument": np.repeat(stocks, per_stock), "concept": [f"c{k}" for k in concepts.ravel()]})
    uni = Universe.everything("big", Calendar(pd.bdate_range("2020-01-01", periods=3)), np.array(stocks, dtype=object))
    graph = build_concept_graph([rows], uni, min_members=1)
    tracemalloc.start()
    m = graph.membership(1, stocks)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    links = graph.n_links
    assert m.shape == (n, graph.n_concepts) and m.nnz == links and graph.n_concepts > 4000
    assert m.data.nbytes + m.indices.nbytes + m.indptr.nbytes <= 16 * links + 8 * (n + 1)
    assert peak < 200 * links  # ≈ 4 MB here; a dense N×C matrix would be ~100 MB
    assert peak < 0.05 * n * graph.n_concepts * 4
