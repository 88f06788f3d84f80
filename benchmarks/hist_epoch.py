"""One HIST epoch on the shared CSI300 data: conceptalpha's trainer against pyqlib's HIST.

"Epoch" = one training pass over the train days (2010–2014, one day per step,
shuffled) plus one evaluation pass over the valid days (2015–2016). Both sides
get the same Alpha360 features, labels and concept membership (this project's
dataset and concept graph, from ``configs/csi300_hist.yaml``):

- ours: :func:`conceptalpha.training.fit` with ``max_epochs=1`` (so the time
  also includes building each day's inputs, the checkpoint and best.pt);
- Qlib: ``HIST.train_epoch`` + ``HIST.test_epoch`` of
  ``qlib.contrib.model.pytorch_hist`` in ``.venv-compare`` (pandas<3), fed the
  same rows as pandas frames and the concept matrix as its dense ``.npy``
  (with the all-zero row 733 its code uses for unknown stocks).
  ``torch.get_device`` is patched to return "cpu" (Qlib's model fails on CPU otherwise).

``--days-per-step 1,4`` also trains ``--epochs`` epochs at each setting and
reports epoch time and validation IC. 2 torch threads throughout.

    .venv/bin/python benchmarks/hist_epoch.py                      # ours vs Qlib, one epoch
    .venv/bin/python benchmarks/hist_epoch.py --skip-qlib --days-per-step 1,4 --epochs 3
    .venv/bin/python benchmarks/hist_epoch.py --max-days 120        # a subset, on a busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
QLIB_PYTHON = REPO / ".venv-compare" / "bin" / "python"
UNKNOWN_ROW = 733  # Qlib's HIST maps stocks missing from its index to this concept row


def load_real(config_path: Path):
    """The dataset and concept graph the experiment config describes (built with this project's code)."""
    from conceptalpha.experiments.config import load_config
    from conceptalpha.experiments.runner import build_window_dataset, load_inputs

    config = load_config(config_path)
    inputs = load_inputs(config)
    segments = {"train": tuple(config.segments.train), "valid": tuple(config.segments.valid)}
    return inputs, build_window_dataset(inputs, config, segments)


class FirstDays:
    """The dataset restricted to its first ``d`` train days and first ``d // 2`` valid days."""

    def __init__(self, dataset, d: int):
        self.dataset, self.label, self.d_feat = dataset, dataset.label, dataset.d_feat
        self.limits = {"train": d, "valid": max(1, d // 2)}

    def days(self, segment: str) -> list[int]:
        return self.dataset.days(segment)[: self.limits.get(segment)]

    def day(self, t: int):
        return self.dataset.day(t)


def ours_epochs(dataset, membership, days_per_step: int, epochs: int, run_dir: Path) -> dict:
    import torch

    from conceptalpha.models.hist import HIST
    from conceptalpha.training import TrainerConfig, fit, set_seed

    set_seed(0)
    model = HIST(d_feat=dataset.d_feat)
    config = TrainerConfig(
        max_epochs=epochs, patience=epochs, average_last=1, days_per_step=days_per_step,
        device="cpu", show_progress=False,
    )
    torch.set_num_threads(2)
    result = fit(model, dataset, membership, config, run_dir)
    return {"days_per_step": days_per_step, "history": result.history}


def export_for_qlib(dataset, graph, folder: Path) -> None:
    """Write the train/valid rows (x flat field-major, label, stock row) and Qlib's dense concept matrix."""
    instruments = np.asarray(graph.instruments).astype(str)
    row_of = {s: i for i, s in enumerate(instruments)}
    dense = graph.membership(dataset.days("train")[-1], instruments).toarray().astype(np.float32)
    table = np.zeros((max(len(instruments), UNKNOWN_ROW + 1), dense.shape[1]), dtype=np.float32)
    table[: len(instruments)] = dense
    np.save(folder / "stock2concept.npy", table)
    for segment in ("train", "valid"):
        xs, ys, rows, dates, names = [], [], [], [], []
        for t in dataset.days(segment):
            day = dataset.day(t)
            xs.append(day.x.transpose(0, 2, 1).reshape(day.n, -1))
            ys.append(day.y_train if segment == "train" else day.y_raw)
            rows.append(np.array([row_of.get(str(s), UNKNOWN_ROW) for s in day.instruments], dtype=np.float64))
            dates.append(np.full(day.n, np.datetime64(day.date, "ns")))
            names.append(np.asarray(day.instruments).astype(str))
        np.savez(folder / f"{segment}.npz", x=np.concatenate(xs), y=np.concatenate(ys), row=np.concatenate(rows),
                 date=np.concatenate(dates), instrument=np.concatenate(names))


def qlib_worker(folder: Path) -> dict:
    """Runs under .venv-compare: time Qlib's train_epoch + test_epoch on the exported rows."""
    import pandas as pd
    import torch

    torch.set_num_threads(2)
    torch.get_device = lambda t: "cpu" if t.device.type == "cpu" else t.get_device()  # Qlib is GPU-only
    from qlib.contrib.model.pytorch_hist import HIST

    def frames(segment):
        data = np.load(folder / f"{segment}.npz")
        index = pd.MultiIndex.from_arrays([pd.DatetimeIndex(data["date"]), data["instrument"]],
                                          names=["datetime", "instrument"])
        return (pd.DataFrame(data["x"], index=index), pd.DataFrame(data["y"], index=index),
                pd.Series(data["row"].astype(np.int64), index=index))

    model = HIST(d_feat=6, lr=2e-4, metric="ic", GPU=-1, seed=0, stock2concept=str(folder / "stock2concept.npy"))
    train, valid = frames("train"), frames("valid")
    started = time.perf_counter()
    model.train_epoch(*train)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    _, valid_ic = model.test_epoch(*valid)
    valid_s = time.perf_counter() - started
    return {"train_pass_s": train_s, "valid_pass_s": valid_s, "epoch_s": train_s + valid_s, "valid_ic": float(valid_ic)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "csi300_hist.yaml")
    parser.add_argument("--days-per-step", default="1", help="comma list, e.g. 1,4")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per days-per-step setting")
    parser.add_argument("--skip-qlib", action="store_true")
    parser.add_argument("--max-days", type=int, default=0,
                        help="use only the first D train and D/2 valid days (both sides; 0 = all)")
    parser.add_argument("--qlib-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.qlib_worker:
        print(json.dumps(qlib_worker(args.qlib_worker)))
        return

    os.chdir(REPO)  # the config's data paths are relative to the repository
    started = time.perf_counter()
    inputs, dataset = load_real(args.config)
    if args.max_days:
        dataset = FirstDays(dataset, args.max_days)
    report = {
        "benchmark": "hist_epoch",
        "torch_threads": 2,
        "train_days": len(dataset.days("train")),
        "valid_days": len(dataset.days("valid")),
        "concepts": int(inputs.graph.n_concepts),
        "max_days": args.max_days,
        "data_build_s": time.perf_counter() - started,
        "load_average_start": os.getloadavg(),
        "ours": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for k in [int(v) for v in args.days_per_step.split(",")]:
            entry = ours_epochs(dataset, inputs.membership, k, args.epochs, Path(tmp) / f"dps{k}")
            report["ours"].append(entry)
            print(json.dumps(entry), file=sys.stderr)
        if not args.skip_qlib and QLIB_PYTHON.exists():
            export_for_qlib(dataset, inputs.graph, Path(tmp))
            done = subprocess.run([str(QLIB_PYTHON), __file__, "--qlib-worker", tmp], capture_output=True, text=True)
            report["qlib"] = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                              else {"error": done.stderr.strip().splitlines()[-1]})
            report["qlib_note"] = "pyqlib HIST.train_epoch + test_epoch; torch.get_device patched to return 'cpu'"
            history = report["ours"][0]["history"]
            if "epoch_s" in report["qlib"] and report["ours"][0]["days_per_step"] == 1:
                report["epoch_time_ratio_ours_over_qlib"] = history[0]["seconds"] / report["qlib"]["epoch_s"]
                if len(history) > 1:  # later epochs reuse the day's membership tensors built in the first
                    report["later_epoch_time_ratio_ours_over_qlib"] = history[1]["seconds"] / report["qlib"]["epoch_s"]
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
