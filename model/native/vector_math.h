// Float vectors of 16 lanes (GCC's generic vector extension: one AVX-512 register, two AVX2
// ones, or four SSE ones, as the calling function's target_clones variant was compiled) and
// the few functions of them the native kernels share.
#pragma once

#include <cstdint>

namespace solar_native {

constexpr int kLanes = 16;
typedef float vf __attribute__((vector_size(kLanes * 4)));
typedef int32_t vi __attribute__((vector_size(kLanes * 4)));
template <int N>
struct VecOf {
  typedef float type __attribute__((vector_size(N * 4)));
};

#define SOLAR_INLINE __attribute__((always_inline)) inline

// e^x per lane for x ≤ 0, by Cephes' expf (x = n ln 2 + r, |r| ≤ ln 2 / 2, a degree-6
// polynomial of r times 2^n; relative error ~1e-7); lanes below -87 (e^x < 1.7e-38, masked
// tokens at -inf) give 0.
SOLAR_INLINE vf exp_nonpositive(vf x) {
  const vi dead = x < -87.0f;
  const vf y = dead ? vf{} - 87.0f : x;
  const vf n = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(y / ln 2)
  const vf r = y - n * 0.693359375f + n * 2.12194440e-4f;                 // y - n ln 2
  vf p = vf{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vi two_n = (__builtin_convertvector(n, vi) + 127) << 23;
  return dead ? vf{} : p * (vf)two_n;
}

struct Larger {
  SOLAR_INLINE vf operator()(vf a, vf b) const { return a > b ? a : b; }
};
struct Plus {
  SOLAR_INLINE vf operator()(vf a, vf b) const { return a + b; }
};

// `combine` over the 16 lanes by halving swaps: the result in lane 0.
template <typename Combine>
SOLAR_INLINE float reduce_lanes(vf v, Combine combine) {
  v = combine(v, __builtin_shuffle(v, vi{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}));
  v = combine(v, __builtin_shuffle(v, vi{4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11}));
  v = combine(v, __builtin_shuffle(v, vi{2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13}));
  v = combine(v, __builtin_shuffle(v, vi{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14}));
  return v[0];
}

SOLAR_INLINE float lane_max(vf v) { return reduce_lanes(v, Larger{}); }
SOLAR_INLINE float lane_sum(vf v) { return reduce_lanes(v, Plus{}); }

}  // namespace solar_native
