// The sequential part of conceptalpha's CPU GRU (models/fast_gru.py): the time
// steps of one chunk, forward and backward, for one block of rows.
//
// Layouts are those of fast_gru.py (feature-major, B = rows of the block):
//   gates   [4H, S, B]  forward in: [W_in x + b_in, W_ir x + b_ir + b_hr, W_iz x + b_iz + b_hz, b_hn]
//                       forward out: [n, r, z, W_hn h + b_hn]
//   states  [H, T+1, B] h_0 .. h_T
//   factors [5H, S, B]  backward out: the step's gradients [∂hn, ∂r_pre, ∂z_pre, ∂n_pre, ∂h_{t-1} direct]
//
// Each call takes a list of blocks (separate arrays of different rows): rows are
// independent, so each torch thread runs all steps of the chunk for its own
// block, one matrix product and one fused elementwise pass per step, with no
// synchronisation. Threads working on arrays of their own scale much better
// than threads sharing the columns of one array; with fewer blocks than
// threads, a block's columns are split as well. The split depends only on the
// block widths and the thread count, so results are reproducible.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace {

// Columns [begin, end) of thread `part` of `parts`: multiples of 16 (AVX-512 float lanes) but the last.
struct Columns {
  int64_t begin, end;
};

Columns columns_of(int64_t part, int64_t parts, int64_t columns) {
  int64_t size = (columns + parts - 1) / parts;
  size = std::min(columns, (size + 15) / 16 * 16);
  return {std::min(columns, part * size), std::min(columns, (part + 1) * size)};
}

// Runs body(block, columns) over every block's columns, in parallel over the torch threads.
template <typename Body>
void for_each_block_part(const std::vector<int64_t>& widths, Body body) {
  const int64_t blocks = static_cast<int64_t>(widths.size());
  const int64_t per_block = std::max<int64_t>(1, at::get_num_threads() / std::max<int64_t>(1, blocks));
  std::vector<std::pair<int64_t, Columns>> items;
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t parts = std::max<int64_t>(1, std::min(per_block, (widths[block] + 15) / 16));
    for (int64_t part = 0; part < parts; ++part) {
      const Columns c = columns_of(part, parts, widths[block]);
      if (c.begin < c.end) items.emplace_back(block, c);
    }
  }
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t first, int64_t last) {
    // Worker threads start with autograd's thread-local defaults; these are internal buffers.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t item = first; item < last; ++item) body(items[item].first, items[item].second);
  });
}

void check_layout(const at::Tensor& t, int64_t dims, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == dims && t.is_contiguous(),
              name, " must be a contiguous float32 CPU tensor with ", dims, " dimensions");
}

inline float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// Steps t0 .. t0+S-1 of one layer for one block's columns c: states[:, t0] given, states[:, t0+1 ..] written.
void forward_block(const at::Tensor& w_hh, const at::Tensor& gates, const at::Tensor& states, int64_t t0,
                   Columns c) {
  const int64_t H = states.size(0), T1 = states.size(1), B = states.size(2), S = gates.size(1);
  const int64_t width = c.end - c.begin;
  float* g = gates.data_ptr<float>();
  float* st = states.data_ptr<float>();
  const at::Tensor hidden = gates.narrow(0, H, 3 * H);
  for (int64_t i = 0; i < S; ++i) {
    const int64_t t = t0 + i;
    if (t > 0) {  // h_0 = 0: the first hidden projection is its bias
      at::Tensor out = hidden.select(1, i).narrow(1, c.begin, width);
      out.addmm_(w_hh, states.select(1, t).narrow(1, c.begin, width));
    }
    for (int64_t k = 0; k < H; ++k) {
      float* n = g + (k * S + i) * B;
      float* r = g + ((H + k) * S + i) * B;
      float* z = g + ((2 * H + k) * S + i) * B;
      const float* hn = g + ((3 * H + k) * S + i) * B;
      const float* previous = st + (k * T1 + t) * B;
      float* next = st + (k * T1 + t + 1) * B;
#pragma omp simd
      for (int64_t b = c.begin; b < c.end; ++b) {
        const float rb = sigmoid(r[b]), zb = sigmoid(z[b]);
        const float nb = std::tanh(n[b] + rb * hn[b]);
        r[b] = rb;
        z[b] = zb;
        n[b] = nb;
        next[b] = nb + zb * (previous[b] - nb);
      }
    }
  }
}

