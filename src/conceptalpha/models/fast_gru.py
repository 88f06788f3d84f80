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
    """One GRU layer over x [T, N, F] → states [T, N, H] (+ gates r,z [T,N,2H], n, W_hn h+b_hn [T,N,H])."""
    steps, n_rows, _ = x.shape
    size = w_hh.shape[1]
    input_part = torch.addmm(b_ih, x.reshape(steps * n_rows, -1), w_ih.T).view(steps, n_rows, 3 * size)
    states = x.new_empty(steps, n_rows, size)
    gates_rz = x.new_empty(steps, n_rows, 2 * size) if keep_gates else None
    gates_n = x.new_empty(steps, n_rows, size) if keep_gates else None
    hidden_n = x.new_empty(steps, n_rows, size) if keep_gates else None
    h = x.new_zeros(n_rows, size)
    for t in range(steps):
        hidden_part = torch.addmm(b_hh, h, w_hh.T)
        rz = torch.sigmoid(input_part[t, :, : 2 * size] + hidden_part[:, : 2 * size])
        r, z = rz[:, :size], rz[:, size:]
        n = _tanh(torch.addcmul(input_part[t, :, 2 * size :], r, hidden_part[:, 2 * size :]))
        h = torch.addcmul(n, z, h - n)
        states[t] = h
        if keep_gates:
            gates_rz[t], gates_n[t], hidden_n[t] = rz, n, hidden_part[:, 2 * size :]
    return states, gates_rz, gates_n, hidden_n


def _tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2σ(2x) − 1, in place on a fresh tensor ``x``.

    ``torch.tanh`` on contiguous float32 goes through MKL's vector library,
    whose threads cost milliseconds per call on a busy CPU even for a few
    hundred elements; sigmoid has no such path. Same function, ~1e-7 apart.
    """
    return torch.sigmoid(x.mul_(2.0)).mul_(2.0).sub_(1.0)


class _GRULayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh):
        keep = any(ctx.needs_input_grad)
        states, rz, n, hidden_n = _layer_forward(x, w_ih, w_hh, b_ih, b_hh, keep)
        if keep:
            ctx.save_for_backward(x, w_ih, w_hh, states, rz, n, hidden_n)
        return states

    @staticmethod
    def backward(ctx, grad_states):
        x, w_ih, w_hh, states, rz, n_gate, hidden_n = ctx.saved_tensors
        steps, n_rows, size = states.shape
        grad_pre = states.new_empty(steps, n_rows, 3 * size)  # ∂L/∂(input pre-activations)
        grad_hidden_pre = states.new_empty(steps, n_rows, 3 * size)  # ∂L/∂(W_h h + b_h)
        dh = states.new_zeros(n_rows, size)
        for t in range(steps - 1, -1, -1):
            dh = dh + grad_states[t]
            h_prev = states[t - 1] if t > 0 else torch.zeros_like(dh)
            r, z, n = rz[t, :, :size], rz[t, :, size:], n_gate[t]
            dn_pre = dh * (1 - z) * (1 - n * n)
            grad_pre[t, :, 2 * size :] = dn_pre
            grad_pre[t, :, size : 2 * size] = dh * (h_prev - n) * z * (1 - z)
            grad_pre[t, :, :size] = dn_pre * hidden_n[t] * r * (1 - r)
            grad_hidden_pre[t, :, : 2 * size] = grad_pre[t, :, : 2 * size]
            grad_hidden_pre[t, :, 2 * size :] = dn_pre * r
            dh = torch.addmm(dh * z, grad_hidden_pre[t], w_hh)
        previous = torch.cat([states.new_zeros(1, n_rows, size), states[:-1]]).reshape(-1, size)
        flat_pre = grad_pre.reshape(-1, 3 * size)
        flat_hidden_pre = grad_hidden_pre.reshape(-1, 3 * size)
        grad_x = (flat_pre @ w_ih).view(steps, n_rows, -1) if ctx.needs_input_grad[0] else None
        return (
            grad_x,
            flat_pre.T @ x.reshape(steps * n_rows, -1),
            flat_hidden_pre.T @ previous,
            flat_pre.sum(0),
            flat_hidden_pre.sum(0),
        )
