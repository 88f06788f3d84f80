// The sequential part of conceptalpha's CPU GRU (models/fast_gru.py): the time
// steps of one chunk, forward and backward, for one block of rows.
//
// Layouts are those of fast_gru.py (feature-major, B = rows of the block):
//   gates   [4H, S, B]  forward in: [W_in x + b_in, W_ir x + b_ir + b_hr, W_iz x + b_iz + b_hz, b_hn]
//                       forward out: [n, r, z, W_hn h + b_hn]
//   states  [H, T+1, B] h_0 .. h_T
//   factors [5H, S, B]  backward out: the step's gradients [∂hn, ∂r_pre, ∂z_pre, ∂n_pre, ∂h_{t-1} direct]
//
// Rows are independent, so the block's columns are split between the torch
// threads and each thread runs all steps of the chunk on its own columns: one
// matrix product and one fused elementwise pass per step, no synchronisation.
// The split depends only on B and the thread count, so results are reproducible.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

// Columns [begin, end) of thread `part` of `parts`: multiples of 16 (AVX-512 float lanes) but the last.
struct Columns {
  int64_t begin, end;
};

int64_t column_parts(int64_t columns) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (columns + 15) / 16));
}

Columns columns_of(int64_t part, int64_t parts, int64_t columns) {
  int64_t size = (columns + parts - 1) / parts;
  size = std::min(columns, (size + 15) / 16 * 16);
  return {std::min(columns, part * size), std::min(columns, (part + 1) * size)};
}

// Runs body(columns) for each thread's share of the columns.
template <typename Body>
void for_each_column_part(int64_t columns, Body body) {
  const int64_t parts = column_parts(columns);
  at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
    // Worker threads start with autograd's thread-local defaults; these are internal buffers.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t part = first; part < last; ++part) {
      const Columns c = columns_of(part, parts, columns);
      if (c.begin < c.end) body(c);
    }
  });
}

void check_layout(const at::Tensor& t, int64_t dims, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == dims && t.is_contiguous(),
              name, " must be a contiguous float32 CPU tensor with ", dims, " dimensions");
}

inline float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// Steps t0 .. t0+S-1 of one layer: gates as above, states[:, t0] given, states[:, t0+1 .. t0+S] written.
void forward_steps(const at::Tensor& w_hh, at::Tensor gates, at::Tensor states, int64_t t0) {
  check_layout(w_hh, 2, "w_hh");
  check_layout(gates, 3, "gates");
  check_layout(states, 3, "states");
  const int64_t H = states.size(0), T1 = states.size(1), B = states.size(2), S = gates.size(1);
  TORCH_CHECK(gates.size(0) == 4 * H && gates.size(2) == B && w_hh.size(0) == 3 * H && w_hh.size(1) == H &&
                  t0 >= 0 && t0 + S < T1,
              "forward_steps: inconsistent shapes");
  float* g = gates.data_ptr<float>();
  float* st = states.data_ptr<float>();
  const at::Tensor hidden = gates.narrow(0, H, 3 * H);
  for_each_column_part(B, [&](Columns c) {
    const int64_t width = c.end - c.begin;
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
  });
}

// Steps t0+S-1 down to t0 of one layer's backward pass, from the forward pass's gates [4H, S, B]
// (n, r, z, W_hn h + b_hn) and states [H, T+1, B]. With a = ∂L/∂h_t, writes factors [5H, S, B] =
// a·[f_hn, f_r, f_z, f_n, z], the gradients [∂hn, ∂r_pre, ∂z_pre, ∂n_pre, ∂h_{t-1} direct]:
//   f_n = (1−z)(1−n²),  f_hn = f_n·r,  f_r = f_n·hn·r(1−r),  f_z = (h_{t−1}−n)·z(1−z).
// `carry` [H, B] holds ∂L/∂h_{t0+S} on entry and ∂L/∂h_{t0} on exit (untouched when t0 = 0), both
// without the gradient `grad_steps` [H, T, B] (when defined) brings to that step from above.
void backward_steps(const at::Tensor& w_hh_nrz_t, const at::Tensor& gates, const at::Tensor& states,
                    at::Tensor factors, at::Tensor carry, const c10::optional<at::Tensor>& grad_steps, int64_t t0) {
  check_layout(w_hh_nrz_t, 2, "w_hh_nrz_t");
  check_layout(gates, 3, "gates");
  check_layout(states, 3, "states");
  check_layout(factors, 3, "factors");
  check_layout(carry, 2, "carry");
  const int64_t H = carry.size(0), B = carry.size(1), S = gates.size(1), T1 = states.size(1);
  TORCH_CHECK(gates.size(0) == 4 * H && gates.size(2) == B && factors.size(0) == 5 * H && factors.size(1) == S &&
                  factors.size(2) == B && states.size(0) == H && states.size(2) == B && w_hh_nrz_t.size(0) == H &&
                  w_hh_nrz_t.size(1) == 3 * H && t0 >= 0 && t0 + S < T1,
              "backward_steps: inconsistent shapes");
  const bool from_above = grad_steps.has_value() && grad_steps->defined();
  const float* above_all = nullptr;
  if (from_above) {
    check_layout(*grad_steps, 3, "grad_steps");
    TORCH_CHECK(grad_steps->size(0) == H && grad_steps->size(1) == T1 - 1 && grad_steps->size(2) == B,
                "backward_steps: inconsistent grad_steps");
    above_all = grad_steps->data_ptr<float>();
  }
  const int64_t T = T1 - 1;
  const float* g = gates.data_ptr<float>();
  const float* st = states.data_ptr<float>();
  float* f = factors.data_ptr<float>();
  float* dh = carry.data_ptr<float>();
  const at::Tensor gate_grads = factors.narrow(0, 0, 3 * H);
  const at::Tensor direct = factors.narrow(0, 4 * H, H);
  for_each_column_part(B, [&](Columns c) {
    const int64_t width = c.end - c.begin;
    at::Tensor carry_part = carry.narrow(1, c.begin, width);
    for (int64_t i = S - 1; i >= 0; --i) {
      const int64_t t = t0 + i;
      const bool add = from_above && t < T - 1;
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
  });
}

}  // namespace

TORCH_LIBRARY(conceptalpha_gru, m) {
  m.def("forward_steps(Tensor w_hh, Tensor(a!) gates, Tensor(b!) states, int t0) -> ()", &forward_steps);
  m.def("backward_steps(Tensor w_hh_nrz_t, Tensor gates, Tensor states, Tensor(a!) factors, Tensor(b!) carry, "
        "Tensor? grad_steps, int t0) -> ()",
        &backward_steps);
}
