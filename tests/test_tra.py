"""TRA: Sinkhorn transport plans, the routed training loss and argmax routing at inference."""

from __future__ import annotations

import pytest
import torch
from zoo_fakes import one_torch_thread  # noqa: F401 (autouse fixture)

from conceptalpha.models.tra import TRA, sinkhorn

N, T, F = 12, 5, 3


def tiny_tra(**overrides) -> TRA:
    torch.manual_seed(0)
    return TRA(d_feat=F, hidden_size=8, num_layers=1, **overrides)


def batch(y: torch.Tensor | None = None) -> dict:
    generator = torch.Generator().manual_seed(3)
    return {
        "x": torch.randn(N, T, F, generator=generator),
        "y": torch.randn(N, generator=generator) if y is None else y,
        "membership": None,
        "market_cap": torch.ones(N),
        "t": 0,
        "instruments": [f"SH{600000 + i}" for i in range(N)],
    }


def test_sinkhorn_rows_are_distributions_and_columns_balance():
    cost = torch.rand(30, 3, generator=torch.Generator().manual_seed(0))
    plan = sinkhorn(cost, epsilon=0.5, n_iters=200)
    assert torch.allclose(plan.sum(dim=1), torch.ones(30), atol=1e-5)
    assert torch.allclose(plan.sum(dim=0), torch.full((3,), 10.0), atol=1e-3)


def test_sinkhorn_sends_samples_to_their_cheapest_predictor_when_balanced():
    # two samples prefer predictor 0, two prefer predictor 1: the balanced plan keeps those choices
    cost = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    plan = sinkhorn(cost, epsilon=0.01, n_iters=3)
    assert torch.equal(plan.argmax(dim=1), torch.tensor([0, 0, 1, 1]))


def test_sinkhorn_stays_finite_for_a_tiny_epsilon():
    cost = torch.tensor([[0.0, 50.0, 100.0], [100.0, 0.0, 50.0]])
    plan = sinkhorn(cost, epsilon=1e-4, n_iters=3)
    assert torch.isfinite(plan).all()
    assert torch.allclose(plan.sum(dim=1), torch.ones(2))


def test_training_loss_is_finite_and_trains_router_predictors_and_backbone():
    model = tiny_tra().train()
    loss = model.training_loss(batch())
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for part in (model.router, model.predictors, model.backbone.rnn):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in part.parameters())
    assert float(model.step) == 1.0


def test_training_loss_ignores_missing_labels():
    y = torch.randn(N)
    y[::3] = float("nan")
    loss = tiny_tra().train().training_loss(batch(y))
    assert torch.isfinite(loss)


def test_a_day_without_labels_gives_a_zero_loss_that_still_backpropagates():
    model = tiny_tra().train()
    loss = model.training_loss(batch(torch.full((N,), float("nan"))))
    loss.backward()
    assert loss.item() == 0.0


def test_the_router_term_pulls_the_router_towards_the_transport_plan():
    """With λ > 0 the router's logits move so that its log-likelihood of the OT plan grows."""
    model = tiny_tra(lamb=10.0)
    data = batch()
    optimiser = torch.optim.SGD(model.router.parameters(), lr=0.05)

    def router_fit() -> float:
        with torch.no_grad():
            preds, logits = model.predictions_and_logits(data["x"])
            errors = (preds - data["y"].unsqueeze(1)).square()
            plan = sinkhorn(errors - errors.min(dim=1, keepdim=True).values, 0.01, 3)
            return (plan * torch.log_softmax(logits, dim=1)).sum(dim=1).mean().item()

    before = router_fit()
    for _ in range(20):
        optimiser.zero_grad()
        model.training_loss(data).backward()
        optimiser.step()
    assert router_fit() > before + 0.03


def test_inference_uses_the_router_argmax_predictor():
    model = tiny_tra().eval()
    x = batch()["x"]
    with torch.no_grad():
        preds, logits = model.predictions_and_logits(x)
        expected = preds[torch.arange(N), logits.argmax(dim=1)]
        assert torch.equal(model(x), expected)


def test_regularisation_decays_with_rho():
    model = tiny_tra(lamb=2.0, rho=0.5)
    model.step.fill_(3)
    assert model.regularisation_weight() == pytest.approx(0.25)


def test_one_state_reduces_to_plain_mse():
    model = tiny_tra(num_states=1).train()
    data = batch()
    with torch.no_grad():
        expected = torch.mean((model(data["x"]) - data["y"]) ** 2)
        assert torch.allclose(model.training_loss(data), expected)


def test_step_counter_is_checkpointed():
    model = tiny_tra().train()
    model.training_loss(batch())
    restored = tiny_tra()
    restored.load_state_dict(model.state_dict())
    assert float(restored.step) == 1.0
