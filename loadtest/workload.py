"""The load's pure parts: configuration, Zipf users, request bodies, the summary.

Kept free of locust (which monkey-patches the standard library through gevent on import) so
tests can import it; ``locustfile.py`` wires it into locust. Standard library only.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import os
import random
import time
import urllib.request
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger("solar.locust")

CANDIDATE_POOL_SIZE = 64  # pre-encoded candidate lists: keeps the generator's CPU low
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
COMPOSE_HOSTS = frozenset({"lb", "solar-1", "solar-2"})  # docker-compose.yml service names
ARRIVALS = ("poisson", "constant")
__all__ = [
    "ARRIVALS",
    "ArrivalPacer",
    "LoadConfig",
    "Workload",
    "ZipfSampler",
    "served_items",
    "summarize",
    "vocabulary_ids",
]


class LoadConfig:
    """The load's knobs, read once from the environment (see the module docstring)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        e = dict(os.environ if env is None else env)
        self.rank_weight = int(e.get("SOLAR_LT_RANK_WEIGHT", 80))
        self.ingest_weight = int(e.get("SOLAR_LT_INGEST_WEIGHT", 20))
        self.candidates = int(e.get("SOLAR_LT_CANDIDATES", 2048))
        self.top_k = int(e.get("SOLAR_LT_TOP_K", 100))
        self.mode = e.get("SOLAR_LT_MODE", "svd")
        self.users = int(e.get("SOLAR_LT_USERS", 20))
        self.user_prefix = e.get("SOLAR_LT_USER_PREFIX", "u")
        self.zipf_s = float(e.get("SOLAR_LT_ZIPF_S", 1.1))
        self.max_events = int(e.get("SOLAR_LT_MAX_EVENTS", 50))
        self.items = int(e["SOLAR_LT_ITEMS"]) if e.get("SOLAR_LT_ITEMS") else None
        self.items_file = e.get("SOLAR_LT_ITEMS_FILE") or None
        self.rate = float(e.get("SOLAR_LT_RATE", 100))
        self.arrivals = e.get("SOLAR_LT_ARRIVALS", "poisson")
        self.worker_metrics = e.get("SOLAR_LT_WORKER_METRICS") or None
        self.locust_users = max(1, int(e.get("SOLAR_LT_LOCUST_USERS", 20)))
        extra = e.get("SOLAR_LT_EXTRA_HOSTS", "")
        self.extra_hosts = [h.rstrip("/") for h in extra.split(",") if h]
        self.summary_path = e.get("SOLAR_LT_SUMMARY") or None
        self.allow_remote = e.get("SOLAR_LT_ALLOW_REMOTE", "0") == "1"
        self.seed = int(e.get("SOLAR_LT_SEED", 0))
        weights = (self.rank_weight, self.ingest_weight)
        if min(weights) < 0 or not sum(weights):
            raise ValueError("SOLAR_LT_RANK_WEIGHT, SOLAR_LT_INGEST_WEIGHT: ≥ 0 and not both 0")
        if self.users < 1 or self.candidates < 1 or self.max_events < 1 or self.rate < 0:
            raise ValueError("SOLAR_LT_USERS, _CANDIDATES, _MAX_EVENTS must be ≥ 1 and _RATE ≥ 0")
        if self.arrivals not in ARRIVALS:
            raise ValueError(f"SOLAR_LT_ARRIVALS must be one of {ARRIVALS}: {self.arrivals!r}")

    def check_host(self, url: str) -> None:
        """Refuse to load anything but loopback (or the compose services) unless allowed."""
        host = urlparse(url).hostname or ""
        if not self.allow_remote and host not in LOOPBACK_HOSTS | COMPOSE_HOSTS:
            raise ValueError(
                f"refusing to send load to {url!r}: only 127.0.0.1 by default "
                "(set SOLAR_LT_ALLOW_REMOTE=1 to allow it)"
            )


class ArrivalPacer:
    """When one locust user starts its next request: its own schedule of arrivals at
    ``rate`` per second, ``poisson`` (exponential gaps, the default) or ``constant`` (fixed
    gaps: locust's ``constant_throughput``).

    Poisson users superpose into one Poisson process at the total rate, as independent
    clients do. Constant pacing makes every user fire in step: synchronized waves whose
    queueing is the generator's, not the service's (docs/DESIGN.md §10). Gaps are drawn against
    the schedule, not against the end of the last request, so a slow answer does not lower
    the offered rate (it is caught up at once, without waiting).
    """

    def __init__(self, rate: float, arrivals: str, rng: random.Random) -> None:
        if rate <= 0 or arrivals not in ARRIVALS:
            raise ValueError(f"rate must be > 0 and arrivals one of {ARRIVALS}")
        self.rate, self.arrivals, self._rng = rate, arrivals, rng
        self._next: float | None = None

    def gap(self) -> float:
        """Seconds from one scheduled start to the next."""
        if self.arrivals == "constant":
            return 1.0 / self.rate
        return self._rng.expovariate(self.rate)

    def wait(self, now: float) -> float:
        """Seconds to wait at ``now`` (a monotonic clock) before the next request."""
        if self._next is None:  # the first gap too, so users do not all start together
            self._next = now
        self._next += self.gap()
        return max(0.0, self._next - now)


