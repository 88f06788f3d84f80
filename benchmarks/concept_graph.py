"""How fast is the concept graph to build and query, and how small is a day's membership?

Two settings, each timed best of ``--repeat`` and printed as JSON:

- ``shared_csi300`` (when ``--shared`` points to the shared data): reading the
  Tushare concepts, EastMoney boards, Tushare CSI300 industries and Tushare
  stock_basic industries, plus building the graph on CSI300 2010–2020; then one
  sparse query per trading day for that day's members.
- ``synthetic_5000``: 5,000 stocks, 5,000 concepts, 4 links per stock; one query
  for all 5,000 stocks.

Reference, measured in the same run: the dense approach of the reference HIST
code, a precomputed float32 [all stocks, C] matrix whose rows are gathered for
the day's stocks (one snapshot; it cannot express dated links). Ratios are
ours / reference.

Usage: ``python benchmarks/concept_graph.py [--shared ../shared/data] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from conceptalpha.concepts.graph import ConceptGraph, build_concept_graph
from conceptalpha.concepts.sources import read_source
from conceptalpha.data.calendar import Calendar
from conceptalpha.data.universe import Universe

SHARED_SOURCES = {
    "tushare_concepts": "tushare_concepts_csi300_2019.csv",
    "eastmoney": "eastmoney_concepts_2025.csv",
    "tushare_industry": "tushare_industry_csi300_2019.csv",
    "tushare_basic": "tushare_stock_basic_2026.csv",
}


def best_of(repeat: int, fn):
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def dense_table(graph: ConceptGraph, day) -> tuple[pd.Index, np.ndarray]:
    """The reference's precomputed dense stock→concept matrix [S, C] (all known stocks, one day's links)."""
    table = graph.membership(day, graph.instruments).toarray()
    return pd.Index(graph.instruments.astype(str)), table


def dense_query(index: pd.Index, table: np.ndarray, instruments) -> np.ndarray:
    """Reference query: gather rows of the dense table (unknown stocks → zero rows), float32 [N, C]."""
    rows = index.get_indexer(pd.Index(np.asarray(instruments, dtype=object).astype(str)))
    out = table[np.maximum(rows, 0)]
    out[rows < 0] = 0.0
    return out


def query_figures(graph: ConceptGraph, days: list, members: list, repeat: int) -> dict:
    """Ours (sparse, dated) against the dense reference built once for the first day (snapshot links only)."""
    index, table = dense_table(graph, days[0])
    ours_s, matrices = best_of(repeat, lambda: [graph.membership(d, m) for d, m in zip(days, members)])
    ref_s, denses = best_of(repeat, lambda: [dense_query(index, table, m) for m in members])
    ours_bytes = np.mean([x.data.nbytes + x.indices.nbytes + x.indptr.nbytes for x in matrices])
    ref_bytes = np.mean([x.nbytes for x in denses])
    return {
        "days_queried": len(days),
        "query_ms_per_day": 1000 * ours_s / len(days),
        "dense_reference_ms_per_day": 1000 * ref_s / len(days),
        "time_ratio": ours_s / ref_s,
        "bytes_per_day": float(ours_bytes),
        "dense_reference_bytes_per_day": float(ref_bytes),
        "bytes_ratio": float(ours_bytes / ref_bytes),
        "graph_resident_bytes": int(sum(a.nbytes for a in (graph.link_instrument, graph.link_concept,
                                                           graph.link_start, graph.link_end))),
        "dense_reference_resident_bytes": int(table.nbytes),
        "mean_links_per_day": float(np.mean([x.nnz for x in matrices])),
    }


def shared_csi300(shared: Path, repeat: int) -> dict:
    from conceptalpha.data.loader import load_market

    market = load_market(shared / "cn_csi300", "csi300", fields=["close"])
    has_bars = np.isfinite(market.panel.field("close"))

    def build():
        sources = [read_source(kind, shared / "cn_meta" / name) for kind, name in SHARED_SOURCES.items()]
        return build_concept_graph(sources, market.universe, has_bars)

    build_s, graph = best_of(repeat, build)
    days = list(range(len(market.calendar)))
    members = [market.universe.instruments[market.universe.mask[t] & has_bars[t]] for t in days]
    return {"build_s": build_s, "concepts": graph.n_concepts, "links": graph.n_links,
            "share_covered": graph.report()["coverage"]["share_covered"], **query_figures(graph, days, members, repeat)}


def synthetic_5000(repeat: int, n: int = 5000, c: int = 5000, per_stock: int = 4) -> dict:
    rng = np.random.default_rng(0)
    stocks = np.array([f"SH{600000 + i:06d}" for i in range(n)], dtype=object)
    links = pd.DataFrame({"instrument": np.repeat(stocks, per_stock),
                          "concept": [f"c{k}" for k in rng.integers(0, c, n * per_stock)]})
    universe = Universe.everything("synthetic", Calendar(pd.bdate_range("2020-01-01", periods=250)), stocks)
    build_s, graph = best_of(repeat, lambda: build_concept_graph([links], universe, min_members=1))
    return {"build_s": build_s, "stocks": n, "concepts": graph.n_concepts, "links": graph.n_links,
            **query_figures(graph, [0], [stocks], repeat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    out = {"synthetic_5000": synthetic_5000(args.repeat)}
    if (args.shared / "cn_csi300").is_dir():
        out["shared_csi300"] = shared_csi300(args.shared, args.repeat)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
