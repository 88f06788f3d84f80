"""One HIST training step (forward + backward + Adam, gradient values clipped to ±3):
conceptalpha's HIST against pyqlib's HISTModel, measured in the same run.

Each measurement runs in its own subprocess (2 torch threads) so that its peak
resident memory (``ru_maxrss``) is its own; ours and Qlib's alternate, round
after round, and the JSON reports medians. Inputs are random with the stated
sizes: x [N, 60, 6], each stock in 5 random concepts of C, log-normal market caps.

Qlib's model reads ``torch.get_device(x)``, which fails for CPU tensors; the Qlib
worker patches it to return "cpu" (and says so in the output). Qlib's model
takes the concept matrix dense [N, C] and x flat [N, 360] (field-major), and has
no market cap / correction step; ours runs the full SPEC §2 model.

    .venv/bin/python benchmarks/hist_step.py                 # all sizes
    .venv/bin/python benchmarks/hist_step.py --sizes 300x500 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from step_timing import ratios, run_worker, summarise, time_steps

REPO = Path(__file__).resolve().parents[1]
OURS_PYTHON = REPO / ".venv" / "bin" / "python"
QLIB_PYTHON = REPO / ".venv-compare" / "bin" / "python"
T, F, CONCEPTS_PER_STOCK = 60, 6, 5


def _inputs(n: int, c: int):
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((n, T, F)).astype(np.float32))
    rows = np.repeat(np.arange(n), CONCEPTS_PER_STOCK)
    cols = rng.integers(0, c, n * CONCEPTS_PER_STOCK)
    membership = torch.sparse_coo_tensor(
        torch.from_numpy(np.vstack([rows, cols])), torch.ones(len(rows)), (n, c)
    ).coalesce()
    membership = torch.sparse_coo_tensor(membership.indices(), torch.ones(membership._nnz()), (n, c)).coalesce()
    cap = torch.from_numpy(rng.lognormal(23.0, 1.0, n).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    return x, membership, cap, y


def worker(side: str, n: int, c: int, steps: int) -> dict:
    """Time ``steps`` training steps (after one warm-up) in this process."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    x, membership, cap, y = _inputs(n, c)
    if side == "ours":
        from conceptalpha.models.hist import HIST

        model = HIST()

        def forward():
            return model(x, membership, cap)
    else:
        torch.get_device = lambda t: "cpu" if t.device.type == "cpu" else t.get_device()  # Qlib is GPU-only
        from qlib.contrib.model.pytorch_hist import HISTModel

        model = HISTModel()
        flat = x.transpose(1, 2).reshape(n, F * T).contiguous()
        dense = membership.to_dense()

        def forward():
            return model(flat, dense)

    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step():
        optimizer.zero_grad()
        loss = torch.mean((forward() - y) ** 2)
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 3.0)
        optimizer.step()

    return time_steps(step, steps, warmups=1)


def _run_worker(python: Path, side: str, n: int, c: int, steps: int) -> dict:
    return run_worker([str(python), __file__, "--worker", side, "--sizes", f"{n}x{c}", "--steps", str(steps)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300x500,3000x4000,10000x5000", help="NxC,... ")
    parser.add_argument("--rounds", type=int, default=3, help="alternating subprocess rounds per side")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per subprocess")
    parser.add_argument("--qlib-max-n", type=int, default=3000, help="largest N to run Qlib's model at")
    parser.add_argument("--worker", choices=["ours", "qlib"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, *sizes[0], args.steps)))
        return

    qlib_available = QLIB_PYTHON.exists()
    report = {
        "benchmark": "hist_step",
        "torch_threads": 2,
        "T": T,
        "F": F,
        "concepts_per_stock": CONCEPTS_PER_STOCK,
        "load_average_start": os.getloadavg(),
        "qlib_note": "pyqlib HISTModel; torch.get_device patched to return 'cpu' for CPU tensors (unpatched it raises)",
        "sizes": [],
    }
    for n, c in sizes:
        with_qlib = qlib_available and n <= args.qlib_max_n
        runs = {"ours": [], "qlib": []}
        for _ in range(args.rounds):
            runs["ours"].append(_run_worker(OURS_PYTHON, "ours", n, c, args.steps))
            if with_qlib:
                runs["qlib"].append(_run_worker(QLIB_PYTHON, "qlib", n, c, args.steps))
        entry = {"N": n, "C": c, "ours": summarise(runs["ours"])}
        if with_qlib:
            entry["qlib"] = summarise(runs["qlib"])
            entry.update(ratios(entry["ours"], entry["qlib"], time_ratio_ours_over_qlib="step_s_median",
                                peak_rss_ratio_ours_over_qlib="peak_rss_mb"))
        report["sizes"].append(entry)
        print(json.dumps(entry), file=sys.stderr)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
