"""The whole zoo on a tiny synthetic market: every neural baseline trains 2 epochs through the shared
trainer and LightGBM fits on Alpha158; each scores every member of every test day."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from zoo_fakes import FakeDayDataset, one_torch_thread  # noqa: F401 (autouse fixture)

from conceptalpha.data.synthetic import SynthConfig, generate
from conceptalpha.features.dataset import DatasetConfig, build_dataset
from conceptalpha.models.gbdt import fit_predict_gbdt
from conceptalpha.models.registry import MODELS, build_model
from conceptalpha.training.seed import set_seed
from conceptalpha.training.trainer import TrainerConfig, fit, predict

#: models that read stocks only (HIST also reads concepts, MASTER the market vector: their own tests)
BASELINES = [name for name, spec in MODELS.items()
             if spec.kind == "neural" and not spec.uses_concepts and not spec.uses_market]
TINY = {"hidden_size": 8}
TINY_EXTRA = {"Transformer": {"ffn_size": 16}, "SFM": {"freq_dim": 4, "output_dim": 4}}


@pytest.fixture(scope="module")
def market():
    return generate(SynthConfig(n_stocks=24, n_years=0.4, burn_in_days=20, seed=1)).market


def tiny_segments(dates: pd.DatetimeIndex) -> dict[str, tuple[str, str]]:
    n = len(dates)
    cut = [0, int(n * 0.55), int(n * 0.75), n]
    day = lambda i: str(dates[i].date())  # noqa: E731
    return {seg: (day(cut[k]), day(cut[k + 1] - 1)) for k, seg in enumerate(("train", "valid", "test"))}


@pytest.fixture(scope="module")
def alpha360(market):
    return build_dataset(market, DatasetConfig(feature_set="alpha360", segments=tiny_segments(market.calendar.dates)))


@pytest.fixture(scope="module")
def alpha158(market):
    return build_dataset(market, DatasetConfig(feature_set="alpha158", segments=tiny_segments(market.calendar.dates)))


def tiny_model(name: str, dataset):
    return build_model(name, d_feat=dataset.d_feat, seq_len=dataset.seq_len, **TINY, **TINY_EXTRA.get(name, {}))


def train_two_epochs(name: str, dataset, run_dir, seed: int = 0):
    set_seed(seed)
    model = tiny_model(name, dataset)
    settings = {**MODELS[name].trainer_defaults, "max_epochs": 2, "patience": 2, "average_last": 2}
    config = TrainerConfig(**settings, seed=seed, show_progress=False, device="cpu")
    return model, fit(model, dataset, None, config, run_dir)


def assert_scores_every_member(preds: pd.DataFrame, dataset, segment: str = "test") -> None:
    expected = [
        (np.datetime64(dataset.day(t).date, "ns"), s) for t in dataset.days(segment) for s in dataset.day(t).instruments
    ]
    got = list(zip(pd.to_datetime(preds["datetime"]).to_numpy(), preds["instrument"]))
    assert got == expected
    assert len(expected) > 0 and np.isfinite(preds["score"]).all()


@pytest.mark.parametrize("name", BASELINES)
def test_neural_baseline_trains_two_epochs_and_scores_every_test_member(name, alpha360, tmp_path):
    model, result = train_two_epochs(name, alpha360, tmp_path)
    assert len(result.history) == 2 and all(np.isfinite(h["train_loss"]) for h in result.history)
    preds = predict(model, alpha360, "test", device="cpu")
    assert_scores_every_member(preds, alpha360)

    fresh = tiny_model(name, alpha360)
    fresh.load_state_dict(torch.load(result.best_path, map_location="cpu", weights_only=True))
    reloaded = predict(fresh, alpha360, "test", device="cpu")["score"]
    assert np.array_equal(reloaded.to_numpy(), preds["score"].to_numpy()), "best.pt must reproduce the scores"


def test_lightgbm_on_alpha158_scores_every_test_member(alpha158, tmp_path):
    params = {**MODELS["LightGBM"].defaults, "num_leaves": 7, "num_boost_round": 20}
    preds = fit_predict_gbdt(alpha158, params=params, seed=0, out_dir=tmp_path)
    assert_scores_every_member(preds[preds["segment"] == "test"], alpha158)


@pytest.mark.parametrize("name", ["TRA", "GATs"])
def test_same_seed_gives_identical_predictions(name, tmp_path):
    dataset = FakeDayDataset(n_days=20, seq_len=6, d_feat=3)
    scores = []
    for run in ("a", "b"):
        model, _ = train_two_epochs(name, dataset, tmp_path / run, seed=5)
        scores.append(predict(model, dataset, "test", device="cpu")["score"].to_numpy())
    assert np.array_equal(*scores)
