// Softmax attention of many candidates over a few context tokens, per head, on the CPU in
// float32: the svd family's r interest tokens and lifelong's latest-event rows (T ≤ 64,
// d_h ∈ {8, 16, 32, 64}). SDPA's CPU kernel spends ~380 µs on the 16.8 MFLOP of one
// 2,048-candidate request (H = 4, d_h = 16, T = 32), its blocking built for long sequences;
// this one takes ~190 µs (docs/BENCHMARKS.md, "Issue 22, round 10").
//
// Lanes run over tokens: a candidate's T logits are T/16 vectors of 16, so the softmax needs
// no transpose, and eight candidates are interleaved so that their multiply-add chains hide
// each other's latency. Vectors are GCC's generic vector extension, compiled for AVX-512,
// AVX2 and baseline x86-64 and chosen at load (target_clones); exp is vector_math.h's, so
// outputs differ from SDPA's by float rounding only.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

// GCC on x86-64 only (__builtin_shuffle, target_clones); elsewhere every pass takes SDPA.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SOLAR_SMALL_ATTENTION 1
#include "vector_math.h"
#else
#define SOLAR_SMALL_ATTENTION 0
#endif

namespace solar_native {

constexpr int64_t kMaxSmallTokens = 64;

#if SOLAR_SMALL_ATTENTION

// The outputs of R candidates for one head: q rows (stride ldq) → out rows (stride ldo), from the
// scaled keys transposed into TV token vectors per query dimension (kt[j·TV + i]), the
// token bias vectors (padding lanes at -inf) and the T value rows.
template <int TV, int DH, int R>
SOLAR_INLINE void attend_rows(const float* q, int64_t ldq, const vf* kt, const vf* bias,
                             const typename VecOf<DH>::type* values, int64_t T, float* out,
                             int64_t ldo) {
  using vo = typename VecOf<DH>::type;
  alignas(64) float weights[R][TV * kLanes];
  vf logits[R][TV];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < TV; ++i) logits[r][i] = bias[i];
  for (int j = 0; j < DH; ++j)
    for (int r = 0; r < R; ++r) {
      const float qj = q[r * ldq + j];
      for (int i = 0; i < TV; ++i) logits[r][i] += qj * kt[j * TV + i];
    }
  float inverse[R];
  for (int r = 0; r < R; ++r) {
    vf top = logits[r][0];
    for (int i = 1; i < TV; ++i) top = Larger{}(top, logits[r][i]);
    const float shift = lane_max(top);
    vf total = vf{};
    for (int i = 0; i < TV; ++i) {
      const vf e = exp_nonpositive(logits[r][i] - shift);
      total += e;
      std::memcpy(weights[r] + i * kLanes, &e, sizeof(vf));
    }
    inverse[r] = 1.0f / lane_sum(total);
  }
  vo o[R];
  for (int r = 0; r < R; ++r) o[r] = vo{};
  for (int64_t t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) o[r] += weights[r][t] * values[t];
  for (int r = 0; r < R; ++r) {
    o[r] *= inverse[r];
    std::memcpy(out + r * ldo, &o[r], sizeof(vo));
  }
}

template <int TV, int DH>
__attribute__((target_clones("avx512f", "avx2", "default"))) void head_rows(
    const float* q, int64_t ldq, const vf* kt, const vf* bias,
    const typename VecOf<DH>::type* values, int64_t T, float* out, int64_t ldo, int64_t rows) {
  constexpr int R = 8;
  int64_t m = 0;
  for (; m + R <= rows; m += R)
    attend_rows<TV, DH, R>(q + m * ldq, ldq, kt, bias, values, T, out + m * ldo, ldo);
  for (; m < rows; ++m)
    attend_rows<TV, DH, 1>(q + m * ldq, ldq, kt, bias, values, T, out + m * ldo, ldo);
}

