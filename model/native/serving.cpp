// The fused serving pass of model/serving.py as one native call per pass.
//
// Each function runs the ATen ops of the Python pass it replaced, in the same order, with
// the GIL released for the whole pass: the Python version handed the GIL back and forth ~115
// times per batch, once per torch call, and waited up to CPython's switch interval for the
// event loop's thread at each (docs/DESIGN.md §2, "The ranker"). The logits are the same bit
// for bit, but where candidates attend to a few tokens on the CPU in float32: there
// small_attention.h's kernel replaces SDPA (the same to float rounding, ≤ 1e-6).
//
// Shapes: B requests, M candidates, T context tokens, d = H·d_h, BM = B·M. `w` is a
// model.serving.ServingWeights in field order: features (n_items, 2d), first_share
// (n_items, hidden), actions, kv (d, 2d), o (d, d), fc1 (2C·d + F, hidden), fc2
// (hidden, hidden/2), fc2_bias, out (hidden/2,), out_bias ().
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/utils/pybind.h>

#include <optional>
#include <utility>
#include <vector>

#include "small_attention.h"

namespace {

using at::Tensor;
using Weights = std::vector<Tensor>;
enum Field { kFeatures, kFirstShare, kActions, kKv, kO, kFc1, kFc2, kFc2Bias, kOut, kOutBias };
constexpr size_t kFields = 10;

void check_weights(const Weights& w) {
  TORCH_CHECK(w.size() == kFields, "ServingWeights has ", kFields, " tensors, got ", w.size());
}

// rows (B, M) with B ≥ 1 and a context (B, T, d) of as many requests, mask (B, T) if any:
// a mismatch would group candidates under another request's tokens.
void check_context(const Tensor& rows, const Tensor& context, const std::optional<Tensor>& mask) {
  TORCH_CHECK(rows.dim() == 2 && rows.size(0) >= 1, "rows must be (B, M) with B >= 1, got ",
              rows.sizes());
  TORCH_CHECK(context.dim() == 3 && context.size(0) == rows.size(0),
              "the context must be (B, T, d) for the rows' B = ", rows.size(0), ", got ",
              context.sizes());
  TORCH_CHECK(!mask || (mask->dim() == 2 && mask->size(0) == context.size(0) &&
                        mask->size(1) == context.size(1)),
              "the mask must be (B, T) = (", context.size(0), ", ", context.size(1), ")");
}

// The candidates' rows of the per-item tables: features (BM, 2d) [e | W_Q e] and the first
// layer's share (BM, hidden), which `tail` accumulates the rest of the layer into.
std::pair<Tensor, Tensor> gather(const Weights& w, const Tensor& rows) {
  check_weights(w);
  const Tensor flat = rows.reshape({-1});
  return {at::index_select(w[kFeatures], 0, flat), at::index_select(w[kFirstShare], 0, flat)};
}

// (B, 1, 1, T) additive logit mask of a (B, T) bool mask: 0 where real, -inf where padding;
// a request with no real token keeps finite logits (its output is zeroed afterwards).
Tensor token_bias(const Tensor& mask, at::ScalarType dtype) {
  const Tensor neg = at::full_like(mask, -INFINITY, mask.options().dtype(dtype));
  const Tensor empty = mask.any(-1, true).logical_not();
  return at::where(mask.logical_or(empty), at::zeros_like(neg), neg).unsqueeze(1).unsqueeze(1);
}

// W_O softmax(q Kᵀ/√d_h) V of the gathered candidates over context (B, T, d), into `out`
// (BM, d), a column slice of the MLP input; bias (B, 1, 1, T) or none.
void attend(const Weights& w, const Tensor& feats, const Tensor& context,
            const std::optional<Tensor>& bias, Tensor out, int64_t heads) {
  const int64_t d = w[kO].size(0), B = context.size(0), T = context.size(1);
  const int64_t M = feats.size(0) / B;
  const Tensor kv = at::matmul(context, w[kKv]);  // (B, T, 2d)
  const Tensor k = kv.slice(2, 0, d).reshape({B, T, heads, d / heads}).transpose(1, 2);
  const Tensor v = kv.slice(2, d, 2 * d).reshape({B, T, heads, d / heads}).transpose(1, 2);
  const Tensor q = feats.slice(1, d, 2 * d).view({B, M, heads, d / heads}).transpose(1, 2);
  const Tensor merged = at::scaled_dot_product_attention(q, k, v, bias);  // (B, H, M, d_h)
  at::mm_out(out, merged.transpose(1, 2).reshape({B * M, d}), w[kO]);
}

// Whether `attend_tokens` takes the few-token kernel (small_attention.h) instead of SDPA:
// on the CPU in float32, for the token counts and head widths it has variants for.
bool small_attention_applies(const Tensor& feats, const Tensor& tokens, int64_t heads) {
  const int64_t d = feats.size(1) / 2;
  return feats.device().is_cpu() && feats.scalar_type() == at::kFloat && feats.is_contiguous() &&
         solar_native::small_attention_fits(tokens.size(1), d / heads);
}

void attend_small(const Weights& w, const Tensor& feats, const Tensor& tokens,
                  const std::optional<Tensor>& bias, Tensor out, int64_t heads) {
  const int64_t d = w[kO].size(0), B = tokens.size(0), T = tokens.size(1);
  const int64_t M = feats.size(0) / B;
  const Tensor kv = at::matmul(tokens, w[kKv]).contiguous();  // (B, T, 2d)
  const Tensor rows_bias = bias ? bias->reshape({B, T}).contiguous() : Tensor();
  Tensor merged = at::empty({B * M, d}, feats.options());  // heads side by side, before W_O
  const int64_t ldq = feats.stride(0), ldo = merged.stride(0);
  const auto parallel = [](int64_t rows, const auto& body) {
    at::parallel_for(0, rows, 256, body);
  };
  for (int64_t b = 0; b < B; ++b) {
    solar_native::small_attention(
        feats.const_data_ptr<float>() + b * M * ldq + d, ldq,
        kv.const_data_ptr<float>() + b * T * 2 * d, T, d,
        bias ? rows_bias.const_data_ptr<float>() + b * T : nullptr,
        merged.mutable_data_ptr<float>() + b * M * ldo, ldo, M, heads, parallel);
  }
  at::mm_out(out, merged, w[kO]);
}

// `attend` over tokens (B, T, d) with `mask` (B, T) marking the real ones (none: all real);
// a request with no real token gets o = 0. Through the few-token kernel where it applies,
// unless `sdpa_only` (`attention_output`'s check of the kernel against SDPA).
void attend_tokens(const Weights& w, const Tensor& feats, const Tensor& tokens,
                   std::optional<Tensor> mask, Tensor out, int64_t heads,
                   bool sdpa_only = false) {
  if (mask && mask->device().is_cpu() && mask->all().item<bool>()) {
    // No padding: the unmasked kernel (the same logits, ~3% faster). Not on CUDA, where
    // reading the mask would wait for the device.
    mask.reset();
  }
  const auto dtype = w[kFeatures].scalar_type();
  std::optional<Tensor> bias;
  if (mask) bias = token_bias(*mask, dtype);
  if (!sdpa_only && small_attention_applies(feats, tokens, heads)) {
    attend_small(w, feats, tokens.to(dtype), bias, out, heads);
  } else {
    attend(w, feats, tokens.to(dtype), bias, out, heads);
  }
  if (mask) {
    const int64_t B = tokens.size(0);
    out.view({B, feats.size(0) / B, -1}).mul_(mask->any(-1).unsqueeze(1).unsqueeze(1));
  }
}

// The MLP after the per-item share: x (BM, 2C·d + F) holds each channel's o at columns 2c·d
// (the first `channel_columns`), then F extra features; `hidden` (BM, hidden) holds the
// per-item share of the first layer and is overwritten. Returns (BM,) float32 logits.
Tensor tail(const Weights& w, const Tensor& feats, Tensor hidden, Tensor x,
            int64_t channel_columns) {
  check_weights(w);
  const int64_t d = w[kO].size(0);
  const Tensor e = feats.slice(1, 0, d);
  for (int64_t lo = 0; lo < channel_columns; lo += 2 * d) {  // e ⊙ o right of each o
    Tensor product = x.slice(1, lo + d, lo + 2 * d);
    at::mul_out(product, e, x.slice(1, lo, lo + d));
  }
  hidden.addmm_(x, w[kFc1]);  // in place onto the per-item share: no bias copy
  at::gelu_(hidden);
  Tensor second = at::addmm(w[kFc2Bias], hidden, w[kFc2]);
  at::gelu_(second);
  Tensor logits = at::mv(second, w[kOut]);
  logits.add_(w[kOutBias]);
  return logits.scalar_type() == at::kFloat ? logits : logits.to(at::kFloat);
}

// `svd` (and the baselines over tokens): rows (B, M), tokens (B, r, d) → (B, M) logits.
Tensor svd(const Weights& w, const Tensor& rows, const Tensor& tokens,
           const std::optional<Tensor>& token_mask, int64_t heads) {
  c10::NoGradGuard no_grad;
  check_context(rows, tokens, token_mask);
  auto [feats, hidden] = gather(w, rows);
  const int64_t d = w[kO].size(0);
  Tensor x = at::empty({rows.numel(), 2 * d}, feats.options());
  attend_tokens(w, feats, tokens, token_mask, x.slice(1, 0, d), heads);
  return tail(w, feats, hidden, x, 2 * d).view({rows.size(0), rows.size(1)});
}

// `lifelong`: the long-term tokens and the latest events' rows, each attended into its own
// slot of x = [o_long, e ⊙ o_long, o_short, e ⊙ o_short, extra (B, M, F) or none].
Tensor channels(const Weights& w, const Tensor& rows, const Tensor& tokens,
                const Tensor& token_mask, const Tensor& recent, const Tensor& recent_mask,
                const std::optional<Tensor>& extra, int64_t heads) {
  c10::NoGradGuard no_grad;
  check_context(rows, tokens, token_mask);
  check_context(rows, recent, recent_mask);
  auto [feats, hidden] = gather(w, rows);
  const int64_t d = w[kO].size(0), BM = rows.numel();
  const int64_t f_extra = extra ? extra->size(-1) : 0;
  Tensor x = at::empty({BM, 4 * d + f_extra}, feats.options());
  attend_tokens(w, feats, tokens, token_mask, x.slice(1, 0, d), heads);
  attend_tokens(w, feats, recent, recent_mask, x.slice(1, 2 * d, 3 * d), heads);
  if (extra) x.slice(1, 4 * d).copy_(extra->reshape({BM, f_extra}));
  return tail(w, feats, hidden, x, 4 * d).view({rows.size(0), rows.size(1)});
}

// `softmax` / `svd_exact`: the candidates attend to event rows context (B, N, d) with bias
// (B, 1, 1, N); `mask` (B, N) marks the real events (a user with none gets o = 0).
Tensor history(const Weights& w, const Tensor& rows, const Tensor& context, const Tensor& bias,
               const Tensor& mask, int64_t heads) {
  c10::NoGradGuard no_grad;
  check_context(rows, context, mask);
  auto [feats, hidden] = gather(w, rows);
  const int64_t d = w[kO].size(0), B = rows.size(0), M = rows.size(1);
  Tensor x = at::empty({B * M, 2 * d}, feats.options());
  Tensor o = x.slice(1, 0, d);
  attend(w, feats, context, bias, o, heads);
  o.view({B, M, d}).mul_(mask.any(-1).to(feats.scalar_type()).unsqueeze(1).unsqueeze(1));
  return tail(w, feats, hidden, x, 2 * d).view({B, M});
}

// A baseline's pass around its own attention: `gather`, then `outputs` (Python) of the
// candidates' embeddings, then `state_tail` of its o (BM, d).
Tensor state_tail(const Weights& w, const Tensor& feats, Tensor hidden, const Tensor& o) {
  c10::NoGradGuard no_grad;
  const int64_t d = w[kO].size(0);
  Tensor x = at::empty({feats.size(0), 2 * d}, feats.options());
  x.slice(1, 0, d).copy_(o);
  return tail(w, feats, hidden, x, 2 * d);
}

// The svd pass's attention output o (BM, d), through the few-token kernel (`small`, where it
// applies) or SDPA: lets the tests hold the kernel against SDPA. Not a serving path.
Tensor attention_output(const Weights& w, const Tensor& rows, const Tensor& tokens,
                        const std::optional<Tensor>& token_mask, int64_t heads, bool small) {
  c10::NoGradGuard no_grad;
  check_context(rows, tokens, token_mask);
  const Tensor feats = gather(w, rows).first;
  TORCH_CHECK(!small || small_attention_applies(feats, tokens, heads),
              "the few-token kernel does not apply to these tokens");
  Tensor out = at::empty({rows.numel(), w[kO].size(0)}, feats.options());
  attend_tokens(w, feats, tokens, token_mask, out, heads, /*sdpa_only=*/!small);
  return out;
}

bool intra_op_parallel() {
#ifdef INTRA_OP_PARALLEL
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  const auto no_gil = py::call_guard<py::gil_scoped_release>();
  m.def("gather", &gather, no_gil);
  m.def("svd", &svd, no_gil);
  m.def("channels", &channels, no_gil);
  m.def("history", &history, no_gil);
  m.def("state_tail", &state_tail, no_gil);
  m.def("attention_output", &attention_output, no_gil);
  m.def("small_attention_applies", &small_attention_applies);
  m.def("intra_op_parallel", &intra_op_parallel);
}
