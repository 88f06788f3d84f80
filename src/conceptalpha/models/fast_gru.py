"""A GRU with a hand-written backward pass, for CPU training.

``nn.GRU`` on CPU records ~20 autograd nodes per time step and layer; with
whole cross-sections of a few hundred stocks that bookkeeping, not the
arithmetic, dominates a training step. :func:`gru_last_state` computes the same
function from the same ``nn.GRU`` parameters (PyTorch's gate order r, z, n)
with one autograd node per layer: the input projections of all T steps are one
matrix product, and the backward pass accumulates weight gradients over all
steps in one product each. On CUDA (cuDNN is fast) it defers to ``nn.GRU``.

Per layer, for t = 1..T (h_0 = 0)::

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gru_last_state(rnn: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """Last hidden state of the top layer of ``rnn`` (batch_first) on x [N, T, F] → [N, H]."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or not rnn.bias or rnn.bidirectional:
        return rnn(x)[0][:, -1, :]
    sequence = x.transpose(0, 1)  # time-major [T, N, F]: each step is a contiguous block
    for layer in range(rnn.num_layers):
        if layer > 0 and rnn.dropout > 0:
            sequence = F.dropout(sequence, rnn.dropout, rnn.training)
        weights = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        sequence = _GRULayer.apply(sequence, *weights)
    return sequence[-1]


def _layer_forward(x, w_ih, w_hh, b_ih, b_hh, keep_gates: bool):
    """One GRU layer over x [T, N, F] → states [T, N, H], and when ``keep_gates`` the
    gates r‖z [T, N, 2H], n [T, N, H] and hidden projections W_h h + b_h [T, N, 3H].

    Every step writes into preallocated buffers (``out=``/in place): on a busy
    CPU each extra kernel launch costs a thread synchronisation.
    """
    steps, n_rows, _ = x.shape
    size = w_hh.shape[1]
    input_part = torch.addmm(b_ih, x.reshape(steps * n_rows, -1), w_ih.T).view(steps, n_rows, 3 * size)
    kept = steps if keep_gates else 1
    hidden_part = x.new_empty(kept, n_rows, 3 * size)
    gates_rz = x.new_empty(kept, n_rows, 2 * size)
    gates_n = x.new_empty(kept, n_rows, size)
    states = x.new_empty(steps, n_rows, size)
    h = x.new_zeros(n_rows, size)
    for t in range(steps):
        k = t if keep_gates else 0
        hp = torch.addmm(b_hh, h, w_hh.T, out=hidden_part[k])
        rz = torch.add(input_part[t, :, : 2 * size], hp[:, : 2 * size], out=gates_rz[k]).sigmoid_()
        r, z = rz[:, :size], rz[:, size:]
        n = _tanh_(torch.addcmul(input_part[t, :, 2 * size :], r, hp[:, 2 * size :], out=gates_n[k]))
        h = torch.addcmul(n, z, h - n, out=states[t])
    if not keep_gates:
        return states, None, None, None
    return states, gates_rz, gates_n, hidden_part


def _tanh_(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2σ(2x) − 1, in place.

    ``torch.tanh`` on contiguous float32 goes through MKL's vector library,
    whose threads cost milliseconds per call on a busy CPU even for a few
    hundred elements; sigmoid has no such path. Same function, ~1e-7 apart.
    """
    return x.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


class _GRULayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh):
        keep = any(ctx.needs_input_grad)
        states, rz, n, hidden_part = _layer_forward(x, w_ih, w_hh, b_ih, b_hh, keep)
        if keep:
            ctx.save_for_backward(x, w_ih, w_hh, states, rz, n, hidden_part)
        return states

    @staticmethod
    def backward(ctx, grad_states):
        """Back-propagation through time. With a = ∂L/∂h_t (from above and from step t+1):
        ∂n_pre = a(1−z)(1−n²), ∂z_pre = a(h_{t−1}−n)z(1−z), ∂r_pre = ∂n_pre·(W_hn h+b_hn)·r(1−r),
        ∂(W_hn h + b_hn) = ∂n_pre·r, and ∂h_{t−1} = a z + [∂r_pre ‖ ∂z_pre ‖ ∂n_pre r] W_h.
        The per-step factors are computed for all steps at once, before the loop."""
        x, w_ih, w_hh, states, rz, n, hidden_part = ctx.saved_tensors
        steps, n_rows, size = states.shape
        r, z = rz[..., :size], rz[..., size:]
        previous = torch.cat([states.new_zeros(1, n_rows, size), states[:-1]])
        factor_n = (1 - z) * (1 - n * n)
        factor_z = (previous - n) * z * (1 - z)
        factor_r = hidden_part[..., 2 * size :] * r * (1 - r)
        grad_pre = states.new_empty(steps, n_rows, 3 * size)  # ∂L/∂(r, z, n pre-activations)
        grad_hidden_n = states.new_empty(steps, n_rows, size)  # ∂L/∂(W_hn h + b_hn)
        w_hh_rz, w_hh_n = w_hh[: 2 * size], w_hh[2 * size :]
        dh = states.new_zeros(n_rows, size)
        for t in range(steps - 1, -1, -1):
            a = dh.add_(grad_states[t])
            dn = torch.mul(a, factor_n[t], out=grad_pre[t, :, 2 * size :])
            torch.mul(a, factor_z[t], out=grad_pre[t, :, size : 2 * size])
            torch.mul(dn, factor_r[t], out=grad_pre[t, :, :size])
            dhn = torch.mul(dn, r[t], out=grad_hidden_n[t])
            dh = torch.addmm(a * z[t], grad_pre[t, :, : 2 * size], w_hh_rz).addmm_(dhn, w_hh_n)
        flat_pre = grad_pre.reshape(-1, 3 * size)
        flat_hidden = torch.cat([grad_pre[..., : 2 * size], grad_hidden_n], dim=2).reshape(-1, 3 * size)
        grad_x = (flat_pre @ w_ih).view(steps, n_rows, -1) if ctx.needs_input_grad[0] else None
        return (
            grad_x,
            flat_pre.T @ x.reshape(steps * n_rows, -1),
            flat_hidden.T @ previous.reshape(-1, size),
            flat_pre.sum(0),
            flat_hidden.sum(0),
        )
