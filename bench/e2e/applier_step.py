"""The applier's CPU step for one user and one block, per block size, against a base revision in
the same run (issue 22).

    .venv/bin/python -m bench.e2e.applier_step --base main
    .venv/bin/python -m bench.e2e.applier_step --base main --rounds 3 --sizes 1 2 5 10 20

The step is what ``UserStates.apply_pending`` computes between its two store round trips:
decode and check the stored blob (``parse_state``), map the log records to embedding rows
(``ServingModel.log_rows``), the block update (``ServingModel.states.append``: embedding, decay,
Brand update) and the encoding of the new blob. The state holds 2,000 events of a random
default-shaped model (d = 64, r = 32, ℓ = 48, 10,000 items). Each side runs in its own
process with its tree first on ``PYTHONPATH`` (one thread, ``OPENBLAS_NUM_THREADS=1``); the
sides alternate, and each figure is the median over rounds of the median µs per block.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

SIZES = (1, 2, 5, 10, 20)
STATE_EVENTS = 2_000


def child(model_dir: str, sizes: Sequence[int], repeats: int) -> dict[int, float]:
    """Median µs per block of the step, per block size, with the tree on ``sys.path``."""
    import numpy as np
    import torch

    from service.core.serving_model import load_serving_model
    from service.core.users import parse_state
    from service.settings import Settings
    from service.store.eventlog import make_records

    torch.set_num_threads(1)
    model = load_serving_model(Settings(model_path=model_dir))
    rng = np.random.default_rng(0)
    vocab = model.checkpoint.vocab.items
    items = rng.integers(1, len(vocab) + 1, STATE_EVENTS)  # rows (0: the OOV row)
    ts = np.sort(rng.uniform(0.0, 1e6, STATE_EVENTS))
    blob = model.states.from_events(items, items * 0 + 1, ts).to_bytes()
    out: dict[int, float] = {}
    for b in sizes:
        blocks = [
            make_records(
                [2e6 + j for j in range(b)],
                [vocab[int(i)] for i in rng.integers(0, len(vocab), b)],
                ["click"] * b,
                [None] * b,
            )
            for _ in range(16)
        ]

        def step(records: np.ndarray) -> bytes:
            state = parse_state(blob, model).state
            assert state is not None
            rows, actions = model.log_rows(records)
            times = np.asarray(records["ts"], dtype=np.float64)
            return bytes(model.states.append(state, rows, actions, times).to_bytes())

        for records in blocks:  # warm-up
            step(records)
        times_s = []
        for i in range(repeats):
            start = time.perf_counter()
            step(blocks[i % len(blocks)])
            times_s.append(time.perf_counter() - start)
        out[b] = 1e6 * float(np.median(times_s))
    return out


def _run_side(tree: Path, model_dir: Path, sizes: Sequence[int], repeats: int) -> dict[int, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(model_dir)]
    command += ["--sizes", *map(str, sizes), "--repeats", str(repeats)]
    done = subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True, text=True)
    return {int(b): us for b, us in json.loads(done.stdout.splitlines()[-1]).items()}


def markdown(
    results: dict[str, list[dict[int, float]]],
    sizes: Sequence[int],
    base: str,
    command: str,
    load: tuple[float, float],
) -> str:
    lines = [
        f"## The applier's step per block against `{base}`, same run",
        "",
        f"Command: `{command}` ({os.cpu_count()} CPUs, shared with other jobs; load average "
        f"{load[0]:.1f} → {load[1]:.1f}). Decode + log rows + block update + encode of a "
        f"{STATE_EVENTS:,}-event svd state (d = 64, ℓ = 48), one thread; median over rounds of "
        "the median µs per block.",
        "",
        f"| events per block | `{base}` µs / block | this µs / block | this µs / event | "
        "this / base |",
        "|---|---|---|---|---|",
    ]
    for b in sizes:
        old = statistics.median(r[b] for r in results["base"])
        new = statistics.median(r[b] for r in results["this"])
        lines.append(f"| {b} | {old:.0f} | {new:.0f} | {new / b:.0f} | {new / old:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main", help="git revision measured in the same run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # model dir: measure
    p.add_argument("--markdown", type=Path, default=None, help="write section `applier-step`")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    if args.child is not None:
        print(json.dumps(child(args.child, args.sizes, args.repeats)))
        return 0
    from bench.common import harness
    from bench.common.markdown import write_section
    from bench.e2e.ab import export  # (bench.e2e: a same-run comparison with a revision)

    load_before = os.getloadavg()[0]
    results: dict[str, list[dict[int, float]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory(prefix="solar-applier-step-") as tmp:
        trees = {"base": export(args.base, Path(tmp) / "base"), "this": harness.REPO}
        model = harness.random_checkpoint(Path(tmp) / "model", n_items=10_000)
        for r in range(args.rounds):
            for side in ("base", "this") if r % 2 == 0 else ("this", "base"):
                results[side].append(_run_side(trees[side], model, args.sizes, args.repeats))
                print(f"round {r} {side}: {results[side][-1]}", flush=True)
    command = shlex.join([".venv/bin/python", "-m", "bench.e2e.applier_step", *raw])
    text = markdown(results, args.sizes, args.base, command, (load_before, os.getloadavg()[0]))
    print(text)
    if args.markdown is not None:
        write_section(args.markdown, "applier-step", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