// All heads of one request: q (M rows of stride ldq, head h at columns h·DH), kv (T rows of
// 2d: K then V), bias (T) additive or null → out (M rows of stride ldo). `parallel` runs a
// callable over row ranges (at::parallel_for in the caller).
template <int TV, int DH, typename Parallel>
void all_heads(const float* q, int64_t ldq, const float* kv, int64_t T, int64_t d,
               const float* bias, float* out, int64_t ldo, int64_t M, int64_t n_heads,
               const Parallel& parallel) {
  using vo = typename VecOf<DH>::type;
  const float scale = 1.0f / std::sqrt(static_cast<float>(DH));
  alignas(64) vf kt[DH * TV];
  alignas(64) vf token_bias[TV];
  alignas(64) vo values[TV * kLanes];
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int j = 0; j < DH; ++j)
      for (int i = 0; i < TV; ++i)
        for (int l = 0; l < kLanes; ++l) {
          const int64_t t = i * kLanes + l;
          kt[j * TV + i][l] = t < T ? kv[t * 2 * d + h * DH + j] * scale : 0.0f;
        }
    for (int i = 0; i < TV; ++i)
      for (int l = 0; l < kLanes; ++l) {
        const int64_t t = i * kLanes + l;
        token_bias[i][l] = t < T ? (bias ? bias[t] : 0.0f) : -INFINITY;
      }
    for (int64_t t = 0; t < T; ++t) std::memcpy(&values[t], kv + t * 2 * d + d + h * DH, sizeof(vo));
    parallel(M, [&](int64_t lo, int64_t hi) {
      head_rows<TV, DH>(q + lo * ldq + h * DH, ldq, kt, token_bias, values, T,
                        out + lo * ldo + h * DH, ldo, hi - lo);
    });
  }
}

inline bool small_attention_fits(int64_t T, int64_t dh) {
  return T >= 1 && T <= kMaxSmallTokens && (dh == 8 || dh == 16 || dh == 32 || dh == 64);
}

template <int TV, typename Parallel>
void small_attention_tv(const float* q, int64_t ldq, const float* kv, int64_t T, int64_t d,
                        const float* bias, float* out, int64_t ldo, int64_t M, int64_t n_heads,
                        const Parallel& parallel) {
  switch (d / n_heads) {
    case 8: return all_heads<TV, 8>(q, ldq, kv, T, d, bias, out, ldo, M, n_heads, parallel);
    case 16: return all_heads<TV, 16>(q, ldq, kv, T, d, bias, out, ldo, M, n_heads, parallel);
    case 32: return all_heads<TV, 32>(q, ldq, kv, T, d, bias, out, ldo, M, n_heads, parallel);
    default: return all_heads<TV, 64>(q, ldq, kv, T, d, bias, out, ldo, M, n_heads, parallel);
  }
}

// softmax(q Kᵀ/√d_h + bias) V for every head of one request (see `all_heads`); requires
// small_attention_fits(T, d / heads).
template <typename Parallel>
void small_attention(const float* q, int64_t ldq, const float* kv, int64_t T, int64_t d,
                     const float* bias, float* out, int64_t ldo, int64_t M, int64_t n_heads,
                     const Parallel& parallel) {
  switch ((T + kLanes - 1) / kLanes) {
    case 1: return small_attention_tv<1>(q, ldq, kv, T, d, bias, out, ldo, M, n_heads, parallel);
    case 2: return small_attention_tv<2>(q, ldq, kv, T, d, bias, out, ldo, M, n_heads, parallel);
    case 3: return small_attention_tv<3>(q, ldq, kv, T, d, bias, out, ldo, M, n_heads, parallel);
    default: return small_attention_tv<4>(q, ldq, kv, T, d, bias, out, ldo, M, n_heads, parallel);
  }
}

#else  // no kernel on this compiler or machine: small_attention_fits says so

inline bool small_attention_fits(int64_t, int64_t) { return false; }

template <typename Parallel>
void small_attention(const float*, int64_t, const float*, int64_t, int64_t, const float*, float*,
                     int64_t, int64_t, int64_t, const Parallel&) {
  std::abort();  // unreachable: callers check small_attention_fits first
}

#endif  // SOLAR_SMALL_ATTENTION

}  // namespace solar_native
