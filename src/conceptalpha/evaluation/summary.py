"""A run's metrics, computed once: per seed, mean ± std over seeds, the oracle, the tables.

:func:`summarise_run` turns a run's predictions (and the daily backtests of each
model/seed) into the dictionary saved as ``metrics.json``; the report and the
tables are rendered from it. Each part is one function call inside
:func:`summarise_run`, so a new section (e.g. diagnostics) is one more line there.

Layout of the result::

    {"models": {MODEL: {"seeds": [...],
                        "per_seed": {SEED: {"test": {...}, "valid": {...}, "test_by_year": {YEAR: {...}}}},
                        "test": {KEY: {"mean", "std"}}, "valid": {...},
                        "test_by_year": {YEAR: {"IC", "RankIC"}},
                        "backtest": {...}, "backtest_no_cost": {...}, "train_seconds": s}},
     "oracle": {"test": {...}}}

Per-seed test metrics carry the factor metrics of
:func:`~conceptalpha.evaluation.metrics.summarize_series` and the backtest's
summary with and without cost as ``net_*`` / ``gross_*``. Standard deviations
over seeds use ddof=1 (0 for a single seed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from conceptalpha.errors import UserError
from conceptalpha.evaluation.backtest import summarize_backtest
from conceptalpha.evaluation.metrics import cross_sections, factor_report, summarize_by_year, summarize_series

HEADLINE = ("IC", "ICIR", "RankIC", "RankICIR", "precision@30")
SEGMENTS = ("test", "valid")
_BACKTEST_KEY = re.compile(r"^(?P<model>.+)_seed(?P<seed>-?\d+)$")


def backtest_key(model: str, seed: int) -> str:
    """The key of a (model, seed) backtest, as in ``backtest_<model>_seed<k>.parquet``."""
    return f"{model}_seed{seed}"


def parse_backtest_key(key: str) -> tuple[str, int]:
    match = _BACKTEST_KEY.match(key)
    if not match:
        raise UserError(f"backtest key {key!r} is not of the form '<model>_seed<k>'")
    return match["model"], int(match["seed"])


def daily_backtest(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """A daily backtest indexed by datetime (a saved one has the index as a column)."""
    if frame is None or "datetime" not in frame.columns:
        return frame
    return frame.set_index(pd.DatetimeIndex(pd.to_datetime(frame["datetime"]), name="datetime")).drop(columns="datetime")


def with_annual_return(summary: dict) -> dict:
    """``annual_return``: the compounded annualised return, under the name metrics.json uses."""
    return {"annual_return": summary["annualized_return"], **summary}


# ---------------------------------------------------------------- one seed


def seed_metrics(predictions: pd.DataFrame, backtest: pd.DataFrame | None = None, days_per_year: int = 238) -> tuple[dict, dict]:
    """Flat metrics of one model/seed on one segment, and the same per calendar year.

    Factor metrics from the predictions; with a daily backtest also its summary
    with cost (``net_*``) and without (``gross_*``).
    """
    series = _daily_series(predictions)
    flat = summarize_series(series)
    daily = daily_backtest(backtest)
    if daily is not None and len(daily):
        flat |= {f"net_{k}": v for k, v in summarize_backtest(daily, True, days_per_year).items()}
        flat |= {f"gross_{k}": v for k, v in summarize_backtest(daily, False, days_per_year).items()}
    return flat, summarize_by_year(series)


def _daily_series(predictions: pd.DataFrame) -> dict[str, pd.Series | pd.DataFrame]:
    """:func:`factor_report` of one model/seed/segment; overlapping rolling windows are scored
    window by window and their daily series follow one another (:func:`cross_sections`)."""
    reports = [factor_report(rows) for rows in cross_sections(predictions)]
    return {name: pd.concat([report[name] for report in reports]) for name in reports[0]}


# ---------------------------------------------------------------- over seeds


def mean_std(by_seed: Mapping[int, Mapping[str, float]], one_seed_std: float = 0.0) -> dict[str, dict[str, float]]:
    """Each metric's mean and std (ddof=1) over seeds; with one seed the std is ``one_seed_std``."""
    if not by_seed:
        return {}
    frame = pd.DataFrame({seed: dict(m) for seed, m in by_seed.items()}).T.astype("float64")
    std = frame.std(ddof=1) if len(frame) > 1 else pd.Series(one_seed_std, index=frame.columns)
    return {k: {"mean": float(frame[k].mean()), "std": float(std[k])} for k in frame.columns}


def mean_by_year(by_seed: Mapping[int, Mapping[int, Mapping[str, float]]], keys=("IC", "RankIC")) -> dict[str, dict[str, float]]:
    """Mean over seeds of each year's metrics."""
    years = sorted({int(y) for s in by_seed.values() for y in s})
    return {str(y): {k: float(np.mean([s[y][k] for s in by_seed.values() if y in s])) for k in keys} for y in years}


def _prefixed(by_seed: Mapping[int, Mapping[str, float]], prefix: str) -> dict[str, float]:
    """Mean over seeds of the ``prefix``-ed backtest keys, without the prefix."""
    keys = {k for m in by_seed.values() for k in m if k.startswith(prefix)}
    summary = {k.removeprefix(prefix): float(np.mean([m[k] for m in by_seed.values() if k in m])) for k in sorted(keys)}
    return with_annual_return(summary) if summary else {}


