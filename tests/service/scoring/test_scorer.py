"""BatchScorer: passes split to bound memory give the same results; mixed modes; warm-up."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch

from model.modes import MODES, HostBuffers, ScoreRequest, mode_spec
from model.modes.packing import bucket
from service.core.serving_model import load_serving_model
from service.metrics import Metrics
from service.scoring.scorer import BatchScorer, RankJob, split_jobs
from tests.service.conftest import SettingsFactory
from tests.service.support import RANK


def test_scorer_splits_history_batches(make_settings: SettingsFactory) -> None:
    model = load_serving_model(make_settings())
    history = torch.arange(1, 21)
    jobs = [
        RankJob("softmax", ScoreRequest(torch.arange(1, 9), history_items=history), 3),
        RankJob("svd", ScoreRequest(torch.arange(1, 9), interests=torch.ones(RANK, 16)), 8),
        RankJob("softmax", ScoreRequest(torch.arange(1, 9), history_items=history[:5]), 8),
    ]
    together = BatchScorer(model.checkpoint.ranker, history_batch_elements=10**9)(jobs)
    split = BatchScorer(model.checkpoint.ranker, history_batch_elements=1)(
        jobs
    )  # one request per pass
    assert [len(r.positions) for r in together] == [3, 8, 8]
    for a, b in zip(together, split, strict=True):
        assert a.positions.tolist() == b.positions.tolist()
        assert a.scores.tolist() == pytest.approx(b.scores.tolist(), abs=1e-5)


def _job(m: int, n: int | None) -> RankJob:
    history = None if n is None else torch.arange(1, n + 1)
    interests = torch.ones(RANK, 16) if n is None else None
    request = ScoreRequest(torch.arange(1, m + 1), interests=interests, history_items=history)
    return RankJob("svd" if n is None else "softmax", request, m)


def test_split_jobs_bounds_b_m_n() -> None:
    jobs = [_job(4, 10), _job(4, 10), _job(8, 10), _job(2, 1)]
    assert split_jobs(jobs, [0, 1, 2, 3], 10**6) == [[0, 1, 2, 3]]
    assert split_jobs(jobs, [0, 1, 2, 3], 80) == [[0, 1], [2], [3]]  # 2·4·10, then 1·8·10
    assert split_jobs(jobs, [0, 1, 2, 3], 1) == [[0], [1], [2], [3]]  # never an empty pass
    svd = [_job(2_048, None) for _ in range(5)]
    assert split_jobs(svd, list(range(5)), 8_192) == [[0, 1, 2, 3], [4]]  # N counts as 1


def test_passes_group_by_mode_then_bound_each_pass(make_settings: SettingsFactory) -> None:
    """The batcher's split: svd jobs of 2,048 candidates four to a pass, the log-reading
    mode apart, in order of first appearance; the scorer's answers are the same by pass."""
    model = load_serving_model(make_settings())
    n_items = model.checkpoint.ranker.config.n_items
    scorer = BatchScorer(model.checkpoint.ranker, history_batch_elements=10**9)
    gen = torch.Generator().manual_seed(0)

    def job(mode: str) -> RankJob:
        rows = torch.randint(1, n_items, (2_048 if mode == "svd" else 8,), generator=gen)
        if mode == "svd":
            request = ScoreRequest(rows, interests=torch.randn(RANK, 16, generator=gen))
        else:
            request = ScoreRequest(rows, history_items=torch.arange(1, 6))
        return RankJob(mode, request, 5)

    jobs = [job("svd") for _ in range(3)] + [job("softmax")] + [job("svd") for _ in range(3)]
    assert scorer.passes(jobs) == [[0, 1, 2, 4], [5, 6], [3]]
    with pytest.raises(ValueError, match="one mode"):  # a pass is one part of passes()
        scorer.score_pass(jobs[2:4])
    whole = scorer(jobs)
    for part in scorer.passes(jobs):
        for i, ranked in zip(part, scorer([jobs[i] for i in part]), strict=True):
            assert ranked.positions.tolist() == whole[i].positions.tolist()


def test_pass_rows_bounds_the_rows_of_a_pass_and_of_its_warm_up(
    make_settings: SettingsFactory,
) -> None:
    """SOLAR_PASS_ROWS: with 2,048 rows each request of 2,048 candidates is a pass of its own
    (and the warm-up scores B = 1 only), small requests still share one, and a request larger
    than the bound gets a pass to itself."""
    model = load_serving_model(make_settings())
    ranker = model.checkpoint.ranker
    scorer = BatchScorer(ranker, history_batch_elements=10**9, pass_rows=2_048)

    def job(m: int) -> RankJob:
        rows = 1 + torch.arange(m) % (ranker.config.n_items - 1)
        return RankJob("svd", ScoreRequest(rows, interests=torch.ones(RANK, 16)), 5)

    assert scorer.passes([job(2_048) for _ in range(3)]) == [[0], [1], [2]]
    assert scorer.passes([job(100) for _ in range(20)]) == [list(range(20))]
    assert scorer.passes([job(100), job(5_000), job(100)]) == [[0], [1], [2]]
    scorer.warm_up(model.rank, modes=["svd"], candidates=2_048, max_batch=32)
    batch_sizes = {{a[0]: a[1:] for a in shape[1:]}["rows"][0] for shape in scorer.shapes}
    assert batch_sizes == {1}
    with pytest.raises(ValueError, match="pass_rows"):
        BatchScorer(ranker, history_batch_elements=1, pass_rows=0)


