"""SFM baseline: the State-Frequency Memory recurrent network."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from conceptalpha.errors import UserError
from conceptalpha.models.rnn import as_sequence, check_rates


class SFM(nn.Module):
    """State-Frequency Memory RNN (Zhang, Aggarwal & Qi 2017, KDD; Qlib's SFM).

    The memory is a complex matrix S_t ∈ C^{H×K}: H states × K frequencies
    ω_k = 2π k / K. With σ the hard sigmoid, for t = 1..T:

    - gates from ``x_t`` and ``h_{t-1}``: input ``i``, state-forget ``f^ste``
      [H], frequency-forget ``f^fre`` [K], output ``o`` [H],
      candidate ``c = i ∘ tanh(W_c x_t + U_c h_{t-1} + b_c)`` [H];
    - joint forget gate ``F = f^ste ⊗ f^fre`` [H, K];
    - ``Re S_t = F ∘ Re S_{t-1} + c ⊗ cos(ω t)``,
      ``Im S_t = F ∘ Im S_{t-1} + c ⊗ sin(ω t)``;
    - amplitude ``A_t = (Re S_t)² + (Im S_t)²`` [H, K];
    - ``h_t = o ∘ tanh(A_t u_a + b_a)`` with u_a ∈ R^K;
    - output ``p = W_p h_T + b_p`` [output_dim]; ``ŷ = w·p + b``.

    ``dropout_W`` / ``dropout_U`` drop inputs / recurrent states with one mask
    per sequence (shared over time); the reference code ignores both.
    """

    def __init__(
        self,
        d_feat: int = 6,
        hidden_size: int = 64,
        output_dim: int = 32,
        freq_dim: int = 25,
        dropout_W: float = 0.0,
        dropout_U: float = 0.0,
    ):
        super().__init__()
        if min(hidden_size, output_dim, freq_dim) < 1:
            raise UserError(
                f"SFM hidden_size, output_dim and freq_dim must be >= 1, got {hidden_size}, {output_dim}, {freq_dim}"
            )
        check_rates("SFM", dropout_W=dropout_W, dropout_U=dropout_U)
        self.d_feat = d_feat
        self.hidden_size = hidden_size
        self.freq_dim = freq_dim
        self.dropout_W = dropout_W
        self.dropout_U = dropout_U
        gate_width = 4 * hidden_size + freq_dim  # i, f_ste, c, o [H each] and f_fre [K]
        self.input_gates = nn.Linear(d_feat, gate_width)
        self.recurrent_gates = nn.Linear(hidden_size, gate_width, bias=False)
        self.amplitude = nn.Linear(freq_dim, 1, bias=False)
        self.amplitude_bias = nn.Parameter(torch.zeros(hidden_size))
        self.output = nn.Linear(hidden_size, output_dim)
        self.fc_out = nn.Linear(output_dim, 1)
        self.register_buffer(
            "frequencies", 2 * math.pi * torch.arange(freq_dim, dtype=torch.float32) / freq_dim, persistent=False
        )
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.xavier_uniform_(self.input_gates.weight)
        for block in self.recurrent_gates.weight.split(self.hidden_size, dim=0):
            nn.init.orthogonal_(block)
        with torch.no_grad():
            H, bias = self.hidden_size, self.input_gates.bias
            bias.zero_()
            bias[H : 2 * H] = 1.0  # state-forget gate starts open, as in the paper's LSTM heritage
            bias[4 * H :] = 1.0  # frequency-forget gate likewise

    def _dropout_mask(self, like: torch.Tensor, rate: float) -> torch.Tensor | None:
        if not self.training or rate <= 0.0:
            return None
        return F.dropout(torch.ones_like(like), p=rate, training=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden state h_T [N, H] of ``x`` [N, T, F]."""
        seq = as_sequence(x, self.d_feat)
        n, steps, _ = seq.shape
        H = self.hidden_size
        h = seq.new_zeros(n, H)
        re = seq.new_zeros(n, H, self.freq_dim)
        im = seq.new_zeros(n, H, self.freq_dim)
        input_mask = self._dropout_mask(seq[:, 0, :], self.dropout_W)
        state_mask = self._dropout_mask(h, self.dropout_U)
        projected = self.input_gates(seq if input_mask is None else seq * input_mask.unsqueeze(1))  # [N, T, G]
        for t in range(steps):
            gates = projected[:, t, :] + self.recurrent_gates(h if state_mask is None else h * state_mask)
            i_raw, f_state_raw, c_raw, o_raw = gates[:, : 4 * H].split(H, dim=1)
            f_state, f_freq = F.hardsigmoid(f_state_raw), F.hardsigmoid(gates[:, 4 * H :])
            o = F.hardsigmoid(o_raw)
            candidate = (F.hardsigmoid(i_raw) * torch.tanh(c_raw)).unsqueeze(2)  # [N, H, 1]
            forget = f_state.unsqueeze(2) * f_freq.unsqueeze(1)  # [N, H, K]
            phase = self.frequencies * (t + 1)  # [K]
            re = forget * re + candidate * torch.cos(phase)
            im = forget * im + candidate * torch.sin(phase)
            amplitude = re.square() + im.square()
            h = o * torch.tanh(self.amplitude(amplitude).squeeze(2) + self.amplitude_bias)
        return h

    def forward(self, x, membership=None, market_cap=None) -> torch.Tensor:
        return self.fc_out(self.output(self.encode(x))).squeeze(-1)
