"""Why a model wins or fails: seed ensembles, IC by year, HIST's parts and attention, strategies and break-even costs.

Pure functions over the tables a run saves (``predictions.parquet``,
``explanations.parquet``) and, for the backtests, the market. Definitions:

- **Seed ensemble** of a model: per (seed, day) the scores are z-scored over the
  day's stocks, z = (s − mean) / std (ddof = 1); the ensemble score of a stock is
  the mean of its z over the seeds that scored it (a stock missing in one seed
  averages the others). Rows get model ``"<NAME> ensemble"`` and seed
  :data:`ENSEMBLE_SEED` (−1). A (seed, day) with a constant score has no z and
  does not vote.
- **IC by year**: daily IC (Pearson vs the raw label), RankIC (Spearman) and the
  HIST paper's IC against the rank-normalised label (``metrics.daily_ic(...,
  "rank_label")``), each averaged over the days of a period, then mean and std
  over seeds.
- **HIST parts**: score − bias = p + h + i (predefined, hidden, individual). Per
  day, over the stocks: var(score) = var(p) + var(h) + var(i) + 2cov(p,h) +
  2cov(p,i) + 2cov(h,i) (ddof = 1). ``var_share_<part>`` = var(part)/var(score);
  ``cov_share_<a>_<b>`` = 2cov(a,b)/var(score), so var and cov shares sum to 1;
  ``sum_share_<part>`` = var(part)/(var(p)+var(h)+var(i)) (sums to 1, ignores
  covariances); ``concept_var_share`` = var(p+h)/var(score), what the concept
  modules together carry; ``std_<part>`` the cross-sectional std.
  ``ic_<part>`` / ``rank_ic_<part>``: the part's own daily IC / RankIC against
  the raw label. Summaries average the daily values over days (and seeds).
- **Attention**: ``attention_entropy_norm`` = H_i / log n_i per stock (1 = flat
  over the n_i concepts it attended, 0 = one concept), averaged per day;
  ``top5_share`` = share of the day's stocks whose top concept is one of the 5
  most frequent top concepts that day (flat attention → the same few boards for
  everyone → close to 1); ``distinct_top`` = how many different top concepts.
- **Strategies and break-even**: see :func:`break_even_cost`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from conceptalpha.data.panel import Market
from conceptalpha.errors import UserError
from conceptalpha.evaluation.backtest import BacktestConfig, backtest
from conceptalpha.evaluation.metrics import cross_sections, daily_ic
from conceptalpha.evaluation.report import PARTS
from conceptalpha.evaluation.summary import mean_std

ENSEMBLE_SEED = -1
"""The seed value that marks seed-ensemble rows."""

IC_METHODS = {"IC": "pearson", "RankIC": "spearman", "IC_rank_label": "rank_label"}
"""Summary key → ``metrics.daily_ic`` method."""

STRATEGIES: dict[str, dict] = {
    "top30_daily": {"strategy": "topk", "topk": 30},
    "topk_dropout_50_5": {"strategy": "topk_dropout", "topk": 50, "n_drop": 5},
}
"""The paper's daily top-30 equal-weight book and Qlib's TopkDropout(50, 5)."""

_PAIRS = ((0, 1), (0, 2), (1, 2))


def _short(part: str) -> str:
    return part.removeprefix("part_")


# ---------------------------------------------------------------- ensemble


def seed_ensemble(predictions: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``"<model> ensemble"`` (seed −1): the mean over seeds of each seed's per-day z-scored score.

    ``predictions``: columns datetime, instrument, model, seed, score, label and
    optionally segment / window (kept). Models with a single seed get no ensemble.
    """
    missing = {"datetime", "instrument", "model", "seed", "score", "label"} - set(predictions.columns)
    if missing:
        raise UserError(f"prediction table lacks columns {sorted(missing)}")
    frame = predictions[predictions.groupby("model")["seed"].transform("nunique") > 1]
    if frame.empty:
        return predictions.iloc[:0]
    window = ["window"] if "window" in frame.columns else []  # overlapping rolling windows stay apart
    by_day = frame.groupby(["model", "seed", *window, "datetime"], sort=False)["score"]
    z = (frame["score"] - by_day.transform("mean")) / by_day.transform("std").where(lambda s: s > 0)
    keys = ["model", *window, "datetime", "instrument"]
    extra = ["segment"] if "segment" in frame.columns else []
    out = (
        frame.assign(score=z)
        .groupby(keys, sort=True)
        .agg(score=("score", "mean"), label=("label", "first"), **{c: (c, "first") for c in extra})
        .reset_index()
    )
    out["model"] = out["model"] + " ensemble"
    out["seed"] = ENSEMBLE_SEED
    return out[[c for c in predictions.columns if c in out.columns]]


