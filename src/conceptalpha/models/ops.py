"""Small tensor helpers shared by the models.

All functions work on whole cross-sections (no per-stock Python loops) and on
any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Floor on vector norms in cosine similarity: a zero vector gets similarity 0
#: with everything (and a finite gradient) instead of NaN.
COSINE_EPS = 1e-12


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` [N, H] scaled to unit length; zero rows stay zero.

    ``x̂_i = x_i / max(‖x_i‖, ε)``, so ``x̂_i · ŷ_j = cos(x_i, y_j)`` for non-zero
    rows and 0 when either row is zero.
    """
    return F.normalize(x, p=2.0, dim=-1, eps=COSINE_EPS)


def cosine_similarity_matrix(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``S_ij = cos(x_i, y_j)`` for x [N, H], y [M, H] → [N, M] (0 for zero rows)."""
    return unit_rows(x) @ unit_rows(y).T


def softmax_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``out_i = Σ_j softmax_j(q_i · k_j) v_j`` (no scaling) for q [N, H], k [M, H], v [M, D] → [N, D].

    With no keys (M = 0) the empty sum is returned: zeros [N, D].
    """
    if keys.shape[0] == 0:
        return values.new_zeros(queries.shape[0], values.shape[1])
    return torch.softmax(queries @ keys.T, dim=1) @ values
