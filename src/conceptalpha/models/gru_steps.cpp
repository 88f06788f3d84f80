// The sequential part of conceptalpha's CPU GRU (models/fast_gru.py): all time steps of one layer,
// forward and backward, for each block of rows.
//
// Layouts (feature-major; B = rows of the block, T steps, H hidden size, F input size):
//   inputs  [F, T, B]   any strides with unit stride along B (above the first layer: the states h_1 .. h_T below)
//   states  [H, T+1, B] h_0 = 0, h_1 .. h_T
//   gates   [4H, T, B]  after step t: [n_t, r_t, z_t, W_hn h_{t-1} + b_hn], what the backward pass needs
// Every [rows, T, B] array may be contiguous or laid out step by step (in memory [T, rows, B]). fast_gru
// passes the latter: a step then reads and writes one contiguous slab instead of `rows` rows a whole
// sequence apart (as many memory pages as rows), which made a step's memory traffic the bottleneck.
// Weights, as fast_gru._Layer arranges them:
//   w_in [3H, F] (weight_ih rows n, r, z), b_in [4H] ([b_in, b_ir + b_hr, b_iz + b_hz, b_hn]),
//   w_hh [3H, H] (weight_hh, rows r, z, n), w_hh_nrz_t [H, 3H] (weight_hhᵀ, columns n, r, z),
//   w_ih [3H, F] (weight_ih, rows r, z, n).
//
// Rows are independent, so each torch thread runs every step of whole blocks, with no
// synchronisation. Time is processed in chunks of a few steps whose scratch stays in the core's
// cache: per chunk, the input projection is one matrix product; per step, the hidden projection is
// one and the gates one fused elementwise pass. The backward pass does each step's gate gradients,
// ∂L/∂h_{t-1}, and its share of every weight gradient and of ∂L/∂inputs (one product each) while
// they are still in cache. Each block sums its weight gradients into
// arrays of its own, in a fixed order, so results do not depend on thread scheduling. Matrix
// products call the BLAS that torch links (sgemm_, one thread per block) when it exports it, else ATen.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

extern "C" void sgemm_(const char* trans_a, const char* trans_b, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));

namespace {

// Row-major c [m, n] (row stride ldc) = op(a) op(b) + beta·c, where op(a) [m, k] is a (row stride lda) or,
// with trans_a, the transpose of a [k, m]; likewise b.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc) {
  const bool blas_layout = lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n) && ldc >= n && k > 0;
  if (sgemm_ != nullptr && blas_layout) {
    // BLAS is column-major: it sees every row-major matrix transposed, so it computes cᵀ = op(b)ᵀ op(a)ᵀ
    const int mi = static_cast<int>(n), ni = static_cast<int>(m), ki = static_cast<int>(k);
    const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
    const float one = 1.0f;
    sgemm_(trans_b ? "T" : "N", trans_a ? "T" : "N", &mi, &ni, &ki, &one, b, &lb, a, &la, &beta, c, &lc);
    return;
  }
  const auto matrix = [](const float* p, int64_t rows, int64_t columns, int64_t ld, bool trans) {
    at::Tensor t = at::from_blob(const_cast<float*>(p), {trans ? columns : rows, trans ? rows : columns}, {ld, 1},
                                 at::kFloat);
    return trans ? t.t() : t;
  };
  at::Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, at::kFloat);
  at::addmm_out(out, out, matrix(a, m, k, lda, trans_a), matrix(b, k, n, ldb, trans_b), beta, 1.0);
}

// exp for the gate nonlinearities, in a form the compiler vectorises: e^v = 2^i · 2^f with
// i = round(v·log₂e), f ∈ [−½, ½]; 2^i is built in the exponent bits and 2^f is a degree-6
// polynomial (relative error ≈ 1e-7, like float rounding). v is clamped to [−87, 88] (normal
// floats), in a way that keeps NaN. Faster than glibc's vector expf and tanhf by about a third per step.
inline float fast_exp(float v) {
  v = v < -87.0f ? -87.0f : (v > 88.0f ? 88.0f : v);
  const float t = v * 1.44269504088896341f;
  const float i = std::nearbyint(t);
  const float f = t - i;
  float p = 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  union {
    float f;
    int32_t i;
  } power;
  power.i = (static_cast<int32_t>(i) + 127) << 23;
  return p * power.f;
}

inline float sigmoid(float v) { return 1.0f / (1.0f + fast_exp(-v)); }

inline float tanh_of(float v) { return 2.0f / (1.0f + fast_exp(-2.0f * v)) - 1.0f; }

