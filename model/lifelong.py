"""Synthetic lifelong histories: long-term interests that go dormant and recur after long gaps.

Items belong to topics (``n_items / n_topics`` each, Zipf popularity within a topic). Each
user owns ``long_interests`` long-term topics with Dirichlet weights. Every long-term topic
alternates awake and dormant spells (geometric lengths, means ``awake_events`` and
``dormant_events`` events), so a topic disappears for thousands of events and then comes
back. An event is, independently:

* with probability ``recall_share``, a recurrence: a long-term topic drawn ∝ its weight among
  the awake ones (a burst event instead when none is awake);
* with probability ``burst_share``, the current short-term burst: a fresh topic outside the
  long-term set that lasts ``burst_events`` events on average and never returns;
* otherwise noise from global Zipf topic popularity.

Recurrences are single events spread thinly over 32 topics (about one per topic per 200
events while awake, none for the ~1,500 events of a dormant spell), so the last-L window
regularly holds no event of the target's topic while the whole history holds many: the
lifelong case the quality study is about (about 15-25% of the test targets drawn from a
long-term topic miss the last 200 events, 55-70% the last 50; measured by
:func:`window_miss_rate`). The same config gives the same data (one ``numpy`` generator
seeded by ``seed``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from model.events.interactions import Interactions
from model.synthetic import T0, generated_interactions, item_topics, zipf


@dataclass(frozen=True)
class LifelongConfig:
    """Generator parameters; lengths and spells are in events, gaps in seconds."""

    n_users: int = 300
    n_items: int = 8_000
    n_topics: int = 400
    long_interests: int = 32
    min_length: int = 1_000
    max_length: int = 10_000
    recall_share: float = 0.15
    burst_share: float = 0.75
    burst_events: float = 150.0
    awake_events: float = 3_000.0
    dormant_events: float = 1_500.0
    dirichlet: float = 4.0
    zipf_a: float = 1.1
    mean_gap_s: float = 900.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_items % self.n_topics:
            raise ValueError(f"n_items {self.n_items} must be a multiple of {self.n_topics}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 ≤ min_length ≤ max_length, got {self.min_length}")
        if not 1 <= self.long_interests < self.n_topics:
            raise ValueError(f"long_interests must be in [1, n_topics), got {self.long_interests}")
        if (
            self.recall_share < 0
            or self.burst_share < 0
            or self.recall_share + self.burst_share > 1
        ):
            raise ValueError("recall_share and burst_share must be ≥ 0 with a sum ≤ 1")
        if min(self.burst_events, self.awake_events, self.dormant_events) < 1:
            raise ValueError("burst_events, awake_events and dormant_events must be ≥ 1")


@dataclass(frozen=True)
class LifelongData:
    """The generated log and its ground truth.

    Attributes:
        interactions: the events (item row i has external id str(i), rows 1..n_items).
        long_topics: (U, K) each user's long-term topics; weights: (U, K) their weights.
        kinds: (E,) int8 per event: 0 recurrence, 1 burst, 2 noise (flat, like the events).
    """

    config: LifelongConfig
    interactions: Interactions
    long_topics: NDArray[np.int64]
    weights: NDArray[np.float64]
    kinds: NDArray[np.int8]

    def topic_of(self, items: NDArray[np.int64]) -> NDArray[np.int64]:
        """Topic of item rows (1-based; row 0 is OOV and maps to -1)."""
        return item_topics(items, self.config.n_items, self.config.n_topics)


def _spells(rng: np.random.Generator, n: int, on: float, off: float) -> NDArray[np.bool_]:
    """(n,) bool: alternating awake / dormant spells (geometric lengths), random start."""
    out = np.zeros(n, dtype=bool)
    pos, awake = 0, bool(rng.random() < on / (on + off))
    while pos < n:
        length = int(rng.geometric(1.0 / (on if awake else off)))
        out[pos : pos + length] = awake
        pos, awake = pos + length, not awake
    return out


def _bursts(
    rng: np.random.Generator, cfg: LifelongConfig, n: int, free: NDArray[np.int64]
) -> NDArray[np.int64]:
    """(n,) the short-term burst topic in force at each event (a fresh topic per burst)."""
    out = np.empty(n, dtype=np.int64)
    pos = 0
    while pos < n:
        length = int(rng.geometric(1.0 / cfg.burst_events))
        out[pos : pos + length] = rng.choice(free)
        pos += length
    return out


def _user(
    rng: np.random.Generator, cfg: LifelongConfig, n: int, long_topics: NDArray, w: NDArray
) -> tuple[NDArray[np.int64], NDArray[np.int8]]:
    """Topics (n,) and kinds (n,) of one user's events."""
    K = long_topics.size
    awake = np.stack(
        [_spells(rng, n, cfg.awake_events, cfg.dormant_events) for _ in range(K)], 1
    )  # (n, K)
    nobody = ~awake.any(1)  # (n,) no long-term topic awake: the event is a burst instead
    awake[nobody] = True
    logits = np.where(awake, np.log(w)[None, :], -np.inf) + rng.gumbel(size=(n, K))
    recall = long_topics[np.argmax(logits, axis=1)]  # (n,)
    free = np.setdiff1d(np.arange(cfg.n_topics), long_topics)
    burst = _bursts(rng, cfg, n, free)
    noise = rng.choice(cfg.n_topics, size=n, p=zipf(cfg.n_topics, cfg.zipf_a))
    u = rng.random(n)
    kinds = np.where(
        u < cfg.recall_share, 0, np.where(u < cfg.recall_share + cfg.burst_share, 1, 2)
    )
    kinds[(kinds == 0) & nobody] = 1
    topics = np.choose(kinds, (recall, burst, noise))
    return topics.astype(np.int64), kinds.astype(np.int8)


