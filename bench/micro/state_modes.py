"""Serving cost of each compressed-state mode beside `softmax` (issue 13; docs/DESIGN.md §2, §10).

Per mode, at d = 64, H = 4, r = k = 32, a history of N = 10,000 events with a one-day
half-life and M = 2,048 candidates:

* state bytes: the stored blob (``UserState.nbytes``), whatever N is;
* append µs per event: the applier's update of a state already holding N events
  (``ServingModel.states.append``: the events' embedding and row projection included), one
  event at a time and in blocks of 16;
* score µs per request: what the /rank path computes in process for one request: the mode's
  request built from the state (``Mode.request``: tokens, summary, or for `lifelong` its two
  channels and the candidates' repeat features), the fused pass of the batch scorer and its
  top 100 (``BatchScorer``: the micro-batcher's handler). `softmax` and `svd_exact` read the
  N logged events instead, `softmax@200` the 200 latest; `softmax` is the baseline of the
  ratios, same run.

`lifelong` is the study's lifelong row (``lifelong+rep``: L = 32, 2 × 2,048 item counts); its
target is to cost no more per request than `softmax@200` (issue 21), printed below the table.

Run alone (``python -m bench.micro.state_modes [--quick] [--markdown docs/BENCHMARKS.md]``: the
latter writes section ``state-modes`` of that file) or as part of ``bench/micro/kernels.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.common.markdown import write_section
from model.config import RankerConfig
from model.modes import LoggedEvents, UserArrays, mode_spec
from model.ranker import Ranker, ScoreRequest
from model.states import Decay, StateBuilder, UserState, make_builder
from service.scoring.scorer import BatchScorer, RankJob

MODES = ("svd", "lifelong", "elastic", "linear", "mean", "svd_exact", "softmax", "softmax@200")
N, M, TOP_K, ITEMS = 10_000, 2_048, 100, 20_000
HALF_LIFE_S = 86_400.0
TAG = "0123456789abcdef@h86400"  # as long as a served model's tag
STATE_TARGET_BYTES = 16 * 1024


@dataclass(frozen=True)
class ModeRow:
    """One mode's costs; append figures are None for the modes that keep no state of their own."""

    mode: str
    state_bytes: int | None
    append_us: float | None
    block16_us: float | None
    score_us: float


def _mode_and_window(label: str) -> tuple[str, int | None]:
    """A row label's mode and the latest events it reads (``softmax@200``: 200; None: all)."""
    mode, _, window = label.partition("@")
    return mode, int(window) if window else None


def _ranker(mode: str) -> Ranker:
    torch.manual_seed(0)
    trained = mode if mode in ("elastic", "linear", "mean", "lifelong") else "svd"
    lifelong = {"recent_tokens": 32, "repeat_buckets": 2_048} if mode == "lifelong" else {}
    config = RankerConfig(
        n_items=ITEMS,
        dim=64,
        heads=4,
        rank=32,
        mode=trained,  # type: ignore[arg-type]
        half_life_s=HALF_LIFE_S,
        **lifelong,  # type: ignore[arg-type]
    )
    return Ranker(config).eval()


