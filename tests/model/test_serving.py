"""The fused serving pass: equal to the reference, one native call, dtypes, masks."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from model.config import RankerConfig
from model.ranker import Ranker
from model.serving import ServingPass

CONFIG = RankerConfig(n_items=200, n_actions=3, dim=32, heads=4, rank=8, mlp_hidden=32)


def _ranker(device: torch.device) -> Ranker:
    torch.manual_seed(0)
    model = Ranker(CONFIG)
    with torch.no_grad():
        model.item_emb.weight.normal_(0.0, 0.5)
    return model.eval().to(device)


def _batch(device: torch.device, requests: int, candidates: int) -> tuple[Tensor, Tensor]:
    """Random candidate rows (B, M) and interest tokens (B, r, d)."""
    rows = torch.randint(0, CONFIG.n_items, (requests, candidates), device=device)
    return rows, torch.randn(requests, CONFIG.rank, CONFIG.dim, device=device)


def _reference(ranker: Ranker, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """TargetAttention and the scoring MLP as training runs them, over given tokens."""
    with torch.no_grad():
        cand = ranker.embed_items(rows)  # (B, M, d)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=rows.device)
        return ranker.score_outputs(cand, ranker.attn(cand, tokens, mask))


def test_svd_pass_equals_the_modules(device: torch.device) -> None:
    ranker = _ranker(device)
    rows = torch.randint(0, CONFIG.n_items, (3, 50), device=device)
    tokens = torch.randn(3, CONFIG.rank, CONFIG.dim, device=device)
    with torch.inference_mode():
        fused = ServingPass(ranker).svd(rows, tokens)
    torch.testing.assert_close(fused, _reference(ranker, rows, tokens), atol=1e-5, rtol=1e-5)


def test_padded_tokens_are_masked(device: torch.device) -> None:
    ranker = _ranker(device)
    rows = torch.randint(0, CONFIG.n_items, (2, 20), device=device)
    tokens = torch.randn(2, CONFIG.rank, CONFIG.dim, device=device)
    mask = torch.ones(2, CONFIG.rank, dtype=torch.bool, device=device)
    mask[1, 5:] = False  # the second request has 5 tokens, padded to r
    serving = ServingPass(ranker)
    with torch.inference_mode():
        padded = serving.svd(rows, tokens, mask).clone()
        short = serving.svd(rows[1:], tokens[1:, :5]).clone()
        garbage = tokens.clone()
        garbage[1, 5:] = 100.0  # padding content must not matter
        again = serving.svd(rows, garbage, mask).clone()
    torch.testing.assert_close(padded[1], short[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, padded)


def test_an_unpadded_token_mask_scores_as_no_mask(device: torch.device) -> None:
    ranker = _ranker(device)
    serving = ServingPass(ranker)
    rows = torch.randint(0, CONFIG.n_items, (2, 50), device=device)
    tokens = torch.randn(2, CONFIG.rank, CONFIG.dim, device=device) * 0.3
    mask = torch.ones(2, CONFIG.rank, dtype=torch.bool, device=device)
    padded = mask.clone()
    padded[1, 3:] = False
    extra = torch.cat((tokens, torch.randn(2, 1, CONFIG.dim, device=device)), 1)
    masked = torch.cat((mask, torch.zeros(2, 1, dtype=torch.bool, device=device)), 1)
    with torch.inference_mode():
        plain = serving.svd(rows, tokens).clone()
        full = serving.svd(rows, tokens, mask).clone()  # no padding: the unmasked kernel
        through_mask = serving.svd(rows, extra, masked).clone()  # the masked kernel
        partial = serving.svd(rows, tokens, padded).clone()
        cut = serving.svd(rows[1:], tokens[1:, :3]).clone()
    torch.testing.assert_close(full, plain)
    torch.testing.assert_close(through_mask, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(partial[:1], plain[:1])
    torch.testing.assert_close(partial[1:], cut, atol=1e-5, rtol=1e-5)  # padding masked


def test_bf16_pass_is_close_and_returns_float32(device: torch.device) -> None:
    ranker = _ranker(device)
    rows = torch.randint(0, CONFIG.n_items, (2, 30), device=device)
    tokens = torch.randn(2, CONFIG.rank, CONFIG.dim, device=device) * 0.3
    with torch.inference_mode():
        full = ServingPass(ranker).svd(rows, tokens).clone()
        half = ServingPass(ranker, torch.bfloat16).svd(rows, tokens)
    assert half.dtype == torch.float32
    assert 0 < float((half - full).abs().max()) < 0.1


def test_weights_follow_parameter_updates(device: torch.device) -> None:
    ranker = _ranker(device)
    serving = ServingPass(ranker)
    rows, tokens = _batch(device, 1, 10)
    with torch.inference_mode():
        before = serving.svd(rows, tokens).clone()
    with torch.no_grad():
        ranker.mlp.out.bias.add_(1.0)
    with torch.inference_mode():
        after = serving.svd(rows, tokens).clone()
    torch.testing.assert_close(after, before + 1.0, atol=1e-5, rtol=1e-5)


def test_a_readout_pass_shares_the_trained_pass_tables_and_scores_through_the_readout() -> None:
    """The read-out pass uses the trained pass's [e | W_Q e] table and attention weights (no
    copies), its own MLP tensors, and still equals the read-out's reference scores."""
    config = dataclasses.replace(CONFIG, mode="lifelong", recent_tokens=4, svd_readout=True)
    torch.manual_seed(0)
    ranker = Ranker(config).eval()
    trained, readout = ranker.serving_pass(), ranker.serving_pass("svd")
    assert readout is not trained and readout.readout and not trained.readout
    shared, own = trained.weights, readout.weights
    for name in ("features", "actions", "kv", "o"):
        assert getattr(own, name) is getattr(shared, name), name
    assert not torch.equal(own.fc2, shared.fc2)  # the read-out's MLP, not the trained one
    rows = torch.randint(1, CONFIG.n_items, (2, 12))
    tokens = torch.randn(2, 8, 32)
    with torch.no_grad():
        cand = ranker.embed_items(rows)
        mask = torch.ones(2, 8, dtype=torch.bool)
        want = ranker.score_outputs(cand, ranker.attn(cand, tokens, mask), mlp=ranker.readout)
        assert torch.allclose(readout.svd(rows, tokens), want, atol=1e-5)


