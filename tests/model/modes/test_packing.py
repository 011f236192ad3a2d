"""Bucketed padding: a batch is padded to a few fixed shapes, and the padding changes no score."""

from __future__ import annotations

import pytest
import torch

from model.config import RankerConfig
from model.modes import HostBuffers, ScoreRequest, mode_spec
from model.modes.packing import CANDIDATE_BUCKET, TOKEN_BUCKET, bucket
from model.ranker import Ranker


def test_bucket_rounds_up_to_a_multiple() -> None:
    assert [bucket(n, 16) for n in (1, 16, 17, 32, 33, 48)] == [16, 16, 32, 32, 48, 48]
    assert bucket(2_048, 128) == 2_048 and bucket(2_049, 128) == 2_176


@pytest.mark.parametrize("mode", ["svd", "elastic"])
def test_padded_batch_scores_equal_each_request_alone_unpadded(mode: str) -> None:
    """Requests of several M and token counts, padded into one bucket-shaped batch, score as
    each one does through the fused pass at its own exact shape (no padding, no mask)."""
    torch.manual_seed(0)
    ranker = Ranker(RankerConfig(n_items=500, mode=mode)).eval()  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(1)
    requests = [
        ScoreRequest(
            torch.randint(0, 500, (m,), generator=gen), interests=torch.randn(t, 64, generator=gen)
        )
        for m, t in ((130, 5), (7, 33), (64, 16))
    ]
    spec = mode_spec(mode)
    inputs = spec.pack(requests, 64, HostBuffers(torch.device("cpu"))).send()
    assert inputs["rows"].shape == (3, bucket(130, CANDIDATE_BUCKET))
    assert inputs["tokens"].shape == (3, bucket(33, TOKEN_BUCKET), 64)
    with torch.inference_mode():
        batched = spec.score(ranker.serving_pass(), inputs).clone()
        for i, req in enumerate(requests):
            alone = ranker.serving_pass().svd(req.candidates[None], req.interests[None])  # type: ignore[index]
            m = req.candidates.shape[0]
            torch.testing.assert_close(batched[i, :m], alone[0], rtol=1e-5, atol=1e-5)
