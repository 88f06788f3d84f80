"""The market context vector: hand-checked entries, no look-ahead, normalised on the train days only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conceptalpha.features.dataset import DatasetConfig, build_dataset
from conceptalpha.features.market_context import (
    CONTEXT_WINDOWS,
    NO_INDEX_NOTE,
    NO_INDEX_VOLUME_NOTE,
    context_notes,
    market_context,
)
from conceptalpha.features.processors import RobustZScore
from feature_markets import make_market, perturb_after, random_bars

DAYS, N = 130, 6
SEGMENTS = {"train": ("2020-01-01", "2020-04-30"), "valid": ("2020-05-01", "2020-05-31"),
            "test": ("2020-06-01", "2020-12-31")}


def _market(bars=None, index_seed: int | None = 3, cut: int | None = None):
    bars = random_bars(DAYS, N, seed=5) if bars is None else bars
    mask = np.ones((DAYS, N), dtype=bool)
    mask[:50, 5] = False  # joins the universe later
    market = make_market(bars, mask)
    if index_seed is not None:
        rng = np.random.default_rng(index_seed)
        close = 3000 * np.exp(np.cumsum(rng.normal(0, 0.01, DAYS)))
        volume = rng.uniform(1e9, 2e9, DAYS)
        if cut is not None:  # the future of the index moves too
            close[cut + 1 :] *= rng.uniform(0.5, 1.5, DAYS - cut - 1)
            volume[cut + 1 :] *= rng.uniform(0.5, 1.5, DAYS - cut - 1)
        market.benchmark = pd.Series(close, index=market.calendar.dates)
        market.benchmark_volume = pd.Series(volume, index=market.calendar.dates)
    return market


def _column(context, name: str) -> np.ndarray:
    return context.values[:, context.names.index(name)]


def test_entries_match_hand_computations():
    market = _market()
    context = market_context(market)
    assert len(context.names) == len(set(context.names)) == 4 + 4 * 5 + 1 + 4 * 5
    close = market.panel.field("close").astype(np.float64)
    t = 70
    members = market.universe.mask[t]
    returns = (close[t] / close[t - 1] - 1)[members]
    assert _column(context, "cs_ret_mean")[t] == pytest.approx(returns.mean())
    assert _column(context, "cs_ret_std")[t] == pytest.approx(returns.std())
    volume = market.panel.field("volume").astype(np.float64)
    relative = np.log(volume[t] / volume[t - 19 : t + 1].mean(axis=0))[members]
    assert _column(context, "cs_volume_mean")[t] == pytest.approx(relative.mean())
    daily_mean = _column(context, "cs_ret_mean")
    assert _column(context, "cs_ret_mean_std10")[t] == pytest.approx(daily_mean[t - 9 : t + 1].std(ddof=1))
    index = market.benchmark.to_numpy()
    index_ret = index[1:] / index[:-1] - 1
    assert _column(context, "index_ret1")[t] == pytest.approx(index_ret[t - 1])
    assert _column(context, "index_ret_std20")[t] == pytest.approx(index_ret[t - 20 : t].std(ddof=1))
    assert _column(context, "index_close_rel30")[t] == pytest.approx(index[t] / index[t - 29 : t + 1].mean() - 1)
    vol = market.benchmark_volume.to_numpy()
    assert _column(context, "index_volume_rel5")[t] == pytest.approx(np.log(vol[t] / vol[t - 4 : t + 1].mean()))


def test_without_an_index_only_the_cross_section_part_and_a_note():
    bare = _market(index_seed=None)
    context = market_context(bare)
    assert context.names and all(name.startswith("cs_") for name in context.names)
    assert context_notes(bare) == [NO_INDEX_NOTE]
    no_volume = _market()
    no_volume.benchmark_volume = None
    names = market_context(no_volume).names
    assert any(n.startswith("index_ret") for n in names) and not any("volume_rel" in n for n in names)
    assert context_notes(no_volume) == [NO_INDEX_VOLUME_NOTE] and context_notes(_market()) == []


def test_no_look_ahead_perturbing_the_future_leaves_the_past_unchanged():
    bars = random_bars(DAYS, N, seed=5)
    cut = 80
    clean = market_context(_market(bars))
    moved = market_context(_market(perturb_after(bars, cut), cut=cut))
    np.testing.assert_array_equal(clean.values[: cut + 1], moved.values[: cut + 1])
    assert not np.allclose(clean.values[cut + 1 :], moved.values[cut + 1 :], equal_nan=True)
    assert max(CONTEXT_WINDOWS) < cut  # the longest window fits before the cut


def test_dataset_normalises_on_train_days_only_and_gives_each_day_its_vector():
    config = DatasetConfig(feature_set="alpha158", segments=SEGMENTS, market_context=True)
    bars = random_bars(DAYS, N, seed=5)
    clean = build_dataset(_market(bars), config)
    last_train = clean.days("train")[-1]
    moved = build_dataset(_market(perturb_after(bars, last_train), cut=last_train), config)
    assert clean.d_market == len(clean.market_names) == 45
    for t in clean.days("train"):
        np.testing.assert_array_equal(clean.day(t).market, moved.day(t).market)
    first_test = clean.days("test")[0]
    assert not np.array_equal(clean.day(first_test).market, moved.day(first_test).market)
    raw = market_context(_market(bars)).values
    train = clean.days("train")
    expected = RobustZScore.fit(raw[train[0] : train[-1] + 1], config.feature_clip).transform(raw)
    days = clean.days("train") + clean.days("test")
    np.testing.assert_array_equal(np.stack([clean.day(t).market for t in days]), expected[days])
    assert np.isfinite(expected).all() and np.abs(expected).max() <= config.feature_clip
    plain = build_dataset(_market(bars), DatasetConfig(feature_set="alpha158", segments=SEGMENTS))
    assert plain.day(first_test).market is None and plain.d_market == 0
    assert plain.cache_key != clean.cache_key