class _TorchCalls(TorchFunctionMode):
    """Counts the torch functions called from Python while active."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.names.append(getattr(func, "__name__", repr(func)))
        return func(*args, **(kwargs or {}))


def test_a_pass_makes_no_torch_call_from_python_beyond_its_weights_check(
    device: torch.device,
) -> None:
    """The svd and lifelong passes are one native call each (the GIL released throughout): the
    only torch calls Python makes are the weights' freshness check, not one per op."""
    config = dataclasses.replace(CONFIG, mode="lifelong", recent_tokens=4)
    torch.manual_seed(0)
    svd_pass = ServingPass(_ranker(device))
    lifelong_pass = Ranker(config).eval().to(device).serving_pass()
    rows = torch.randint(1, CONFIG.n_items, (2, 30), device=device)
    tokens = torch.randn(2, CONFIG.rank, CONFIG.dim, device=device)
    mask = torch.ones(2, CONFIG.rank, dtype=torch.bool, device=device)
    mask[1, 3:] = False
    recent = torch.randn(2, 4, CONFIG.dim, device=device)
    recent_mask = torch.ones(2, 4, dtype=torch.bool, device=device)
    with torch.inference_mode():
        assert svd_pass.weights is not None and lifelong_pass.weights is not None  # built
        with _TorchCalls() as check:
            assert svd_pass.weights is not None
        with _TorchCalls() as svd:
            svd_pass.svd(rows, tokens, mask)
        with _TorchCalls() as lifelong_check:
            assert lifelong_pass.weights is not None
        with _TorchCalls() as lifelong:
            lifelong_pass.channels(rows, tokens, mask, recent, recent_mask)
    assert check.names and lifelong_check.names, "the counter sees the weights check's calls"
    grad_mode = ["_set_grad_enabled"] * 2  # torch.no_grad around the pass: entered, left
    assert svd.names == grad_mode[:1] + check.names + grad_mode[1:]
    assert lifelong.names == grad_mode[:1] + lifelong_check.names + grad_mode[1:]


