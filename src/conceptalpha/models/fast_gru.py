"""A GRU with a hand-written, cache-blocked forward and backward pass, for CPU training.

``nn.GRU`` on CPU records ~20 autograd nodes per time step and layer, keeps
every gate of every step for its backward pass, and streams whole
cross-sections of a few thousand stocks through memory at every step.
:func:`gru_last_state` computes the same function from the same ``nn.GRU``
parameters (PyTorch's gate order r, z, n) with one autograd node for the whole
stack. On CUDA (cuDNN is fast) it defers to ``nn.GRU``.

Per layer, for t = 1..T (h_0 = 0)::

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

How it is laid out, and why:

- Rows (stocks) are independent, so they are processed in blocks of at most
  :data:`BLOCK_ROWS_PER_THREAD` rows, as equal as possible, one block per
  torch thread, each block in arrays of its own (threads sharing the columns
  of one array scale poorly). A group of blocks, one per thread, goes through
  all layers, forward and backward, before the next group starts.
- Inside a block everything is *feature-major*: a step's hidden state is
  [H, B], its gates [4H, B], a layer's gates [4H, T, B]. For the compiled
  kernels the [rows, T, B] arrays are stored step by step ([T, rows, B] in
  memory), so that a step reads and writes one contiguous slab.
- The forward pass keeps exactly what the backward pass needs, per step
  [n, r, z, W_hn h_{t−1} + b_hn] and the states: 5H floats per row, step and
  layer (a training step of ``nn.GRU`` takes about twice as much memory).
  Above :data:`KEEP_GATES_MAX_BYTES` only the states are kept and the
  backward pass recomputes the gates from them. Gate, state and scratch
  arrays are recycled from one training step to the next
  (:class:`_BufferPool`): first touching fresh pages costs more than filling them.
- With the compiled kernels of ``gru_steps.cpp`` (see
  :mod:`conceptalpha.models.native`), one call per layer runs all time steps
  of the group's blocks side by side on the torch threads: per step one or
  two small matrix products and one fused elementwise pass, and in the
  backward pass the step's share of every weight gradient and of ∂L/∂inputs
  while its data are in cache.
- Without them, the same arithmetic runs in eager PyTorch in chunks of a few
  time steps (:func:`_layer_forward`, :func:`_layer_backward`): a chunk's
  input projection and weight gradients are one matrix product each, and the
  backward pass turns the gates into per-step factors (see :func:`_factors`),
  so that all gate gradients of a step are *one* multiplication of the
  incoming gradient, followed by one matrix product for ∂h_{t−1}.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from conceptalpha.models.native import gru_steps

#: Most rows in a block (one torch thread's share of a group). Larger blocks make
#: the per-step matrix products (K = H = 64) more efficient; smaller ones keep a
#: chunk's arrays in cache.
BLOCK_ROWS_PER_THREAD = 768
#: Size bound of a chunk's gradient buffer [5H, S, B] (float32 bytes) per torch
#: thread; sets the chunk's number of steps S.
CHUNK_BYTES_PER_THREAD = 4 << 20
#: The gates of all steps (4H floats per row, step and layer) are kept for the
#: backward pass up to this size; above it only the states are kept (a fifth)
#: and the backward pass recomputes the gates, at about 25% more arithmetic.
KEEP_GATES_MAX_BYTES = 512 << 20
#: A pooled array unused for this many requests is freed at the next request the pool
#: cannot serve (a training step of the HIST encoder makes a few dozen requests).
POOL_IDLE_TAKES = 256

_WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input
_tanh_backward = torch.ops.aten.tanh_backward.grad_input
_rsub = torch.ops.aten.rsub.Scalar_out  # 1 − z into a preallocated slot


def gru_last_state(rnn: nn.GRU, x: torch.Tensor, block_rows: int | None = None) -> torch.Tensor:
    """Last hidden state of the top layer of ``rnn`` (batch_first) on x [N, T, F] → [N, H].

    ``block_rows`` (default: :data:`BLOCK_ROWS_PER_THREAD`) bounds the rows of a block; it
    only changes the speed: any value gives the same result up to float rounding.
    """
    if not _fast_path_applies(rnn, x):
        return rnn(x)[0][:, -1, :]
    layers = [[getattr(rnn, f"{name}_l{i}") for name in _WEIGHT_NAMES] for i in range(rnn.num_layers)]
    rows = block_rows or BLOCK_ROWS_PER_THREAD
    if rnn.dropout > 0 and rnn.training and rnn.num_layers > 1:
        sequence = x  # dropout acts between layers: one node per layer, full sequences between them
        for i, weights in enumerate(layers):
            if i:
                sequence = F.dropout(sequence, rnn.dropout, True)
            sequence = _GRUStack.apply(sequence, rows, i < rnn.num_layers - 1, torch.is_grad_enabled(), *weights)
        return sequence
    return _GRUStack.apply(x, rows, False, torch.is_grad_enabled(), *[w for weights in layers for w in weights])


def _fast_path_applies(rnn: nn.GRU, x: torch.Tensor) -> bool:
    """float32 on CPU, batch-first, biased, unidirectional, no projection, non-empty x."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 3
        and x.shape[0] > 0
        and x.shape[1] > 0
        and rnn.batch_first
        and rnn.bias
        and not rnn.bidirectional
        and getattr(rnn, "proj_size", 0) == 0
        and all(p.dtype == torch.float32 for p in rnn.parameters())
    )