class ZipfSampler:
    """Draws ranks 0..n-1 with P(k) ∝ 1/(k+1)^s (s=0: uniform), by inverse CDF."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        weights = [1.0 / (k + 1) ** s for k in range(n)]
        self._cdf = list(itertools.accumulate(weights))
        self._rng = rng

    def sample(self) -> int:
        u = self._rng.random() * self._cdf[-1]
        return min(bisect.bisect_left(self._cdf, u), len(self._cdf) - 1)


def _json_id(item: object) -> str:
    """An item id as a JSON fragment; decimal strings as integers (the same id, shorter)."""
    text = str(item)
    canonical = text.isascii() and text.isdigit() and str(int(text)) == text
    return text if canonical else json.dumps(text)  # "007" stays a string: 7 is another id


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def served_items(base_url: str, page: int = 10_000, max_items: int = 1_000_000) -> list[str]:
    """The served model's item ids (``GET /model/items``, page by page), as JSON fragments.

    Standard library only (the locust image has nothing else); ``solar_tools.client`` is the
    full client. At most ``max_items`` ids: candidates are sampled from them.
    """
    ids: list[str] = []
    while len(ids) < max_items:
        document = _get_json(f"{base_url}/model/items?offset={len(ids)}&limit={page}")
        batch = document["items"]
        ids += [_json_id(item) for item in batch]
        if len(batch) < page:
            break
    return ids


def vocabulary_ids(base_url: str, fallback: int | None, items_file: str | None = None) -> list[str]:
    """Item ids to draw candidates from, as JSON fragments (``1`` or ``"title"``).

    In order: the checkpoint's ``config.json`` ``items`` (``SOLAR_LT_ITEMS_FILE``), else
    ``SOLAR_LT_ITEMS`` (ids 1..K), else the served vocabulary (``GET /model/items``), else
    MovieLens-100K's 1..1,682.
    """
    if items_file:
        with open(items_file, encoding="utf-8") as handle:
            items = json.load(handle)["items"]
        return [_json_id(item) for item in items]
    if fallback is None:
        try:
            served = served_items(base_url)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("GET /model/items failed (%s); using integer item ids", exc)
        else:
            if served:
                return served
    return [str(i) for i in range(1, (fallback or 1682) + 1)]


class Workload:
    """Pre-encoded request bodies: candidate lists and user ids (shared by all locust users)."""

    def __init__(self, config: LoadConfig, item_ids: list[str]) -> None:
        self.config = config
        self.item_ids = item_ids
        rng = random.Random(config.seed)
        self.pool = [self._candidates(rng) for _ in range(CANDIDATE_POOL_SIZE)]
        self.users = ZipfSampler(config.users, config.zipf_s, random.Random(config.seed + 1))

    def _candidates(self, rng: random.Random) -> str:
        m = self.config.candidates
        if m <= len(self.item_ids):
            chosen = rng.sample(self.item_ids, m)
        else:  # a vocabulary smaller than M: draw with replacement
            chosen = rng.choices(self.item_ids, k=m)
        return "[" + ",".join(chosen) + "]"

    def user_id(self) -> str:
        return f"{self.config.user_prefix}{self.users.sample()}"

    def rank_body(self) -> str:
        c = self.config
        return (
            f'{{"user_id":{json.dumps(self.user_id())},"candidates":{random.choice(self.pool)},'
            f'"top_k":{c.top_k},"mode":{json.dumps(c.mode)}}}'
        )

    def ingest_body(self) -> str:
        n = random.randint(1, self.config.max_events)
        now = time.time()
        events_ = [
            f'{{"user_id":{json.dumps(self.user_id())},"item_id":{random.choice(self.item_ids)},'
            f'"ts":{now:.3f},"action":"view"}}'
            for _ in range(n)
        ]
        return '{"events":[' + ",".join(events_) + "]}"


def _percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]) of an ascending list; None if empty."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize(
    latencies: dict[str, list[float]], failures: dict[str, int], duration_s: float
) -> dict[str, Any]:
    """Per-endpoint and total p50/p95/p99 (ms), requests/s and failures."""
    names = sorted(set(latencies) | set(failures))
    out: dict[str, Any] = {"duration_s": round(duration_s, 3), "endpoints": {}}
    everything: list[float] = []
    for name in names + ["total"]:
        values = sorted(everything if name == "total" else latencies.get(name, []))
        failed = sum(failures.values()) if name == "total" else failures.get(name, 0)
        if name != "total":
            everything.extend(values)
        out["endpoints"][name] = {
            "requests": len(values) + failed,
            "failures": failed,
            "requests_per_s": round((len(values) + failed) / duration_s, 3) if duration_s else 0.0,
            **{f"p{q}_ms": _rounded(_percentile(values, q)) for q in (50, 95, 99)},
            "max_ms": _rounded(values[-1] if values else None),
        }
    return out
