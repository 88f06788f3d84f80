"""Is the synthetic market's signal learnable by pooling concept peers?

Fits two linear predictors of the ``t+1->t+2`` label by least squares on the
first half of the calendar and reports their mean daily IC (Pearson, index
members, raw label) on the second half, next to the oracle's IC on the same days:

- own: the stock's own mean return over the last w days (w = 1, 3, 5, 10, 20);
- pooled: the same windows of the mean return of its published concept and
  industry peers (concept means averaged over the stock's published concepts);
- pooled (regression): the same windows of the stock's fitted value in a daily
  ridge regression of member returns on the published membership (concept
  returns estimated jointly, which removes the overlap between concepts);
- own + pooled: both sets of features.

Returns are cross-sectionally demeaned among the day's members first.
Prints JSON. Usage:
``python benchmarks/synth_pooling.py [--stocks N] [--years Y] [--seed S] [--set FIELD=VALUE ...]``
(e.g. ``--set n_concepts=30 --set missing_link_share=0``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from conceptalpha.data.synthetic import SynthConfig, daily_ic, forward_label, generate

WINDOWS = (1, 3, 5, 10, 20)
LABEL = "t+1->t+2"


def demeaned_returns(close: np.ndarray, traded: np.ndarray, members: np.ndarray) -> np.ndarray:
    """[D, N] daily return minus the day's member mean; NaN where not a traded member both days."""
    r = np.full(close.shape, np.nan)
    r[1:] = np.where(traded[1:] & traded[:-1] & members[1:], close[1:] / close[:-1] - 1, np.nan)
    return r - row_mean(r)


def row_mean(values: np.ndarray) -> np.ndarray:
    """[D, 1] mean of each row's finite values (0 for a row with none)."""
    count = np.isfinite(values).sum(axis=1, keepdims=True)
    return np.nansum(values, axis=1, keepdims=True) / np.maximum(count, 1)


def trailing_means(values: np.ndarray) -> list[np.ndarray]:
    """NaN-aware mean of each column over the last w rows, for each window w."""
    filled, present = np.nan_to_num(values), np.isfinite(values).astype(float)
    sums, counts = np.cumsum(filled, axis=0), np.cumsum(present, axis=0)
    out = []
    for w in WINDOWS:
        s, c = sums.copy(), counts.copy()
        s[w:] -= sums[:-w]
        c[w:] -= counts[:-w]
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(c > 0, s / c, 0.0))
    return out


def peer_returns(returns: np.ndarray, links: np.ndarray) -> np.ndarray:
    """[D, N]: mean over the stock's concepts of each concept's mean member return that day."""
    present = np.isfinite(returns).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        concept_mean = (np.nan_to_num(returns) @ links) / (present @ links)
    concept_mean = np.nan_to_num(concept_mean)
    return concept_mean @ links.T / np.maximum(links.sum(axis=1), 1)


def projected_returns(returns: np.ndarray, links: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """[D, N]: each day, links @ f̂ with f̂ = argmin ||r − links f||² + ridge ||f||² over the day's members."""
    out = np.zeros_like(returns)
    for t in range(len(returns)):  # one small solve per day over the whole cross-section
        ok = np.isfinite(returns[t])
        if ok.sum() < 2:
            continue
        x = links[ok]
        f = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ returns[t, ok])
        out[t] = links @ f
    return out


def fit_and_score(features: list[np.ndarray], target: np.ndarray, label: np.ndarray, mask: np.ndarray, split: int):
    x = np.stack(features, axis=-1)  # [D, N, F]
    train = mask[:split] & np.isfinite(target[:split])
    design = np.concatenate([x[:split][train], np.ones((train.sum(), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, target[:split][train], rcond=None)
    score = x @ coef[:-1]
    return daily_ic(score[split:], label[split:], mask[split:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stocks", type=int, default=300)
    parser.add_argument("--years", type=float, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any other SynthConfig field")
    args = parser.parse_args()
    started = time.perf_counter()
    overrides = dict(item.split("=", 1) for item in args.set)
    config = SynthConfig(seed=args.seed, n_stocks=args.stocks, n_years=args.years, **overrides)
    sm = generate(config)
    generate_s = time.perf_counter() - started

    panel, members = sm.market.panel, sm.market.universe.mask
    close = panel.field("close").astype(float)
    traded = panel.field("volume") > 0
    label = forward_label(close, LABEL)
    target = label - row_mean(np.where(members, label, np.nan))
    returns = demeaned_returns(close, traded, members)
    published = pd.crosstab(sm.concepts["instrument"], sm.concepts["concept"]).reindex(panel.instruments, fill_value=0)
    own = trailing_means(returns)
    links = published.to_numpy(dtype=float)
    pooled = trailing_means(peer_returns(returns, links))
    regression = trailing_means(projected_returns(returns, links))
    split = len(close) // 2
    oracle = daily_ic(sm.oracle(LABEL)[split:].astype(float), label[split:], members[split:])
    result = {**vars(args), "label": LABEL, "generate_s": round(generate_s, 2)}
    predictors = {"own": own, "pooled": pooled, "pooled_regression": regression, "own_pooled": own + pooled}
    for name, feats in predictors.items():
        ic = fit_and_score(feats, target, label, members, split)
        result[f"ic_{name}"] = round(float(np.nanmean(ic)), 4)
    result["ic_oracle"] = round(float(np.nanmean(oracle)), 4)
    for name in predictors:
        result[f"share_of_oracle_{name}"] = round(result[f"ic_{name}"] / result["ic_oracle"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