@dataclass
class _Layer:
    """One layer's weights rearranged for the block layout (H = hidden size).

    ``w_in`` [3H, F] and ``b_in`` [4H, 1] give a step's gate buffer its initial
    content [W_in x + b_in, W_ir x + b_ir + b_hr, W_iz x + b_iz + b_hz, b_hn],
    to which ``w_hh`` [3H, H] (``weight_hh``, rows r, z, n) adds the hidden
    projection in rows H..4H; ``w_hh_nrz_t`` [H, 3H] is ``weight_hh``
    transposed with its columns in the order n, r, z of the gradient buffer;
    ``w_ih_t`` [F, 3H] is ``weight_ih`` transposed.
    """

    w_in: torch.Tensor
    b_in: torch.Tensor
    w_hh: torch.Tensor
    w_hh_nrz_t: torch.Tensor
    w_ih_t: torch.Tensor

    @staticmethod
    def of(w_ih, w_hh, b_ih, b_hh) -> _Layer:
        size = w_hh.shape[1]
        r, z, n = slice(0, size), slice(size, 2 * size), slice(2 * size, 3 * size)
        bias = torch.cat([b_ih[n], b_ih[r] + b_hh[r], b_ih[z] + b_hh[z], b_hh[n]])
        return _Layer(
            w_in=torch.cat([w_ih[n], w_ih[r], w_ih[z]]),
            b_in=bias[:, None],
            w_hh=w_hh,
            w_hh_nrz_t=torch.cat([w_hh[n], w_hh[r], w_hh[z]]).T.contiguous(),
            w_ih_t=w_ih.T,
        )

    @property
    def size(self) -> int:
        return self.w_hh.shape[1]