def model_summary(rows: pd.DataFrame, backtests: Mapping[str, pd.DataFrame], days_per_year: int = 238) -> dict:
    """Per seed and over seeds: one model's metrics of every segment it has, its backtests, its seeds."""
    per_seed: dict[int, dict] = {}
    for seed, frame in rows.groupby("seed", sort=True):
        seed, entry = int(seed), {}
        for segment in SEGMENTS:
            seg = frame[frame["segment"] == segment] if "segment" in frame else frame
            if not seg.empty:
                backtest = backtests.get(backtest_key(str(frame["model"].iloc[0]), seed)) if segment == "test" else None
                entry[segment], by_year = seed_metrics(seg, backtest, days_per_year)
                if segment == "test":
                    entry["test_by_year"] = {str(y): m for y, m in by_year.items()}
        per_seed[seed] = entry
    test = {s: e["test"] for s, e in per_seed.items() if "test" in e}
    return {
        "seeds": sorted(per_seed),
        "test": mean_std({s: _factor_only(m) for s, m in test.items()}),
        "valid": mean_std({s: _factor_only(e["valid"]) for s, e in per_seed.items() if "valid" in e}),
        "test_by_year": mean_by_year({s: {int(y): m for y, m in e.get("test_by_year", {}).items()} for s, e in per_seed.items()}),
        "backtest": _prefixed(test, "net_"),
        "backtest_no_cost": _prefixed(test, "gross_"),
        "per_seed": {str(s): e for s, e in per_seed.items()},
    }


def _factor_only(flat: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in flat.items() if not k.startswith(("net_", "gross_"))}


# ---------------------------------------------------------------- oracle


def oracle_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """The test rows the models were scored on (those of the first model and seed): where the oracle is scored."""
    test = predictions[predictions["segment"] == "test"]
    return test[(test["model"] == test["model"].iloc[0]) & (test["seed"] == test["seed"].iloc[0])]


def oracle_summary(scored_rows: pd.DataFrame) -> dict[str, float]:
    """The headline test metrics of the oracle's scores on :func:`oracle_rows`."""
    flat = summarize_series(factor_report(scored_rows))
    return {k: flat[k] for k in HEADLINE}


# ---------------------------------------------------------------- the run


def summarise_run(
    predictions: pd.DataFrame,
    backtests: Mapping[str, pd.DataFrame] | None = None,
    oracle: pd.DataFrame | None = None,
    train_seconds: Mapping[str, list[float]] | None = None,
    days_per_year: int = 238,
) -> dict:
    """Every metric of a run (layout in the module docstring).

    ``predictions``: datetime, instrument, score, label, model, seed [, segment];
    ``backtests``: ``"<model>_seed<k>"`` → daily backtest of the test segment;
    ``oracle``: :func:`oracle_rows` with the oracle's ``score``;
    ``train_seconds``: model → seconds of each job.
    """
    backtests = backtests or {}
    out: dict = {"models": {}}
    for model, rows in predictions.groupby("model", sort=False):
        out["models"][str(model)] = model_summary(rows, backtests, days_per_year)
        if train_seconds is not None:
            out["models"][str(model)]["train_seconds"] = float(np.mean(train_seconds.get(model, [np.nan])))
    if oracle is not None:
        out["oracle"] = {"test": oracle_summary(oracle)}
    return out


# ---------------------------------------------------------------- tables


def results_table(metrics: dict) -> str:
    """Markdown table: one row per model, mean ± std over seeds of the headline metrics and the backtest."""
    rows = []
    for name, m in metrics["models"].items():
        test = m["test"]
        row = {"model": name, "seeds": len(m["seeds"])}
        for key in HEADLINE:
            row[key] = f"{test[key]['mean']:.4f} ± {test[key]['std']:.4f}" if key in test else "n/a"
        bt = m["backtest"]
        row["annual return (cost)"] = f"{bt.get('annual_return', float('nan')):.2%}"
        row["excess annual"] = f"{bt.get('excess_annualized_return', float('nan')):.2%}"
        row["IR"] = f"{bt.get('information_ratio', float('nan')):.2f}"
        row["max DD"] = f"{bt.get('max_drawdown', float('nan')):.2%}"
        row["train s"] = f"{m.get('train_seconds', float('nan')):.0f}"
        rows.append(row)
    if "oracle" in metrics:
        o = metrics["oracle"]["test"]
        rows.append({"model": "oracle (ceiling)", "seeds": "", **{k: f"{o[k]:.4f}" for k in HEADLINE}})
    table = pd.DataFrame(rows).fillna("")
    return f"Test window, label {metrics['label']}, universe {metrics['universe']}\n\n" + table.to_markdown(index=False)


GRID_COLUMNS = ("IC", "ICIR", "RankIC", "RankICIR")


def grid_row(coordinates: Mapping[str, object], metrics: dict) -> dict:
    """One grid job's row: its coordinates and headline test metrics (a job has one model and one seed)."""
    (model,) = metrics["models"].values()
    return {
        **coordinates,
        **{k: model["test"][k]["mean"] for k in GRID_COLUMNS},
        "annual_return": model["backtest"].get("annual_return", float("nan")),
        "information_ratio": model["backtest"].get("information_ratio", float("nan")),
    }
