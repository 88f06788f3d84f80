"""A run's metrics computed once (evaluation/summary.py), and the report rendered from them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conceptalpha.evaluation.summary import mean_std, results_table, summarise_run
from conceptalpha.experiments.run_report import build_report
from test_report import run_dir, tiny_run  # noqa: F401  (run_dir is a fixture)


def test_mean_and_std_over_seeds_by_hand():
    got = mean_std({0: {"IC": 0.01, "x": 1.0}, 1: {"IC": 0.03, "x": 1.0}})
    assert got["IC"]["mean"] == pytest.approx(0.02) and got["IC"]["std"] == pytest.approx(0.0141421356)
    assert got["x"] == {"mean": 1.0, "std": 0.0}
    single = mean_std({5: {"IC": -0.02}})
    assert single == {"IC": {"mean": -0.02, "std": 0.0}} and str(single["IC"]["std"]) == "0.0"  # not -0.0


def test_summarise_run_per_seed_and_over_seeds():
    run = tiny_run(days=120, n=20)
    metrics = summarise_run(run["predictions"], run["backtests"], train_seconds={"HIST": [2.0, 4.0]})
    hist = metrics["models"]["HIST"]
    assert hist["seeds"] == [0, 1] and hist["train_seconds"] == 3.0
    test = run["predictions"].query("model == 'HIST' and seed == 1 and segment == 'test'")
    by_day = test.groupby("datetime")[["score", "label"]].apply(lambda d: np.corrcoef(d["score"], d["label"])[0, 1])
    assert hist["per_seed"]["1"]["test"]["IC"] == pytest.approx(by_day.mean(), abs=1e-12)
    ics = [hist["per_seed"][s]["test"]["IC"] for s in ("0", "1")]
    assert hist["test"]["IC"]["mean"] == pytest.approx(np.mean(ics)) and hist["test"]["IC"]["std"] == pytest.approx(np.std(ics, ddof=1))
    assert hist["valid"]["IC"]["mean"] != hist["test"]["IC"]["mean"]  # each segment on its own rows
    nets = [hist["per_seed"][s]["test"]["net_max_drawdown"] for s in ("0", "1")]
    assert hist["backtest"]["max_drawdown"] == pytest.approx(np.mean(nets))
    assert hist["backtest"]["annual_return"] == hist["backtest"]["annualized_return"]
    assert "net_max_drawdown" not in hist["test"]  # the factor table keeps factor metrics only
    table = results_table({**metrics, "label": "t+1->t+2", "universe": "u"})
    assert f"{hist['test']['IC']['mean']:.4f} ± {hist['test']['IC']['std']:.4f}" in table


def test_overlapping_rolling_validation_windows_are_scored_window_by_window():
    """Validation windows longer than the step score the same days with two windows' models."""
    rows = tiny_run(days=120, n=20)["predictions"].query("model == 'HIST' and seed == 0 and segment == 'valid'")
    first, second = rows.assign(window=0), rows.assign(window=1, score=-rows["score"])
    metrics = summarise_run(pd.concat([first, second]))
    one = summarise_run(first)["models"]["HIST"]["valid"]
    valid = metrics["models"]["HIST"]["valid"]
    assert valid["IC"]["mean"] == pytest.approx(0.0, abs=1e-12)  # each window's daily ICs, one after the other
    assert valid["n_days"]["mean"] == 2 * one["n_days"]["mean"]


def test_report_shows_the_metrics_the_run_saved(run_dir, tmp_path):  # noqa: F811
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    predictions = pd.read_parquet(copy / "predictions.parquet")
    backtests = {p.stem.removeprefix("backtest_"): pd.read_parquet(p) for p in copy.glob("backtest_*.parquet")}
    metrics = summarise_run(predictions, backtests)
    for seed in ("0", "1"):
        metrics["models"]["GRU"]["per_seed"][seed]["test"]["RankIC"] = 0.4321
    (copy / "metrics.json").write_text(json.dumps(metrics))
    build_report(copy)
    assert "| GRU | 2 | " in (copy / "comparison.md").read_text() and "0.4321 ± 0.0000" in (copy / "comparison.md").read_text()
    assert "0.4321" not in (run_dir / "comparison.md").read_text()