def generate_lifelong(cfg: LifelongConfig) -> LifelongData:
    """Generate the log of ``cfg.n_users`` users; the same config gives the same data."""
    rng = np.random.default_rng(cfg.seed)
    per_topic = cfg.n_items // cfg.n_topics
    rank_p = zipf(per_topic, cfg.zipf_a)
    lengths = rng.integers(cfg.min_length, cfg.max_length + 1, size=cfg.n_users)
    long_topics = np.stack(
        [rng.choice(cfg.n_topics, cfg.long_interests, replace=False) for _ in range(cfg.n_users)]
    ).astype(np.int64)  # (U, K)
    weights = rng.dirichlet(np.full(cfg.long_interests, cfg.dirichlet), size=cfg.n_users)
    items, kinds, times = [], [], []
    for u, n in enumerate(int(x) for x in lengths):
        topics, kind = _user(rng, cfg, n, long_topics[u], weights[u])
        items.append(topics * per_topic + rng.choice(per_topic, size=n, p=rank_p) + 1)
        kinds.append(kind)
        times.append(T0 + rng.uniform(0, 86_400.0) + np.cumsum(rng.exponential(cfg.mean_gap_s, n)))
    inter = generated_interactions("l", items, times, cfg.n_items)
    return LifelongData(cfg, inter, long_topics, weights, np.concatenate(kinds))


def window_miss_rate(data: LifelongData, window: int) -> tuple[float, float]:
    """Over users' last events (the test targets) whose topic is one of their long-term topics:
    (share whose topic is absent from the last ``window`` events before it, share whose topic
    is present somewhere in the whole history before it)."""
    inter = data.interactions
    missed, present, total = 0, 0, 0
    for u in range(inter.n_users):
        lo, hi = int(inter.offsets[u]), int(inter.offsets[u + 1])
        topics = data.topic_of(inter.items[lo:hi])
        target = topics[-1]
        if target not in data.long_topics[u]:
            continue
        total += 1
        present += bool((topics[:-1] == target).any())
        missed += not bool((topics[max(0, hi - lo - 1 - window) : -1] == target).any())
    return missed / max(total, 1), present / max(total, 1)
