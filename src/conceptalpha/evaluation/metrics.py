"""Factor metrics: pure functions over a table of scores and raw labels.

Input everywhere is a *prediction frame*: one row per (datetime, instrument)
with columns ``score`` (the factor) and ``label`` (the **raw** forward return
the dataset aligned to that row), either as columns ``datetime, instrument``
or as a (datetime, instrument) MultiIndex. Extra columns are ignored.

Chronology: these functions never shift labels. The label on row ``t`` is
whatever return the dataset attached to ``t`` (e.g. close_{t+2}/close_{t+1} − 1
for the tradable ``t+1->t+2`` label); aligning it is the dataset's job.

Missing values: a row whose score or label is NaN is left out of that day's
statistics. A day whose statistic is undefined (fewer than 2 valid rows, a
constant score or label) yields NaN, and summaries skip NaN days.

Definitions (per day d, over the valid rows of d):

- IC_d = Pearson(score, label); RankIC_d = Spearman(score, label) = Pearson
  of the average ranks (ties share their mean rank, as ``scipy.stats.spearmanr``).
- IC against the rank-normalised label (the HIST paper's measure, ``method="rank_label"``):
  Pearson(score, (rank_pct(label) − 0.5)·3.46), the label the models train on
  with ``label_norm: rank``. It is the Pearson of the score with the label's
  ranks: between IC and RankIC, and not what a portfolio earns.
- ICIR = mean(IC_d) / std(IC_d) (sample std, ddof=1); t-stat = ICIR·√n_days.
- Top k: the k highest scores; ties broken by instrument name (ascending) so
  results are deterministic; a day with fewer than k valid rows uses all of them.
  precision@k_d = #{top k with label > 0} / min(k, n_d);
  recall@k_d = #{top k with label > 0} / #{label > 0} (NaN when no label > 0).
- Quantile groups: each day's valid rows are cut into ``n_groups`` equal-count
  groups of score (``pandas.qcut`` of the tie-broken rank; group n_groups =
  highest scores); quantile return = mean raw label of the group; long-short =
  top group − bottom group. Days with fewer than ``n_groups`` rows get no groups.
- Top-group turnover_d = share of day d's top group that was not in day d−1's
  top group (d−1 = the previous day of the frame).
- Rank autocorrelation_d = Spearman(score_d, score_{d−1}) over the
  instruments scored on both days.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from conceptalpha.errors import UserError
from conceptalpha.features.processors import cs_rank

TOP_KS = (1, 3, 5, 10, 20, 30, 50, 100)
"""The k of precision@k / recall@k reported by default (SPEC §7)."""


def prediction_frame(pred: pd.DataFrame) -> pd.DataFrame:
    """Columns datetime, instrument, score, label, valid rows only, sorted by (datetime, instrument).

    Accepts the columns directly or a (datetime, instrument) MultiIndex.
    """
    frame = pred.reset_index() if "datetime" not in pred.columns and "datetime" in (pred.index.names or []) else pred
    missing = {"datetime", "instrument", "score", "label"} - set(frame.columns)
    if missing:
        raise UserError(f"prediction table lacks columns {sorted(missing)} (has {list(frame.columns)})")
    frame = frame[["datetime", "instrument", "score", "label"]].astype({"score": "float64", "label": "float64"})
    frame = frame.assign(datetime=pd.to_datetime(frame["datetime"]))
    frame = frame.dropna(subset=["score", "label"])
    if frame.duplicated(["datetime", "instrument"]).any():
        raise UserError("prediction table has duplicate (datetime, instrument) rows; pass one model and seed at a time")
    return frame.sort_values(["datetime", "instrument"], kind="stable").reset_index(drop=True)


def cross_sections(pred: pd.DataFrame) -> list[pd.DataFrame]:
    """One model/seed's rows in pieces that hold at most one cross-section per day: the rows
    themselves or, where rolling windows score the same day with different models (validation
    windows longer than the step), one piece per window."""
    if "window" not in pred or not pred.duplicated(["datetime", "instrument"]).any():
        return [pred]
    return [rows for _, rows in pred.groupby("window", sort=True)]


def _pearson_by_day(frame: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Per-day Pearson correlation of columns x and y, from grouped moments (vectorised over days)."""
    by_day = frame.groupby("datetime", sort=True)
    dx = frame[x] - by_day[x].transform("mean")
    dy = frame[y] - by_day[y].transform("mean")
    moments = pd.DataFrame({"xy": dx * dy, "xx": dx * dx, "yy": dy * dy, "datetime": frame["datetime"]})
    sums = moments.groupby("datetime", sort=True).sum()
    # A constant column leaves rounding noise in its deviations, not exact zeros: test max > min instead.
    varies = (by_day[x].max() > by_day[x].min()) & (by_day[y].max() > by_day[y].min())
    ic = sums["xy"] / np.sqrt(sums["xx"] * sums["yy"]).where(varies)
    return ic.clip(-1.0, 1.0).rename(None)


