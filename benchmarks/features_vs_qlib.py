"""Alpha360 / Alpha158 tables: conceptalpha vs pyqlib's handlers, on the same data in one run.

Each side runs in its own subprocess (pyqlib under the interpreter given by
``--qlib-python``, e.g. a venv with ``pip install -e .[compare]``), so that its
wall time and peak resident memory (VmHWM) are its own. Each child
writes its table to a temporary .npy + index file; the parent then compares
them row by row and prints one JSON object:

    {"<feature set>": {"qlib": {...}, "ours": {...}, "speedup": qlib_s / ours_s,
                       "memory_ratio": ours_peak / qlib_peak, "rows": ..., "compare": {...}}}

``compare`` holds the rows only one side has, NaN-pattern and ±inf mismatches,
the max |a − b| and the max relative difference |a − b| / max(|a|, |b|) over
cells where both are finite (0 where both are 0).

Wall time covers reading the data from disk and building the table
(pyqlib: ``Alpha360(...)``/``Alpha158(...)`` with no processors, then
``fetch(col_set="feature")``; ours: ``load_qlib`` + ``build_feature_table``).

Usage:  .venv/bin/python benchmarks/features_vs_qlib.py [--start 2010-01-01 --end 2020-12-31]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM (Linux) restarts at exec; ru_maxrss would
    carry over the parent's peak, which holds the previous comparison's tables."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_side(side: str, provider: str, universe: str, feature_set: str, start: str, end: str, out: Path) -> None:
    """Child process: build one table, record time and memory, save it for the parent."""
    import pandas as pd

    if side == "qlib":
        import qlib
        from qlib.contrib.data.handler import Alpha158, Alpha360

        qlib.init(provider_uri=provider, region="cn")
        baseline = _peak_rss_mb()
        t0 = time.perf_counter()
        handler = (Alpha360 if feature_set == "alpha360" else Alpha158)(
            instruments=universe, start_time=start, end_time=end, infer_processors=[], learn_processors=[]
        )
        table = handler.fetch(col_set="feature")
    else:
        from conceptalpha.data.qlib import load_qlib
        from conceptalpha.features.alpha import build_feature_table

        baseline = _peak_rss_mb()
        t0 = time.perf_counter()
        table = build_feature_table(load_qlib(provider, universe, None, end), feature_set, start, end)
    wall = time.perf_counter() - t0
    peak = _peak_rss_mb()
    instruments = table.index.get_level_values("instrument").astype(str).str.upper()
    np.save(out / f"{side}_values.npy", table.to_numpy(np.float32))
    np.save(out / f"{side}_dates.npy", table.index.get_level_values("datetime").to_numpy("datetime64[ns]"))
    np.save(out / f"{side}_instruments.npy", instruments.to_numpy(str))
    np.save(out / f"{side}_columns.npy", np.array([str(c) for c in table.columns]))
    figures = {"wall_s": round(wall, 3), "peak_rss_mb": round(peak, 1), "rss_before_build_mb": round(baseline, 1),
               "rows": int(len(table)), "columns": int(table.shape[1]), "python": sys.executable,
               "pandas": pd.__version__}
    (out / f"{side}.json").write_text(json.dumps(figures))


def compare(out: Path, chunk: int = 50_000) -> dict:
    """Row-aligned comparison of the two saved tables."""
    cols = [np.load(out / f"{s}_columns.npy") for s in ("qlib", "ours")]
    keys = {}
    for s in ("qlib", "ours"):
        dates = np.load(out / f"{s}_dates.npy").astype("datetime64[D]").astype(str)
        keys[s] = np.char.add(np.char.add(dates, "|"), np.load(out / f"{s}_instruments.npy"))
    common, qi, oi = np.intersect1d(keys["qlib"], keys["ours"], assume_unique=True, return_indices=True)
    a_all = np.load(out / "qlib_values.npy", mmap_mode="r")
    b_all = np.load(out / "ours_values.npy", mmap_mode="r")
    stats = {"nan_mismatches": 0, "inf_mismatches": 0, "max_abs_diff": 0.0, "max_rel_diff": 0.0,
             "cells_rel_diff_over_1e-5": 0, "finite_cells_compared": 0}
    worst_col = np.zeros(len(cols[1]))
    for lo in range(0, len(common), chunk):
        part = slice(lo, lo + chunk)
        order = np.argsort(qi[part])  # read the memory-mapped rows in file order
        a = np.asarray(a_all[qi[part][order]], dtype=np.float64)
        b = np.asarray(b_all[oi[part][order]], dtype=np.float64)
        stats["nan_mismatches"] += int((np.isnan(a) != np.isnan(b)).sum())
        stats["inf_mismatches"] += int((np.isinf(a) != np.isinf(b)).sum())
        both = np.isfinite(a) & np.isfinite(b)
        diff = np.where(both, np.abs(a - b), 0.0)
        scale = np.maximum(np.abs(a), np.abs(b))
        rel = np.divide(diff, scale, out=np.zeros_like(diff), where=both & (scale > 0))
        stats["max_abs_diff"] = max(stats["max_abs_diff"], float(diff.max(initial=0)))
        stats["max_rel_diff"] = max(stats["max_rel_diff"], float(rel.max(initial=0)))
        stats["cells_rel_diff_over_1e-5"] += int((rel > 1e-5).sum())
        stats["finite_cells_compared"] += int(both.sum())
        worst_col = np.maximum(worst_col, rel.max(axis=0, initial=0))
    order = np.argsort(worst_col)[::-1][:5]
    stats["worst_columns"] = {str(cols[1][j]): float(worst_col[j]) for j in order if worst_col[j] > 0}
    stats.update(same_columns=bool(np.array_equal(cols[0], cols[1])), rows_compared=int(len(common)),
                 rows_only_qlib=int(len(keys["qlib"]) - len(common)), rows_only_ours=int(len(keys["ours"]) - len(common)))
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--provider", default=str(REPO.parent / "shared" / "data" / "cn_csi300"))
    p.add_argument("--universe", default="csi300")
    p.add_argument("--features", nargs="+", default=["alpha360", "alpha158"])
    p.add_argument("--start", default="2010-01-01")
    p.add_argument("--end", default="2020-12-31")
    p.add_argument("--qlib-python", default=str(REPO / ".venv-compare" / "bin" / "python"))
    p.add_argument("--side", choices=["qlib", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        run_side(args.side, args.provider, args.universe, args.features[0], args.start, args.end, Path(args.tmp))
        return
    report = {"provider": args.provider, "universe": args.universe, "start": args.start, "end": args.end,
              "cpus": os.cpu_count()}
    for feature_set in args.features:
        with tempfile.TemporaryDirectory(prefix="features_vs_qlib.") as tmp:
            for side, python in (("qlib", args.qlib_python), ("ours", sys.executable)):
                child = subprocess.run(
                    [python, __file__, "--side", side, "--provider", args.provider, "--universe", args.universe,
                     "--features", feature_set, "--start", args.start, "--end", args.end, "--tmp", tmp],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                )
                if child.returncode != 0:
                    sys.exit(f"{side} side failed ({python}):\n{child.stderr[-3000:]}")
            sides = {s: json.loads((Path(tmp) / f"{s}.json").read_text()) for s in ("qlib", "ours")}
            result = dict(sides)
            result["speedup"] = round(sides["qlib"]["wall_s"] / sides["ours"]["wall_s"], 2)
            result["memory_ratio"] = round(sides["ours"]["peak_rss_mb"] / sides["qlib"]["peak_rss_mb"], 3)
            result["compare"] = compare(Path(tmp))
            report[feature_set] = result
        print(json.dumps({feature_set: report[feature_set]}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
