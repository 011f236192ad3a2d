"""The ranker's serving pass, fused: one gather per candidate, one attention, one GEMM per layer.

Scores equal :meth:`model.ranker.Ranker.forward` (to float rounding, ≤ 1e-5), computed with
less work per request:

* two gathers of per-item tables, [e | W_Q e] (``features``) and W1[:, :d] e + b1
  (``first_share``, gathered straight into the first layer's output buffer, which the
  layer's GEMM then accumulates into: no bias copy), so the query projection and the
  candidate's share of the MLP's first layer cost no FLOPs at request time;
* K and V of the context in one GEMM ([W_K; W_V]), attention over all heads in one call
  (on the CPU in float32 over a few tokens, T ≤ 64: a native kernel, ``small_attention.h``,
  ~2× faster than SDPA there; else ``scaled_dot_product_attention``), W_O written straight
  into the left half of the first layer's input;
* the first layer as ONE GEMM on [o, e ⊙ o] (K = 2d) instead of two, GELU in place, the
  second layer and the output likewise in place.

The ops run in native code (:mod:`model.native`, ``serving.cpp``), one call per pass with the
GIL released, so the event loop's thread runs beside a pass instead of trading the GIL with
it at every op. Here: the weights' layout, and what the baselines and history modes compute
in Python before their call.

Shapes: B requests, M candidates (padded), T context tokens (r interests or N events),
d = H·d_h, hidden = the MLP's width. Logits are fresh float32 tensors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import RankerConfig
from model.heads import ScoringMLP
from model.layers import TargetAttention, logit_mask
from model.native import NativeServing, serving_ops

__all__ = ["ServingPass", "ServingWeights"]


class Scorable(Protocol):
    """What the pass reads of a :class:`model.ranker.Ranker` (named here to keep the import
    one-way: the ranker uses this module)."""

    config: RankerConfig
    item_emb: nn.Embedding
    action_emb: nn.Embedding
    attn: TargetAttention
    mlp: ScoringMLP
    readout: ScoringMLP | None
    baselines: nn.ModuleDict

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


class ServingWeights(NamedTuple):
    """The ranker's weights rearranged for the fused pass, on one device and dtype.

    Attributes:
        features: (n_items, 2d) rows [e | W_Q e].
        first_share: (n_items, hidden) rows W1[:, :d] e + b1, the candidate's share of the
            MLP's first layer.
        actions: (n_actions, d) action embeddings (event rows of the history modes).
        kv: (d, 2d) [W_Kᵀ | W_Vᵀ]. o: (d, d) W_Oᵀ.
        fc1: (2C·d + F, hidden) W1[:, d:]ᵀ, applied to [o, e ⊙ o] of each of the C channels
            and the F extra features (the repeat features; F = 0 without them).
        fc2: (hidden, hidden/2) W2ᵀ; fc2_bias (hidden/2,). out: (hidden/2,); out_bias ().
    """

    features: Tensor
    first_share: Tensor
    actions: Tensor
    kv: Tensor
    o: Tensor
    fc1: Tensor
    fc2: Tensor
    fc2_bias: Tensor
    out: Tensor
    out_bias: Tensor

    @classmethod
    def of(
        cls,
        ranker: Scorable,
        dtype: torch.dtype,
        readout: bool = False,
        attention: ServingWeights | None = None,
    ) -> ServingWeights:
        """``readout``: through the ranker's svd read-out instead of its trained MLP.
        ``attention``: weights of the same ranker and dtype whose MLP-independent tensors
        (``features``, ``actions``, ``kv``, ``o``) are taken as they are, not built again."""
        d = ranker.config.dim
        attn, mlp = ranker.attn, ranker.mlp
        if readout:
            if ranker.readout is None:
                raise ValueError("this ranker has no svd read-out")
            mlp = ranker.readout
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable anywhere
            emb = ranker.item_emb.weight
            if attention is None:
                features, actions, kv, o = (
                    t.detach().to(dtype).contiguous()
                    for t in (
                        torch.cat((emb, emb @ attn.w_q.weight.T), 1),
                        ranker.action_emb.weight,
                        torch.cat((attn.w_k.weight, attn.w_v.weight)).T,
                        attn.w_o.weight.T,
                    )
                )
            else:
                features, actions, kv, o = (
                    attention.features,
                    attention.actions,
                    attention.kv,
                    attention.o,
                )
            own = (
                emb @ mlp.fc1.weight[:, :d].T + mlp.fc1.bias,
                mlp.fc1.weight[:, d:].T,
                mlp.fc2.weight.T,
                mlp.fc2.bias,
                mlp.out.weight[0],
                mlp.out.bias[0],
            )
            first_share, fc1, fc2, fc2_bias, out, out_bias = (
                t.detach().to(dtype).contiguous() for t in own
            )
            return cls(features, first_share, actions, kv, o, fc1, fc2, fc2_bias, out, out_bias)


class ServingPass:
    """Logits of a batch of requests in one fused pass (see the module docstring).

    Args:
        ranker: the model (its weights are copied, in ``dtype``, on its device, and copied
            again whenever one of them changes).
        dtype: compute dtype; logits are returned in float32 whatever it is.
        readout: score through the ranker's svd read-out (a lifelong model's svd family)
            instead of its trained MLP.
        shares: the pass of the same ranker and dtype through the trained MLP, whose
            per-item [e | W_Q e] table and attention weights this one uses instead of copies
            of its own (a read-out pass); None: build them.
    """

    def __init__(
        self,
        ranker: Scorable,
        dtype: torch.dtype = torch.float32,
        readout: bool = False,
        shares: ServingPass | None = None,
    ) -> None:
        self.ranker: Scorable = ranker
        self.dtype: torch.dtype = dtype
        if shares is not None and (shares.ranker is not ranker or shares.dtype != dtype):
            raise ValueError("a pass shares the weights of the same ranker and dtype only")
        self.readout = readout
        self._shares = shares
        self.heads = ranker.config.heads
        self._key: tuple[object, ...] | None = None
        self._weights: ServingWeights | None = None
        self._lock = threading.Lock()
        self._native: NativeServing = serving_ops()

    @property
    def device(self) -> torch.device:
        return self.ranker.item_emb.weight.device

    @property
    def weights(self) -> ServingWeights:
        """The rearranged weights, rebuilt after any parameter changes (an optimiser step)."""
        key = tuple((p.data_ptr(), p._version) for p in self.ranker.parameters())
        with self._lock:
            if self._weights is None or key != self._key:
                attention = None if self._shares is None else self._shares.weights
                self._weights = ServingWeights.of(self.ranker, self.dtype, self.readout, attention)
                self._key = key
            return self._weights

    # ------------------------------------------------------------------ passes
    @torch.no_grad()
    def svd(self, rows: Tensor, tokens: Tensor, token_mask: Tensor | None = None) -> Tensor:
        """rows (B, M) long, interest tokens (B, r, d) → logits (B, M) float32.

        ``token_mask`` (B, r) bool marks real tokens where requests were padded to one r;
        None: every token is real (a user with no history has zero tokens, hence o = 0).
        """
        return self._native.svd(self.weights, rows, tokens, token_mask, self.heads)

    @torch.no_grad()
    def history(
        self,
        rows: Tensor,
        events: tuple[Tensor, Tensor],
        mask: Tensor,
        log_weights: Tensor,
        basis: Tensor | None = None,
    ) -> Tensor:
        """`softmax` / `svd_exact`: candidates attend to the N logged events.

        Args:
            rows: (B, M) long candidate rows. events: (B, N) long item and action rows.
            mask: (B, N) bool real events. log_weights: (B, N) log recency weights.
            basis: (B, d, r) V_r: the events are projected on span(V_r) first (`svd_exact`);
                None: attend to the rows themselves (`softmax`).
        Returns:
            (B, M) float32 logits.
        """
        w = self.weights
        d = w.o.shape[0]
        items, actions = events
        context = F.embedding(items, w.features[:, :d]) + F.embedding(actions, w.actions)
        if basis is not None:
            v_r = basis.to(self.dtype)
            context = (context @ v_r) @ v_r.transpose(1, 2)  # (B, N, d) = X V_r V_rᵀ
        bias = logit_mask(mask, log_weights, self.dtype)
        assert bias is not None
        return self._native.history(w, rows, context, bias, mask, self.heads)

    @torch.no_grad()
    def state(self, rows: Tensor, outputs: Callable[[Tensor], Tensor]) -> Tensor:
        """A baseline's outputs from its users' state summaries (``model.modes.summary``).

        rows (B, M) long; ``outputs`` maps the candidates' embeddings (B, M, d), in the
        pass's dtype, to the attention output o (B, M, d) → logits (B, M) float32.
        """
        w = self.weights
        B, M = rows.shape
        d = w.o.shape[0]
        feats, hidden = self._native.gather(w, rows)
        o = outputs(feats[:, :d].view(B, M, d)).reshape(B * M, d)
        return self._native.state_tail(w, feats, hidden, o).view(B, M)

    @torch.no_grad()
    def channels(
        self,
        rows: Tensor,
        tokens: Tensor,
        token_mask: Tensor,
        recent: Tensor,
        recent_mask: Tensor,
        extra: Tensor | None = None,
    ) -> Tensor:
        """`lifelong`: two softmaxes, one over the long-term interest tokens and one over the
        short-term rows of the latest events, each output into its own slot of the MLP input,
        then the candidates' repeat features.

        Args:
            rows: (B, M) long candidate rows. tokens: (B, r, d) interest tokens, token_mask
                (B, r) bool. recent: (B, L, d) rows of the latest events, recent_mask (B, L).
            extra: (B, M, F) the candidates' repeat features, or None (a model without them).
        Returns:
            (B, M) float32 logits.
        """
        return self._native.channels(
            self.weights, rows, tokens, token_mask, recent, recent_mask, extra, self.heads
        )