def test_each_pass_returns_fresh_logits(device: torch.device) -> None:
    serving = ServingPass(_ranker(device))
    rows, tokens = _batch(device, 2, 64)
    with torch.inference_mode():
        first = serving.svd(rows, tokens)
        values = first.clone()
        second = serving.svd(rows[:, :40], tokens)
    assert second.data_ptr() != first.data_ptr()
    torch.testing.assert_close(first, values)  # a later pass leaves earlier logits alone
    torch.testing.assert_close(second, values[:, :40].contiguous(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("dim", "heads", "tokens"),
    [(32, 4, 1), (32, 4, 5), (64, 4, 16), (64, 4, 17), (64, 4, 32), (64, 2, 48), (128, 4, 64)]
    + [
        (64, 8, 33),
        (256, 4, 8),
        (64, 4, 65),
        (48, 4, 32),
    ],  # d_h 8..64; past 64 tokens, d_h 12: SDPA
)
def test_the_pass_over_a_few_tokens_equals_the_modules(
    device: torch.device, dim: int, heads: int, tokens: int
) -> None:
    """Every token count and head width the CPU's small-attention kernel takes (T ≤ 64,
    d_h ∈ {8, 16, 32, 64}), and shapes past it, against TargetAttention and the MLP; with
    padding masked, batches, a candidate count not a multiple of the kernel's 8 and one
    large enough to be split over threads."""
    config = dataclasses.replace(CONFIG, dim=dim, heads=heads)
    torch.manual_seed(0)
    ranker = Ranker(config).eval().to(device)
    serving = ServingPass(ranker)
    for batch, candidates in ((1, 13), (3, 50), (2, 700)):
        rows = torch.randint(0, config.n_items, (batch, candidates), device=device)
        context = torch.randn(batch, tokens, dim, device=device)
        with torch.inference_mode():
            fused = serving.svd(rows, context)
        torch.testing.assert_close(fused, _reference(ranker, rows, context), atol=1e-5, rtol=1e-5)
    if tokens > 1:
        mask = torch.ones(batch, tokens, dtype=torch.bool, device=device)
        mask[0, tokens // 2 :] = False
        with torch.inference_mode():
            padded = serving.svd(rows, context, mask)
            short = serving.svd(rows[:1], context[:1, : tokens // 2])
        torch.testing.assert_close(padded[:1], short, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("dim", "heads", "tokens"), [(64, 4, 32), (32, 4, 5), (256, 4, 64)])
def test_the_few_token_kernel_equals_sdpa_and_serves_the_default_shapes(
    dim: int, heads: int, tokens: int
) -> None:
    """On the CPU in float32 the svd and lifelong passes over r = 32 tokens take the kernel,
    whose attention output equals SDPA's to float rounding, padding and empty users
    included."""
    config = dataclasses.replace(CONFIG, dim=dim, heads=heads)
    torch.manual_seed(0)
    serving = ServingPass(Ranker(config).eval())
    native, w = serving._native, serving.weights
    rows = torch.randint(0, config.n_items, (3, 37))
    context = torch.randn(3, tokens, dim)
    mask = torch.ones(3, tokens, dtype=torch.bool)
    mask[1, tokens // 2 :] = False
    mask[2] = False  # a user with no tokens: o = 0
    assert native.small_attention_applies(w.features, context, heads)
    for token_mask in (None, mask):
        with torch.inference_mode():
            kernel = native.attention_output(w, rows, context, token_mask, heads, True)
            sdpa = native.attention_output(w, rows, context, token_mask, heads, False)
        torch.testing.assert_close(kernel, sdpa, atol=2e-6, rtol=1e-5)
    assert float(kernel.view(3, 37, dim)[2].abs().max()) == 0.0


def test_the_kernel_is_not_taken_off_the_cpu_float32_path() -> None:
    torch.manual_seed(0)
    serving = ServingPass(_ranker(torch.device("cpu")))
    native, w = serving._native, serving.weights
    tokens = torch.randn(1, 8, CONFIG.dim)
    assert native.small_attention_applies(w.features, tokens, CONFIG.heads)
    assert not native.small_attention_applies(w.features.bfloat16(), tokens, CONFIG.heads)
    assert not native.small_attention_applies(w.features, torch.randn(1, 65, 32), CONFIG.heads)
    with pytest.raises(RuntimeError, match="does not apply"):
        native.attention_output(
            w, torch.zeros(1, 4, dtype=torch.long), torch.randn(1, 65, 32), None, CONFIG.heads, True
        )


def test_mismatched_requests_and_contexts_are_refused(device: torch.device) -> None:
    serving = ServingPass(_ranker(device))
    rows = torch.randint(0, CONFIG.n_items, (2, 10), device=device)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="for the rows' B = 2"):
        serving.svd(rows, torch.randn(3, CONFIG.rank, CONFIG.dim, device=device))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="B >= 1"):
        serving.svd(rows[:0], torch.randn(0, CONFIG.rank, CONFIG.dim, device=device))


def test_passes_on_two_threads_at_once_equal_serial_passes(device: torch.device) -> None:
    """The GIL is released for the whole pass: two threads scoring at once share nothing."""
    serving = ServingPass(_ranker(device))
    inputs = [_batch(device, 2, 300) for _ in range(2)]
    with torch.inference_mode():
        serial = [serving.svd(rows, tokens).clone() for rows, tokens in inputs]
    results: list[list[torch.Tensor]] = [[], []]

    def score(k: int) -> None:
        with torch.inference_mode():
            for _ in range(20):
                results[k].append(serving.svd(*inputs[k]).clone())

    threads = [threading.Thread(target=score, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(2):
        assert len(results[k]) == 20
        for got in results[k]:
            assert torch.equal(got, serial[k])