// Steps t0 .. t0+S-1 of one layer for every block: gates[b] [4H, S, B_b] as above, states[b] [H, T+1, B_b].
void forward_steps(const at::Tensor& w_hh, at::TensorList gates, at::TensorList states, int64_t t0) {
  check_layout(w_hh, 2, "w_hh");
  TORCH_CHECK(gates.size() == states.size() && !gates.empty(), "forward_steps: one gates and states array per block");
  const int64_t H = w_hh.size(1), S = gates[0].size(1);
  std::vector<int64_t> widths;
  for (size_t block = 0; block < gates.size(); ++block) {
    check_layout(gates[block], 3, "gates");
    check_layout(states[block], 3, "states");
    const int64_t B = states[block].size(2);
    TORCH_CHECK(w_hh.size(0) == 3 * H && states[block].size(0) == H && gates[block].size(0) == 4 * H &&
                    gates[block].size(1) == S && gates[block].size(2) == B && t0 >= 0 &&
                    t0 + S < states[block].size(1),
                "forward_steps: inconsistent shapes");
    widths.push_back(B);
  }
  for_each_block_part(widths, [&](int64_t block, Columns c) { forward_block(w_hh, gates[block], states[block], t0, c); });
}

// Steps t0+S-1 down to t0 of one layer's backward pass for one block's columns c (see backward_steps).
void backward_block(const at::Tensor& w_hh_nrz_t, const at::Tensor& gates, const at::Tensor& states,
                    const at::Tensor& factors, const at::Tensor& carry, const at::Tensor* grad_steps, int64_t t0,
                    Columns c) {
  const int64_t H = carry.size(0), B = carry.size(1), S = gates.size(1), T1 = states.size(1), T = T1 - 1;
  const int64_t width = c.end - c.begin;
  const float* g = gates.data_ptr<float>();
  const float* st = states.data_ptr<float>();
  const float* above_all = grad_steps ? grad_steps->data_ptr<float>() : nullptr;
  float* f = factors.data_ptr<float>();
  float* dh = carry.data_ptr<float>();
  const at::Tensor gate_grads = factors.narrow(0, 0, 3 * H);
  const at::Tensor direct = factors.narrow(0, 4 * H, H);
  at::Tensor carry_part = carry.narrow(1, c.begin, width);
  for (int64_t i = S - 1; i >= 0; --i) {
    const int64_t t = t0 + i;
    const bool add = above_all != nullptr && t < T - 1;
    for (int64_t k = 0; k < H; ++k) {
      const float* above = add ? above_all + (k * T + t) * B : nullptr;
      // ∂L/∂h_t: the carry at the chunk's last step, else where step i+1 left it (its direct row)
      float* a = i == S - 1 ? dh + k * B : f + ((4 * H + k) * S + i + 1) * B;
      const float* n = g + (k * S + i) * B;
      const float* r = g + ((H + k) * S + i) * B;
      const float* z = g + ((2 * H + k) * S + i) * B;
      const float* hn = g + ((3 * H + k) * S + i) * B;
      const float* previous = st + (k * T1 + t) * B;
      float* f_hn = f + (k * S + i) * B;
      float* f_r = f + ((H + k) * S + i) * B;
      float* f_z = f + ((2 * H + k) * S + i) * B;
      float* f_n = f + ((3 * H + k) * S + i) * B;
      float* f_h = f + ((4 * H + k) * S + i) * B;
      if (add) {
#pragma omp simd
        for (int64_t b = c.begin; b < c.end; ++b) a[b] += above[b];
      }
#pragma omp simd
      for (int64_t b = c.begin; b < c.end; ++b) {
        const float ab = a[b], nb = n[b], rb = r[b], zb = z[b];
        const float dn = ab * (1.0f - zb) * (1.0f - nb * nb);
        f_n[b] = dn;
        f_hn[b] = dn * rb;
        f_r[b] = dn * hn[b] * rb * (1.0f - rb);
        f_z[b] = ab * (previous[b] - nb) * zb * (1.0f - zb);
        f_h[b] = ab * zb;
      }
    }
    if (t > 0) {  // ∂L/∂h_{t-1} = a·z + W_hhᵀ [∂hn, ∂r, ∂z], in place of a·z (into the carry at i = 0)
      at::Tensor step_direct = direct.select(1, i).narrow(1, c.begin, width);
      at::Tensor step_grads = gate_grads.select(1, i).narrow(1, c.begin, width);
      if (i > 0) {
        step_direct.addmm_(w_hh_nrz_t, step_grads);
      } else {
        at::addmm_out(carry_part, step_direct, w_hh_nrz_t, step_grads);
      }
    }
  }
}

