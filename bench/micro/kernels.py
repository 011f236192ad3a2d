"""Kernel benchmark: per-request attention time of the four single-head kernels, the cost of
one factor update and the size of a user's state (docs/DESIGN.md §10).

    python -m bench.micro.kernels            # full grid (a few minutes), writes docs/
    python -m bench.micro.kernels --quick    # smaller grid, fewer repeats

Attention: `svd`, `svd_exact`, `softmax` and `linear` from :mod:`model.attention`, float32,
under ``torch.inference_mode()``, one warm-up call then the median of repeats, at every
N (history length) × M (candidates) of the grid, d = 64, r = 32. `svd` includes forming the
interest tokens from the stored state (``state.interests(r)``, numpy → torch); `svd kernel`
is the attention alone. Ratios are to `softmax` measured in the same run.

Update: :meth:`LowRankState.append` of one event and of blocks of 16 on states of several
history lengths (the cost must not depend on N), and the serialised state size.

Serving modes: per compressed-state mode (`svd`, `elastic`, `linear`, `mean`) its state
bytes, append µs per event and scoring µs per request at M = 2,048, beside `svd_exact` and
the `softmax` baseline over N = 10,000 logged events, same run (``bench.micro.state_modes``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.micro.state_modes import ModeRow, measure_all
from bench.micro.state_modes import table as modes_table
from model.attention import (
    linear_attention,
    softmax_attention,
    svd_attention,
    svd_exact_attention,
)
from model.states import LowRankState

REPO = Path(__file__).resolve().parents[2]
# A checkout writes its report into docs/; an installed wheel (`solar bench`) prints it only,
# unless --markdown/--png name files.
IN_CHECKOUT = (REPO / "pyproject.toml").is_file()
D, R = 64, 32
KERNELS = ("svd", "svd kernel", "svd_exact", "softmax", "linear")
TARGET_N, TARGET_M = 10_000, 2_048
SVD_TARGET, SVD_EXACT_TARGET = 100.0, 1.2  # × faster than softmax (docs/DESIGN.md §10)
APPEND_TARGET_US = 200.0  # per single event (aim)
STATE_TARGET_BYTES = 16 * 1024


@dataclass(frozen=True)
class Grid:
    ns: tuple[int, ...]
    ms: tuple[int, ...]
    append_ns: tuple[int, ...]
    budget_s: float
    max_repeats: int
    append_events: int


FULL = Grid((1_000, 10_000, 100_000), (256, 2_048, 8_192), (1_000, 10_000, 100_000), 2.0, 50, 400)
QUICK = Grid((1_000, 10_000), (256, 2_048), (1_000, 10_000), 0.5, 10, 100)


@dataclass(frozen=True)
class KernelRow:
    """Median milliseconds per request of each kernel at one (N, M)."""

    n: int
    m: int
    ms: dict[str, float]

    def speedup(self, kernel: str) -> float:
        return self.ms["softmax"] / self.ms[kernel]


@dataclass(frozen=True)
class AppendRow:
    """Microseconds per event of LowRankState.append at history length n."""

    n: int
    single_us: float
    block16_us: float


# Wall-clock time by default. `--clock cpu` reads the process's CPU time instead: on a shared
# machine (other jobs on the cores) it does not count time spent descheduled; it equals the
# wall time of an uncontended run only with `--threads 1`.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass(frozen=True)
class Timer:
    clock: Callable[[], float]
    budget_s: float  # time spent measuring one kernel at one (N, M), beyond the warm-up
    max_repeats: int

    def median_ms(self, fn: Callable[[], object], scale: float = 1.0) -> float:
        """One warm-up call, then the median of as many repeats as fit the budget (3 to max)."""
        start = self.clock()
        fn()
        first = self.clock() - start
        repeats = int(min(self.max_repeats, max(3, scale * self.budget_s // max(first, 1e-9))))
        times = []
        for _ in range(repeats):
            start = self.clock()
            fn()
            times.append(self.clock() - start)
        return 1e3 * statistics.median(times)


def history(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, d) float64 rows: rank-r structure plus noise, like embeddings of a long history."""
    basis = rng.standard_normal((R, D)) / np.sqrt(D)
    return rng.standard_normal((n, R)) @ basis + 0.05 * rng.standard_normal((n, D))


