"""GATs baseline: graph attention over the day's cross-section of RNN encodings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conceptalpha.models.rnn import RNNType, as_sequence, last_state, make_rnn


class GATs(nn.Module):
    """Graph attention network on a fully connected stock graph (Veličković et al. 2018; Qlib's GATs).

    ``e_i = RNN(x_i)[T]`` [N, H] (attribute ``rnn``, so an LSTM/GRU ``best.pt``
    can initialise it); ``z_i = W e_i``;
    attention ``α_ij = softmax_j LeakyReLU(a·[z_i ; z_j])`` over all stocks j of
    the day (self included), computed as ``a_1·z_i + a_2·z_j`` so memory is
    O(N² + N·H) instead of O(N²·H);
    ``g_i = Σ_j α_ij e_j + e_i``; ``ŷ_i = w·LeakyReLU(W_g g_i + b_g) + b``.
    """

    def __init__(
        self,
        d_feat: int = 6,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        base_model: RNNType = "LSTM",
    ):
        super().__init__()
        self.d_feat = d_feat
        self.rnn = make_rnn(base_model, d_feat, hidden_size, num_layers, dropout)
        self.transform = nn.Linear(hidden_size, hidden_size)
        self.attn_source = nn.Linear(hidden_size, 1, bias=False)
        self.attn_target = nn.Linear(hidden_size, 1, bias=False)
        self.fc = nn.Linear(hidden_size, hidden_size)
        self.fc_out = nn.Linear(hidden_size, 1)

    def attention(self, e: torch.Tensor) -> torch.Tensor:
        """Row-stochastic attention matrix α [N, N] over the encodings ``e`` [N, H]."""
        z = self.transform(e)
        scores = self.attn_source(z) + self.attn_target(z).T  # [N, 1] + [1, N]
        return torch.softmax(F.leaky_relu(scores), dim=1)

    def forward(self, x, membership=None, market_cap=None) -> torch.Tensor:
        e = last_state(self.rnn, as_sequence(x, self.d_feat))
        g = self.attention(e) @ e + e
        return self.fc_out(F.leaky_relu(self.fc(g))).squeeze(-1)