def _with_ranks(frame: pd.DataFrame) -> pd.DataFrame:
    """Add per-day average ranks of score and label (ties get their mean rank)."""
    by_day = frame.groupby("datetime", sort=False)
    return frame.assign(score_rank=by_day["score"].rank(method="average"), label_rank=by_day["label"].rank(method="average"))


IC_NAMES = {"pearson": "ic", "spearman": "rank_ic", "rank_label": "rank_label_ic"}


def daily_ic(pred: pd.DataFrame, method: str = "pearson") -> pd.Series:
    """Daily IC series indexed by datetime: Pearson (``"pearson"``), Spearman (``"spearman"``, RankIC)
    or Pearson against the rank-normalised label (``"rank_label"``, the HIST paper's IC)."""
    frame = prediction_frame(pred)
    if method == "pearson":
        ic = _pearson_by_day(frame, "score", "label")
    elif method == "spearman":
        ic = _pearson_by_day(_with_ranks(frame), "score_rank", "label_rank")
    elif method == "rank_label":
        ranked = frame.assign(label=cs_rank(frame["label"].to_numpy(), frame["datetime"].to_numpy()).astype("float64"))
        ic = _pearson_by_day(ranked, "score", "label")
    else:
        raise UserError(f"IC method must be one of {sorted(IC_NAMES)}, got {method!r}")
    return _all_days(frame, ic).rename(IC_NAMES[method])


def _all_days(frame: pd.DataFrame, series: pd.Series) -> pd.Series:
    """Reindex on every day of the frame (days with too few rows are NaN), named index ``datetime``."""
    days = pd.DatetimeIndex(frame["datetime"].unique(), name="datetime")
    out = series.reindex(days)
    out.index.name = "datetime"
    return out


def ic_summary(ic: pd.Series) -> dict[str, float]:
    """Mean, std (ddof=1), IR = mean/std, t-stat = IR·√n, share of positive days, n of a daily IC series."""
    values = ic.dropna()
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    ir = mean / std if std and np.isfinite(std) and std > 0 else float("nan")
    return {
        "mean": mean,
        "std": std,
        "ir": ir,
        "t_stat": float(ir * np.sqrt(n)) if np.isfinite(ir) else float("nan"),
        "positive_share": float((values > 0).mean()) if n else float("nan"),
        "n_days": n,
    }


def _top_rank(frame: pd.DataFrame) -> pd.Series:
    """Rank of each row's score within its day, 1 = highest; ties by instrument (frame is sorted by it)."""
    return frame.groupby("datetime", sort=False)["score"].rank(method="first", ascending=False)