def _row_blocks(n: int, block_rows: int) -> list[tuple[int, int]]:
    """Split n rows into ⌈n / block_rows⌉ consecutive blocks [start, stop) whose sizes differ by
    at most one: blocks run side by side on the threads, so the largest sets the pace (measured:
    even blocks beat blocks rounded to multiples of the 16 AVX-512 lanes by ~6 % at N = 263)."""
    count = max(1, -(-n // block_rows))
    size, extra = divmod(n, count)
    stops = [(i + 1) * size + min(i + 1, extra) for i in range(count)]
    return list(zip([0, *stops[:-1]], stops))


def _block_groups(n: int, block_rows: int, threads: int) -> list[list[tuple[int, int]]]:
    """Row blocks of about ``block_rows`` rows at most, at least one per thread where there are
    rows enough, in consecutive groups of ``threads`` blocks that are processed together,
    one block per thread, each in arrays of its own."""
    per_thread = max(16, -(-n // threads))
    blocks = _row_blocks(n, min(block_rows, per_thread))
    return [blocks[i : i + threads] for i in range(0, len(blocks), threads)]


def _chunks(steps: int, rows: int, size: int, budget: int) -> list[tuple[int, int]]:
    """Consecutive time spans [start, stop) whose gradient buffer [5H, S, B] fits ``budget`` bytes."""
    span = max(1, min(steps, budget // (4 * 5 * size * rows)))
    return [(start, min(start + span, steps)) for start in range(0, steps, span)]


def _feature_major(x: torch.Tensor, by_step: bool = False) -> torch.Tensor:
    """Batch-first [B, T, F] → [F, T, B] with unit stride along B: contiguous, or (``by_step``) laid
    out step by step, [T, F, B] in memory (see :func:`_rows_steps`)."""
    if by_step:
        return x.permute(1, 2, 0).contiguous().permute(1, 0, 2)
    return x.permute(2, 1, 0).contiguous()


def _rows_steps(take: Callable[..., torch.Tensor], rows: int, steps: int, columns: int, by_step: bool) -> torch.Tensor:
    """A [rows, steps, columns] array from ``take(*shape)``; ``by_step`` lays it out [steps, rows,
    columns] in memory. The compiled kernels take that layout: each step then touches one contiguous
    slab rather than ``rows`` rows a whole sequence apart (at 300 rows × 60 steps a training step
    measured 12 % faster and a scoring pass 29 %, docs/performance.md)."""
    if by_step:
        return take(steps, rows, columns).permute(1, 0, 2)
    return take(rows, steps, columns)


class _BufferPool:
    """Flat float arrays handed back once nothing reads them any more, for the next
    forward or backward pass to fill, up to :data:`KEEP_GATES_MAX_BYTES` in all.

    A training step frees its gates, states and scratch arrays at the end and
    the next step allocates the same arrays again: through the allocator that
    is tens to hundreds of MB of fresh pages (glibc returns large or many freed
    blocks to the system), whose first touch costs more than writing them.
    A request takes the smallest free array that holds it and is at most twice
    its size, so that days with different numbers of stocks share arrays. Arrays are private to this
    module: a graph's kept arrays come back when its autograd node is freed
    (after backward, or when the graph is dropped), scratch arrays when their
    pass ends. A request the pool cannot serve frees the arrays that have been
    idle for :data:`POOL_IDLE_TAKES` requests, so unused sizes drain away while
    the sizes in use stay (freeing them would make every step miss again).
    """

    def __init__(self):
        self.free: dict[int, list[tuple[int, torch.Tensor]]] = {}  # size → (request count when given, array)
        self.requests = 0
        self.bytes = 0
        self.lock = threading.Lock()

    def take(self, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """A [shape] view of a pooled (or new) flat array."""
        numel = math.prod(shape)
        array = None
        with self.lock:
            self.requests += 1
            fits = [free for free in self.free if numel <= free <= 2 * numel and self.free[free]]
            if fits:
                array = self.free[min(fits)].pop()[1]
                self.bytes -= array.nbytes
            else:
                self._drop_idle()
        if array is None:
            array = like.new_empty(_rounded_up(numel))
        return array[:numel].view(shape)

    def give(self, arrays: list[torch.Tensor]) -> None:
        """Return arrays from :meth:`take` that nothing will read any more."""
        with self.lock:
            for array in arrays:
                base = array._base
                if base is not None and self.bytes + base.nbytes <= KEEP_GATES_MAX_BYTES:
                    self.free.setdefault(base.numel(), []).append((self.requests, base))
                    self.bytes += base.nbytes

    def _drop_idle(self) -> None:
        """Free (with their last reference) the arrays given back over POOL_IDLE_TAKES requests ago."""
        for size, arrays in self.free.items():
            idle = [array for given, array in arrays if self.requests - given > POOL_IDLE_TAKES]
            self.bytes -= sum(array.nbytes for array in idle)
            self.free[size] = [(given, array) for given, array in arrays if self.requests - given <= POOL_IDLE_TAKES]


def _rounded_up(numel: int) -> int:
    """numel rounded up to a multiple of 1/16 of its power of two (at most 6.25% more)."""
    step = 1 << max(0, numel.bit_length() - 5)
    return -(-numel // step) * step


_pool = _BufferPool()


class _Workspace:
    """Named scratch arrays of one forward or backward pass, reused by all its blocks
    and chunks, taken from and (on exit) given back to :data:`_pool`."""

    def __init__(self, like: torch.Tensor):
        self.like = like
        self.arrays: dict[str, torch.Tensor] = {}

    def __enter__(self) -> _Workspace:
        return self

    def __exit__(self, *exc) -> None:
        _pool.give(list(self.arrays.values()))
        self.arrays.clear()

    def view(self, name: str, *shape: int) -> torch.Tensor:
        """A contiguous array of ``shape`` in the scratch array ``name`` (grown on demand)."""
        numel = math.prod(shape)
        array = self.arrays.get(name)
        if array is None or array.numel() < numel:
            if array is not None:
                _pool.give([array])
            array = self.arrays[name] = _pool.take(self.like, (numel,))
        return array[:numel].view(shape)


class _GRUStack(torch.autograd.Function):
    """A stack of GRU layers on batch-first x [N, T, F]: the top layer's last state
    [N, H], or (``return_sequence``) all its states [N, T, H].

    Kept for backward, per row block and layer: the states [H, T+1, B]
    (h_0 = 0 first) and, within :data:`KEEP_GATES_MAX_BYTES`, each chunk's
    gates [4H, S, B] (else the backward pass recomputes them). They go back to
    :data:`_pool` when the autograd node is freed.
    """

    @staticmethod
    def forward(ctx, x, block_rows, return_sequence, record, *weights):
        layers = [_Layer.of(*weights[i : i + 4]) for i in range(0, len(weights), 4)]
        n, steps, _ = x.shape
        size = layers[0].size
        groups = _block_groups(n, block_rows, torch.get_num_threads())  # fixed here: backward must block alike
        keep = record and any(ctx.needs_input_grad)  # under no_grad nothing is kept for a backward pass
        keep_gates = keep and 4 * 4 * size * steps * n * len(layers) <= KEEP_GATES_MAX_BYTES
        # per block, per layer: its states and (when kept) each chunk's gates
        kept: list[list[tuple[torch.Tensor, list[torch.Tensor] | None]]] = []
        out = x.new_empty((n, steps, size) if return_sequence else (n, size))
        native = gru_steps()
        by_step = native is not None  # the compiled kernels take their arrays laid out step by step

        def pooled(*shape: int) -> torch.Tensor:
            return _pool.take(x, shape)

        with _Workspace(x) as work:
            for group in groups:
                inputs = [_feature_major(x[start:stop], by_step) for start, stop in group]
                group_kept = [[] for _ in group]
                kept.extend(group_kept)
                for depth, layer in enumerate(layers):
                    if keep:
                        states = [_rows_steps(pooled, size, steps + 1, stop - start, by_step)
                                  for start, stop in group]
                    else:
                        states = [_rows_steps(partial(work.view, f"states{depth % 2}/{i}"), size, steps + 1, stop - start, by_step)
                                  for i, (start, stop) in enumerate(group)]
                    if native is not None:  # kept gates: one array [4H, T, B] per block
                        whole = [_rows_steps(pooled, 4 * size, steps, stop - start, by_step)
                                 for start, stop in group] if keep_gates else []
                        native.forward_layer(layer.w_in, layer.b_in.view(-1), layer.w_hh, inputs, states, whole)
                        gates = [[array] for array in whole] if keep_gates else None
                    else:
                        gates = [[] for _ in group] if keep_gates else None
                        _layer_forward(layer, inputs, states, _group_chunks(group, steps, size), work, gates)
                    for i, block in enumerate(group_kept):
                        block.append((states[i], gates[i] if gates else None))
                    inputs = [block_states[:, 1:] for block_states in states]
                for (start, stop), top in zip(group, inputs):
                    out[start:stop] = top.permute(2, 1, 0) if return_sequence else top[:, -1].T
        if keep:
            ctx.save_for_backward(x, *weights)
            ctx.kept = kept
            ctx.shape = (steps, size, groups, len(layers), return_sequence)
            ctx.native = native is not None
            owned = [array for block in kept for states, gates in block for array in [states, *(gates or [])]]
            weakref.finalize(ctx, _pool.give, owned)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        steps, size, groups, depth, return_sequence = ctx.shape
        x, *weights = ctx.saved_tensors
        layers = [_Layer.of(*weights[i : i + 4]) for i in range(0, 4 * depth, 4)]
        need_x = ctx.needs_input_grad[0]
        grad_x = torch.empty_like(x) if need_x else None
        sums = [_GradientSums.zeros(layer) for layer in layers]
        native = gru_steps() if ctx.native else None
        first = 0  # index of the group's first block
        with _Workspace(x) as work:
            for group in groups:
                kept = ctx.kept[first : first + len(group)]  # per block, per layer: (states, gates or None)
                grads = [grad_out[start:stop] for start, stop in group]
                grads = [_feature_major(g, ctx.native) if return_sequence else g.T.contiguous() for g in grads]
                for level in range(depth - 1, -1, -1):
                    states = [block[level][0] for block in kept]
                    gates = [block[level][1] for block in kept] if kept[0][level][1] is not None else None
                    if level:
                        inputs = [block[level - 1][0][:, 1:] for block in kept]
                    else:
                        inputs = [_feature_major(x[start:stop], ctx.native) for start, stop in group]
                    grad_inputs = None
                    if level or need_x:  # ∂L/∂(the layer's inputs), alternating between two arrays on its way down
                        grad_inputs = [
                            _rows_steps(partial(work.view, f"grad{level % 2}/{i}"), inputs[i].shape[0], steps, stop - start, ctx.native)
                            for i, (start, stop) in enumerate(group)
                        ]
                    last_only = level == depth - 1 and not return_sequence
                    if native is not None:
                        _native_layer_backward(
                            native, layers[level], inputs, states, gates, grads, last_only, sums[level], grad_inputs, work
                        )
                    else:
                        chunks = _group_chunks(group, steps, size)
                        _layer_backward(
                            layers[level], inputs, states, gates, chunks, grads, last_only, sums[level], grad_inputs, work
                        )
                    grads = grad_inputs
                if need_x:
                    for (start, stop), grad in zip(group, grads):
                        grad_x[start:stop] = grad.permute(2, 1, 0)
                first += len(group)
        weight_grads = [g for layer_sums in sums for g in layer_sums.unpack()]
        return (grad_x, None, None, None, *weight_grads)


def _group_chunks(group: list[tuple[int, int]], steps: int, size: int) -> list[tuple[int, int]]:
    """The time chunks of a group of blocks, sized for its largest block."""
    return _chunks(steps, max(stop - start for start, stop in group), size, CHUNK_BYTES_PER_THREAD)


def _project_inputs(layer: _Layer, inputs: torch.Tensor, gates: torch.Tensor) -> None:
    """gates [4H, S, B] ← [W_in x + b_in, W_ir x + b_ir + b_hr, W_iz x + b_iz + b_hz, b_hn] for inputs [F, S, B]."""
    size = layer.size
    flat = gates.view(4 * size, -1)
    torch.addmm(layer.b_in[: 3 * size], layer.w_in, inputs.reshape(inputs.shape[0], -1), out=flat[: 3 * size])
    flat[3 * size :].copy_(layer.b_in[3 * size :])


def _layer_forward(
    layer: _Layer,
    inputs: list[torch.Tensor],
    states: list[torch.Tensor],
    chunks: list[tuple[int, int]],
    work: _Workspace,
    kept: list[list[torch.Tensor]] | None,
) -> None:
    """One layer over a group of blocks: inputs [F, T, B] → states [H, T+1, B] (h_0 = 0), per block.

    After step t a chunk's gates [4H, S, B] hold [n_t, r_t, z_t, W_hn h_{t-1} + b_hn];
    when ``kept`` is given, each chunk's gates are an array of its own appended to the block's list.
    """
    size = layer.size
    for block_states in states:
        block_states[:, 0].zero_()
    for start, stop in chunks:
        gates = []
        for i, (block_inputs, block_states) in enumerate(zip(inputs, states)):
            shape = (4 * size, stop - start, block_states.shape[2])
            if kept is None:
                block_gates = work.view(f"gates/{i}", *shape)
            else:
                block_gates = _pool.take(block_states, shape)
                kept[i].append(block_gates)
            _project_inputs(layer, block_inputs[:, start:stop], block_gates)
            gates.append(block_gates)
        for block_gates, block_states in zip(gates, states):
            _forward_steps(layer, block_gates, block_states, start)


def _forward_steps(layer: _Layer, gates: torch.Tensor, states: torch.Tensor, start: int) -> None:
    """Steps start .. start+S-1 in eager PyTorch (what ``gru_steps.cpp`` does in one pass per step):
    gates [4H, S, B] from the input projection → [n, r, z, W_hn h + b_hn]; states [H, T+1, B] filled."""
    size = layer.size
    h = states.unbind(1)
    hidden, rz = gates[size:].unbind(1), gates[size : 3 * size].unbind(1)
    n, r, z, hn = (gates[k * size : (k + 1) * size].unbind(1) for k in range(4))
    for i in range(gates.shape[1]):
        t = start + i
        if t:  # h_0 = 0: the first hidden projection is its bias
            hidden[i].addmm_(layer.w_hh, h[t])
        rz[i].sigmoid_()
        n[i].addcmul_(r[i], hn[i]).tanh_()
        torch.lerp(n[i], h[t], z[i], out=h[t + 1])


def _recompute_gates(layer: _Layer, inputs: torch.Tensor, previous: torch.Tensor, gates: torch.Tensor) -> None:
    """gates [4H, S, B] ← [n, r, z, W_hn h_{t-1} + b_hn] of a chunk, from its inputs [F, S, B]
    and h_{t-1} [H, S, B]: the forward pass's arithmetic, all S steps at once."""
    size = layer.size
    _project_inputs(layer, inputs, gates)
    flat = gates.view(4 * size, -1)
    flat[size:].addmm_(layer.w_hh, previous.reshape(size, -1))
    flat[size : 3 * size].sigmoid_()
    flat[:size].addcmul_(flat[size : 2 * size], flat[3 * size :]).tanh_()


def _factors(gates: torch.Tensor, previous: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Per-step factors out [5H, S, B] from gates [4H, S, B] and h_{t-1} [H, S, B].

    With a = ∂L/∂h_t, every gradient of step t is a times a factor::

        ∂(W_hn h + b_hn) = a·(1−z)(1−n²)·r        = a·f_hn
        ∂r_pre           = a·(1−z)(1−n²)·hn·r(1−r) = a·f_r
        ∂z_pre           = a·(h_{t−1}−n)·z(1−z)    = a·f_z
        ∂n_pre           = a·(1−z)(1−n²)           = a·f_n
        ∂h_{t−1} (direct) = a·z

    stored in that order [f_hn, f_r, f_z, f_n, z], so that [∂hn, ∂r, ∂z]
    matches ``w_hh_nrz_t`` and [∂r, ∂z, ∂n] matches ``weight_ih``.
    """
    size = previous.shape[0]
    n, r, z, hn = (gates[k * size : (k + 1) * size] for k in range(4))
    f_hn, f_r, f_z, f_n, f_h = (out[k * size : (k + 1) * size] for k in range(5))
    f_h.copy_(z)
    _tanh_backward(_rsub(z, 1.0, out=f_n), n, grad_input=f_n)
    _sigmoid_backward(torch.sub(previous, n, out=f_z), z, grad_input=f_z)
    torch.mul(f_n, r, out=f_hn)
    _sigmoid_backward(torch.mul(f_n, hn, out=f_r), r, grad_input=f_r)
    return out


@dataclass
class _GradientSums:
    """Running sums over blocks of one layer's gradients: ∂W_hh with rows n, r, z;
    ∂W_ih (rows r, z, n); bias sums [∂hn, ∂r, ∂z, ∂n] in the gradient buffer's order."""

    w_hh_nrz: torch.Tensor
    w_ih: torch.Tensor
    bias: torch.Tensor

    @staticmethod
    def zeros(layer: _Layer) -> _GradientSums:
        size, features, like = layer.size, layer.w_ih_t.shape[0], layer.w_hh
        return _GradientSums(
            like.new_zeros(3 * size, size), like.new_zeros(3 * size, features), like.new_zeros(4 * size)
        )

    def add_(self, other: _GradientSums) -> None:
        self.w_hh_nrz.add_(other.w_hh_nrz)
        self.w_ih.add_(other.w_ih)
        self.bias.add_(other.bias)

    def unpack(self) -> tuple[torch.Tensor, ...]:
        """(∂weight_ih, ∂weight_hh, ∂bias_ih, ∂bias_hh) in PyTorch's gate order r, z, n."""
        size = self.w_hh_nrz.shape[1]
        n, rz = slice(0, size), slice(size, 3 * size)
        b = self.bias
        return (self.w_ih, torch.cat([self.w_hh_nrz[rz], self.w_hh_nrz[n]]), b[size:], torch.cat([b[rz], b[n]]))


def _layer_backward(
    layer: _Layer,
    inputs: list[torch.Tensor],
    states: list[torch.Tensor],
    kept_gates: list[list[torch.Tensor]] | None,
    chunks: list[tuple[int, int]],
    grads: list[torch.Tensor],
    last_only: bool,
    sums: _GradientSums,
    grad_inputs: list[torch.Tensor] | None,
    work: _Workspace,
) -> None:
    """Back-propagate one layer through a group of blocks, chunk by chunk from the last step.

    Per block: inputs [F, T, B], states [H, T+1, B], the forward pass's gates of each chunk
    (``kept_gates``; None: recompute them); ``grads`` ∂L/∂h_t [H, T, B] (or, ``last_only``,
    ∂L/∂h_T [H, B]). Adds the weight gradients to ``sums`` and, when ``grad_inputs`` [F, T, B]
    are given, writes ∂L/∂inputs.
    """
    size, steps, features = layer.size, inputs[0].shape[1], inputs[0].shape[0]
    carries = _carries(grads, size, steps, last_only, work)
    for index in range(len(chunks) - 1, -1, -1):
        start, stop = chunks[index]
        span = stop - start
        gates, factors = [], []
        for i, (block_inputs, block_states) in enumerate(zip(inputs, states)):
            rows = block_states.shape[2]
            if kept_gates:
                block_gates = kept_gates[i][index]
            else:
                block_gates = work.view(f"gates/{i}", 4 * size, span, rows)
                _recompute_gates(layer, block_inputs[:, start:stop], block_states[:, start:stop], block_gates)
            gates.append(block_gates)
            factors.append(work.view(f"factors/{i}", 5 * size, span, rows))
        for i, (block_gates, block_states) in enumerate(zip(gates, states)):
            _factors(block_gates, block_states[:, start:stop], factors[i])
            _backward_steps(layer, factors[i], carries[i], None if last_only else grads[i], start)
        for i, (block_inputs, block_states) in enumerate(zip(inputs, states)):
            flat = factors[i].view(5 * size, -1)
            sums.w_hh_nrz.addmm_(flat[: 3 * size], block_states[:, start:stop].reshape(size, -1).T)
            sums.w_ih.addmm_(flat[size : 4 * size], block_inputs[:, start:stop].reshape(features, -1).T)
            sums.bias.add_(flat[: 4 * size].sum(1))
            if grad_inputs is not None:
                torch.mm(layer.w_ih_t, flat[size : 4 * size], out=grad_inputs[i][:, start:stop].view(features, -1))


def _carries(
    grads: list[torch.Tensor], size: int, steps: int, last_only: bool, work: _Workspace
) -> list[torch.Tensor]:
    """Per block, ∂L/∂h_T [H, B] to start the way down: the gradient from above at the last step."""
    return [work.view(f"carry/{i}", size, grad.shape[-1]).copy_(grad if last_only else grad[:, steps - 1])
            for i, grad in enumerate(grads)]


def _native_layer_backward(
    native,
    layer: _Layer,
    inputs: list[torch.Tensor],
    states: list[torch.Tensor],
    kept_gates: list[list[torch.Tensor]] | None,
    grads: list[torch.Tensor],
    last_only: bool,
    sums: _GradientSums,
    grad_inputs: list[torch.Tensor] | None,
    work: _Workspace,
) -> None:
    """:func:`_layer_backward` in the compiled kernel: all steps of a group's blocks in one call, the
    blocks side by side on the torch threads, each summing its weight gradients in arrays of its own
    (added to ``sums`` in block order, so the result does not depend on the threads' timing).
    ``kept_gates``: per block, the forward pass's one gates array [4H, T, B] (None: recompute them)."""
    carries = _carries(grads, layer.size, inputs[0].shape[1], last_only, work)
    block_sums = [_GradientSums.zeros(layer) for _ in inputs]
    native.backward_layer(
        layer.w_in, layer.b_in.view(-1), layer.w_hh, layer.w_hh_nrz_t, layer.w_ih_t.t(), inputs, states,
        [gates[0] for gates in kept_gates] if kept_gates else [], carries, [] if last_only else grads,
        grad_inputs or [], [b.w_hh_nrz for b in block_sums], [b.w_ih for b in block_sums], [b.bias for b in block_sums],
    )
    for block in block_sums:
        sums.add_(block)


def _backward_steps(
    layer: _Layer, factors: torch.Tensor, dh: torch.Tensor, grad_steps: torch.Tensor | None, start: int
) -> None:
    """Steps start+S-1 down to start in eager PyTorch (``gru_steps.cpp`` does this in one pass per step).

    factors [5H, S, B] (see :func:`_factors`) are multiplied by ∂L/∂h_t in place; ``dh`` [H, B]
    holds ∂L/∂h_{start+S} on entry and ∂L/∂h_{start} on exit (untouched when start = 0), in both
    cases without the gradient ``grad_steps`` [H, T, B] (if given) brings to that step from above.
    """
    size, span = layer.size, factors.shape[1]
    last = None if grad_steps is None else grad_steps.shape[1] - 1
    all_factors = factors.view(5, size, span, -1).unbind(2)
    hidden, direct = factors[: 3 * size].unbind(1), factors[4 * size :].unbind(1)
    for i in range(span - 1, -1, -1):
        t = start + i
        if last is not None and t < last:
            dh.add_(grad_steps[:, t])
        all_factors[i].mul_(dh)  # now the gradients [∂hn, ∂r, ∂z, ∂n, ∂h_{t−1} direct]
        if t:
            torch.addmm(direct[i], layer.w_hh_nrz_t, hidden[i], out=dh)
