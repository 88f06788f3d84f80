"""The daily dataset: segments, per-day tensors, processors fitted on train only, caching, leakage."""

from __future__ import annotations

import numpy as np
import pytest

from conceptalpha.errors import UserError
from conceptalpha.features import dataset as dataset_module
from conceptalpha.features.alpha import build_feature_table
from conceptalpha.features.dataset import DatasetConfig, build_dataset
from conceptalpha.features.labels import parse_label, raw_label
from conceptalpha.features.processors import RobustZScore
from feature_markets import make_market, perturb_after, random_bars

DAYS, N = 130, 5
SEGMENTS = {"train": ("2020-01-01", "2020-04-30"), "valid": ("2020-05-01", "2020-05-31"),
            "test": ("2020-06-01", "2020-12-31")}


def _market(bars=None):
    bars = random_bars(DAYS, N, seed=11) if bars is None else bars
    mask = np.ones((DAYS, N), dtype=bool)
    mask[:40, 4] = False  # joins the universe later
    return make_market(bars, mask)


def _caps():
    return np.tile(np.arange(1, N + 1, dtype=np.float32) * 1e9, (DAYS, 1))


def _build(config=None, market=None, cache_dir=None):
    config = config or DatasetConfig(segments=SEGMENTS)
    return build_dataset(market or _market(), config, cache_dir=cache_dir, market_cap=_caps())


def test_segments_days_and_shapes():
    ds = _build()
    train, valid, test = ds.days("train"), ds.days("valid"), ds.days("test")
    assert train[0] == 0 and train[-1] + 1 == valid[0] and valid[-1] + 1 == test[0] and test[-1] == DAYS - 1
    assert str(ds.segments["valid"][0].date()) == "2020-05-01"
    assert ds.label == "t+1->t+2" and ds.seq_len == 60 and ds.d_feat == 6 and len(ds.feature_names) == 360
    day = ds.day(test[3])
    assert day.x.shape == (N, 60, 6) and day.x.dtype == np.float32
    assert day.y_train.shape == day.y_raw.shape == day.market_cap.shape == (N,)
    assert list(day.instruments) == sorted(day.instruments)
    assert ds.day(10).n == N - 1  # not yet a member
    np.testing.assert_array_equal(day.market_cap, np.arange(1, N + 1) * 1e9)
    with pytest.raises(UserError, match="unknown segment"):
        ds.days("holdout")


def test_raw_and_training_labels():
    market = _market()
    ds = _build(market=market)
    expected = raw_label(market.panel.field("close"), parse_label("t+1->t+2"))
    t = ds.days("train")[60]
    day = ds.day(t)
    np.testing.assert_array_equal(day.y_raw, expected[t])
    ranks = np.argsort(np.argsort(day.y_raw))
    np.testing.assert_allclose(day.y_train, ((ranks + 1) / N - 0.5) * 3.46, rtol=1e-6)
    last_train = ds.days("train")[-1]
    assert np.isnan(ds.day(last_train).y_train).all()  # its label needs valid-period closes: purged
    assert not np.isnan(ds.day(last_train).y_raw).any()  # evaluation keeps the raw label
    assert np.isnan(ds.day(DAYS - 1).y_raw).all()  # no future close at the end of the data
    unpurged = _build(DatasetConfig(segments=SEGMENTS, purge_labels=False, label_norm="zscore"))
    assert not np.isnan(unpurged.day(last_train).y_train).any()


def test_alpha360_on_the_fly_equals_the_processed_table():
    market = _market()
    ds = _build(market=market)
    table = build_feature_table(market, "alpha360")
    dates = table.index.get_level_values("datetime")
    train_rows = table[dates <= "2020-04-30"].to_numpy().reshape(-1, 6, 60)
    fitted = RobustZScore.fit(train_rows, clip=3.0)
    np.testing.assert_array_equal(ds.fitted["feature_median"], fitted.median)
    np.testing.assert_array_equal(ds.fitted["feature_scale"], fitted.scale)
    t = ds.days("test")[5]
    rows = table[dates == market.calendar.dates[t]].to_numpy().reshape(-1, 6, 60)
    np.testing.assert_array_equal(ds.day(t).x, fitted.transform(rows).transpose(0, 2, 1))
    np.testing.assert_array_equal(ds.day(t).x_flat, fitted.transform(rows).reshape(-1, 360))  # table order
    assert np.abs(ds.day(t).x).max() <= 3.0 and not np.isnan(ds.day(t).x).any()


def test_alpha158_dataset_is_flat_and_processed():
    ds = _build(DatasetConfig(feature_set="alpha158", label="t->t+1", segments=SEGMENTS))
    day = ds.day(ds.days("valid")[0])
    assert ds.seq_len is None and ds.d_feat == 158 and day.x.shape == (N, 158)
    assert not np.isnan(day.x).any() and np.abs(day.x).max() <= 3.0
    assert ds.label == "t->t+1" and ds.fitted["label"] == "t->t+1"


@pytest.mark.parametrize("feature_set", ["alpha360", "alpha158"])
def test_valid_and_test_data_do_not_reach_fitting_or_training_tensors(feature_set):
    bars = random_bars(DAYS, N, seed=11)
    config = DatasetConfig(feature_set=feature_set, segments=SEGMENTS)
    clean = _build(config, market=_market(bars))
    last_train = clean.days("train")[-1]
    moved = _build(config, market=_market(perturb_after(bars, last_train)))
    np.testing.assert_array_equal(clean.fitted["feature_median"], moved.fitted["feature_median"])
    np.testing.assert_array_equal(clean.fitted["feature_scale"], moved.fitted["feature_scale"])
    for t in clean.days("train"):
        a, b = clean.day(t), moved.day(t)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y_train, b.y_train)
    t = clean.days("test")[0]
    assert not np.array_equal(clean.day(t).x, moved.day(t).x)


