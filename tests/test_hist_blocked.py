"""Blocked hidden-concept similarity: identical to the dense N×N computation."""

from __future__ import annotations

import pytest
import torch

from conceptalpha.models.hist import HIST, top_k_similar
from conceptalpha.models.ops import cosine_similarity_matrix, softmax_attention, unit_rows


def _dense_reference_top_k(h: torch.Tensor, k: int) -> torch.Tensor:
    """The reference formulation: full N×N cosine matrix, self excluded, top-k per row."""
    similarity = cosine_similarity_matrix(h, h)
    similarity.fill_diagonal_(-torch.inf)
    return similarity.topk(k, dim=1).indices


@pytest.mark.parametrize("block_rows", [1, 7, 64, 1000])
@pytest.mark.parametrize("k", [1, 3])
def test_blocked_top_k_equals_dense(block_rows, k):
    h = torch.randn(200, 16, generator=torch.Generator().manual_seed(k))
    expected = _dense_reference_top_k(h, k)
    assert torch.equal(top_k_similar(unit_rows(h), k, block_rows), expected)


def test_auto_block_size_is_blocked_for_large_n(monkeypatch):
    import conceptalpha.models.hist as hist

    h = unit_rows(torch.randn(300, 8, generator=torch.Generator().manual_seed(0)))
    monkeypatch.setattr(hist, "SIMILARITY_BLOCK_ELEMENTS", 300 * 16)  # 16-row blocks
    assert torch.equal(top_k_similar(h, 2), _dense_reference_top_k(h, 2))


def test_model_output_and_gradients_identical_blocked_vs_dense():
    torch.manual_seed(0)
    dense = HIST(d_feat=3, hidden_size=8, K=2, similarity_block_rows=10_000)
    blocked = HIST(d_feat=3, hidden_size=8, K=2, similarity_block_rows=5)
    blocked.load_state_dict(dense.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, 3, generator=gen)
    membership = (torch.rand(40, 6, generator=gen) < 0.3).float().to_sparse()
    cap = torch.rand(40, generator=gen) + 0.1
    out_dense, out_blocked = dense(x, membership, cap), blocked(x, membership, cap)
    assert torch.equal(out_dense, out_blocked)
    out_dense.square().sum().backward()
    out_blocked.square().sum().backward()
    for a, b in zip(dense.parameters(), blocked.parameters()):
        assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("block_rows", [1, 7, 64])
def test_blocked_attention_equals_dense(block_rows):
    """softmax_attention in row blocks (recomputing backward) = softmax(q kᵀ) v, values and gradients."""
    gen = torch.Generator().manual_seed(block_rows)
    q = torch.randn(50, 8, generator=gen, requires_grad=True)
    k = torch.randn(30, 8, generator=gen, requires_grad=True)
    weight = torch.randn(50, 8, generator=gen)
    for values in (torch.randn(30, 5, generator=gen, requires_grad=True), k):  # also keys = values, as in HIST
        inputs = [q, k] if values is k else [q, k, values]
        dense = torch.softmax(q @ k.T, dim=1) @ values
        blocked = softmax_attention(q, k, values, block_rows=block_rows)
        torch.testing.assert_close(blocked, dense, rtol=1e-5, atol=1e-6)
        w = weight[:, : values.shape[1]]
        dense_grads = torch.autograd.grad((dense * w).sum(), inputs)
        blocked_grads = torch.autograd.grad((blocked * w).sum(), inputs)
        for got, expected in zip(blocked_grads, dense_grads):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_attention_is_blocked_above_the_size_bound(monkeypatch):
    import conceptalpha.models.ops as ops

    q, k = torch.randn(40, 4, requires_grad=True), torch.randn(20, 4)
    monkeypatch.setattr(ops, "ATTENTION_BLOCK_ELEMENTS", 20 * 8)  # 8-row blocks
    out = ops.softmax_attention(q, k, k)
    assert out.grad_fn is not None and "Blocked" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, torch.softmax(q @ k.T, dim=1) @ k, rtol=1e-5, atol=1e-6)
    assert ops.softmax_attention(q, k[:0], k[:0]).shape == (40, 4)