def test_warm_up_scores_every_serving_mode(make_settings: SettingsFactory) -> None:
    model = load_serving_model(make_settings())
    seen: list[str] = []
    scorer = BatchScorer(model.checkpoint.ranker, history_batch_elements=10**6)
    real_svd, real_history = scorer.serving.svd, scorer.serving.history

    def svd(*args: Any) -> torch.Tensor:
        seen.append("svd")
        return real_svd(*args)

    def history(*args: Any) -> torch.Tensor:
        basis = args[4] if len(args) > 4 else None  # svd_exact projects on V_r, softmax not
        seen.append("svd_exact" if basis is not None else "softmax")
        return real_history(*args)

    scorer.serving.svd, scorer.serving.history = svd, history  # type: ignore[method-assign]
    scorer.warm_up(model.rank)
    assert set(seen) == {"softmax", "svd", "svd_exact"}


def test_warm_up_covers_every_bucket_shape_of_a_full_pass(make_settings: SettingsFactory) -> None:
    """Batches of 1…4 requests of 2,048 candidates (SVD_PASS_ROWS rows at most) at every token
    bucket are warm, so no request of that size meets a shape for the first time."""
    model = load_serving_model(make_settings())
    scorer = BatchScorer(model.checkpoint.ranker, history_batch_elements=10**6)
    scorer.warm_up(model.rank, candidates=2_048, max_batch=32)
    arrays = [(shape[0], {a[0]: a[1:] for a in shape[1:]}) for shape in scorer.shapes]
    svd_rows = sorted(named["rows"] for mode, named in arrays if mode == "svd")
    token_buckets = range(
        16, bucket(model.rank + model.checkpoint.ranker.config.recent_tokens, 16) + 1, 16
    )
    expected = [(1, 128)] + [(b, 2_048) for b in range(1, 5) for _ in token_buckets]
    assert svd_rows == expected
    svd_tokens = {named["tokens"][:2] for mode, named in arrays if mode == "svd"}
    assert svd_tokens >= {(b, t) for b in range(1, 5) for t in token_buckets}
    assert {mode for mode, _ in arrays} == set(model.served_modes)


def _requests(mode: str, gen: torch.Generator) -> list[ScoreRequest]:
    """Three requests of several sizes (M, token counts, N, r) with every input given."""
    requests = []
    for m, t, n in ((5, 4, 7), (9, 2, 0), (3, 3, 11)):
        requests.append(
            ScoreRequest(
                torch.randint(0, 40, (m,), generator=gen),
                interests=torch.randn(t, 16, generator=gen),
                history_items=torch.randint(1, 40, (n,), generator=gen),
                history_actions=torch.randint(0, 3, (n,), generator=gen),
                weights=torch.rand(n, generator=gen),
                basis=torch.randn(16, t, generator=gen),
                summary=torch.randn(2, 8, 9, generator=gen),
                recent=torch.randn(n % 5, 16, generator=gen),
            )
        )
    return requests


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_service_and_the_reference_path_pack_the_same_batch(
    make_settings: SettingsFactory, mode: str
) -> None:
    """One packer: the scorer's staging buffer and the plain host arrays hold equal arrays."""
    ranker = load_serving_model(make_settings()).checkpoint.ranker
    requests = _requests(mode, torch.Generator().manual_seed(3))
    staged = BatchScorer(ranker, history_batch_elements=10**6).send(
        mode, [RankJob(mode, req, 3) for req in requests]
    )
    plain = mode_spec(mode).pack(requests, 16, HostBuffers(torch.device("cpu"))).send()
    assert staged.keys() == plain.keys() >= {"rows", "lengths"}
    for name, array in plain.items():
        assert staged[name].dtype == array.dtype, name
        torch.testing.assert_close(staged[name], array, rtol=0, atol=0, msg=name)
    assert plain["rows"].shape == (3, 128) and plain["lengths"].tolist() == [5, 9, 3]


def test_a_pass_records_the_time_its_thread_waited_off_the_cpu(
    make_settings: SettingsFactory,
) -> None:
    """solar_pass_off_cpu_seconds: next to a thread that holds the GIL in long C calls (as the
    event loop does while it decodes a body), whenever the pass gives the GIL up (its native
    call, or the switch interval's forced hand-off) it waits for the other thread's call to
    end before it goes on: that wait is off the CPU. One torch thread, the service's default
    (with more, the intra-op team's spinning counts as the caller's CPU)."""
    model = load_serving_model(make_settings())
    metrics = Metrics()
    scorer = BatchScorer(model.checkpoint.ranker, history_batch_elements=10**6, metrics=metrics)
    n_items = model.checkpoint.ranker.config.n_items
    # Ops long enough (~100 µs+) for the other thread to take the GIL while each one runs.
    rows = 1 + torch.arange(20_000) % (n_items - 1)
    job = RankJob("svd", ScoreRequest(rows, interests=torch.ones(RANK, 16)), 8)

    def off_cpu() -> tuple[float, float]:
        count = metrics.registry.get_sample_value("solar_pass_off_cpu_seconds_count")
        total = metrics.registry.get_sample_value("solar_pass_off_cpu_seconds_sum")
        return float(count or 0.0), float(total or 0.0)

    scorer([job])
    assert off_cpu()[0] == 1.0  # one pass, one observation
    alone = off_cpu()[1]

    stop = threading.Event()

    def hold_the_gil() -> None:
        while not stop.is_set():
            sum(range(5_000_000))  # one C call of ~50 ms: the GIL is not given up inside it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    holder = threading.Thread(target=hold_the_gil)
    holder.start()
    try:
        time.sleep(0.01)
        for _ in range(3):
            scorer([job])
    finally:
        stop.set()
        holder.join()
        torch.set_num_threads(threads)
    count, total = off_cpu()
    assert count == 4.0
    assert total - alone > 0.03  # each pass waits out the rest of a ~50 ms call at least once