// A [rows, B] slice of a feature-major array: row k of step t at data + k * row + t * step.
struct Rows {
  float* data;
  int64_t row, step;
  float* at(int64_t k, int64_t t) const { return data + k * row + t * step; }
  Rows from(int64_t t) const { return {at(0, t), row, step}; }  // step t becomes step 0
};

Rows rows_of(const at::Tensor& t) { return {t.data_ptr<float>(), t.stride(0), t.stride(1)}; }

struct Weights {
  const float *w_in, *b_in, *w_hh, *w_hh_nrz_t, *w_ih;
  int64_t H, F;
};

// Steps per chunk of the forward pass: a chunk's input projection is one matrix product with S·B
// columns, while the chunk's scratch [4H, S, B] stays in the core's cache. Inputs whose steps are
// not consecutive in memory (one row, or inputs laid out step by step) go step by step.
int64_t chunk_steps(int64_t H, int64_t B, int64_t T, const at::Tensor& inputs) {
  constexpr int64_t kChunkBytes = 512 << 10;
  if (T > 1 && inputs.stride(1) != B) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(T, kChunkBytes / (16 * H * B)));
}

// Step s of a chunk: g holds the input projection (rows n, r, z) and gh the hidden projection
// (rows r, z, n); g ← [n, r, z, W_hn h + b_hn] and, if `next`, h_t (states step t + 1) from h_{t-1}.
void gate_pass(const Weights& w, Rows g, Rows gh, int64_t s, Rows states, int64_t t, int64_t B, bool next) {
  const int64_t H = w.H;
  for (int64_t k = 0; k < H; ++k) {
    float* n = g.at(k, s);
    float* r = g.at(H + k, s);
    float* z = g.at(2 * H + k, s);
    float* hn = g.at(3 * H + k, s);
    const float *gh_r = gh.at(k, s), *gh_z = gh.at(H + k, s), *gh_n = gh.at(2 * H + k, s);
    const float b_n = w.b_in[k], b_r = w.b_in[H + k], b_z = w.b_in[2 * H + k], b_hn = w.b_in[3 * H + k];
    const float* previous = states.at(k, t);
    float* following = states.at(k, t + 1);
#pragma omp simd
    for (int64_t b = 0; b < B; ++b) {
      const float rb = sigmoid(r[b] + gh_r[b] + b_r), zb = sigmoid(z[b] + gh_z[b] + b_z);
      const float hnb = gh_n[b] + b_hn;
      const float nb = tanh_of(n[b] + b_n + rb * hnb);
      n[b] = nb;
      r[b] = rb;
      z[b] = zb;
      hn[b] = hnb;
      if (next) following[b] = nb + zb * (previous[b] - nb);
    }
  }
}

// The input projection of steps t0 .. t0+S-1 into rows n, r, z of the chunk's gates g.
void project_inputs(const Weights& w, const at::Tensor& x, int64_t t0, int64_t S, int64_t B, Rows g) {
  const float* xt = x.data_ptr<float>() + t0 * x.stride(1);
  gemm(false, false, 3 * w.H, S * B, w.F, w.w_in, w.F, xt, x.stride(0), 0.0f, g.data, g.row);
}
Weights weights_of(const at::Tensor& w_in, const at::Tensor& b_in, const at::Tensor& w_hh,
                   const at::Tensor* w_hh_nrz_t, const at::Tensor* w_ih) {
  const int64_t H = w_hh.size(1), F = w_in.size(1);
  TORCH_CHECK(w_in.size(0) == 3 * H && b_in.numel() == 4 * H && w_hh.size(0) == 3 * H,
              "GRU kernels: inconsistent weight shapes");
  return {w_in.data_ptr<float>(), b_in.data_ptr<float>(), w_hh.data_ptr<float>(),
          w_hh_nrz_t ? w_hh_nrz_t->data_ptr<float>() : nullptr, w_ih ? w_ih->data_ptr<float>() : nullptr, H, F};
}

void check_array(const at::Tensor& t, int64_t dims, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == dims, name,
              " must be a float32 CPU tensor with ", dims, " dimensions");
}

