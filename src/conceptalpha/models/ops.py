"""Small tensor helpers shared by the models.

All functions work on whole cross-sections (no per-stock Python loops) and on
any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Attention matrices (query rows × keys, float32) above this many elements are
#: computed in row blocks of about this size on CPU (4 MiB).
ATTENTION_BLOCK_ELEMENTS = 1 << 20

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


def softmax_attention(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, block_rows: int | None = None
) -> torch.Tensor:
    """``out_i = Σ_j softmax_j(q_i · k_j) v_j`` (no scaling) for q [N, H], k [M, H], v [M, D] → [N, D].

    With no keys (M = 0) the empty sum is returned: zeros [N, D]. On CPU, when
    the attention matrix [N, M] is larger than :data:`ATTENTION_BLOCK_ELEMENTS`,
    it is computed ``block_rows`` query rows at a time and never stored (see
    :class:`_BlockedAttention`); any ``block_rows`` gives the same result up
    to float rounding.
    """
    if keys.shape[0] == 0:
        return values.new_zeros(queries.shape[0], values.shape[1])
    rows = block_rows or max(1, ATTENTION_BLOCK_ELEMENTS // keys.shape[0])
    if queries.device.type != "cpu" or rows >= queries.shape[0]:
        return torch.softmax(queries @ keys.T, dim=1) @ values
    return _BlockedAttention.apply(queries, keys, values, rows)


class _BlockedAttention(torch.autograd.Function):
    """Softmax attention over blocks of query rows, with a recomputing backward pass.

    For a block b of rows: S = Q_b Kᵀ, P = softmax(S) (row-wise), out_b = P V.
    Backward, with G = ∂L/∂out_b: P is recomputed, ∂V += Pᵀ G,
    ∂S = P ⊙ (G Vᵀ − rowsum(P ⊙ G Vᵀ)), ∂Q_b = ∂S K, ∂K += ∂Sᵀ Q_b.

    Only Q, K, V are kept, and the [rows, M] blocks live in three reused
    scratch arrays. The plain form keeps the probabilities [N, M] for backward
    and allocates three more such matrices per step (64 MB each at N = M =
    4000): first touching fresh memory costs more than the products that fill
    it, and the blocks stay in cache.
    """

    @staticmethod
    def forward(ctx, queries, keys, values, rows):
        out = values.new_empty(queries.shape[0], values.shape[1])
        scratch = _AttentionScratch(queries, keys.shape[0], rows)
        for start, probabilities in scratch.blocks(queries, keys):
            torch.mm(probabilities, values, out=out[start : start + len(probabilities)])
        ctx.save_for_backward(queries, keys, values)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad_out):
        queries, keys, values = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        grad_q = torch.empty_like(queries) if need_q else None
        grad_k = torch.zeros_like(keys) if need_k else None
        grad_v = torch.zeros_like(values) if need_v else None
        scratch = _AttentionScratch(queries, keys.shape[0], ctx.rows)
        for start, probabilities in scratch.blocks(queries, keys):
            stop = start + len(probabilities)
            grad = grad_out[start:stop]
            if need_v:
                grad_v.addmm_(probabilities.T, grad)
            grad_p = torch.mm(grad, values.T, out=scratch.grad[: stop - start])
            grad_s = _softmax_backward(
                grad_p, probabilities, 1, probabilities.dtype, grad_input=scratch.scores[: stop - start]
            )
            if need_q:
                torch.mm(grad_s, keys, out=grad_q[start:stop])
            if need_k:
                grad_k.addmm_(grad_s.T, queries[start:stop])
        return grad_q, grad_k, grad_v, None


_softmax_out = torch.ops.aten._softmax.out
_softmax_backward = torch.ops.aten._softmax_backward_data.out


class _AttentionScratch:
    """Reused [rows, M] arrays for the scores (then ∂S), the probabilities and ∂P."""

    def __init__(self, like: torch.Tensor, keys: int, rows: int):
        self.scores, self.probabilities, self.grad = (like.new_empty(rows, keys) for _ in range(3))

    def blocks(self, queries: torch.Tensor, keys: torch.Tensor):
        """(first row, softmax(Q_b Kᵀ) [rows, M]) for each block of query rows."""
        rows = self.scores.shape[0]
        for start in range(0, queries.shape[0], rows):
            block = queries[start : start + rows]
            scores = torch.mm(block, keys.T, out=self.scores[: len(block)])
            yield start, _softmax_out(scores, 1, False, out=self.probabilities[: len(block)])