# ---------------------------------------------------------------- IC by year


def ic_by_period(predictions: pd.DataFrame) -> pd.DataFrame:
    """Mean daily IC, RankIC and rank-label IC per (model, segment, period), mean and std over seeds.

    period = "all" (the whole segment) or a calendar year. Columns: model,
    segment, period, n_seeds, then <key>_mean and <key>_std for each key of
    :data:`IC_METHODS` (std NaN with one seed).
    """
    frame = predictions.assign(segment=predictions["segment"] if "segment" in predictions else "test")
    rows = []
    for (model, segment, seed), group in frame.groupby(["model", "segment", "seed"], sort=True):
        daily = pd.concat([pd.DataFrame({key: daily_ic(rows, method) for key, method in IC_METHODS.items()}) for rows in cross_sections(group)])
        periods = {"all": daily, **{str(y): d for y, d in daily.groupby(daily.index.year)}}
        rows += [{"model": model, "segment": segment, "seed": seed, "period": p, **d.mean().to_dict()} for p, d in periods.items()]
    per_seed = pd.DataFrame(rows)
    grouped = per_seed.groupby(["model", "segment", "period"], sort=False)[list(IC_METHODS)]
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    out.insert(0, "n_seeds", per_seed.groupby(["model", "segment", "period"], sort=False)["seed"].nunique())
    return out.reset_index()


# ---------------------------------------------------------------- HIST parts


def daily_part_variance(explanations: pd.DataFrame) -> pd.DataFrame:
    """Per (model, seed, datetime): cross-sectional std, variance shares and covariance shares of HIST's parts.

    Columns (module docstring): var_score, std_<part>, var_share_<part>,
    cov_share_<a>_<b>, sum_share_<part>, concept_var_share.
    """
    frame = _explanation_rows(explanations)
    keys = ["model", "seed", "datetime"]
    values = frame[list(PARTS)].to_numpy("float64")
    dev = values - frame.groupby(keys, sort=False)[list(PARTS)].transform("mean").to_numpy()
    n = frame.groupby(keys, sort=False)[PARTS[0]].transform("size").to_numpy()
    products = {f"var_{_short(p)}": dev[:, a] ** 2 for a, p in enumerate(PARTS)}
    products |= {f"cov_{_short(PARTS[a])}_{_short(PARTS[b])}": dev[:, a] * dev[:, b] for a, b in _PAIRS}
    moments = pd.DataFrame(products).div(np.maximum(n - 1, 1), axis=0)  # a one-stock day: 0, then NaN shares
    daily = moments.assign(**{k: frame[k].to_numpy() for k in keys}).groupby(keys, sort=True).sum(min_count=1)
    parts = [_short(p) for p in PARTS]
    var_sum = daily[[f"var_{p}" for p in parts]].sum(axis=1)
    covariances = [f"cov_{parts[a]}_{parts[b]}" for a, b in _PAIRS]
    var_score = (var_sum + 2 * daily[covariances].sum(axis=1)).where(lambda v: v > 0)
    out = pd.DataFrame({"var_score": var_score}, index=daily.index)
    for p in parts:
        out[f"std_{p}"] = np.sqrt(daily[f"var_{p}"])
        out[f"var_share_{p}"] = daily[f"var_{p}"] / var_score
    for c in covariances:
        out[c.replace("cov_", "cov_share_")] = 2 * daily[c] / var_score
    for p in parts:
        out[f"sum_share_{p}"] = daily[f"var_{p}"] / var_sum.where(var_sum > 0)
    out["concept_var_share"] = (daily["var_predefined"] + daily["var_hidden"] + 2 * daily["cov_predefined_hidden"]) / var_score
    return out.reset_index()