// Steps t0+S-1 down to t0 of one layer's backward pass, per block from the forward pass's gates [4H, S, B]
// (n, r, z, W_hn h + b_hn) and states [H, T+1, B]. With a = ∂L/∂h_t, writes factors [5H, S, B] =
// a·[f_hn, f_r, f_z, f_n, z], the gradients [∂hn, ∂r_pre, ∂z_pre, ∂n_pre, ∂h_{t-1} direct]:
//   f_n = (1−z)(1−n²),  f_hn = f_n·r,  f_r = f_n·hn·r(1−r),  f_z = (h_{t−1}−n)·z(1−z).
// `carry` [H, B] holds ∂L/∂h_{t0+S} on entry and ∂L/∂h_{t0} on exit (untouched when t0 = 0), both
// without the gradient `grad_steps` [H, T, B] (one per block, or none) brings to that step from above.
void backward_steps(const at::Tensor& w_hh_nrz_t, at::TensorList gates, at::TensorList states, at::TensorList factors,
                    at::TensorList carry, at::TensorList grad_steps, int64_t t0) {
  check_layout(w_hh_nrz_t, 2, "w_hh_nrz_t");
  const size_t blocks = gates.size();
  TORCH_CHECK(blocks > 0 && states.size() == blocks && factors.size() == blocks && carry.size() == blocks &&
                  (grad_steps.empty() || grad_steps.size() == blocks),
              "backward_steps: one gates, states, factors and carry array (and grad_steps, if any) per block");
  const int64_t H = w_hh_nrz_t.size(0), S = gates[0].size(1);
  std::vector<int64_t> widths;
  for (size_t block = 0; block < blocks; ++block) {
    check_layout(gates[block], 3, "gates");
    check_layout(states[block], 3, "states");
    check_layout(factors[block], 3, "factors");
    check_layout(carry[block], 2, "carry");
    const int64_t B = carry[block].size(1), T1 = states[block].size(1);
    TORCH_CHECK(w_hh_nrz_t.size(1) == 3 * H && carry[block].size(0) == H && gates[block].size(0) == 4 * H &&
                    gates[block].size(1) == S && gates[block].size(2) == B && factors[block].size(0) == 5 * H &&
                    factors[block].size(1) == S && factors[block].size(2) == B && states[block].size(0) == H &&
                    states[block].size(2) == B && t0 >= 0 && t0 + S < T1,
                "backward_steps: inconsistent shapes");
    if (!grad_steps.empty()) {
      check_layout(grad_steps[block], 3, "grad_steps");
      TORCH_CHECK(grad_steps[block].size(0) == H && grad_steps[block].size(1) == T1 - 1 &&
                      grad_steps[block].size(2) == B,
                  "backward_steps: inconsistent grad_steps");
    }
    widths.push_back(B);
  }
  for_each_block_part(widths, [&](int64_t block, Columns c) {
    backward_block(w_hh_nrz_t, gates[block], states[block], factors[block], carry[block],
                   grad_steps.empty() ? nullptr : &grad_steps[block], t0, c);
  });
}

}  // namespace

TORCH_LIBRARY(conceptalpha_gru, m) {
  m.def("forward_steps(Tensor w_hh, Tensor(a!)[] gates, Tensor(b!)[] states, int t0) -> ()", &forward_steps);
  m.def("backward_steps(Tensor w_hh_nrz_t, Tensor[] gates, Tensor[] states, Tensor(a!)[] factors, "
        "Tensor(b!)[] carry, Tensor[] grad_steps, int t0) -> ()",
        &backward_steps);
}
