"""Time one training step and one inference pass per model on one day's cross-section.

Prints JSON: for each neural baseline, milliseconds per day (median of ``--repeats``)
for inference (no grad) and a training step (forward + backward), and the ratio
to GRU measured in the same run. Registered default hyper-parameters, random
Alpha360-shaped input [N, 60, 6].

    .venv/bin/python benchmarks/zoo_step_time.py --stocks 300 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from conceptalpha.models.registry import MODELS, build_model

REFERENCE = "GRU"


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_model(name: str, x: torch.Tensor, y: torch.Tensor, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(name, d_feat=x.shape[2], seq_len=x.shape[1])

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    def train_step() -> None:
        model.train()
        if hasattr(model, "training_loss"):
            loss = model.training_loss({"x": x, "y": y})
        else:
            loss = (model(x) - y).square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    return {"infer_ms": median_ms(infer, repeats), "train_step_ms": median_ms(train_step, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stocks", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.stocks, 60, 6, generator=generator)
    y = torch.randn(args.stocks, generator=generator)
    names = [n for n, spec in MODELS.items() if spec.kind == "neural" and not spec.uses_concepts]
    results = {name: time_model(name, x, y, args.repeats) for name in names}
    reference = results[REFERENCE]
    for timing in results.values():
        timing["infer_vs_gru"] = timing["infer_ms"] / reference["infer_ms"]
        timing["train_vs_gru"] = timing["train_step_ms"] / reference["train_step_ms"]
    report = {"stocks": args.stocks, "threads": args.threads, "reference": REFERENCE, "models": results}
    print(json.dumps(report, indent=2, default=lambda v: round(v, 3)))


if __name__ == "__main__":
    main()