def test_cache_hit_miss_and_corruption(tmp_path, monkeypatch):
    first = _build(cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    real_build = dataset_module._build_arrays

    def must_not_build(*args, **kwargs):
        raise AssertionError("rebuilt although nothing changed")

    monkeypatch.setattr(dataset_module, "_build_arrays", must_not_build)
    again = _build(cache_dir=tmp_path)
    assert again.cache_key == first.cache_key
    t = first.days("test")[0]
    np.testing.assert_array_equal(again.day(t).x, first.day(t).x)
    np.testing.assert_array_equal(again.day(t).y_train, first.day(t).y_train)
    monkeypatch.setattr(dataset_module, "_build_arrays", real_build)

    other_label = _build(DatasetConfig(segments=SEGMENTS, label="t->t+1"), cache_dir=tmp_path)
    bars = random_bars(DAYS, N, seed=11)
    bars["close"][3, 2] *= 1.01
    other_data = _build(market=_market(bars), cache_dir=tmp_path)
    other_segments = _build(DatasetConfig(segments={**SEGMENTS, "valid": ("2020-05-01", "2020-05-20")}),
                            cache_dir=tmp_path)
    keys = {first.cache_key, other_label.cache_key, other_data.cache_key, other_segments.cache_key}
    assert len(keys) == 4 and len(list(tmp_path.glob("*.npz"))) == 4

    files[0].write_bytes(b"not a zip file")
    rebuilt = _build(cache_dir=tmp_path)
    np.testing.assert_array_equal(rebuilt.day(t).x, first.day(t).x)


def test_bad_configs_are_user_errors():
    with pytest.raises(UserError, match="no trading day"):
        _build(DatasetConfig(segments={"train": ("2030-01-01", "2030-12-31")}))
    with pytest.raises(UserError, match="overlap"):
        _build(DatasetConfig(segments={"train": ("2020-01-01", "2020-03-31"), "test": ("2020-03-01", "2020-06-30")}))
    with pytest.raises(UserError, match="'train'"):
        DatasetConfig(segments={"test": ("2020-01-01", "2020-03-31")})
    with pytest.raises(UserError, match="unknown feature set"):
        DatasetConfig(feature_set="alpha101")
    with pytest.raises(UserError, match="unknown label"):
        DatasetConfig(label="tomorrow")
    with pytest.raises(UserError, match="market_cap has shape"):
        build_dataset(_market(), DatasetConfig(segments=SEGMENTS), market_cap=np.ones((3, 3)))
    empty = make_market(random_bars(DAYS, N), mask=np.zeros((DAYS, N), dtype=bool))
    with pytest.raises(UserError, match="no member"):
        build_dataset(empty, DatasetConfig(segments=SEGMENTS), market_cap=_caps())


def test_default_market_caps_come_from_the_data_layer():
    ds = build_dataset(_market(), DatasetConfig(segments=SEGMENTS))
    assert np.isfinite(ds.day(ds.days("test")[0]).market_cap).all()


def test_alpha158_window_stacks_each_stocks_last_days_oldest_first():
    window = 8
    flat = _build(DatasetConfig(feature_set="alpha158", segments=SEGMENTS))
    stacked = _build(DatasetConfig(feature_set="alpha158", segments=SEGMENTS, window=window))
    assert stacked.seq_len == window and stacked.d_feat == 158 and flat.seq_len is None
    np.testing.assert_array_equal(stacked.fitted["feature_median"], flat.fitted["feature_median"])
    t = stacked.days("valid")[0]
    x = stacked.day(t).x
    assert x.shape == (N, window, 158)
    for lag in range(window):  # position window-1-lag holds day t-lag's Alpha158 row
        np.testing.assert_array_equal(x[:, window - 1 - lag], flat.day(t - lag).x)
    first = stacked.day(stacked.days("train")[0]).x
    assert (first[:, :-1] == 0).all() and np.array_equal(first[:, -1], flat.day(0).x)  # no day before the data


def test_alpha158_window_reads_history_before_a_stock_joins_and_nothing_after_its_day():
    window = 8
    config = DatasetConfig(feature_set="alpha158", segments=SEGMENTS, window=window)
    bars = random_bars(DAYS, N, seed=11)
    clean = _build(config, market=_market(bars))
    joined = clean.day(40)  # stock 4 joins the universe on day 40 and has bars before
    assert joined.n == N and (np.abs(joined.x[4, :-1]).sum(axis=1) > 0).all()
    everyone = make_market(bars)  # stock 4 a member throughout: day 39 is an ordinary table row
    raw = build_feature_table(everyone, "alpha158").loc[(clean.calendar.dates[39], "SH600004")].to_numpy()
    np.testing.assert_allclose(joined.x[4, -2], clean.normalizer.transform(raw[None])[0], rtol=1e-6, atol=1e-6)
    last_train = clean.days("train")[-1]
    moved = _build(config, market=_market(perturb_after(bars, last_train)))
    for t in clean.days("train"):
        np.testing.assert_array_equal(clean.day(t).x, moved.day(t).x)
    assert not np.array_equal(clean.day(clean.days("test")[0]).x, moved.day(clean.days("test")[0]).x)


def test_window_is_for_alpha158_only():
    with pytest.raises(UserError, match="window"):
        DatasetConfig(feature_set="alpha360", window=8, segments=SEGMENTS)
