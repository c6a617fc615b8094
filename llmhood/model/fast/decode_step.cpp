// One decode step through every transformer block, in a single call from Python.
//
// The arithmetic is that of the Python modules (norm.py, rope.py, attention.py's
// explicit_attention, swiglu.py), operation for operation and rounding for rounding: the
// same float32 statistics, the same casts back to the activation dtype, the same
// kernels for the matmuls and attention (torch's int4 kernel or linear; bmm and softmax).
// What it removes is everything around them: at batch 1 a step of SmolLM2 is about 2,200
// tensor operations, each a few microseconds of Python and dispatch, and together as long
// as the matmuls themselves. decode_step.py says when this path runs, how it is built, and
// how it is checked.
//
// Conventions: T is the activation dtype (float or c10::BFloat16). The norms, rotations and
// residual adds are a few thousand numbers per layer, written out as loops on the calling
// thread: each widens to float32, computes, and rounds back with T(...) exactly where the
// Python code calls .float() and .type_as(). SwiGLU's exp is left to torch's vectorized silu.

#include <ATen/core/Tensor.h>
#include <ATen/ops/_weight_int4pack_mm_for_cpu.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/softmax.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace {

using c10::BFloat16;

inline float widen(float v) { return v; }
inline float widen(BFloat16 v) {  // bf16 is the top half of a float32: a shift, which vectorizes
  const uint32_t bits = uint32_t(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// A projection: torch's int4 kernel when `scale_zero` is not empty, else a dense weight.
at::Tensor project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale_zero,
                   int64_t group_size) {
  if (scale_zero.numel() > 0)
    return at::_weight_int4pack_mm_for_cpu(x, w, group_size, scale_zero);
  return at::linear(x, w);
}

// norm.py: weight * (x / sqrt(mean(x²) + eps)) with the statistic in float32 and the
// normalised x rounded to T before the gain.  x, out: (rows, dim).
template <typename T>
void rms_norm(const T* x, const T* weight, T* out, int64_t rows, int64_t dim, float eps) {
  for (int64_t r = 0; r < rows; r++, x += dim, out += dim) {
    float squares = 0.f;
#pragma omp simd reduction(+ : squares)
    for (int64_t i = 0; i < dim; i++) squares += widen(x[i]) * widen(x[i]);
    const float inv = 1.f / std::sqrt(squares / dim + eps);
    for (int64_t i = 0; i < dim; i++) out[i] = T(widen(weight[i]) * widen(T(widen(x[i]) * inv)));
  }
}

// rope.py: rotate each channel pair (a, b) of `heads` heads by the row's angle, in float32.
// Pairs are (2i, 2i+1) when interleaved, (i, i + d/2) otherwise. cos, sin: (head_dim / 2).
template <typename T>
void rotate(T* x, int64_t heads, int64_t head_dim, const float* cos, const float* sin,
            bool interleaved) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; h++, x += head_dim)
    for (int64_t i = 0; i < half; i++) {
      const int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
      const float xa = widen(x[a]), xb = widen(x[b]);
      x[a] = T(xa * cos[i] - xb * sin[i]);
      x[b] = T(xb * cos[i] + xa * sin[i]);
    }
}

// attention.py's explicit_attention for one query per row and head, with the same ATen
// calls: K and V widened to float32, q·kᵀ/√d by batched matmul, the mask, softmax, ·v.
// q: (bs, n_heads · head_dim); k, v: (bs, n_kv_heads, len, head_dim), views of the cache;
// hidden: (bs, 1, 1, len) bool, true at padding, or undefined.
// Returns (bs, n_heads · head_dim) in q's dtype.
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& hidden) {
  const int64_t bs = k.size(0), n_kv = k.size(1), len = k.size(2), head_dim = k.size(3);
  const int64_t group = q.size(1) / head_dim / n_kv;
  at::Tensor k32 = k.to(at::kFloat).reshape({bs * n_kv, len, head_dim});
  at::Tensor v32 = v.to(at::kFloat).reshape({bs * n_kv, len, head_dim});
  at::Tensor q32 = q.to(at::kFloat).reshape({bs * n_kv, group, head_dim});
  at::Tensor scores = at::bmm(q32, k32.transpose(1, 2)).mul_(1.0 / std::sqrt(double(head_dim)));
  if (hidden.defined())
    scores.view({bs, n_kv, group, len})
        .masked_fill_(hidden, -std::numeric_limits<double>::infinity());
  at::Tensor out = at::bmm(at::softmax(scores, -1), v32);
  return out.view({bs, n_kv * group * head_dim}).to(q.scalar_type());
}

template <typename T>
void add_into(T* x, const T* y, int64_t n) {  // x += y, rounded to T as `x + y` is
  for (int64_t i = 0; i < n; i++) x[i] = T(widen(x[i]) + widen(y[i]));
}

