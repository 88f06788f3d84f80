"""MASTER (Li et al., AAAI 2024): market-guided stock transformer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from conceptalpha.errors import UserError
from conceptalpha.models.rnn import as_sequence, check_rates
from conceptalpha.models.transformer import sinusoidal_positions


@dataclass
class MASTERParts:
    """Intermediate tensors of one day's forward pass (for inspection and tests)."""

    gate: torch.Tensor  # α [F]
    temporal_weights: torch.Tensor  # intra-stock attention [N, heads_t, T, T]
    stock_weights: torch.Tensor  # inter-stock attention [T, heads_s, N, N]
    aggregation_weights: torch.Tensor  # λ [N, T]
    prediction: torch.Tensor  # [N]


class MarketGate(nn.Module):
    """α(m) = F · softmax((W_α m + b_α) / β): one positive weight per feature, α ∈ (0, F)^F, Σ_f α_f = F.

    With W_α m + b_α constant the gate is all ones (features unchanged); a
    smaller temperature β sharpens it. m [M] → α [F].
    """

    def __init__(self, d_market: int, d_feat: int, beta: float):
        super().__init__()
        self.linear = nn.Linear(d_market, d_feat)
        self.d_feat, self.beta = d_feat, beta

    def forward(self, market: torch.Tensor) -> torch.Tensor:
        return self.d_feat * torch.softmax(self.linear(market) / self.beta, dim=-1)


class AttentionBlock(nn.Module):
    """One pre-norm transformer layer over the middle axis of [B, L, D]:
    ``h = a + MHA(LN(a))``, ``out = h + FFN(LN(h))``, FFN = Linear(D, D)–ReLU–Dropout–Linear(D, D)–Dropout.
    Returns the output [B, L, D] and, if asked, the per-head attention weights [B, heads, L, L]."""

    def __init__(self, hidden_size: int, heads: int, dropout: float):
        super().__init__()
        self.norm_attention = nn.LayerNorm(hidden_size)
        self.attention = nn.MultiheadAttention(hidden_size, heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size), nn.Dropout(dropout),
        )

    def forward(self, a: torch.Tensor, with_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        q = self.norm_attention(a)
        attended, weights = self.attention(q, q, q, need_weights=with_weights, average_attn_weights=False)
        h = a + attended
        return h + self.ffn(self.norm_ffn(h)), weights


class TemporalAggregation(nn.Module):
    """λ_{u,t} = softmax_t(z_{u,t}ᵀ W_λ z_{u,T}) (the last day is the query), e_u = Σ_t λ_{u,t} z_{u,t}.
    z [N, T, D] → (e [N, D], λ [N, T])."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.bilinear = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query = self.bilinear(z[:, -1, :])  # W_λ z_{u,T}: [N, D]
        weights = torch.softmax(torch.einsum("ntd,nd->nt", z, query), dim=1)
        return torch.einsum("nt,ntd->nd", weights, z), weights


class MASTER(nn.Module):
    """Market-guided stock transformer (Li et al. 2024, arXiv 2312.15235).

    Shapes per trading day: N stocks, T window days, F features, M market-vector
    entries (the dataset's market context), D = ``hidden_size``. Missing
    features (NaN) count as 0, the dataset's fill value.

    1. Market-guided gating: ``α = F · softmax((W_α m + b_α) / β)`` [F], in
       (0, F) and summing to F; ``x̃_{u,t} = α ⊙ x_{u,t}`` [N, T, F] — the
       market's state rescales which features every stock's model reads.
    2. Feature projection with positions: ``y_{u,t} = W_y x̃_{u,t} + b_y + PE_t`` [N, T, D]
       (sinusoidal PE).
    3. Intra-stock aggregation: one pre-norm transformer layer over the T days
       of each stock (``temporal_heads`` heads), ``h = AttentionBlock_T(y)`` [N, T, D].
    4. Inter-stock aggregation: at each day t, one pre-norm transformer layer
       over the N stocks (``stock_heads`` heads), ``z_{·,t} = AttentionBlock_N(h_{·,t})`` [N, T, D].
    5. Temporal aggregation: ``λ_{u,t} = softmax_t(z_{u,t}ᵀ W_λ z_{u,T})``,
       ``e_u = Σ_t λ_{u,t} z_{u,t}`` [N, D].
    6. Prediction: ``ŷ_u = wᵀ e_u + b`` [N].

    Attention blocks: ``h = a + MHA(LN(a))``, ``out = h + FFN(LN(h))`` with a
    D→D→D ReLU feed-forward; ``dropout`` acts in attention and FFN.
    """

    uses_market = True

    def __init__(
        self,
        d_feat: int = 158,
        d_market: int | None = None,
        hidden_size: int = 256,
        temporal_heads: int = 4,
        stock_heads: int = 2,
        dropout: float = 0.5,
        beta: float = 5.0,
    ):
        super().__init__()
        if not d_market:
            raise UserError("MASTER needs the day's market vector: set features.market_context: true")
        for heads in (temporal_heads, stock_heads):
            if heads < 1 or hidden_size % heads != 0:
                raise UserError(f"MASTER hidden_size ({hidden_size}) must be divisible by its head counts, got {heads}")
        if beta <= 0:
            raise UserError(f"MASTER beta (gate temperature) must be > 0, got {beta}")
        check_rates("MASTER", dropout=dropout)
        self.d_feat, self.d_market, self.hidden_size = d_feat, d_market, hidden_size
        self.gate = MarketGate(d_market, d_feat, beta)
        self.projection = nn.Linear(d_feat, hidden_size)
        self.intra_stock = AttentionBlock(hidden_size, temporal_heads, dropout)
        self.inter_stock = AttentionBlock(hidden_size, stock_heads, dropout)
        self.aggregation = TemporalAggregation(hidden_size)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x, membership=None, market_cap=None, market: torch.Tensor | None = None) -> torch.Tensor:
        return self.parts(x, market).prediction

    def parts(self, x: torch.Tensor, market: torch.Tensor | None, with_weights: bool = False) -> MASTERParts:
        """The forward pass's stages; attention weights are computed only ``with_weights``."""
        if market is None:
            raise UserError("MASTER needs the day's market vector: set features.market_context: true")
        if market.shape[-1] != self.d_market:
            raise UserError(f"MASTER was built for a market vector of {self.d_market} entries, got {market.shape[-1]}")
        seq = torch.nan_to_num(as_sequence(x, self.d_feat), nan=0.0)
        gate = self.gate(market)
        y = self.projection(seq * gate)
        y = y + sinusoidal_positions(seq.shape[1], self.hidden_size, y.device, y.dtype)
        h, temporal_weights = self.intra_stock(y, with_weights)
        z, stock_weights = self.inter_stock(h.transpose(0, 1), with_weights)  # attention across stocks, per day
        e, aggregation_weights = self.aggregation(z.transpose(0, 1))
        return MASTERParts(gate, temporal_weights, stock_weights, aggregation_weights, self.head(e).squeeze(-1))