def daily_part_ic(explanations: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Per (model, seed, datetime): daily IC and RankIC of the score and of each part against the raw label.

    The label comes from ``predictions`` (same model, seed, datetime, instrument).
    """
    frame = with_labels(_explanation_rows(explanations), predictions)
    out = []
    for (model, seed), group in frame.groupby(["model", "seed"], sort=True):
        columns = {}
        for part in ("score", *PARTS):
            scored = group[["datetime", "instrument", "label"]].assign(score=group[part])
            columns[f"ic_{_short(part)}"] = daily_ic(scored, "pearson")
            columns[f"rank_ic_{_short(part)}"] = daily_ic(scored, "spearman")
        out.append(pd.DataFrame(columns).assign(model=model, seed=seed).reset_index())
    return pd.concat(out, ignore_index=True)


def with_labels(explanations: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The explanation rows with the raw ``label`` of the matching prediction row (rows without one dropped)."""
    keys = ["model", "seed", "datetime", "instrument"]
    labels = predictions[keys + ["label"]].assign(datetime=lambda f: pd.to_datetime(f["datetime"]))
    if "segment" in predictions:
        labels = labels[predictions["segment"].to_numpy() == "test"]
    merged = explanations.drop(columns=["label"], errors="ignore").merge(labels, on=keys, how="inner")
    if merged.empty:
        raise UserError("no explanation row matches a test prediction (model, seed, datetime, instrument)")
    return merged


def hist_part_summary(explanations: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, dict]:
    """model → {"all": {...}, "by_year": {year: {...}}}: the daily part variances, shares and ICs averaged over days and seeds."""
    daily = daily_part_variance(explanations).merge(daily_part_ic(explanations, predictions), on=["model", "seed", "datetime"], how="outer")
    return _summaries(daily)


def _summaries(daily: pd.DataFrame) -> dict[str, dict]:
    """Mean of every numeric daily column per model over all days and per calendar year (NaN days skipped)."""
    values = daily.drop(columns=["seed"]).set_index(["model", "datetime"])
    out = {}
    for model, rows in values.groupby(level="model", sort=True):
        rows = rows.droplevel("model")
        out[str(model)] = {
            "all": _floats(rows.mean()),
            "by_year": {str(y): _floats(r.mean()) for y, r in rows.groupby(rows.index.year)},
        }
    return out


def _floats(series: pd.Series) -> dict[str, float]:
    return {str(k): float(v) for k, v in series.items()}


def _explanation_rows(explanations: pd.DataFrame) -> pd.DataFrame:
    missing = {"datetime", "instrument", *PARTS} - set(explanations.columns)
    if missing:
        raise UserError(f"explanation table lacks columns {sorted(missing)} (has {list(explanations.columns)})")
    frame = explanations.assign(
        datetime=pd.to_datetime(explanations["datetime"]),
        model=explanations["model"].astype(str) if "model" in explanations else "HIST",
        seed=explanations["seed"].astype(int) if "seed" in explanations else 0,
    )
    if "score" not in frame:
        frame["score"] = frame[list(PARTS)].sum(axis=1)
    return frame


# ---------------------------------------------------------------- attention


def daily_attention(explanations: pd.DataFrame, top_n: int = 5) -> pd.DataFrame:
    """Per (model, seed, datetime): mean normalised attention entropy, top-``top_n`` concept share, distinct top concepts.

    ``attention_entropy_norm`` is NaN when the explanations predate that column.
    """
    frame = _explanation_rows(explanations)
    keys = ["model", "seed", "datetime"]
    entropy = frame["attention_entropy_norm"] if "attention_entropy_norm" in frame else pd.Series(np.nan, index=frame.index)
    out = frame.assign(entropy=entropy.astype("float64")).groupby(keys, sort=True).agg(
        attention_entropy_norm=("entropy", "mean"), n_stocks=("instrument", "size")
    )
    if "top_concept" in frame:
        counts = frame.dropna(subset=["top_concept"]).groupby([*keys, "top_concept"], sort=False).size().rename("n").reset_index()
        counts = counts.sort_values([*keys, "n"], ascending=[True] * len(keys) + [False], kind="stable")
        leading = counts[counts.groupby(keys, sort=False).cumcount() < top_n]
        by_day = counts.groupby(keys, sort=True)["n"]
        out[f"top{top_n}_share"] = leading.groupby(keys, sort=True)["n"].sum() / by_day.sum()
        out["distinct_top"] = by_day.size()
    return out.reset_index()


def attention_summary(explanations: pd.DataFrame, top_n: int = 5) -> dict[str, dict]:
    """model → {"all": {...}, "by_year": {...}}: :func:`daily_attention` averaged over days and seeds."""
    return _summaries(daily_attention(explanations, top_n))


# ---------------------------------------------------------------- strategies


def break_even_cost(excess_annual_no_cost: float, mean_daily_turnover: float, days_per_year: int = 238) -> float:
    """One-way cost rate c at which the excess annual return with costs would be 0.

    With cost c per unit of traded value (each buy and each sell), a day's cost is
    c·turnover_d (turnover = Σ|Δw| = bought + sold value / portfolio value), and
    the backtest's arithmetic excess annual return is days_per_year × the mean
    daily excess, so with costs it is ``E₀ − c·T`` with E₀ the no-cost excess
    annual return and T = days_per_year × mean daily turnover (annual turnover).
    Break-even: **c* = E₀ / T**. The minimum cost per trade is ignored. c* < 0
    means the strategy trails the benchmark before any cost; NaN without trades.
    """
    annual_turnover = mean_daily_turnover * days_per_year
    return float(excess_annual_no_cost / annual_turnover) if annual_turnover > 0 else float("nan")


def strategy_summary(scores: pd.DataFrame, market: Market, label: str, settings: Mapping | None = None) -> dict[str, dict[str, float]]:
    """Both strategies of :data:`STRATEGIES` on one score table (datetime, instrument, score): strategy → figures.

    ``settings``: further :class:`BacktestConfig` fields (costs, limits; e.g. a
    config's ``backtest`` section); the strategy fields are set here, and the
    lag follows the label protocol unless ``settings`` set it. Figures: excess
    annual return with and without costs, information ratio with costs, max
    drawdown with costs (portfolio and
    excess), mean daily and annual turnover, the cost rate paid (total cost /
    total traded value) and the break-even one-way cost rate.
    """
    out = {}
    for name, strategy in STRATEGIES.items():
        try:
            config = BacktestConfig.for_label(label, **{**(settings or {}), **strategy})
        except Exception as err:  # pydantic names the bad field
            raise UserError(f"backtest settings: {err}") from None
        result = backtest(scores[["datetime", "instrument", "score"]], market, config)
        net, gross = result.summary(with_cost=True), result.summary(with_cost=False)
        turnover = result.daily["turnover"]
        out[name] = {
            "excess_annual_return_cost": net["excess_annualized_return"],
            "excess_annual_return_no_cost": gross["excess_annualized_return"],
            "information_ratio_cost": net["information_ratio"],
            "max_drawdown_cost": net["max_drawdown"],
            "excess_max_drawdown_cost": net["excess_max_drawdown"],
            "mean_daily_turnover": float(turnover.mean()),
            "annual_turnover": float(turnover.mean() * config.days_per_year),
            "cost_rate_paid": float(result.daily["cost"].sum() / turnover.sum()) if turnover.sum() > 0 else float("nan"),
            "break_even_cost": break_even_cost(gross["excess_annualized_return"], float(turnover.mean()), config.days_per_year),
        }
    return out


def strategies_by_model(predictions: pd.DataFrame, market: Market, label: str, settings: Mapping | None = None) -> dict[str, dict]:
    """model → strategy → figure: :func:`strategy_summary` of each seed's test scores, mean and std over seeds.

    Each figure is {"mean", "std"} (std NaN with one seed).
    """
    test = predictions[predictions["segment"] == "test"] if "segment" in predictions else predictions
    out: dict[str, dict] = {}
    for model, rows in test.groupby("model", sort=True):
        per_seed = {seed: strategy_summary(seed_rows, market, label, settings) for seed, seed_rows in rows.groupby("seed", sort=True)}
        out[str(model)] = {
            name: mean_std({seed: figures[name] for seed, figures in per_seed.items()}, one_seed_std=float("nan"))
            for name in STRATEGIES
        }
    return out

