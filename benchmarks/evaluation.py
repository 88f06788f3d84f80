"""Speed and agreement of the evaluation stage, against references run in the same invocation.

The factor: 5-day reversal (−close_t/close_{t−5} + 1, known after close t) on
the CSI300 members of the shared A-share data, scored 2017–2020 against the
tradable label close_{t+2}/close_{t+1} − 1. It is a weak, real factor; the
point is the measurement, not the factor.

- Metrics: ``daily_ic`` (Pearson + Spearman, vectorised over days) vs a
  per-day ``scipy.stats`` loop; reports the speed ratio and the largest difference.
- Backtest: top-30 equal weight and TopkDropout(50, 5), seconds per run.
- With ``--compare-python`` (an interpreter with pyqlib), the same predictions
  go through Qlib's ``calc_ic`` and ``backtest_daily`` + ``TopkDropoutStrategy``
  (close price, limit 9.5% — given to Qlib in the data's units: the shared
  data's ``change`` is in percent, which Qlib would otherwise read as a 0.095%
  limit and refuse most trades —, costs 0.05%/0.15%/min 5, capital 1e8, benchmark
  SH000300) and the summaries are printed side by side. Qlib rounds orders to
  100-share lots and dates returns differently, so the backtests agree only
  approximately; the ICs should agree to rounding.

Prints JSON. Usage: ``python benchmarks/evaluation.py [--provider ../shared/data/cn_csi300]
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
import pandas as pd
from scipy import stats

from conceptalpha.data.loader import load_market
from conceptalpha.evaluation.backtest import BacktestConfig, backtest
from conceptalpha.evaluation.export import export_qlib_pred
from conceptalpha.evaluation.metrics import daily_ic

QLIB_SCRIPT = """
import json, sys, time, pandas as pd, qlib
from qlib.contrib.eva.alpha import calc_ic
from qlib.contrib.evaluate import backtest_daily, risk_analysis
from qlib.contrib.strategy import TopkDropoutStrategy
provider, pred_path, label_path, out = sys.argv[1:5]
qlib.init(provider_uri=provider, region="cn", kernels=2)
pred = pd.read_parquet(pred_path)
label = pd.read_parquet(label_path)
ic, ric = calc_ic(pred["score"], label["score"])
t = time.perf_counter()
strategy = TopkDropoutStrategy(signal=pred, topk=50, n_drop=5)
days = pred.index.get_level_values(0).unique().sort_values()
report, _ = backtest_daily(  # Qlib needs a calendar day after end_time
    start_time=str(days[0].date()), end_time=str(days[-2].date()),
    strategy=strategy, account=1e8, benchmark="SH000300",
    # The shared data stores $change in percent: Qlib compares it to the threshold as is, so 9.5 here = 9.5%.
    exchange_kwargs={"limit_threshold": float(sys.argv[5]), "deal_price": "close", "open_cost": 0.0005, "close_cost": 0.0015, "min_cost": 5},
)
seconds = time.perf_counter() - t
excess_gross = risk_analysis(report["return"] - report["bench"], freq="day")["risk"]
excess_net = risk_analysis(report["return"] - report["bench"] - report["cost"], freq="day")["risk"]
json.dump({
    "IC": float(ic.mean()), "RankIC": float(ric.mean()), "backtest_seconds": seconds,
    "excess_annualized_return_net": float(excess_net["annualized_return"]),
    "information_ratio_net": float(excess_net["information_ratio"]),
    "excess_annualized_return_gross": float(excess_gross["annualized_return"]),
    "mean_turnover": float(report["turnover"].mean()), "n_days": int(len(report)),
}, open(out, "w"))
"""


def reversal_predictions(provider: Path) -> tuple[pd.DataFrame, object]:
    market = load_market(provider, "csi300", "2016-10-01", "2020-12-31")
    close = pd.DataFrame(market.panel.field("close").astype("float64"), index=market.calendar.dates, columns=market.panel.instruments)
    traded = pd.DataFrame(market.universe.mask & (market.panel.field("volume") > 0), index=close.index, columns=close.columns)
    score = (1.0 - close / close.shift(5)).where(traded).stack()
    label = (close.shift(-2) / close.shift(-1) - 1.0).stack().reindex(score.index)
    pred = pd.DataFrame({"score": score, "label": label}).rename_axis(["datetime", "instrument"]).reset_index()
    return pred[pred["datetime"] >= "2017-01-01"].reset_index(drop=True), market


def scipy_daily_ic(pred: pd.DataFrame) -> pd.DataFrame:
    """The reference: one scipy call per day and method."""
    rows = {}
    for date, day in pred.dropna(subset=["score", "label"]).groupby("datetime"):
        rows[date] = (stats.pearsonr(day["score"], day["label"])[0], stats.spearmanr(day["score"], day["label"])[0])
    return pd.DataFrame.from_dict(rows, orient="index", columns=["ic", "rank_ic"])


def qlib_threshold(market) -> float:
    """9.5% in the units of the data's ``change`` field (this data stores percent; Qlib does not rescale it)."""
    change = market.panel.field("change")
    return 9.5 if np.nanmax(np.abs(change)) > 1.5 else 0.095


