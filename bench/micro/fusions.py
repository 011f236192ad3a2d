"""Which fusions of the `svd` serving pass pay, measured against each other in one run.

    .venv/bin/python -m bench.micro.fusions               # M=2,048, B ∈ {1, 8}, with torch.compile
    .venv/bin/python -m bench.micro.fusions --no-compile  # eager variants only (seconds)

One torch thread, a random default-shaped model (d=64, H=4, r=32, hidden 128, 10,000 items).
Variants, interleaved round by round so that a busy machine slows them alike:

- ``plain``: the pass before issue 11 (per-item tables for W_Q e and fc1's e share,
  TargetAttention, fc1 as two K=d GEMMs, module GELUs, fresh tensors every call);
- ``fused``: :class:`model.serving.ServingPass` (what the service runs);
- ``compiled``: the fused pass's arithmetic as a pure function under ``torch.compile``
  (inductor, C++ codegen; compile time reported; ``--freezing`` to fold weights).

Reports the median ms per request of each (median over rounds of the per-round median), the
same-run roofline (``bench.micro.roofline``) and the largest |Δ logit| to ``plain``; then each
eager variant again beside a thread running Python (:class:`BusyPython`, what the event loop
does under load): ``plain`` takes the GIL back after each of its torch calls, ``fused`` (one
native call) once. Writes section ``fusions`` of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.common import harness
from bench.common.markdown import write_section
from bench.micro.roofline import gemm_rate_gflops, median_s
from model.checkpoint import load_checkpoint
from model.modes import serving_flops
from model.ranker import Ranker
from model.serving import ServingPass, ServingWeights

Pass = Callable[[Tensor, Tensor], Tensor]
EAGER = ("plain", "fused")  # the variants also timed beside a thread running Python


def plain_pass(ranker: Ranker) -> Pass:
    """The serving pass as it was before issue 11, for the same-run baseline."""
    d = ranker.config.dim
    with torch.no_grad():
        emb, first = ranker.item_emb.weight, ranker.mlp.fc1
        query_table = emb @ ranker.attn.w_q.weight.T
        hidden_table = emb @ first.weight[:, :d].T + first.bias
    w_out, w_prod = first.weight[:, d : 2 * d], first.weight[:, 2 * d :]

    def run(rows: Tensor, tokens: Tensor) -> Tensor:
        B, M = rows.shape
        cand = ranker.item_emb(rows)  # (B, M, d)
        mask = torch.ones(B, tokens.shape[1], dtype=torch.bool)
        out = ranker.attn.attend(F.embedding(rows, query_table), tokens, mask)  # (B, M, d)
        flat = out.reshape(B * M, d)
        hidden = torch.addmm(F.embedding(rows, hidden_table).reshape(B * M, -1), flat, w_out.T)
        hidden = torch.addmm(hidden, cand.reshape(B * M, d) * flat, w_prod.T)
        return ranker.mlp.after_fc1(hidden).view(B, M)

    return run


def functional_pass(w: ServingWeights, heads: int) -> Pass:
    """The fused pass's arithmetic without buffers (what torch.compile can trace)."""

    def run(rows: Tensor, tokens: Tensor) -> Tensor:
        B, M = rows.shape
        d = w.o.shape[0]
        flat = rows.reshape(-1)
        feats = w.features[flat]  # (B·M, 2d)
        kv = tokens @ w.kv  # (B, r, 2d)
        k = kv[..., :d].reshape(B, -1, heads, d // heads).transpose(1, 2)
        v = kv[..., d:].reshape(B, -1, heads, d // heads).transpose(1, 2)
        q = feats[:, d : 2 * d].reshape(B, M, heads, d // heads).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B * M, d) @ w.o
        x = torch.cat((o, feats[:, :d] * o), 1)
        hidden = F.gelu(torch.addmm(w.first_share[flat], x, w.fc1))
        second = F.gelu(torch.addmm(w.fc2_bias, hidden, w.fc2))
        return (second @ w.out + w.out_bias).view(B, M)

    return run


class BusyPython:
    """While active, a thread decodes a 2,048-id JSON body back to back: Python holding the
    GIL between short C calls, as the event loop's thread does under load."""

    BODY = json.dumps({"user_id": "u1", "candidates": [str(i) for i in range(2_048)]})

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busy-python", daemon=True)
        self.decodes = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            json.loads(self.BODY)
            self.decodes += 1

    def __enter__(self) -> BusyPython:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(
    variants: dict[str, Pass], rows: Tensor, tokens: Tensor, rounds: int, budget_s: float
) -> dict[str, float]:
    """Median over ``rounds`` of each variant's per-round median seconds, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, fn in variants.items():
                times[name].append(median_s(lambda fn=fn: fn(rows, tokens), budget_s))
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--m", type=int, default=2_048)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=0.3)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--freezing", action="store_true", help="inductor freezing (fold weights)")
    p.add_argument("--markdown", type=Path, default=Path("docs/BENCHMARKS.md"))
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="solar-fusions-") as tmp:
        ranker = load_checkpoint(harness.random_checkpoint(Path(tmp) / "m", n_items=10_000)).ranker
    serving = ServingPass(ranker)
    variants: dict[str, Pass] = {"plain": plain_pass(ranker), "fused": serving.svd}
    notes = []
    if not args.no_compile:
        import torch._inductor.config as inductor

        inductor.freezing = args.freezing
        variants["compiled"] = torch.compile(functional_pass(serving.weights, ranker.config.heads))
    gen = torch.Generator().manual_seed(0)
    lines = [
        "## Fusions of the svd pass (one thread)",
        "",
        f"Command: `{shlex.join(['.venv/bin/python', '-m', 'bench.micro.fusions', *raw])}` (load "
        f"average {load:.1f} at the start). ms per request, median of {args.rounds} "
        "interleaved rounds; Δ = largest |logit − plain|.",
        "",
        "| M | B | " + " | ".join(f"{n} ms" for n in variants) + " | roofline ms | "
        "fused ÷ roofline | "
        + " | ".join(f"Δ {n}" for n in variants if n != "plain")
        + " | "
        + " | ".join(f"{n} beside Python ms" for n in EAGER)
        + " |",
        "|" + " --- |" * (2 * len(variants) + 3 + len(EAGER)),
    ]
    for b in (int(x) for x in args.batches.split(",")):
        rows = torch.randint(1, ranker.config.n_items, (b, args.m), generator=gen)
        tokens = torch.randn(b, ranker.config.rank, ranker.config.dim, generator=gen) * 0.3
        with torch.inference_mode():
            started = time.perf_counter()
            outputs = {name: fn(rows, tokens).clone() for name, fn in variants.items()}
            notes.append(f"first calls at B={b}: {time.perf_counter() - started:.1f} s")
        seconds = measure(variants, rows, tokens, args.rounds, args.budget_s)
        with BusyPython() as busy:
            beside = measure(
                {n: variants[n] for n in EAGER}, rows, tokens, args.rounds, args.budget_s
            )
        if busy.decodes == 0:
            raise RuntimeError("the busy thread never ran: the beside-Python figures are void")
        rate = gemm_rate_gflops(ranker.config, min(b * args.m, 8_192), args.budget_s)
        flops = serving_flops(ranker.config, "svd", args.m, ranker.config.rank).total
        roofline_ms = flops / rate / 1e6
        deltas = [
            float((outputs[n] - outputs["plain"]).abs().max()) for n in variants if n != "plain"
        ]
        cells = " | ".join(f"{1e3 * seconds[n] / b:.2f}" for n in variants)
        lines.append(
            f"| {args.m:,} | {b} | {cells} | {roofline_ms:.2f} | "
            f"{1e3 * seconds['fused'] / b / roofline_ms:.2f}× | "
            + " | ".join(f"{x:.1e}" for x in deltas)
            + " | "
            + " | ".join(f"{1e3 * beside[n] / b:.2f}" for n in EAGER)
            + " |"
        )
    lines += ["", "; ".join(notes) + f"; load average {os.getloadavg()[0]:.1f} at the end."]
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(args.markdown, "fusions", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
