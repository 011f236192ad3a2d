"""This CPU's single-thread GEMM rate on the ranker's own shapes: the roofline's denominator.

The roofline of a serving pass is its FLOP count (``model.modes.serving_flops``) divided by
the rate one core reaches on dense float32 GEMMs of the pass's layer shapes, with as many
rows as the pass has candidate rows: W_O (d → d), the MLP's first layer on [o, e ⊙ o]
(2d → hidden) and its second (hidden → hidden/2), each timed alone with a preallocated output
(``torch.mm(out=)``), the rate being their FLOPs over the sum of their times. Measure it in
the same run, next to the pass it judges: on a shared machine both move together.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from model.config import RankerConfig

__all__ = ["gemm_rate_gflops", "median_s"]


def median_s(fn: Callable[[], object], budget_s: float, max_repeats: int = 200) -> float:
    """One warm-up call, then the median wall time of as many calls as fit ``budget_s``
    (at least 5, at most ``max_repeats``), seconds."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    repeats = int(min(max_repeats, max(5, budget_s // max(first, 1e-9))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_rate_gflops(config: RankerConfig, rows: int, budget_s: float = 0.3) -> float:
    """GFLOP/s of one thread on the pass's dense layer shapes with ``rows`` rows (float32).

    Runs with ``torch.set_num_threads(1)`` and restores the previous thread count.
    """
    d, hidden = config.dim, config.mlp_hidden
    shapes = ((d, d), (2 * d, hidden), (hidden, hidden // 2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        flops, seconds = 0, 0.0
        gen = torch.Generator().manual_seed(0)
        for k, n in shapes:
            a = torch.randn(rows, k, generator=gen)
            b = torch.randn(k, n, generator=gen)
            out = torch.empty(rows, n)
            seconds += median_s(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), budget_s / 3)
            flops += 2 * rows * k * n
    finally:
        torch.set_num_threads(threads)
    return flops / seconds / 1e9
