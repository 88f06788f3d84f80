"""How long does reading a whole Qlib provider folder take, next to Qlib itself?

Times ``load_qlib`` (best of ``--repeat`` runs, page cache warm after the first)
on the CSI300 universe with all fields, and — when ``--compare-python`` points
to an interpreter with pyqlib — Qlib's own ``D.features`` on the same folder,
universe and fields, run in that interpreter in the same invocation. It also
checks that both read the same close prices. Prints JSON.

Usage: ``python benchmarks/data_read.py [--provider ../shared/data/cn_csi300]
[--compare-python .venv-compare/bin/python]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from conceptalpha.data.qlib import load_qlib

QLIB_FIELDS = ["$open", "$high", "$low", "$close", "$volume", "$factor", "$change"]

QLIB_SCRIPT = """
import sys, time, numpy as np, qlib
from qlib.data import D
provider, universe, out = sys.argv[1:4]
qlib.init(provider_uri=provider, region="cn", kernels=2)
best = float("inf")
for _ in range(int(sys.argv[4])):
    t = time.perf_counter()
    frame = D.features(D.instruments(universe), %r, freq="day")
    best = min(best, time.perf_counter() - t)
close = frame["$close"].unstack(level=0)
np.save(out, close.to_numpy(dtype=np.float32))
np.save(out + ".cols.npy", np.array([c.upper() for c in close.columns]))
print(best)
""" % (QLIB_FIELDS,)


def time_ours(provider: Path, universe: str, repeat: int):
    best, market = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        market = load_qlib(provider, universe)
        best = min(best, time.perf_counter() - t)
    return best, market


def time_qlib(python: str, provider: Path, universe: str, repeat: int, out: Path) -> float:
    done = subprocess.run(
        [python, "-c", QLIB_SCRIPT, str(provider), universe, str(out), str(repeat)],
        capture_output=True, text=True, check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/cn_csi300")
    parser.add_argument("--universe", default="csi300")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare-python", default=None)
    args = parser.parse_args()

    ours, market = time_ours(args.provider, args.universe, args.repeat)
    result = {
        "provider": str(args.provider),
        "universe": args.universe,
        "shape_days_instruments": list(market.panel.shape),
        "fields": sorted(market.panel.fields),
        "load_qlib_seconds": round(ours, 3),
    }
    if args.compare_python:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "close.npy"
            theirs = time_qlib(args.compare_python, args.provider, args.universe, args.repeat, out)
            close, cols = np.load(out), np.load(str(out) + ".cols.npy")
        pos = market.panel.instrument_positions(cols)
        # Qlib returns values on member days only: compare ours on the same member days.
        ours_close = np.where(market.universe.mask, market.panel.fields["close"], np.nan)[:, pos]
        same = bool((pos >= 0).all()) and close.shape == ours_close.shape and np.allclose(close, ours_close, equal_nan=True)
        result.update(
            {
                "qlib_features_seconds": round(theirs, 3),
                "speedup_vs_qlib": round(theirs / ours, 2),
                "close_identical_to_qlib": bool(same),
            }
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
