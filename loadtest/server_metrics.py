"""Server-side figures of a load run, read from two scrapes of ``GET /metrics``.

A histogram's buckets are cumulative counters, so the run's own distribution is the
difference of a scrape after the run and one before; its quantiles are interpolated inside
the bucket that holds them, as PromQL's ``histogram_quantile`` does (a figure is as precise as
the bucket bounds around it). Standard library only: the locustfile (stock locust image) and
``bench.e2e`` both use it.
"""

from __future__ import annotations

import math
import re
import urllib.request
from typing import Any

__all__ = ["STAGE_HISTOGRAMS", "cpu_seconds", "fetch", "histograms", "run_figures"]

# (metric, label) of the histograms a load run reports, by label value.
STAGE_HISTOGRAMS = (
    ("solar_rank_stage_seconds", "stage"),
    ("solar_pass_seconds", "shape"),
    ("solar_pass_off_cpu_seconds", None),
    ("solar_gc_pause_seconds", "generation"),
    ("solar_event_loop_lag_seconds", None),
    ("solar_apply_lag_seconds", None),
    ("solar_batch_size", None),
)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Buckets = dict[float, float]  # upper bound (le) → cumulative count


def fetch(url: str, timeout_s: float = 5.0) -> str:
    """The text of ``url`` (a /metrics endpoint); "" when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text: str = response.read().decode()
            return text
    except OSError:
        return ""


def histograms(text: str, name: str, label: str | None) -> dict[str, Buckets]:
    """The buckets of histogram ``name`` in a /metrics text, by the value of ``label``
    ("" when unlabelled)."""
    out: dict[str, Buckets] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != f"{name}_bucket":
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        key = labels.get(label, "") if label else ""
        out.setdefault(key, {})[float(labels["le"])] = float(match.group(3))
    return out


def cpu_seconds(text: str) -> float | None:
    """``process_cpu_seconds_total`` in a /metrics text (None when absent)."""
    for line in text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            return float(line.split()[1])
    return None


def _quantile(buckets: Buckets, q: float) -> float | None:
    """histogram_quantile(q) of cumulative ``buckets``; None when empty."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the largest finite bound: its bound is all we know
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def run_figures(before: str, after: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Per histogram of :data:`STAGE_HISTOGRAMS` and label value: the run's count, p50, p99
    and p99.9 (ms for the ``_seconds`` ones), from a scrape ``before`` and one ``after``;
    and ``process_cpu_seconds`` ``{"all": {"seconds": …}}``, the CPU the process spent in
    between (whatever else ran on the machine: a contention-independent cost)."""
    figures: dict[str, dict[str, dict[str, Any]]] = {}
    cpu = cpu_seconds(before), cpu_seconds(after)
    if cpu[0] is not None and cpu[1] is not None:
        figures["process_cpu_seconds"] = {"all": {"seconds": round(cpu[1] - cpu[0], 3)}}
    for name, label in STAGE_HISTOGRAMS:
        scale = 1_000.0 if name.endswith("_seconds") else 1.0
        old = histograms(before, name, label)
        for key, buckets in histograms(after, name, label).items():
            delta = {le: n - old.get(key, {}).get(le, 0.0) for le, n in buckets.items()}
            count = delta.get(math.inf, 0.0)
            if count <= 0:
                continue
            row: dict[str, Any] = {"count": int(count)}
            for q, tag in ((0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")):
                value = _quantile(delta, q)
                row[tag] = None if value is None else round(value * scale, 3)
            figures.setdefault(name, {})[key or "all"] = row
    return figures
