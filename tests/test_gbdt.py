"""LightGBM baseline: fitting, early stopping, persistence, and the DayDataset adapters."""

from __future__ import annotations

import numpy as np
import pytest
from zoo_fakes import FakeDayDataset

from conceptalpha.errors import DataError, UserError
from conceptalpha.models.gbdt import (
    ALPHA158_PARAMS,
    ALPHA360_PARAMS,
    LightGBMModel,
    fit_lightgbm,
    fit_predict_gbdt,
    predict_lightgbm,
    resolve_params,
)
from conceptalpha.models.registry import build_model

FAST = {"num_leaves": 7, "max_depth": 3, "learning_rate": 0.1, "lambda_l1": 0.0, "lambda_l2": 1.0, "num_boost_round": 60}


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5)).astype(np.float32)
    return x, (x[:, 0] - 0.5 * x[:, 2] + 0.2 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def fitted() -> LightGBMModel:
    (x, y), (xv, yv) = planted(2000, 0), planted(500, 1)
    return LightGBMModel(**FAST).fit(x, y, xv, yv, seed=0)


@pytest.mark.slow
def test_learns_a_planted_signal(fitted):
    x, y = planted(500, 2)
    assert np.corrcoef(fitted.predict(x), y)[0, 1] > 0.8


def test_early_stopping_keeps_the_best_iteration():
    (x, y), (xv, yv) = planted(300, 0), planted(300, 1)
    model = LightGBMModel(**{**FAST, "learning_rate": 0.5, "num_boost_round": 400, "early_stopping_rounds": 5})
    model.fit(x, y, xv, yv)
    assert 1 <= model.best_iteration < 400


def test_save_and_load_give_identical_predictions(tmp_path):
    (x, y), (xv, yv) = planted(300, 0), planted(300, 1)
    model = LightGBMModel(**{**FAST, "learning_rate": 0.5, "num_boost_round": 400, "early_stopping_rounds": 5})
    model.fit(x, y, xv, yv)
    path = tmp_path / "model.txt"
    model.save(path)
    assert path.read_text().startswith("tree")
    assert np.array_equal(LightGBMModel.load(path).predict(xv), model.predict(xv))
    assert not list(tmp_path.glob(".*.tmp"))


def test_loading_a_bad_file_names_it(tmp_path):
    bad = tmp_path / "model.txt"
    bad.write_text("not a model")
    with pytest.raises(DataError, match="model.txt"):
        LightGBMModel.load(bad)
    with pytest.raises(DataError, match="not found"):
        LightGBMModel.load(tmp_path / "missing.txt")


def test_same_seed_same_model():
    (x, y), (xv, yv) = planted(400, 0), planted(200, 1)
    params = {**FAST, "colsample_bytree": 0.6, "subsample": 0.7, "subsample_freq": 1}
    first = LightGBMModel(**params).fit(x, y, xv, yv, seed=7).predict(xv)
    second = LightGBMModel(**params).fit(x, y, xv, yv, seed=7).predict(xv)
    assert np.array_equal(first, second)


def test_qlib_parameters_by_feature_layout():
    assert ALPHA158_PARAMS["learning_rate"] == 0.2 and ALPHA360_PARAMS["learning_rate"] == 0.0421
    assert resolve_params({"learning_rate": "auto"}, seq_len=60)["learning_rate"] == 0.0421
    assert resolve_params({"learning_rate": "auto"}, seq_len=None)["learning_rate"] == 0.2
    assert resolve_params({"learning_rate": 0.05}, seq_len=60)["learning_rate"] == 0.05
    model = build_model("LightGBM", d_feat=6, seq_len=60)
    assert model.params["learning_rate"] == 0.0421 and model.params["num_leaves"] == 210
    assert model.params["num_threads"] == 2


@pytest.mark.parametrize("seq_len", [6, None])
def test_dataset_adapters_score_every_member_of_every_test_day(seq_len):
    dataset = FakeDayDataset(n_days=30, seq_len=seq_len)
    model = fit_lightgbm(LightGBMModel(**FAST), dataset, seed=0)
    preds = predict_lightgbm(model, dataset, "test")
    assert list(preds.columns) == ["datetime", "instrument", "score", "label"]
    expected = [(dataset.day(t).date, s) for t in dataset.days("test") for s in dataset.day(t).instruments]
    assert list(zip(preds["datetime"], preds["instrument"])) == expected
    assert np.isfinite(preds["score"]).all()
    raw = np.concatenate([dataset.day(t).y_raw for t in dataset.days("test")])
    assert np.array_equal(preds["label"].to_numpy(), raw)
    assert np.corrcoef(preds["score"], preds["label"])[0, 1] > 0.3


def test_fit_predict_writes_the_model_and_labels_segments(tmp_path):
    dataset = FakeDayDataset(n_days=30)
    preds = fit_predict_gbdt(dataset, params={**FAST, "learning_rate": "auto"}, seed=0, out_dir=tmp_path)
    assert (tmp_path / "model.txt").is_file()
    assert set(preds["segment"]) == {"valid", "test"}
    n_rows = sum(dataset.day(t).n for seg in ("valid", "test") for t in dataset.days(seg))
    assert len(preds) == n_rows


def test_misspelt_parameters_are_named_not_silently_ignored():
    with pytest.raises(UserError, match="'colsample_bytre'.*'colsample_bytree'"):
        LightGBMModel(colsample_bytre=0.8)
    with pytest.raises(UserError, match="loss"):
        LightGBMModel(loss="huber")