def best_of(repeat: int, fn):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "cn_csi300")
    parser.add_argument("--compare-python", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pred, market = reversal_predictions(args.provider)
    ours_s, ours = best_of(args.repeat, lambda: pd.concat([daily_ic(pred, "pearson"), daily_ic(pred, "spearman")], axis=1))
    ref_s, ref = best_of(1, lambda: scipy_daily_ic(pred))
    result = {
        "rows": len(pred),
        "days": int(pred["datetime"].nunique()),
        "metrics": {
            "ours_seconds": ours_s,
            "scipy_loop_seconds": ref_s,
            "speedup": ref_s / ours_s,
            "max_abs_diff_ic": float((ours["ic"] - ref["ic"]).abs().max()),
            "max_abs_diff_rank_ic": float((ours["rank_ic"] - ref["rank_ic"]).abs().max()),
            "IC": float(ours["ic"].mean()),
            "RankIC": float(ours["rank_ic"].mean()),
        },
    }
    same_as_qlib = dict(limit_threshold=0.095)  # Qlib's one limit for every stock, not our A-share board rules
    configs = {"topk30": BacktestConfig(topk=30, **same_as_qlib),
               "topk_dropout_50_5": BacktestConfig(strategy="topk_dropout", topk=50, n_drop=5, **same_as_qlib)}
    for name, config in configs.items():
        seconds, run = best_of(args.repeat, lambda: backtest(pred, market, config))
        net, gross = run.summary(True), run.summary(False)
        result[f"backtest_{name}"] = {
            "seconds": seconds,
            "n_days": net["n_days"],
            "excess_annualized_return_net": net["excess_annualized_return"],
            "information_ratio_net": net["information_ratio"],
            "excess_annualized_return_gross": gross["excess_annualized_return"],
            "mean_turnover": net["mean_turnover"],
        }
    if args.compare_python:
        with tempfile.TemporaryDirectory() as tmp:
            # Parquet, not pickle: Qlib runs on pandas 2, which cannot unpickle pandas 3 frames.
            export_qlib_pred(pred, Path(tmp) / "pred.parquet")
            export_qlib_pred(pred.drop(columns="score").rename(columns={"label": "score"}), Path(tmp) / "label.parquet")
            out = Path(tmp) / "qlib.json"
            qlib_run = subprocess.run(
                [str(args.compare_python), "-c", QLIB_SCRIPT, str(args.provider), str(Path(tmp) / "pred.parquet"), str(Path(tmp) / "label.parquet"), str(out), str(qlib_threshold(market))],
                capture_output=True, text=True, check=False,
            )
            if not out.exists():
                raise SystemExit(f"the Qlib run failed:\n{qlib_run.stderr[-3000:]}")
            qlib_result = json.loads(out.read_text())
        result["qlib"] = qlib_result
        result["qlib_backtest_seconds_ratio"] = qlib_result["backtest_seconds"] / result["backtest_topk_dropout_50_5"]["seconds"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
