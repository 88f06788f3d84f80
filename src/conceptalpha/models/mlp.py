"""MLP baseline (Qlib's DNN on Alpha360/Alpha158)."""

from __future__ import annotations

import torch
from torch import nn

from conceptalpha.errors import UserError
from conceptalpha.models.rnn import check_rates


class MLP(nn.Module):
    """Feed-forward regressor on the flattened feature row.

    ``x`` is [N, F] or [N, T, F]; a sequence is flattened to [N, T·F] (day-major:
    the order only has to be the same in training and inference).
    ``z_0 = Dropout(x)``; for each of ``num_layers`` hidden layers
    ``z_l = LeakyReLU_0.1(BatchNorm(W_l z_{l-1} + b_l))`` with ``hidden_size``
    units; ``ŷ = w·Dropout(z_L) + b``. BatchNorm normalises over the day's
    cross-section, so training needs at least 2 stocks per day.
    """

    def __init__(self, input_size: int, hidden_size: int = 256, num_layers: int = 1, dropout: float = 0.05):
        super().__init__()
        if num_layers < 1 or hidden_size < 1:
            raise UserError(f"MLP hidden_size and num_layers must be >= 1, got {hidden_size} and {num_layers}")
        check_rates("MLP", dropout=dropout)
        self.input_size = input_size
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = input_size
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.BatchNorm1d(hidden_size), nn.LeakyReLU(0.1)]
            width = hidden_size
        layers += [nn.Dropout(dropout), nn.Linear(width, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x, membership=None, market_cap=None) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.input_size:
            raise ValueError(f"MLP built for {self.input_size} inputs, got x of shape {tuple(x.shape)}")
        return self.net(flat).squeeze(-1)
