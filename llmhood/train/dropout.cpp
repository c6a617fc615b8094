// Dropout whose mask is a hash of (seed, element index): llmhood/train/dropout.py says why.
//
// Element i of the contiguous tensor is kept when the top 32 bits of
// splitmix64(splitmix64(seed) + i * golden) are at least `threshold` (p * 2^32, rounded),
// and then scaled by 2^32 / (2^32 - threshold), the inverse of the exact keep rate, so that
// the expectation is x itself. No state: the same seed gives the same mask, which is how the
// backward pass gets it back without storing it.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;  // 2^64 / the golden ratio

inline uint64_t splitmix64(uint64_t z) {  // Steele, Lea and Flood's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

template <typename T>
void masked_scale(const T* x, T* y, int64_t n, uint64_t key, uint64_t threshold, float scale) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t u = splitmix64(key + static_cast<uint64_t>(i) * kGolden) >> 32;
    y[i] = static_cast<T>(u >= threshold ? static_cast<float>(x[i]) * scale : 0.0f);
  }
}

// bf16 by its bits, so that the loop vectorises: c10::BFloat16's conversions do not.
// Rounding to nearest even, as c10's; a NaN stays a NaN.
template <>
void masked_scale<c10::BFloat16>(const c10::BFloat16* x, c10::BFloat16* y, int64_t n,
                                 uint64_t key, uint64_t threshold, float scale) {
  const uint16_t* in = reinterpret_cast<const uint16_t*>(x);
  uint16_t* out = reinterpret_cast<uint16_t*>(y);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t u = splitmix64(key + static_cast<uint64_t>(i) * kGolden) >> 32;
    const uint32_t bits = static_cast<uint32_t>(in[i]) << 16;
    float v;
    std::memcpy(&v, &bits, 4);
    v = u >= threshold ? v * scale : 0.0f;
    uint32_t w;
    std::memcpy(&w, &v, 4);
    const uint32_t rounded = (w + 0x7fffu + ((w >> 16) & 1u)) >> 16;
    out[i] = static_cast<uint16_t>(v != v ? (w >> 16) | 0x40u : rounded);
  }
}

at::Tensor hashed_dropout(const at::Tensor& x, double p, int64_t seed) {
  TORCH_CHECK(x.device().is_cpu(), "hashed_dropout runs on CPU tensors");
  TORCH_CHECK(p >= 0.0 && p < 1.0, "hashed_dropout: p must be in [0, 1), got ", p);
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty_like(input);
  const double levels = 4294967296.0;  // 2^32
  const uint64_t threshold = static_cast<uint64_t>(std::llround(p * levels));
  const float scale = static_cast<float>(levels / (levels - static_cast<double>(threshold)));
  const uint64_t key = splitmix64(static_cast<uint64_t>(seed));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "hashed_dropout",
                                  [&] {
                                    masked_scale<scalar_t>(input.const_data_ptr<scalar_t>(),
                                                           out.mutable_data_ptr<scalar_t>(),
                                                           input.numel(), key, threshold, scale);
                                  });
  return out;
}

}  // namespace

TORCH_LIBRARY(llmhood_train, m) { m.def("hashed_dropout(Tensor x, float p, int seed) -> Tensor"); }

TORCH_LIBRARY_IMPL(llmhood_train, CPU, m) { m.impl("hashed_dropout", &hashed_dropout); }
