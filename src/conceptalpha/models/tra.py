"""TRA baseline: the Temporal Routing Adaptor on top of ALSTM, trained with optimal-transport routing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conceptalpha.errors import UserError
from conceptalpha.models.rnn import ALSTMEncoder, RNNType


def sinkhorn(cost: torch.Tensor, epsilon: float = 0.01, n_iters: int = 3) -> torch.Tensor:
    """Entropic optimal-transport plan between N samples and K predictors.

    For a cost [N, K], start from ``Q = exp(−cost/ε)`` and alternately scale
    columns to sum 1 and rows to sum 1 (``n_iters`` times, in the log domain so
    that small ε cannot overflow or give 0/0). The result P [N, K] has rows that
    sum to 1 (a soft assignment of each sample) and, as ``n_iters`` grows,
    column sums tending to N/K (every predictor gets an equal share: the
    balance constraint that keeps the routing from collapsing onto one
    predictor). No gradient flows through P.
    """
    with torch.no_grad():
        log_q = -cost / epsilon
        for _ in range(n_iters):
            log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True)
            log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
        return log_q.exp()


class TRA(nn.Module):
    """Temporal Routing Adaptor (Lin et al. 2021, KDD; Qlib's TRA) over an ALSTM backbone.

    Backbone: ``r_i = ALSTMEncoder.encode(x_i)`` [N, 2H] (attribute ``backbone``; its
    recurrent encoder is ``backbone.rnn``). K predictors ``ŷ_ik = w_k·r_i + b_k``
    (one linear layer [2H → K]); a router gives logits ``l_i = W_r r_i + b_r``
    [K] from the latent representation (Qlib's ``src_info="LR"``).

    Training (:meth:`training_loss`, called by the shared trainer), on the
    stocks with a label y:

    - per-predictor errors ``L_ik = (ŷ_ik − y_i)² − min_k (ŷ_ik − y_i)²``;
    - optimal-transport assignment ``P = sinkhorn(L, ε)`` (rows sum to 1,
      predictors balanced);
    - the prediction uses a hard Gumbel-softmax sample ``c_i`` of the router
      (straight-through gradient): ``ŷ_i = Σ_k c_ik ŷ_ik``;
    - loss ``mean_i (ŷ_i − y_i)² − λ_s · mean_i Σ_k P_ik log softmax(l_i/τ)_k``,
      the second term teaching the router to predict the OT assignment, with
      ``λ_s = lamb · rho^s`` decaying with the training step s (buffer
      ``step``, checkpointed).

    Inference (:meth:`forward`): ``ŷ_i = ŷ_{i, argmax_k l_ik}``.

    Not implemented: the router's temporal-prediction-error input ("TPE", a
    memory of each stock's past per-predictor errors). It needs the stock ids,
    day index and lagged labels at inference, which the shared model
    signature ``forward(x, membership, market_cap)`` does not carry.
    """

    def __init__(
        self,
        d_feat: int = 6,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        rnn_type: RNNType = "LSTM",
        num_states: int = 3,
        tau: float = 1.0,
        lamb: float = 1.0,
        rho: float = 1.0,
        sinkhorn_epsilon: float = 0.01,
        sinkhorn_iters: int = 3,
    ):
        super().__init__()
        if num_states < 1:
            raise UserError(f"TRA num_states must be >= 1, got {num_states}")
        if tau <= 0 or sinkhorn_epsilon <= 0:
            raise UserError(f"TRA tau and sinkhorn_epsilon must be > 0, got {tau} and {sinkhorn_epsilon}")
        self.num_states = num_states
        self.tau = tau
        self.lamb = lamb
        self.rho = rho
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iters = sinkhorn_iters
        self.backbone = ALSTMEncoder(d_feat, hidden_size, num_layers, dropout, rnn_type)
        self.predictors = nn.Linear(self.backbone.output_size, num_states)
        self.router = nn.Linear(self.backbone.output_size, num_states)
        # float so that averaging checkpoints (average of the last epochs' weights) stays meaningful
        self.register_buffer("step", torch.zeros((), dtype=torch.float32))

    def predictions_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every predictor's score ŷ [N, K] and the router's logits l [N, K]."""
        latent = self.backbone.encode(x)
        return self.predictors(latent), self.router(latent)

    def forward(self, x, membership=None, market_cap=None) -> torch.Tensor:
        preds, logits = self.predictions_and_logits(x)
        return preds.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)

    def regularisation_weight(self) -> float:
        """λ_s = lamb · rho^s at the current training step s."""
        return self.lamb * self.rho ** float(self.step)

    def training_loss(self, batch: dict) -> torch.Tensor:
        """The routed MSE minus λ_s × the router's log-likelihood of the OT assignment (see class doc)."""
        y = batch["y"]
        labelled = torch.isfinite(y)
        preds, logits = self.predictions_and_logits(batch["x"])
        preds, logits, y = preds[labelled], logits[labelled], y[labelled]
        if y.numel() == 0:
            return preds.sum() * 0.0
        if self.num_states == 1:
            return F.mse_loss(preds[:, 0], y)
        choice = F.gumbel_softmax(logits, tau=self.tau, hard=True)
        routed_loss = F.mse_loss((preds * choice).sum(dim=1), y)
        errors = (preds.detach() - y.unsqueeze(1)).square()
        errors = errors - errors.min(dim=1, keepdim=True).values
        plan = sinkhorn(errors, self.sinkhorn_epsilon, self.sinkhorn_iters)
        router_log_likelihood = (plan * F.log_softmax(logits / self.tau, dim=1)).sum(dim=1).mean()
        loss = routed_loss - self.regularisation_weight() * router_log_likelihood
        self.step += 1
        return loss