void check_contiguous(const at::Tensor& t, int64_t dims, const char* name) {
  check_array(t, dims, name);
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// A [rows, T, B] array, contiguous or laid out step by step ([T, rows, B] in memory).
void check_rows_steps(const at::Tensor& t, const char* name) {
  check_array(t, 3, name);
  const bool by_step = t.stride(2) == 1 && t.stride(0) == t.size(2) && t.stride(1) == t.size(0) * t.size(2);
  TORCH_CHECK(t.is_contiguous() || by_step, name, " must be contiguous or laid out step by step ([T, rows, B])");
}

bool step_major(const at::Tensor& t) { return t.size(1) > 1 && t.stride(1) != t.size(2); }

// Runs body(block) for every block, in parallel over the torch threads (blocks are independent).
template <typename Body>
void for_each_block(size_t blocks, Body body) {
  at::parallel_for(0, static_cast<int64_t>(blocks), 1, [&](int64_t first, int64_t last) {
    // Worker threads start with autograd's thread-local defaults; these are internal buffers.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t block = first; block < last; ++block) body(block);
  });
}

// One layer forward over every block: inputs[b] [F, T, B] → states[b] [H, T+1, B] (h_0 = 0 written),
// and, when `gates` is not empty, gates[b] [4H, T, B] kept for the backward pass.
void forward_layer(const at::Tensor& w_in, const at::Tensor& b_in, const at::Tensor& w_hh, at::TensorList inputs,
                   at::TensorList states, at::TensorList gates) {
  check_contiguous(w_in, 2, "w_in");
  check_contiguous(b_in, 1, "b_in");
  check_contiguous(w_hh, 2, "w_hh");
  const Weights w = weights_of(w_in, b_in, w_hh, nullptr, nullptr);
  TORCH_CHECK(!inputs.empty() && states.size() == inputs.size() && (gates.empty() || gates.size() == inputs.size()),
              "forward_layer: one inputs and states array (and gates array, if any) per block");
  for (size_t block = 0; block < inputs.size(); ++block) {
    check_array(inputs[block], 3, "inputs");
    check_rows_steps(states[block], "states");
    const int64_t T = inputs[block].size(1), B = inputs[block].size(2);
    TORCH_CHECK(inputs[block].size(0) == w.F && (B == 1 || inputs[block].stride(2) == 1) && states[block].size(0) == w.H &&
                    states[block].size(1) == T + 1 && states[block].size(2) == B,
                "forward_layer: inconsistent inputs or states");
    if (!gates.empty()) {
      check_rows_steps(gates[block], "gates");
      TORCH_CHECK(gates[block].size(0) == 4 * w.H && gates[block].size(1) == T && gates[block].size(2) == B,
                  "forward_layer: inconsistent gates");
    }
  }
  for_each_block(inputs.size(), [&](int64_t block) {
    const at::Tensor& x = inputs[block];
    const int64_t T = x.size(1), B = x.size(2), H = w.H;
    // a chunk's input projection writes S·B consecutive columns per gate row: one step at a time into
    // kept gates laid out step by step
    const int64_t S = !gates.empty() && step_major(gates[block]) ? 1 : chunk_steps(H, B, T, x);
    const Rows st = rows_of(states[block]);
    std::vector<float> hidden(3 * H * B), scratch(gates.empty() ? 4 * H * S * B : 0);
    const Rows gh{hidden.data(), B, 0};
    for (int64_t k = 0; k < H; ++k) std::fill(st.at(k, 0), st.at(k, 0) + B, 0.0f);
    for (int64_t t0 = 0; t0 < T; t0 += S) {
      const int64_t steps = std::min(S, T - t0);
      const Rows g = gates.empty() ? Rows{scratch.data(), S * B, B} : rows_of(gates[block]).from(t0);
      project_inputs(w, x, t0, steps, B, g);
      for (int64_t s = 0; s < steps; ++s) {
        const int64_t t = t0 + s;
        if (t > 0) {
          gemm(false, false, 3 * H, B, H, w.w_hh, H, st.at(0, t), st.row, 0.0f, hidden.data(), B);
        } else {
          std::fill(hidden.begin(), hidden.end(), 0.0f);  // h_0 = 0
        }
        gate_pass(w, g, gh, s, st, t, B, true);
      }
    }
  });
}

// One layer backward over every block, from step T-1 down to 0. Per block: inputs, states and (if kept)
// gates as in forward_layer (without gates, each step's gates are recomputed from the states);
// carry [H, B] holds ∂L/∂h_T on entry (clobbered); grad_steps [H, T, B] (optional) the gradient
// reaching each h_{t+1} from above, but for the last step's (which is in the carry); grad_inputs
// [F, T, B] (optional) receives ∂L/∂inputs. Adds the block's weight gradients to its sums:
// sum_hh [3H, H] (rows n, r, z), sum_ih [3H, F] (rows r, z, n), sum_bias [4H] ([∂hn, ∂r, ∂z, ∂n]).
// Per step, with a = ∂L/∂h_t:
//   ∂n_pre = a(1−z)(1−n²),  ∂hn = ∂n_pre·r,  ∂r_pre = ∂n_pre·hn·r(1−r),  ∂z_pre = a(h_{t−1}−n)z(1−z),
//   ∂h_{t−1} = a·z + W_hhᵀ [∂hn, ∂r, ∂z] (W_hh rows n, r, z).
void backward_layer(const at::Tensor& w_in, const at::Tensor& b_in, const at::Tensor& w_hh,
                    const at::Tensor& w_hh_nrz_t, const at::Tensor& w_ih, at::TensorList inputs, at::TensorList states,
                    at::TensorList gates, at::TensorList carry, at::TensorList grad_steps, at::TensorList grad_inputs,
                    at::TensorList sum_hh, at::TensorList sum_ih, at::TensorList sum_bias) {
  check_contiguous(w_in, 2, "w_in");
  check_contiguous(b_in, 1, "b_in");
  check_contiguous(w_hh, 2, "w_hh");
  check_contiguous(w_hh_nrz_t, 2, "w_hh_nrz_t");
  check_contiguous(w_ih, 2, "w_ih");
  const Weights w = weights_of(w_in, b_in, w_hh, &w_hh_nrz_t, &w_ih);
  const int64_t H = w.H, F = w.F;
  TORCH_CHECK(w_hh_nrz_t.size(0) == H && w_hh_nrz_t.size(1) == 3 * H && w_ih.size(0) == 3 * H && w_ih.size(1) == F,
              "backward_layer: inconsistent weight shapes");
  const size_t blocks = inputs.size();
  const auto optional = [&](at::TensorList list) { return list.empty() || list.size() == blocks; };
  TORCH_CHECK(blocks > 0 && states.size() == blocks && carry.size() == blocks && sum_hh.size() == blocks &&
                  sum_ih.size() == blocks && sum_bias.size() == blocks && optional(gates) && optional(grad_steps) &&
                  optional(grad_inputs),
              "backward_layer: one array of each kind per block");
  for (size_t block = 0; block < blocks; ++block) {
    check_array(inputs[block], 3, "inputs");
    const int64_t T = inputs[block].size(1), B = inputs[block].size(2);
    check_rows_steps(states[block], "states");
    check_contiguous(carry[block], 2, "carry");
    check_contiguous(sum_hh[block], 2, "sum_hh");
    check_contiguous(sum_ih[block], 2, "sum_ih");
    check_contiguous(sum_bias[block], 1, "sum_bias");
    TORCH_CHECK(inputs[block].size(0) == F && (B == 1 || inputs[block].stride(2) == 1) && states[block].size(0) == H &&
                    states[block].size(1) == T + 1 && states[block].size(2) == B && carry[block].size(0) == H &&
                    carry[block].size(1) == B && sum_hh[block].size(0) == 3 * H && sum_hh[block].size(1) == H &&
                    sum_ih[block].size(0) == 3 * H && sum_ih[block].size(1) == F && sum_bias[block].numel() == 4 * H,
                "backward_layer: inconsistent shapes");
    const auto same = [&](at::TensorList list, int64_t rows, const char* name) {
      if (list.empty()) return;
      check_rows_steps(list[block], name);
      TORCH_CHECK(list[block].size(0) == rows && list[block].size(1) == T && list[block].size(2) == B,
                  "backward_layer: inconsistent ", name);
    };
    same(gates, 4 * H, "gates");
    same(grad_steps, H, "grad_steps");
    same(grad_inputs, F, "grad_inputs");
  }
  for_each_block(blocks, [&](int64_t block) {
    const at::Tensor& x = inputs[block];
    const int64_t T = x.size(1), B = x.size(2), x_row = x.stride(0);
    const Rows st = rows_of(states[block]);
    // A step's gate gradients [∂hn, ∂r, ∂z, ∂n] [4H, B]; without kept gates, its gates and hidden projection.
    // One step at a time: measured faster here than chunks of steps, whose weight-gradient products are
    // larger but whose gradient rows are further apart for the per-step ∂h product.
    std::vector<float> grads(4 * H * B), scratch(gates.empty() ? 4 * H * B : 0), hidden(gates.empty() ? 3 * H * B : 0);
    const Rows f{grads.data(), B, 0};
    const Rows above = grad_steps.empty() ? Rows{nullptr, 0, 0} : rows_of(grad_steps[block]);
    float* dh = carry[block].data_ptr<float>();
    float* bias = sum_bias[block].data_ptr<float>();
    for (int64_t t = T - 1; t >= 0; --t) {
      const Rows g = gates.empty() ? Rows{scratch.data(), B, 0} : rows_of(gates[block]).from(t);
      if (gates.empty()) {  // recompute the step's gates from the kept states (h_0 = 0 gives a zero projection)
        project_inputs(w, x, t, 1, B, g);
        const Rows gh{hidden.data(), B, 0};
        gemm(false, false, 3 * H, B, H, w.w_hh, H, st.at(0, t), st.row, 0.0f, gh.data, gh.row);
        gate_pass(w, g, gh, 0, st, t, B, false);
      }
      const bool add = above.data != nullptr && t < T - 1;
      for (int64_t k = 0; k < H; ++k) {
        float* a = dh + k * B;
        const float* up = add ? above.at(k, t) : nullptr;
        const float *n = g.at(k, 0), *r = g.at(H + k, 0), *z = g.at(2 * H + k, 0), *hn = g.at(3 * H + k, 0);
        const float* previous = st.at(k, t);
        float *f_hn = f.at(k, 0), *f_r = f.at(H + k, 0), *f_z = f.at(2 * H + k, 0), *f_n = f.at(3 * H + k, 0);
        float s_hn = 0.0f, s_r = 0.0f, s_z = 0.0f, s_n = 0.0f;
#pragma omp simd reduction(+ : s_hn, s_r, s_z, s_n)
        for (int64_t b = 0; b < B; ++b) {
          const float ab = add ? a[b] + up[b] : a[b], nb = n[b], rb = r[b], zb = z[b];
          const float dn = ab * (1.0f - zb) * (1.0f - nb * nb);
          const float dhn = dn * rb, dr = dn * hn[b] * rb * (1.0f - rb);
          const float dz = ab * (previous[b] - nb) * zb * (1.0f - zb);
          f_n[b] = dn;
          f_hn[b] = dhn;
          f_r[b] = dr;
          f_z[b] = dz;
          a[b] = ab * zb;  // the direct part of ∂L/∂h_{t-1}
          s_hn += dhn;
          s_r += dr;
          s_z += dz;
          s_n += dn;
        }
        bias[k] += s_hn;
        bias[H + k] += s_r;
        bias[2 * H + k] += s_z;
        bias[3 * H + k] += s_n;
      }
      if (t > 0) {  // ∂L/∂h_{t-1} += W_hhᵀ [∂hn, ∂r, ∂z] (W_hh rows n, r, z); h_0 needs no gradient
        gemm(false, false, H, B, 3 * H, w.w_hh_nrz_t, 3 * H, f.at(0, 0), f.row, 1.0f, dh, B);
      }
      // The step's share of the weight and input gradients: [∂hn, ∂r, ∂z] pair with h_{t-1} (W_hh rows
      // n, r, z), [∂r, ∂z, ∂n] with the inputs (weight_ih rows r, z, n).
      const float* xt = x.data_ptr<float>() + t * x.stride(1);
      gemm(false, true, 3 * H, w.F, B, f.at(H, 0), f.row, xt, x_row, 1.0f, sum_ih[block].data_ptr<float>(), w.F);
      gemm(false, true, 3 * H, H, B, f.at(0, 0), f.row, st.at(0, t), st.row, 1.0f, sum_hh[block].data_ptr<float>(), H);
      if (!grad_inputs.empty()) {
        const Rows gx = rows_of(grad_inputs[block]);
        gemm(true, false, w.F, B, 3 * H, w.w_ih, w.F, f.at(H, 0), f.row, 0.0f, gx.at(0, t), gx.row);
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY(conceptalpha_gru, m) {
  m.def("forward_layer(Tensor w_in, Tensor b_in, Tensor w_hh, Tensor[] inputs, Tensor(a!)[] states, "
        "Tensor(b!)[] gates) -> ()",
        &forward_layer);
  m.def("backward_layer(Tensor w_in, Tensor b_in, Tensor w_hh, Tensor w_hh_nrz_t, Tensor w_ih, Tensor[] inputs, "
        "Tensor[] states, Tensor[] gates, Tensor(a!)[] carry, Tensor[] grad_steps, Tensor(b!)[] grad_inputs, "
        "Tensor(c!)[] sum_hh, Tensor(d!)[] sum_ih, Tensor(e!)[] sum_bias) -> ()",
        &backward_layer);
}
