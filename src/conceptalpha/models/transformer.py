"""Transformer baseline: self-attention over each stock's feature window."""

from __future__ import annotations

import math

import torch
from torch import nn

from conceptalpha.errors import UserError
from conceptalpha.models.rnn import as_sequence, check_rates


def sinusoidal_positions(length: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Positional code PE [T, W]: ``PE[t, 2k] = sin(t/10000^{2k/W})``, ``PE[t, 2k+1] = cos(…)``."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    inverse_wavelength = torch.exp(
        torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width)
    )
    angles = position * inverse_wavelength  # [T, ceil(W/2)]
    code = torch.zeros(length, width, device=device, dtype=torch.float32)
    code[:, 0::2] = torch.sin(angles)
    code[:, 1::2] = torch.cos(angles[:, : width // 2])
    return code.to(dtype)


class Transformer(nn.Module):
    """Transformer encoder regressor (Vaswani et al. 2017; Qlib's Transformer).

    ``z_t = W_in x_t + b + PE_t`` [N, T, H]; ``num_layers`` post-norm encoder
    layers (``num_heads`` heads, feed-forward width ``ffn_size``, ``dropout``),
    each ``z ← LN(z + MHA(z)); z ← LN(z + FFN(z))``; ``ŷ = w·z_T + b`` (the last
    day's output). ``hidden_size`` is the model width d_model.
    """

    def __init__(
        self,
        d_feat: int = 6,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        num_heads: int = 2,
        ffn_size: int = 2048,
    ):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise UserError(f"Transformer hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        check_rates("Transformer", dropout=dropout)
        self.d_feat = d_feat
        self.hidden_size = hidden_size
        self.input_proj = nn.Linear(d_feat, hidden_size)
        layer = nn.TransformerEncoderLayer(
            d_model=hidden_size, nhead=num_heads, dim_feedforward=ffn_size, dropout=dropout, batch_first=True
        )
        # nested tensors are a fast path for padded batches only; off keeps outputs identical in train/eval
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.fc_out = nn.Linear(hidden_size, 1)

    def forward(self, x, membership=None, market_cap=None) -> torch.Tensor:
        seq = as_sequence(x, self.d_feat)
        z = self.input_proj(seq)
        z = z + sinusoidal_positions(seq.shape[1], self.hidden_size, z.device, z.dtype)
        return self.fc_out(self.encoder(z)[:, -1, :]).squeeze(-1)