def precision_recall_at_k(pred: pd.DataFrame, ks: Iterable[int] = TOP_KS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Daily precision@k and recall@k, each a frame [datetime × k] (definitions in the module docstring)."""
    frame = prediction_frame(pred)
    rank = _top_rank(frame)
    positive = frame["label"] > 0
    by_day = frame.groupby("datetime", sort=True)
    n_valid = by_day.size()
    n_positive = positive.groupby(frame["datetime"], sort=True).sum()
    precision, recall = {}, {}
    for k in ks:
        hits = (positive & (rank <= k)).groupby(frame["datetime"], sort=True).sum()
        precision[k] = hits / np.minimum(n_valid, k)
        recall[k] = hits / n_positive.where(n_positive > 0)
    return _k_frame(precision), _k_frame(recall)


def _k_frame(columns: Mapping[int, pd.Series]) -> pd.DataFrame:
    out = pd.DataFrame(columns).astype("float64")
    out.index.name = "datetime"
    out.columns.name = "k"
    return out


def quantile_groups(pred: pd.DataFrame, n_groups: int = 5) -> pd.DataFrame:
    """The prediction frame with a ``group`` column (1 = lowest scores … n_groups = highest; NaN on short days).

    Same bins as ``pandas.qcut(rank, n_groups)`` on the tie-broken ranks r = 1..n
    (edges 1 + (n−1)·j/n_groups, right-closed), computed for all days at once:
    group = max(⌈(r−1)·n_groups/(n−1)⌉, 1).
    """
    frame = prediction_frame(pred)
    by_day = frame.groupby("datetime", sort=False)["score"]
    rank = by_day.rank(method="first").to_numpy().astype(np.int64)
    size = by_day.transform("size").to_numpy()
    ok = size >= max(n_groups, 2)
    numerator = (rank - 1) * n_groups
    denominator = np.maximum(size - 1, 1)
    group = np.maximum(-(-numerator // denominator), 1).astype("float64")
    return frame.assign(group=np.where(ok, group, np.nan))


def quantile_returns(pred: pd.DataFrame, n_groups: int = 5) -> pd.DataFrame:
    """Mean raw label of each score group per day: frame [datetime × group 1..n_groups]."""
    grouped = quantile_groups(pred, n_groups).dropna(subset=["group"])
    table = grouped.pivot_table(index="datetime", columns="group", values="label", aggfunc="mean")
    table.columns = pd.Index([int(g) for g in table.columns], name="group")
    return table.reindex(columns=range(1, n_groups + 1))


def long_short_spread(quantile_ret: pd.DataFrame) -> pd.Series:
    """Top group minus bottom group return per day."""
    return (quantile_ret.iloc[:, -1] - quantile_ret.iloc[:, 0]).rename("long_short")


def top_group_turnover(pred: pd.DataFrame, n_groups: int = 5) -> pd.Series:
    """Share of each day's top group that was not in the previous day's top group (first day NaN)."""
    grouped = quantile_groups(pred, n_groups)
    top = grouped.assign(member=grouped["group"] == n_groups).pivot(index="datetime", columns="instrument", values="member")
    top = top.eq(True)
    previous = top.shift(1, fill_value=False)
    new = (top & ~previous).sum(axis=1)
    size = top.sum(axis=1)
    turnover = (new / size.where(size > 0)).astype("float64")
    turnover.iloc[:1] = np.nan
    return turnover.rename("top_turnover")


def rank_autocorrelation(pred: pd.DataFrame) -> pd.Series:
    """Spearman correlation between each day's scores and the previous day's, over common instruments."""
    frame = prediction_frame(pred)
    wide = frame.pivot(index="datetime", columns="instrument", values="score")
    previous = wide.shift(1)
    common = wide.notna() & previous.notna()
    today_rank = wide.where(common).rank(axis=1)
    previous_rank = previous.where(common).rank(axis=1)
    return today_rank.corrwith(previous_rank, axis=1).rename("rank_autocorr")


def factor_report(pred: pd.DataFrame, ks: Iterable[int] = TOP_KS, n_groups: int = 5) -> dict[str, pd.Series | pd.DataFrame]:
    """Every daily series of the factor: ic, rank_ic, precision, recall, quantile, long_short, turnover, autocorr."""
    frame = prediction_frame(pred)
    quantiles = quantile_returns(frame, n_groups)
    precision, recall = precision_recall_at_k(frame, ks)
    return {
        "ic": daily_ic(frame, "pearson"),
        "rank_ic": daily_ic(frame, "spearman"),
        "precision": precision,
        "recall": recall,
        "quantile": quantiles,
        "long_short": long_short_spread(quantiles),
        "top_turnover": top_group_turnover(frame, n_groups),
        "rank_autocorr": rank_autocorrelation(frame),
    }


def summarize_series(series: Mapping[str, pd.Series | pd.DataFrame]) -> dict[str, float]:
    """Flat summary of :func:`factor_report`'s daily series over the days they cover.

    Keys: IC, IC_std, ICIR, IC_tstat, RankIC, RankIC_std, RankICIR, RankIC_tstat,
    precision@k, recall@k, quantile_<g> (mean daily return of group g),
    long_short, long_short_tstat, top_turnover, rank_autocorr, n_days.
    """
    ic = ic_summary(series["ic"])
    rank_ic = ic_summary(series["rank_ic"])
    spread = ic_summary(series["long_short"])
    out: dict[str, float] = {
        "IC": ic["mean"], "IC_std": ic["std"], "ICIR": ic["ir"], "IC_tstat": ic["t_stat"],
        "RankIC": rank_ic["mean"], "RankIC_std": rank_ic["std"], "RankICIR": rank_ic["ir"], "RankIC_tstat": rank_ic["t_stat"],
    }
    out |= {f"precision@{k}": float(v) for k, v in series["precision"].mean().items()}
    out |= {f"recall@{k}": float(v) for k, v in series["recall"].mean().items()}
    out |= {f"quantile_{g}": float(v) for g, v in series["quantile"].mean().items()}
    out |= {
        "long_short": spread["mean"],
        "long_short_tstat": spread["t_stat"],
        "top_turnover": float(series["top_turnover"].mean()),
        "rank_autocorr": float(series["rank_autocorr"].mean()),
        "n_days": int(series["ic"].notna().sum()),
    }
    return out


def summarize_by_year(series: Mapping[str, pd.Series | pd.DataFrame]) -> dict[int, dict[str, float]]:
    """:func:`summarize_series` of each calendar year of the daily series.

    Turnover and rank autocorrelation at the first day of a year compare with the
    last day of the previous year (the daily series are computed once, then sliced).
    """
    years = sorted(set(series["ic"].index.year))
    return {int(y): summarize_series({name: s[s.index.year == y] for name, s in series.items()}) for y in years}


def factor_summary(pred: pd.DataFrame, ks: Iterable[int] = TOP_KS, n_groups: int = 5) -> dict:
    """All factor metrics over the whole window and by calendar year: ``{"all": {...}, "by_year": {year: {...}}}``."""
    series = factor_report(pred, ks, n_groups)
    return {"all": summarize_series(series), "by_year": summarize_by_year(series)}


def ic_by_year(ic: pd.Series) -> pd.DataFrame:
    """Mean, std, IR and day count of a daily IC series per calendar year."""
    rows = {int(year): ic_summary(group) for year, group in ic.groupby(ic.index.year)}
    return pd.DataFrame.from_dict(rows, orient="index")
