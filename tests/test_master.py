"""MASTER: each stage on tiny hand-checkable inputs, the registry entry, and 2 epochs through the trainer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from zoo_fakes import one_torch_thread  # noqa: F401 (autouse fixture)

from conceptalpha.data.synthetic import SynthConfig, generate
from conceptalpha.errors import UserError
from conceptalpha.features.dataset import DatasetConfig, build_dataset
from conceptalpha.models.master import MASTER, MarketGate, TemporalAggregation
from conceptalpha.models.registry import MODELS, build_model, get_model_spec
from conceptalpha.training.seed import set_seed
from conceptalpha.training.trainer import TrainerConfig, fit, predict

N, T, F, M = 5, 4, 3, 2


def tiny(**overrides) -> MASTER:
    torch.manual_seed(0)
    return MASTER(**{"d_feat": F, "d_market": M, "hidden_size": 8, "temporal_heads": 2, "stock_heads": 2,
                     "dropout": 0.0, **overrides}).eval()


def test_gate_is_all_ones_for_a_flat_logit_and_follows_the_market_hand_computed():
    gate = MarketGate(d_market=2, d_feat=3, beta=2.0)
    with torch.no_grad():
        gate.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        gate.linear.bias.zero_()
        flat = gate(torch.zeros(2))
        tilted = gate(torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(flat, torch.ones(3))
    # logits / β = [1, 0, 0]: α = 3·[e, 1, 1] / (e + 2)
    e = np.e
    torch.testing.assert_close(tilted, torch.tensor([3 * e / (e + 2), 3 / (e + 2), 3 / (e + 2)]))


def test_gate_lies_in_0_F_sums_to_F_and_changes_with_the_market_vector():
    model = tiny()
    x = torch.randn(N, T, F)
    calm, storm = torch.tensor([0.0, 0.0]), torch.tensor([3.0, -3.0])
    a, b = model.parts(x, calm), model.parts(x, storm)
    for gate in (a.gate, b.gate):
        assert ((gate > 0) & (gate < F)).all()
        torch.testing.assert_close(gate.sum(), torch.tensor(float(F)))
    assert not torch.allclose(a.gate, b.gate)
    assert not torch.allclose(a.prediction, b.prediction)


def test_attention_weights_sum_to_one_and_have_the_stage_shapes():
    parts = tiny(temporal_heads=4, stock_heads=2).parts(torch.randn(N, T, F), torch.randn(M), with_weights=True)
    assert parts.temporal_weights.shape == (N, 4, T, T)  # each stock attends over its own days
    assert parts.stock_weights.shape == (T, 2, N, N)  # each day, stocks attend over stocks
    assert parts.aggregation_weights.shape == (N, T)
    for weights in (parts.temporal_weights, parts.stock_weights, parts.aggregation_weights):
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert parts.prediction.shape == (N,)


def test_temporal_aggregation_hand_computed():
    pool = TemporalAggregation(hidden_size=2)
    with torch.no_grad():
        pool.bilinear.weight.copy_(torch.eye(2))
    z = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]])  # query = last day (2, 0)
    e, weights = pool(z)
    scores = torch.tensor([0.0, 2.0, 4.0])  # z_t · z_T
    torch.testing.assert_close(weights[0], torch.softmax(scores, 0))
    torch.testing.assert_close(e[0], (weights[0, :, None] * z[0]).sum(0))
    _, uniform = pool(torch.ones(1, 3, 2))
    torch.testing.assert_close(uniform, torch.full((1, 3), 1 / 3))


def test_no_nan_with_one_stock_or_a_stock_whose_history_is_all_missing():
    model = tiny()
    market = torch.randn(M)
    single = model(torch.randn(1, T, F), market=market)
    assert single.shape == (1,) and torch.isfinite(single).all()
    x = torch.randn(N, T, F)
    x[2] = float("nan")
    scores = model(x, market=market)
    assert scores.shape == (N,) and torch.isfinite(scores).all()
    model.train()
    loss = model(x, market=market).square().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_gradients_reach_every_parameter():
    model = tiny().train()
    model(torch.randn(N, T, F), market=torch.randn(M)).square().mean().backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_registry_entry_and_clear_errors():
    spec = get_model_spec("MASTER")
    assert spec.uses_market and spec.kind == "neural" and "2312.15235" in spec.paper
    assert isinstance(build_model("MASTER", d_feat=158, seq_len=8, d_market=45), MASTER)
    with pytest.raises(UserError, match="market_context"):
        build_model("MASTER", d_feat=158, seq_len=8)
    with pytest.raises(UserError, match="divisible"):
        build_model("MASTER", d_feat=F, seq_len=T, d_market=M, hidden_size=10, temporal_heads=4)
    with pytest.raises(UserError, match="market_context"):
        tiny()(torch.randn(N, T, F))
    with pytest.raises(UserError, match="3 entries"):
        tiny(d_market=3)(torch.randn(N, T, F), market=torch.randn(M))


# ---------------------------------------------------------------- through the trainer


@pytest.fixture(scope="module")
def market():
    return generate(SynthConfig(n_stocks=24, n_years=0.4, burn_in_days=20, seed=1)).market


def _segments(dates: pd.DatetimeIndex) -> dict[str, tuple[str, str]]:
    n = len(dates)
    cut = [0, int(n * 0.55), int(n * 0.75), n]
    return {seg: (str(dates[cut[k]].date()), str(dates[cut[k + 1] - 1].date()))
            for k, seg in enumerate(("train", "valid", "test"))}


@pytest.mark.parametrize("features", [{"feature_set": "alpha158", "window": 8}, {"feature_set": "alpha360"}])
def test_master_trains_two_epochs_on_the_synthetic_market(market, features, tmp_path):
    dataset = build_dataset(market, DatasetConfig(**features, market_context=True,
                                                  segments=_segments(market.calendar.dates)))
    settings = {**MODELS["MASTER"].trainer_defaults, "lr": 1e-3, "max_epochs": 2, "patience": 2, "average_last": 2,
                "drop_extreme_labels": 0.1}
    config = TrainerConfig(**settings, seed=0, show_progress=False, device="cpu")

    def train(run_dir):
        set_seed(0)
        model = build_model("MASTER", d_feat=dataset.d_feat, seq_len=dataset.seq_len, d_market=dataset.d_market,
                            hidden_size=8, temporal_heads=2, stock_heads=2)
        result = fit(model, dataset, None, config, run_dir)
        return result, predict(model, dataset, "test", device="cpu")

    result, preds = train(tmp_path / "a")
    assert len(result.history) == 2 and all(np.isfinite(h["train_loss"]) for h in result.history)
    expected = sum(dataset.day(t).n for t in dataset.days("test"))
    assert len(preds) == expected > 0 and np.isfinite(preds["score"]).all()
    assert preds["score"].std() > 0
    _, again = train(tmp_path / "b")
    np.testing.assert_array_equal(preds["score"].to_numpy(), again["score"].to_numpy())