def time_kernels(n: int, m: int, timer: Timer, rng: np.random.Generator) -> KernelRow:
    X64 = history(rng, n)
    state = LowRankState.from_rows(X64, R)
    X = torch.from_numpy(X64.astype(np.float32))  # (N, d)
    q = torch.from_numpy(rng.standard_normal((m, D)).astype(np.float32))  # (M, d)
    tokens = torch.from_numpy(state.interests(R)).float()  # (r, d)
    calls: dict[str, Callable[[], object]] = {
        "svd": lambda: svd_attention(q, torch.from_numpy(state.interests(R)).float()),
        "svd kernel": lambda: svd_attention(q, tokens),
        "svd_exact": lambda: svd_exact_attention(q, X, torch.from_numpy(state.V[:, :R]).float()),
        "softmax": lambda: softmax_attention(q, X),
        "linear": lambda: linear_attention(q, X),
    }
    with torch.inference_mode():
        ms = {name: timer.median_ms(call) for name, call in calls.items()}
    return KernelRow(n, m, ms)


def time_append(n: int, events: int, timer: Timer, rng: np.random.Generator) -> AppendRow:
    """Per-event cost of sequential appends on a state that already holds n events."""
    X = history(rng, n + events)
    start_state = LowRankState.from_rows(X[:n], R)
    fresh = X[n:]

    def singles() -> None:
        state = start_state
        for row in fresh:
            state = state.append(row)

    def blocks() -> None:
        state = start_state
        for i in range(0, fresh.shape[0] - 15, 16):
            state = state.append(fresh[i : i + 16])

    per_call = {
        name: timer.median_ms(fn, scale=4.0) for name, fn in (("1", singles), ("16", blocks))
    }
    events = fresh.shape[0]
    return AppendRow(n, 1e3 * per_call["1"] / events, 1e3 * per_call["16"] / (events // 16 * 16))


def state_bytes(rng: np.random.Generator) -> dict[int, int]:
    return {
        n: len(LowRankState.from_rows(history(rng, n), R).to_bytes()) for n in (1, 1_000, 100_000)
    }


# ---------------------------------------------------------------------------- report
def kernel_table(rows: Sequence[KernelRow]) -> list[str]:
    head = (
        "| N | M | "
        + " | ".join(f"{k} ms" for k in KERNELS)
        + " | softmax/svd | softmax/svd kernel | softmax/svd_exact | softmax/linear |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for row in rows:
        times = " | ".join(_fmt_ms(row.ms[k]) for k in KERNELS)
        ratios = " | ".join(
            f"{row.speedup(k):,.1f}×" for k in ("svd", "svd kernel", "svd_exact", "linear")
        )
        lines.append(f"| {row.n:,} | {row.m:,} | {times} | {ratios} |")
    return lines


def _fmt_ms(value: float) -> str:
    return f"{value:,.3f}" if value < 1 else f"{value:,.1f}" if value >= 100 else f"{value:,.2f}"


def append_table(rows: Sequence[AppendRow]) -> list[str]:
    lines = ["| history N | one event µs | block of 16, µs per event |", "| --- | --- | --- |"]
    lines += [f"| {a.n:,} | {a.single_us:,.0f} | {a.block16_us:,.1f} |" for a in rows]
    return lines


def targets(
    rows: Sequence[KernelRow], appends: Sequence[AppendRow], sizes: dict[int, int]
) -> list[str]:
    at = next((r for r in rows if (r.n, r.m) == (TARGET_N, TARGET_M)), None)
    lines = []
    if at is not None:
        for kernel, goal in (
            ("svd", SVD_TARGET),
            ("svd kernel", SVD_TARGET),
            ("svd_exact", SVD_EXACT_TARGET),
        ):
            got = at.speedup(kernel)
            lines.append(
                f"- `{kernel}` vs `softmax` at N={TARGET_N:,}, M={TARGET_M:,}: {got:,.1f}× "
                f"(target ≥ {goal:g}×): {_verdict(got >= goal)}"
            )
    singles = [a.single_us for a in appends]
    spread = max(singles) / min(singles)
    lines.append(
        f"- one-event append: {min(singles):,.0f}–{max(singles):,.0f} µs over N = "
        f"{appends[0].n:,}–{appends[-1].n:,} (max/min {spread:.2f}; "
        f"aim ≤ {APPEND_TARGET_US:g} µs): {_verdict(max(singles) <= APPEND_TARGET_US)}"
    )
    biggest = max(sizes.values())
    lines.append(
        f"- state size: {', '.join(f'{b:,} B at N={n:,}' for n, b in sizes.items())} "
        f"(target ≤ {STATE_TARGET_BYTES:,} B): {_verdict(biggest <= STATE_TARGET_BYTES)}"
    )
    return lines


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def environment(clock: str) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}, load average "
        f"{load} at the end), {clock} clock, "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
        f"numpy {np.__version__} (OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}), "
        f"Python {platform.python_version()}"
    )


def render(
    command: str,
    clock: str,
    rows: Sequence[KernelRow],
    appends: Sequence[AppendRow],
    sizes: dict[int, int],
    seconds: float,
    modes: Sequence[ModeRow] = (),
) -> str:
    parts = [
        "# Attention kernels and factor updates",
        "",
        f"Produced by `{command}` on {dt.date.today().isoformat()} in {seconds / 60:.1f} min:",
        f"{environment(clock)}.",
        "Single head, float32, d = 64, r = 32, `torch.inference_mode()`, median of repeats after a",
        "warm-up; `svd` includes `state.interests(r)` (the tokens from the stored factors),",
        "`svd kernel` is the attention alone. Ratios are `softmax` time / kernel time, same run.",
        "",
        "## Targets (docs/DESIGN.md §10)",
        "",
        *targets(rows, appends, sizes),
        "",
        "## Per-request attention time",
        "",
        *kernel_table(rows),
        "",
        "## Factor update (`LowRankState.append`, r = 32, ℓ = 48)",
        "",
        *append_table(appends),
        "",
        *_modes_section(modes),
        "![kernels](kernels.png)",
        "",
    ]
    return "\n".join(parts)


def _modes_section(modes: Sequence[ModeRow]) -> list[str]:
    if not modes:
        return []
    return [
        "## Serving modes: state, append and scoring cost (`bench/micro/state_modes.py`)",
        "",
        "Append: the applier's update of a state already holding N events (row projections",
        "included). Score: the state's features, the fused pass and the top 100 of one request",
        "(the micro-batcher's handler); `softmax` and `svd_exact` read the N logged events.",
        "",
        *modes_table(modes),
        "",
    ]


def plot(rows: Sequence[KernelRow], appends: Sequence[AppendRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    ms_values = sorted({r.m for r in rows})
    styles = dict(zip(ms_values, ("o:", "s-", "^--"), strict=False))
    for kernel, color in zip(KERNELS, ("C0", "C9", "C1", "C3", "C2"), strict=True):
        for m in ms_values:
            sel = [r for r in rows if r.m == m]
            label = f"{kernel}" if m == TARGET_M else None
            left.plot(
                [r.n for r in sel], [r.ms[kernel] for r in sel], styles[m], color=color, label=label
            )
    sizes = ", ".join(f"{m:,}" for m in ms_values)
    left.set(xscale="log", yscale="log", xlabel="history length N", ylabel="ms per request")
    left.set_title(f"attention, M = {sizes} (dotted, solid, dashed)")
    left.legend(fontsize=8)
    right.plot([a.n for a in appends], [a.single_us for a in appends], "o-", label="one event")
    right.plot(
        [a.n for a in appends],
        [a.block16_us for a in appends],
        "s-",
        label="blocks of 16 (per event)",
    )
    right.axhline(APPEND_TARGET_US, color="grey", ls=":", label=f"aim {APPEND_TARGET_US:g} µs")
    right.set(
        xscale="log",
        ylim=(0, None),
        xlabel="history length N",
        ylabel="µs per event",
        title="factor update",
    )
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller grid and fewer repeats")
    docs = REPO / "docs" if IN_CHECKOUT else None
    parser.add_argument("--png", type=Path, default=docs and docs / "kernels.png")
    parser.add_argument("--markdown", type=Path, default=docs and docs / "KERNELS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = QUICK if args.quick else FULL
    timer = Timer(CLOCKS[args.clock], grid.budget_s, grid.max_repeats)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    rows = []
    for n in grid.ns:
        for m in grid.ms:
            rows.append(time_kernels(n, m, timer, rng))
            print(
                f"  N={n:,} M={m:,}: "
                + ", ".join(f"{k} {v:.3f} ms" for k, v in rows[-1].ms.items()),
                file=sys.stderr,
            )
    appends = [time_append(n, grid.append_events, timer, rng) for n in grid.append_ns]
    sizes = state_bytes(rng)
    modes = measure_all(args.quick, args.seed)
    command = " ".join(
        ["python -m bench.micro.kernels", *(argv if argv is not None else sys.argv[1:])]
    )
    report = render(command, args.clock, rows, appends, sizes, time.perf_counter() - started, modes)
    print(report)
    if args.no_write:
        return 0
    if args.png is not None:
        try:
            plot(rows, appends, args.png)
        except ImportError:
            print("matplotlib is not installed: no plot written", file=sys.stderr)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
