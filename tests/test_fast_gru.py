"""The cache-blocked GRU (``gru_last_state``) against ``nn.GRU`` and against itself
unblocked: row blocks, time chunks and kept-vs-recomputed gates change only speed.
Every test runs twice: with the compiled step kernels (skipped where they cannot be
built) and with the pure-PyTorch steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import conceptalpha.models.fast_gru as fast_gru
from conceptalpha.models import native
from conceptalpha.models.fast_gru import gru_last_state


@pytest.fixture(autouse=True, params=["compiled", "pytorch"])
def step_kernels(request, monkeypatch):
    if request.param == "compiled" and native.gru_steps() is None:
        pytest.skip("the compiled GRU step kernels are unavailable here (see conceptalpha.models.native)")
    if request.param == "pytorch":
        monkeypatch.setattr(fast_gru, "gru_steps", lambda: None)
    return request.param


def _grads(output: torch.Tensor, weight: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad((output * weight).sum(), inputs))


def _case(n=23, steps=7, features=3, hidden=8, layers=2, x_grad=False, seed=0):
    torch.manual_seed(seed)
    rnn = torch.nn.GRU(features, hidden, layers, batch_first=True)
    x = torch.randn(n, steps, features, requires_grad=x_grad)
    weight = torch.randn(n, hidden)
    return rnn, x, weight, [*rnn.parameters()] + ([x] if x_grad else [])


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("keep_gates", [True, False])
@pytest.mark.parametrize("block_rows", [1, 5, 16, 1000])
def test_blocked_equals_unblocked_and_torch(monkeypatch, layers, keep_gates, block_rows):
    rnn, x, weight, inputs = _case(layers=layers, x_grad=True)
    expected = rnn(x)[0][:, -1]
    expected_grads = _grads(expected, weight, inputs)
    whole = gru_last_state(rnn, x, block_rows=10_000)
    whole_grads = _grads(whole, weight, inputs)
    monkeypatch.setattr(fast_gru, "CHUNK_BYTES_PER_THREAD", 4 * 5 * 8 * 2 * block_rows)  # 2-step chunks
    monkeypatch.setattr(fast_gru, "KEEP_GATES_MAX_BYTES", 1 << 30 if keep_gates else 0)
    got = gru_last_state(rnn, x, block_rows=block_rows)
    got_grads = _grads(got, weight, inputs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-6)
    for g, e, w in zip(got_grads, expected_grads, whole_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_one_step_and_one_row():
    rnn, x, weight, inputs = _case(n=1, steps=1, x_grad=True)
    got, expected = gru_last_state(rnn, x), rnn(x)[0][:, -1]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, e in zip(_grads(got, weight, inputs), _grads(expected, weight, inputs)):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_dropout_between_layers_matches_a_stack_of_single_layer_grus():
    """In training with dropout, the same masks (same RNG order and memory layout) as single-layer
    GRUs with F.dropout between."""
    rnn, x, weight, _ = _case(layers=3)
    rnn.dropout = 0.3
    singles = []
    for i in range(3):
        single = torch.nn.GRU(rnn.input_size if i == 0 else rnn.hidden_size, rnn.hidden_size, batch_first=True)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(single, f"{name}_l0").data.copy_(getattr(rnn, f"{name}_l{i}"))
        singles.append(single)
    torch.manual_seed(5)
    got = gru_last_state(rnn, x)
    torch.manual_seed(5)
    sequence = x
    for i, single in enumerate(singles):
        sequence = single(F.dropout(sequence, 0.3, True) if i else sequence)[0].contiguous()
    torch.testing.assert_close(got, sequence[:, -1], rtol=1e-5, atol=1e-6)
    ours = _grads(got, weight, [*rnn.parameters()])
    theirs = _grads(sequence[:, -1], weight, [p for single in singles for p in single.parameters()])
    for g, e in zip(ours, theirs):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_backward_twice_with_retained_graph():
    """Kept arrays stay with the graph until it is freed: a retained graph's second backward pass
    gives the same gradients even after other passes have used the pool."""
    rnn, x, weight, inputs = _case()
    out = gru_last_state(rnn, x)
    first = list(torch.autograd.grad((out * weight).sum(), inputs, retain_graph=True))
    gru_last_state(rnn, torch.randn_like(x)).sum().backward()  # may reuse the handed-back arrays
    second = _grads(out, weight, inputs)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_buffer_pool_reuses_arrays_up_to_twice_the_request_and_drains_idle_ones():
    pool = fast_gru._BufferPool()
    like = torch.empty(0)
    a = pool.take(like, (4, 10, 30))
    pool.give([a])
    b = pool.take(like, (4, 10, 29))  # rounds up to the same size
    assert b.data_ptr() == a.data_ptr() and b.shape == (4, 10, 29)
    pool.give([b])
    smaller = pool.take(like, (4, 10, 16))  # the array is at most twice as large: reused
    assert smaller.data_ptr() == a.data_ptr()
    pool.give([smaller])
    c = pool.take(like, (4, 100, 30))  # another size: a new array; the free one is not idle yet, so it stays
    assert c.data_ptr() != a.data_ptr() and pool.bytes == a._base.nbytes
    pool.give([c])
    for _ in range(fast_gru.POOL_IDLE_TAKES):
        pool.give([pool.take(like, (4, 100, 30))])  # served from the pool: nothing is dropped
    assert pool.bytes == a._base.nbytes + c._base.nbytes
    pool.take(like, (4, 1000, 30))  # a miss, with a's array idle for too long: it is freed
    assert pool.bytes == c._base.nbytes
    assert all(array is not a._base for arrays in pool.free.values() for _, array in arrays)


def test_a_nan_input_gives_nan_for_its_row_only():
    """Like nn.GRU: a NaN feature makes its own stock's state and gradients NaN (so the trainer's NaN check
    sees it), and no other row's."""
    rnn, x, _, _ = _case()
    x = x.detach().clone()
    x[3, 2, 1] = float("nan")
    x.requires_grad_()
    out = gru_last_state(rnn, x)
    out.sum().backward()
    assert torch.isnan(out).any(1).nonzero().flatten().tolist() == [3]
    assert torch.isnan(x.grad).flatten(1).any(1).nonzero().flatten().tolist() == [3]


def test_inference_without_grad_matches():
    rnn, x, _, _ = _case()
    with torch.no_grad():
        torch.testing.assert_close(gru_last_state(rnn, x, block_rows=5), rnn(x)[0][:, -1], rtol=1e-5, atol=1e-6)


def test_other_dtypes_defer_to_torch():
    rnn, x, _, _ = _case()
    rnn = rnn.double()
    assert torch.equal(gru_last_state(rnn, x.double()), rnn(x.double())[0][:, -1])


def test_thread_count_changed_between_forward_and_backward(monkeypatch):
    """Chunks follow the thread count; the backward pass must chunk as its forward pass did."""
    rnn, x, weight, inputs = _case(steps=9)
    expected = _grads(rnn(x)[0][:, -1], weight, inputs)
    monkeypatch.setattr(fast_gru, "CHUNK_BYTES_PER_THREAD", 4 * 5 * 8 * 23 * 2)  # 2 steps a thread
    threads = torch.get_num_threads()
    out = gru_last_state(rnn, x)
    torch.set_num_threads(threads + 1)
    try:
        got = _grads(out, weight, inputs)
    finally:
        torch.set_num_threads(threads)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