def _time_us(fn: Callable[[], object], repeats: int) -> float:
    """Median µs of ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * float(np.median(times))


def _append_us(
    builder: StateBuilder, state: UserState, items: np.ndarray, ts: np.ndarray, block: int
) -> float:
    """µs per event of appending the events ``items`` (E,) (no action) in blocks of ``block``
    to ``state``."""
    actions = np.zeros_like(items)

    def run() -> None:
        current = state
        for i in range(0, items.shape[0] - block + 1, block):
            span = slice(i, i + block)
            current = builder.append(current, items[span], actions[span], ts[span])

    events = items.shape[0] // block * block
    return _time_us(run, 3) / events


def measure(label: str, repeats: int, append_events: int, rng: np.random.Generator) -> ModeRow:
    mode, window = _mode_and_window(label)
    ranker = _ranker(mode)
    decay = Decay(HALF_LIFE_S)
    builder = make_builder(ranker, rank=32, oversample=16, decay=decay, tag=TAG)
    ids = rng.integers(1, ITEMS, N + append_events)
    ts = np.arange(N + append_events, dtype=np.float64) * 60.0  # an event a minute
    state = builder.from_events(ids[:N], np.zeros(N, dtype=np.int64), ts[:N])
    scorer = BatchScorer(ranker, history_batch_elements=4 * M * N)
    cands = torch.from_numpy(rng.integers(1, ITEMS, M))
    spec = mode_spec(mode)
    history = spec.reads_log
    lo = N - (window or N)  # the events a windowed row reads: [lo, N)
    logged = LoggedEvents(
        ids[lo:N], np.zeros(N - lo, dtype=np.int64), decay.weights(ts[lo:N], ts[N - 1])
    )
    basis = builder.basis(state) if builder.kind == "svd" else None

    def request() -> ScoreRequest:
        user = UserArrays(builder.features(state), basis, logged)
        return spec.request(cands, user)

    def score() -> object:
        with torch.inference_mode():
            return scorer([RankJob(mode, request(), TOP_K)])

    score_us = _time_us(score, repeats)
    if history:
        return ModeRow(label, None, None, None, score_us)
    fresh, fresh_ts = ids[N:], ts[N:]
    return ModeRow(
        label,
        state.nbytes,
        _append_us(builder, state, fresh, fresh_ts, 1),
        _append_us(builder, state, fresh, fresh_ts, 16),
        score_us,
    )


def measure_all(quick: bool, seed: int = 0) -> list[ModeRow]:
    rng = np.random.default_rng(seed)
    repeats, events = (5, 64) if quick else (20, 320)
    return [measure(mode, repeats, events, rng) for mode in MODES]


def table(rows: Sequence[ModeRow]) -> list[str]:
    """The markdown table, ratios to `softmax` of the same run."""
    base = next(r.score_us for r in rows if r.mode == "softmax")
    lines = [
        f"| mode | state bytes | append µs/event (1) | append µs/event (blocks of 16) | "
        f"score µs/request, M={M:,} | softmax/mode |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        size = "—" if r.state_bytes is None else f"{r.state_bytes:,}"
        single = "—" if r.append_us is None else f"{r.append_us:,.1f}"
        block = "—" if r.block16_us is None else f"{r.block16_us:,.1f}"
        lines.append(
            f"| `{r.mode}` | {size} | {single} | {block} | {r.score_us:,.0f} | "
            f"{base / r.score_us:,.1f}× |"
        )
    # the 16 KiB target is per channel: `lifelong` keeps three, so its total is not held to it
    # (issue 21 bounds a whole lifelong state by 64 KiB: tests/bench/micro/test_state_modes.py)
    sizes = [r.state_bytes for r in rows if r.state_bytes is not None and r.mode != "lifelong"]
    lines += [
        "",
        f"N = {N:,} events (`softmax`, `svd_exact`: read from the log; `softmax@200`: the 200 "
        "latest; the others: one state), d = 64, H = 4, r = k = 32, one-day half-life; every "
        f"single-channel state ≤ {STATE_TARGET_BYTES:,} B: "
        + ("met" if max(sizes, default=0) <= STATE_TARGET_BYTES else "MISSED"),
    ]
    by_mode = {r.mode: r for r in rows}
    life, short = by_mode.get("lifelong"), by_mode.get("softmax@200")
    if life is not None and short is not None:
        verdict = "met" if life.score_us <= short.score_us else "MISSED"
        lines.append(
            f"`lifelong` (L = 32 and 2 × 2,048 item counts, {life.state_bytes or 0:,} B) "
            f"costs {life.score_us:,.0f} µs per request against {short.score_us:,.0f} for "
            f"`softmax@200` (target: no more): {verdict}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and events")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--markdown", type=Path, help="write section state-modes of this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lines = table(measure_all(args.quick))
    command = " ".join(
        ["python -m bench.micro.state_modes", *(argv if argv is not None else sys.argv[1:])]
    )
    text = "\n".join(
        [
            "## Compressed-state modes: state bytes, append and scoring cost",
            "",
            f"Produced by `{command}` in {time.perf_counter() - started:.0f} s "
            f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
            f"torch {torch.get_num_threads()} thread(s)); ratios are to `softmax` in the same run.",
            "",
            *lines,
        ]
    )
    print(text)
    if args.markdown is not None:
        write_section(args.markdown, "state-modes", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
