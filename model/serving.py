"""The ranker's serving pass, fused: one gather per candidate, one SDPA, one GEMM per layer.

Scores equal :meth:`model.ranker.Ranker.forward` (to float rounding, ≤ 1e-5), computed with
less work per request:

* two gathers of per-item tables, [e | W_Q e] (``features``) and W1[:, :d] e + b1
  (``first_share``, gathered straight into the first layer's output buffer, which the
  layer's GEMM then accumulates into: no bias copy), so the query projection and the
  candidate's share of the MLP's first layer cost no FLOPs at request time;
* K and V of the context in one GEMM ([W_K; W_V]), attention in one
  ``F.scaled_dot_product_attention`` over all heads (its CPU output is already laid out as
  (B, M, H, d_h), so merging the heads copies nothing), W_O written straight into the left
  half of the first layer's input;
* the first layer as ONE GEMM on [o, e ⊙ o] (K = 2d) instead of two, GELU in place, the
  second layer and the output likewise in place: every intermediate lives in a buffer of a
  per-thread :class:`Workspace` that only grows, so a steady stream of passes allocates
  nothing large.

Shapes: B requests, M candidates (padded), T context tokens (r interests or N events),
d = H·d_h, hidden = the MLP's width. The returned logits are a view into the workspace: valid
until the next pass of the same thread (copy or reduce them first).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import RankerConfig
from model.heads import ScoringMLP
from model.layers import TargetAttention, logit_mask

__all__ = ["ServingPass", "ServingWeights", "Workspace"]


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


class Workspace:
    """Reusable buffers of one thread on one device: ``take(name, shape)`` returns a view of
    the buffer ``name``, reallocated (1.5× larger) only when it is too small."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self._buffers: dict[str, Tensor] = {}
        # The views handed out, by (name, shape): a steady stream of passes of a few shapes
        # then costs a dict lookup here, not two torch calls (each a GIL hand-off).
        self._views: dict[tuple[str, tuple[int, ...]], Tensor] = {}

    def take(self, name: str, *shape: int) -> Tensor:
        """A (shape) view of buffer ``name`` (contents undefined)."""
        view = self._views.get((name, shape))
        if view is not None:
            return view
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size:
            with torch.inference_mode(False):  # a normal tensor: usable in and out of that mode
                buffer = torch.empty(size * 3 // 2 + 64, device=self.device, dtype=self.dtype)
            self._buffers[name] = buffer
            self._views = {key: v for key, v in self._views.items() if key[0] != name}
        with torch.inference_mode(False):  # like the buffer: usable in and out of that mode
            view = buffer[:size].view(*shape)
        self._views[(name, shape)] = view
        return view


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
        self._local = threading.local()
        self._lock = threading.Lock()

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

    def _workspace(self) -> Workspace:
        space: Workspace | None = getattr(self._local, "space", None)
        if space is None or space.device != self.device:
            space = self._local.space = Workspace(self.device, self.dtype)
        return space

    # ------------------------------------------------------------------ passes
    @torch.no_grad()
    def svd(self, rows: Tensor, tokens: Tensor, token_mask: Tensor | None = None) -> Tensor:
        """rows (B, M) long, interest tokens (B, r, d) → logits (B, M) float32.

        ``token_mask`` (B, r) bool marks real tokens where requests were padded to one r;
        None: every token is real (a user with no history has zero tokens, hence o = 0).
        """
        w, space = self.weights, self._workspace()
        B, M = rows.shape
        feats, hidden = self._gather(w, space, rows)
        x = space.take("x", B * M, 2 * w.o.shape[0])
        self._attend_tokens(w, feats, tokens, token_mask, x[:, : w.o.shape[0]])
        return self._tail(w, feats, hidden, x, space).view(B, M)

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
        w, space = self.weights, self._workspace()
        B, M = rows.shape
        d = w.o.shape[0]
        feats, hidden = self._gather(w, space, rows)
        items, actions = events
        context = F.embedding(items, w.features[:, :d]) + F.embedding(actions, w.actions)
        if basis is not None:
            v_r = basis.to(self.dtype)
            context = (context @ v_r) @ v_r.transpose(1, 2)  # (B, N, d) = X V_r V_rᵀ
        x = space.take("x", B * M, 2 * d)
        self._attend(w, feats, context, logit_mask(mask, log_weights, self.dtype), x[:, :d])
        x[:, :d].view(B, M, d).mul_(mask.any(-1).to(self.dtype)[:, None, None])  # no events: o = 0
        return self._tail(w, feats, hidden, x, space).view(B, M)

    @torch.no_grad()
    def state(self, rows: Tensor, outputs: Callable[[Tensor], Tensor]) -> Tensor:
        """A baseline's outputs from its users' state summaries (``model.modes.summary``).

        rows (B, M) long; ``outputs`` maps the candidates' embeddings (B, M, d), in the
        pass's dtype, to the attention output o (B, M, d) → logits (B, M) float32.
        """
        w, space = self.weights, self._workspace()
        B, M = rows.shape
        d = w.o.shape[0]
        feats, hidden = self._gather(w, space, rows)
        x = space.take("x", B * M, 2 * d)
        x[:, :d] = outputs(feats[:, :d].view(B, M, d)).reshape(B * M, d)
        return self._tail(w, feats, hidden, x, space).view(B, M)

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
        w, space = self.weights, self._workspace()
        B, M = rows.shape
        d = w.o.shape[0]
        feats, hidden = self._gather(w, space, rows)
        F_extra = 0 if extra is None else extra.shape[-1]
        # [o_long, e ⊙ o_long, o_short, e ⊙ o_short, extra]
        x = space.take("x", B * M, 4 * d + F_extra)
        for slot, (context, mask) in enumerate(((tokens, token_mask), (recent, recent_mask))):
            out = x[:, 2 * slot * d : (2 * slot + 1) * d]
            self._attend_tokens(w, feats, context, mask, out)
        if extra is not None:
            x[:, 4 * d :] = extra.reshape(B * M, F_extra)
        return self._tail(w, feats, hidden, x, space, channel_columns=4 * d).view(B, M)

    # ------------------------------------------------------------------ pieces
    def _gather(self, w: ServingWeights, space: Workspace, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The candidates' rows of the per-item tables: features (B·M, 2d) [e | W_Q e] and
        the first layer's buffer (B·M, hidden) holding their share of it, which
        :meth:`_tail` accumulates the rest into."""
        flat = rows.reshape(-1)
        feats = space.take("features", flat.numel(), w.features.shape[1])
        torch.index_select(w.features, 0, flat, out=feats)
        hidden = space.take("hidden", flat.numel(), w.first_share.shape[1])
        torch.index_select(w.first_share, 0, flat, out=hidden)
        return feats, hidden

    def _attend_tokens(
        self,
        w: ServingWeights,
        feats: Tensor,
        tokens: Tensor,
        token_mask: Tensor | None,
        out: Tensor,
    ) -> None:
        """:meth:`_attend` over tokens (B, T, d), ``token_mask`` (B, T) bool marking the real
        ones (None: all real); a request with no real token gets o = 0."""
        if token_mask is not None and token_mask.device.type == "cpu" and bool(token_mask.all()):
            # No padding: SDPA's unmasked kernel (the same logits, ~3% faster), and seven
            # fewer torch calls, each a GIL hand-off against the event loop's thread.
            # (Not on CUDA: reading the mask there would wait for the device.)
            token_mask = None
        bias = None if token_mask is None else logit_mask(token_mask, None, self.dtype)
        self._attend(w, feats, tokens.to(self.dtype), bias, out)
        if token_mask is not None:
            B = tokens.shape[0]
            out.view(B, feats.shape[0] // B, -1).mul_(token_mask.any(-1)[:, None, None])

    def _attend(
        self,
        w: ServingWeights,
        feats: Tensor,
        context: Tensor,
        bias: Tensor | None,
        out: Tensor,
    ) -> None:
        """Attention output W_O softmax(q Kᵀ/√d_h) V into ``out`` (B·M, d), a column slice of
        the MLP input x.

        feats (B·M, 2d) gathered rows, context (B, T, d) tokens or event rows,
        bias (B, 1, 1, T) additive logit mask or None.
        """
        d, H = w.o.shape[0], self.heads
        B, T = context.shape[:2]
        M = feats.shape[0] // B
        kv = context @ w.kv  # (B, T, 2d)
        k = kv[..., :d].reshape(B, T, H, d // H).transpose(1, 2)  # (B, H, T, d_h)
        v = kv[..., d:].reshape(B, T, H, d // H).transpose(1, 2)
        q = feats[:, d : 2 * d].view(B, M, H, d // H).transpose(1, 2)  # (B, H, M, d_h)
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, M, d_h)
        torch.mm(heads.transpose(1, 2).reshape(B * M, d), w.o, out=out)

    def _tail(
        self,
        w: ServingWeights,
        feats: Tensor,
        hidden: Tensor,
        x: Tensor,
        space: Workspace,
        channel_columns: int | None = None,
    ) -> Tensor:
        """The MLP after the per-item share: x (B·M, 2C·d + F) holding each channel's o at
        columns 2c·d (the first ``channel_columns`` = 2C·d; None: all), then F extra
        features; ``hidden`` (B·M, hidden) holds the per-item share of the first layer
        (:meth:`_gather`) and is overwritten → (B·M,)."""
        d = w.o.shape[0]
        rows = x.shape[0]
        end = x.shape[1] if channel_columns is None else channel_columns
        for lo in range(0, end, 2 * d):  # e ⊙ o right of each o
            torch.mul(feats[:, :d], x[:, lo : lo + d], out=x[:, lo + d : lo + 2 * d])
        hidden.addmm_(x, w.fc1)  # in place onto the per-item share: no bias copy
        torch.ops.aten.gelu_(hidden)
        second = space.take("second", rows, w.fc2.shape[1])
        torch.addmm(w.fc2_bias, hidden, w.fc2, out=second)
        torch.ops.aten.gelu_(second)
        logits = space.take("logits", rows)
        torch.mv(second, w.out, out=logits)
        logits.add_(w.out_bias)
        return logits if self.dtype == torch.float32 else logits.float()