template <typename T>
at::Tensor run(const at::Tensor& h_in, at::TensorList weights, const at::Tensor& cos,
               const at::Tensor& sin, const at::Tensor& k_cache, const at::Tensor& v_cache,
               int64_t slot, const std::optional<at::Tensor>& key_padding, int64_t n_heads,
               int64_t n_kv_heads, bool interleaved, double eps, int64_t group_size) {
  const int64_t bs = h_in.size(0), dim = h_in.size(-1), n_layers = k_cache.size(0);
  const int64_t head_dim = k_cache.size(-1), len = slot + 1;
  const int64_t q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  // k_cache, v_cache: (n_layers, bs, n_kv_heads, max_len, head_dim), positions contiguous
  const int64_t layer_stride = k_cache.stride(0), row_stride = k_cache.stride(1);
  const int64_t head_stride = k_cache.stride(2);
  at::Tensor h = h_in.reshape({bs, dim}).clone();  // the residual stream, updated in place
  at::Tensor normed = at::empty({bs, dim}, h.options());
  T* hp = h.data_ptr<T>();
  T* np = normed.data_ptr<T>();
  const float* cp = cos.data_ptr<float>();  // (bs, head_dim / 2)
  const float* sp = sin.data_ptr<float>();
  at::Tensor hidden;  // (bs, 1, 1, len): the padding a query may not see; not its own slot
  if (key_padding) {
    hidden = key_padding->logical_not();
    hidden.select(1, slot).fill_(false);
    hidden = hidden.view({bs, 1, 1, len});
  }
  const float epsf = float(eps);

  for (int64_t layer = 0; layer < n_layers; layer++) {
    const at::Tensor* w = &weights[layer * 10];  // see decode_step.py: layer_weights
    T* kl = k_cache.data_ptr<T>() + layer * layer_stride;
    T* vl = v_cache.data_ptr<T>() + layer * layer_stride;

    rms_norm(hp, w[0].data_ptr<T>(), np, bs, dim, epsf);
    at::Tensor qkv = project(normed, w[2], w[3], group_size).contiguous();  // (bs, q+k+v)
    T* qkvp = qkv.data_ptr<T>();
    for (int64_t b = 0; b < bs; b++) {
      T* row = qkvp + b * (q_dim + 2 * kv_dim);
      const float* c = cp + b * head_dim / 2;
      const float* s = sp + b * head_dim / 2;
      rotate(row, n_heads + n_kv_heads, head_dim, c, s, interleaved);  // q and k side by side
      for (int64_t g = 0; g < n_kv_heads; g++) {  // this step's K and V into the cache
        const int64_t at = b * row_stride + g * head_stride + slot * head_dim;
        std::memcpy(kl + at, row + q_dim + g * head_dim, head_dim * sizeof(T));
        std::memcpy(vl + at, row + q_dim + kv_dim + g * head_dim, head_dim * sizeof(T));
      }
    }
    at::Tensor k_all = k_cache.select(0, layer).narrow(2, 0, len);  // (bs, kv, len, hd)
    at::Tensor v_all = v_cache.select(0, layer).narrow(2, 0, len);
    at::Tensor attended = attend(qkv.narrow(1, 0, q_dim), k_all, v_all, hidden);
    at::Tensor out = project(attended, w[4], w[5], group_size).contiguous();
    add_into(hp, out.data_ptr<T>(), bs * dim);

    rms_norm(hp, w[1].data_ptr<T>(), np, bs, dim, epsf);
    at::Tensor gate_up = project(normed, w[6], w[7], group_size);  // (bs, 2 · hidden)
    const int64_t hidden = gate_up.size(1) / 2;  // swiglu.py: silu(gate) ⊙ up
    at::Tensor act = at::silu(gate_up.narrow(1, 0, hidden)).mul_(gate_up.narrow(1, hidden, hidden));
    out = project(act, w[8], w[9], group_size).contiguous();
    add_into(hp, out.data_ptr<T>(), bs * dim);
  }
  return h.view({bs, 1, dim});
}

at::Tensor decode_step(const at::Tensor& h, at::TensorList weights, const at::Tensor& cos,
                       const at::Tensor& sin, const at::Tensor& k_cache,
                       const at::Tensor& v_cache, int64_t slot,
                       const std::optional<at::Tensor>& key_padding, int64_t n_heads,
                       int64_t n_kv_heads, bool interleaved, double eps, int64_t group_size) {
  TORCH_CHECK(k_cache.strides() == v_cache.strides() && k_cache.stride(4) == 1 &&
                  k_cache.stride(3) == k_cache.size(4),
              "K and V caches must share one layout, each position's head_dim contiguous");
  TORCH_CHECK(slot < k_cache.size(3), "the KV cache is full");
  TORCH_CHECK(weights.size() == size_t(k_cache.size(0)) * 10, "10 tensors per layer expected");
  if (h.scalar_type() == at::kBFloat16)
    return run<BFloat16>(h, weights, cos, sin, k_cache, v_cache, slot, key_padding, n_heads,
                         n_kv_heads, interleaved, eps, group_size);
  TORCH_CHECK(h.scalar_type() == at::kFloat, "decode_step runs in bfloat16 or float32");
  return run<float>(h, weights, cos, sin, k_cache, v_cache, slot, key_padding, n_heads,
                    n_kv_heads, interleaved, eps, group_size);
}

}  // namespace

TORCH_LIBRARY(llmhood, m) {
  m.def(
      "decode_step(Tensor h, Tensor[] weights, Tensor cos, Tensor sin, Tensor(a!) k_cache, "
      "Tensor(b!) v_cache, int slot, Tensor? key_padding, int n_heads, int n_kv_heads, "
      "bool interleaved, float eps, int group_size) -> Tensor");
}

TORCH_LIBRARY_IMPL(llmhood, CPU, m) { m.impl("decode_step", &decode_step); }
