"""The GRU encoder alone: forward + backward of ``gru_last_state`` against ``nn.GRU``
(2 layers, hidden 64, T = 60, F = 6), measured in the same run; with ``--score``, a
forward pass under ``torch.no_grad()`` (validation, prediction) instead.

Each measurement runs in its own subprocess, so that its peak resident memory
(``ru_maxrss``) is its own; the two sides alternate, round after round, and the
JSON reports medians and ratios (ours / nn.GRU; below 1 is better). "ours" uses
the compiled step kernels (``models/gru_steps.cpp``), "ours_eager" the same code
with ``CONCEPTALPHA_NATIVE=0`` (the pure-PyTorch steps). Default cases: N = 150
and 600 rows with 1 torch thread, N = 3000 with 2 threads.

    .venv/bin/python benchmarks/gru_step.py
    .venv/bin/python benchmarks/gru_step.py --cases 150x1 --rounds 5
    .venv/bin/python benchmarks/gru_step.py --cases 300x1 --score
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from step_timing import ratios, run_worker, summarise, time_steps

T, F, HIDDEN, LAYERS = 60, 6, 64, 2


def worker(side: str, n: int, threads: int, steps: int, score: bool) -> dict:
    """Time ``steps`` forward + backward passes, or (``score``) forward passes without gradients,
    after two warm-ups, in this process."""
    if side == "ours_eager":
        os.environ["CONCEPTALPHA_NATIVE"] = "0"
    import torch

    from conceptalpha.models.fast_gru import gru_last_state

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rnn = torch.nn.GRU(F, HIDDEN, LAYERS, batch_first=True)
    x = torch.randn(n, T, F)
    weight = torch.randn(n, HIDDEN)
    encode = (lambda: rnn(x)[0][:, -1, :]) if side == "torch" else (lambda: gru_last_state(rnn, x))

    def step():
        for p in rnn.parameters():
            p.grad = None
        (encode() * weight).sum().backward()

    def scoring_pass():
        with torch.no_grad():
            encode()

    return time_steps(scoring_pass if score else step, steps, warmups=2)


def _run_worker(side: str, n: int, threads: int, steps: int, score: bool) -> dict:
    command = [sys.executable, __file__, "--worker", side, "--cases", f"{n}x{threads}", "--steps", str(steps)]
    return run_worker(command + (["--score"] if score else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="150x1,600x1,3000x2", help="NxTHREADS,...")
    parser.add_argument("--rounds", type=int, default=3, help="alternating subprocess rounds per side")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per subprocess")
    parser.add_argument("--score", action="store_true", help="time forward passes under torch.no_grad() instead")
    parser.add_argument("--worker", choices=["ours", "ours_eager", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = [tuple(int(v) for v in s.split("x")) for s in args.cases.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, *cases[0], args.steps, args.score)))
        return
    report = {"benchmark": "gru_step", "pass": "score" if args.score else "train", "T": T, "F": F, "hidden": HIDDEN, "layers": LAYERS,
              "load_average_start": os.getloadavg(), "cases": []}
    for n, threads in cases:
        runs = {"ours": [], "ours_eager": [], "torch": []}
        for _ in range(args.rounds):
            for side in runs:
                runs[side].append(_run_worker(side, n, threads, args.steps, args.score))
        entry = {"N": n, "threads": threads, "ours": summarise(runs["ours"]),
                 "ours_eager": summarise(runs["ours_eager"]), "nn_gru": summarise(runs["torch"])}
        for side in ("ours", "ours_eager"):
            entry.update(ratios(entry[side], entry["nn_gru"], **{
                f"{side}_time_ratio": "step_s_median", f"{side}_step_memory_ratio": "step_peak_over_start_mb"}))
        report["cases"].append(entry)
        print(json.dumps(entry), file=sys.stderr)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
