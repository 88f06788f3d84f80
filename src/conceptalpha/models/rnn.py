"""Recurrent baselines: GRU, LSTM and ALSTM (attention over the RNN's hidden states).

All take one day's cross-section ``x`` [N, T, F] (oldest day first) and return a
score per stock [N]. The recurrent encoder is the attribute ``rnn``
(``nn.GRU``/``nn.LSTM``, ``batch_first=True``), so a GRU/LSTM ``best.pt`` can
initialise HIST's (and GATs') encoder from its ``rnn.*`` keys.

Unlike the reference implementations, ``hidden_size``, ``num_layers`` and
``dropout`` are all honoured (``dropout`` is the RNN's inter-layer dropout; it
has no effect with one layer, as in PyTorch).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from conceptalpha.errors import UserError
from conceptalpha.models.fast_gru import gru_last_state

RNNType = Literal["GRU", "LSTM"]
RNN_TYPES: dict[str, type[nn.RNNBase]] = {"GRU": nn.GRU, "LSTM": nn.LSTM}


def as_sequence(x: torch.Tensor, d_feat: int) -> torch.Tensor:
    """``x`` as a batch of sequences [N, T, F].

    Accepts [N, T, F] unchanged, or a flat Alpha360-style row [N, F·T] ordered
    field-major, oldest first (reshaped to [N, F, T] then transposed).
    """
    if x.dim() == 3 and x.shape[2] == d_feat:
        return x
    if x.dim() == 2 and x.shape[1] % d_feat == 0:
        return x.reshape(x.shape[0], d_feat, -1).transpose(1, 2)
    raise ValueError(f"expected x of shape [N, T, {d_feat}] or [N, T·{d_feat}], got {tuple(x.shape)}")


def check_rates(model: str, **rates: float) -> None:
    """``UserError`` naming the first dropout rate outside [0, 1)."""
    for name, rate in rates.items():
        if not 0.0 <= rate < 1.0:
            raise UserError(f"{model} {name} must be in [0, 1), got {rate}")


def make_rnn(rnn_type: str, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> nn.RNNBase:
    """A batch-first GRU or LSTM; ``UserError`` for another type name."""
    if rnn_type not in RNN_TYPES:
        raise UserError(f"rnn_type {rnn_type!r} is not one of {sorted(RNN_TYPES)}")
    if num_layers < 1 or hidden_size < 1:
        raise UserError(f"hidden_size and num_layers must be >= 1, got {hidden_size} and {num_layers}")
    check_rates(rnn_type, dropout=dropout)
    return RNN_TYPES[rnn_type](
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout if num_layers > 1 else 0.0,
        batch_first=True,
    )


def last_state(rnn: nn.RNNBase, x: torch.Tensor) -> torch.Tensor:
    """Top layer's output at the last step [N, H] of a batch-first GRU/LSTM on ``x`` [N, T, F].

    GRUs go through :func:`gru_last_state` (same function, faster CPU backward), as HIST's encoder does,
    so the baselines and HIST are timed on equal terms.
    """
    if isinstance(rnn, nn.GRU):
        return gru_last_state(rnn, x)
    return rnn(x)[0][:, -1, :]


class RNNModel(nn.Module):
    """GRU or LSTM regressor (Qlib's GRU/LSTM baselines).

    ``e_i = RNN(x_i)[T]`` (top layer's output at the last day, [N, H]);
    ``ŷ_i = w·e_i + b``.
    """

    def __init__(
        self,
        d_feat: int = 6,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        rnn_type: RNNType = "GRU",
    ):
        super().__init__()
        self.d_feat = d_feat
        self.rnn = make_rnn(rnn_type, d_feat, hidden_size, num_layers, dropout)
        self.fc_out = nn.Linear(hidden_size, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Last-day hidden state E [N, H] of ``x`` [N, T, F]."""
        return last_state(self.rnn, as_sequence(x, self.d_feat))

    def forward(self, x, membership=None, market_cap=None) -> torch.Tensor:
        return self.fc_out(self.encode(x)).squeeze(-1)


class ALSTMEncoder(nn.Module):
    """The attentive-RNN encoder of ALSTM (Feng et al. 2019, IJCAI; Qlib's ALSTM).

    ``z_t = tanh(W_in x_t + b)`` [N, T, H]; ``h_t = RNN(z)_t``;
    attention over days ``α_t = softmax_t(u·tanh(W_a h_t + b_a))`` with
    ``W_a`` ∈ R^{H/2×H} (dropout before the tanh); ``a = Σ_t α_t h_t``;
    output ``r = [h_T ; a]`` [N, 2H] (``output_size`` = 2H).
    """

    def __init__(
        self,
        d_feat: int = 6,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        rnn_type: RNNType = "LSTM",
    ):
        super().__init__()
        self.d_feat = d_feat
        self.input_proj = nn.Sequential(nn.Linear(d_feat, hidden_size), nn.Tanh())
        self.rnn = make_rnn(rnn_type, hidden_size, hidden_size, num_layers, dropout)
        attention_size = max(hidden_size // 2, 1)
        self.attention = nn.Sequential(
            nn.Linear(hidden_size, attention_size),
            nn.Dropout(dropout),
            nn.Tanh(),
            nn.Linear(attention_size, 1, bias=False),
        )
        self.output_size = 2 * hidden_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Representation ``r = [h_T ; Σ_t α_t h_t]`` [N, 2H] of ``x`` [N, T, F]."""
        states, _ = self.rnn(self.input_proj(as_sequence(x, self.d_feat)))  # [N, T, H]
        weights = torch.softmax(self.attention(states), dim=1)  # [N, T, 1]
        pooled = (weights * states).sum(dim=1)
        return torch.cat([states[:, -1, :], pooled], dim=1)


class ALSTM(ALSTMEncoder):
    """Attentive LSTM regressor: ``ŷ = w·r + b`` on the :class:`ALSTMEncoder` representation r [N, 2H]."""

    def __init__(
        self,
        d_feat: int = 6,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        rnn_type: RNNType = "LSTM",
    ):
        super().__init__(d_feat, hidden_size, num_layers, dropout, rnn_type)
        self.fc_out = nn.Linear(self.output_size, 1)

    def forward(self, x, membership=None, market_cap=None) -> torch.Tensor:
        return self.fc_out(self.encode(x)).squeeze(-1)
