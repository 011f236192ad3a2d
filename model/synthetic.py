"""Synthetic long histories with known ground truth (deterministic by seed).

Items belong to topics (``n_items / n_topics`` each); popularity is Zipf both across topics
and within a topic. Each user holds ``interests`` active topics that drift: every
``drift_events`` events one interest jumps to a new topic. Which interest produces an event
follows daily and weekly cycles (per-user phases), so the mix depends on the time of day and
the day of the week. A share ``noise`` of the events comes from global popularity.

Ground truth: :func:`engagement_probability` gives P(item | user, t) of the generator, and an
item is *relevant* at t when its topic is one of the user's active interests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from model.events.interactions import Interactions
from model.vocabulary import Vocabulary

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
T0 = 1_600_000_000.0  # unix seconds of the first events


@dataclass(frozen=True)
class SyntheticConfig:
    """Generator parameters. Lengths are events per user; times in seconds."""

    n_users: int = 200
    n_items: int = 4_000
    n_topics: int = 80
    interests: int = 4
    min_length: int = 1_000
    max_length: int = 2_000
    mean_gap_s: float = 900.0
    drift_events: int = 400
    zipf_a: float = 1.1
    cycle_strength: float = 1.5
    noise: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_items % self.n_topics:
            raise ValueError(f"n_items {self.n_items} must be a multiple of {self.n_topics}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 ≤ min_length ≤ max_length: {self.min_length}")
        if not 1 <= self.interests <= self.n_topics:
            raise ValueError(f"interests must be in [1, n_topics], got {self.interests}")


@dataclass(frozen=True)
class SyntheticData:
    """The generated log plus the generator's hidden state (the ground truth).

    Attributes:
        interactions: the events (item rows 1..n_items; item row i has external id str(i)).
        topics: per user, (S_u, K) active topics of each drift segment.
        phases: (U, K, 2) daily and weekly phases (fractions of a cycle).
        starts: (U,) time of each user's first event.
    """

    config: SyntheticConfig
    interactions: Interactions
    topics: list[NDArray[np.int64]]
    phases: NDArray[np.float64]
    starts: NDArray[np.float64]

    def topic_of(self, items: NDArray[np.int64]) -> NDArray[np.int64]:
        """Topic of item rows (1-based rows; row 0 is OOV and maps to -1)."""
        return item_topics(items, self.config.n_items, self.config.n_topics)


def item_topics(items: NDArray[np.int64], n_items: int, n_topics: int) -> NDArray[np.int64]:
    """Topic of item rows (B,) when ``n_items`` are split into ``n_topics`` equal blocks
    (1-based rows; row 0 is OOV and maps to -1). Shared by the generators."""
    per_topic = n_items // n_topics
    return np.where(items > 0, (items - 1) // per_topic, -1)


def zipf(n: int, a: float) -> NDArray[np.float64]:
    """(n,) Zipf probabilities ∝ 1 / rank^a."""
    p = 1.0 / np.arange(1, n + 1) ** a
    return p / p.sum()


def generated_interactions(
    prefix: str, items: list[NDArray[np.int64]], times: list[NDArray[np.float64]], n_items: int
) -> Interactions:
    """The Interactions of generated users (per user: item rows and times, no actions), user
    ids ``{prefix}{u}``, over the vocabulary "1".."n_items"."""
    lengths = np.array([x.shape[0] for x in items], dtype=np.int64)
    return Interactions(
        users=tuple(f"{prefix}{u}" for u in range(len(items))),
        offsets=np.concatenate(([0], np.cumsum(lengths))).astype(np.int64),
        items=np.concatenate(items).astype(np.int64),
        actions=np.zeros(int(lengths.sum()), dtype=np.int64),
        ts=np.concatenate(times),
        vocab=Vocabulary(tuple(str(i) for i in range(1, n_items + 1))),
    )


def _interest_logits(phases: NDArray[np.float64], ts: NDArray[np.float64], c: float) -> NDArray:
    """(K, 2) phases, (N,) times → (N, K) logits of the daily and weekly cycles."""
    day = np.cos(2 * np.pi * (ts[:, None] / DAY_S - phases[None, :, 0]))
    week = np.cos(2 * np.pi * (ts[:, None] / WEEK_S - phases[None, :, 1]))
    return c * (day + 0.5 * week)


def _segment_topics(
    rng: np.random.Generator, cfg: SyntheticConfig, n_segments: int, topic_p: NDArray
) -> NDArray[np.int64]:
    """(S, K) topics: K distinct at start; each segment one interest moves to a new topic."""
    current = rng.choice(cfg.n_topics, size=cfg.interests, replace=False, p=topic_p)
    segments = [current.copy()]
    for _ in range(1, n_segments):
        slot = rng.integers(cfg.interests)
        free = np.setdiff1d(np.arange(cfg.n_topics), current)
        if free.size:
            p = topic_p[free] / topic_p[free].sum()
            current[slot] = rng.choice(free, p=p)
        segments.append(current.copy())
    return np.stack(segments).astype(np.int64)


def _user_events(
    rng: np.random.Generator, cfg: SyntheticConfig, topics: NDArray, phases: NDArray, n: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Item rows (n,) and times (n,) of one user."""
    per_topic = cfg.n_items // cfg.n_topics
    ts = T0 + rng.uniform(0, WEEK_S) + np.cumsum(rng.exponential(cfg.mean_gap_s, size=n))
    logits = _interest_logits(phases, ts, cfg.cycle_strength)  # (n, K)
    k = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)  # (n,)
    topic = topics[np.arange(n) // cfg.drift_events, k]
    noisy = rng.random(n) < cfg.noise
    topic[noisy] = rng.choice(cfg.n_topics, size=int(noisy.sum()), p=zipf(cfg.n_topics, cfg.zipf_a))
    rank = rng.choice(per_topic, size=n, p=zipf(per_topic, cfg.zipf_a))
    return (topic * per_topic + rank + 1).astype(np.int64), ts


def generate(cfg: SyntheticConfig) -> SyntheticData:
    """Generate the log of ``cfg.n_users`` users; the same config gives the same data."""
    rng = np.random.default_rng(cfg.seed)
    topic_p = zipf(cfg.n_topics, 0.5)  # mild popularity skew of the interests themselves
    lengths = rng.integers(cfg.min_length, cfg.max_length + 1, size=cfg.n_users)
    phases = rng.random((cfg.n_users, cfg.interests, 2))
    all_topics, items, times = [], [], []
    for u, n in enumerate(lengths):
        topics = _segment_topics(rng, cfg, -(-int(n) // cfg.drift_events), topic_p)
        it, ts = _user_events(rng, cfg, topics, phases[u], int(n))
        all_topics.append(topics)
        items.append(it)
        times.append(ts)
    inter = generated_interactions("s", items, times, cfg.n_items)
    return SyntheticData(cfg, inter, all_topics, phases, np.array([t[0] for t in times]))


def active_topics(data: SyntheticData, user: int, event_index: int) -> NDArray[np.int64]:
    """(K,) topics of ``user``'s interests when it produces its ``event_index``-th event."""
    topics = data.topics[user]
    return topics[min(event_index // data.config.drift_events, topics.shape[0] - 1)]


def engagement_probability(
    data: SyntheticData, user: int, event_index: int, t: float, items: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Generator probability (M,) that ``user``'s event number ``event_index`` at time t
    (seconds) is each of the item rows ``items`` (M,)."""
    cfg = data.config
    per_topic = cfg.n_items // cfg.n_topics
    logits = _interest_logits(data.phases[user], np.array([t]), cfg.cycle_strength)[0]  # (K,)
    pi = np.exp(logits - logits.max())
    pi /= pi.sum()
    topic = data.topic_of(items)
    rank_p = zipf(per_topic, cfg.zipf_a)[np.maximum(items - 1, 0) % per_topic]
    active = active_topics(data, user, event_index)
    interest_p = (topic[:, None] == active[None, :]).astype(np.float64) @ pi  # (M,)
    noise_p = zipf(cfg.n_topics, cfg.zipf_a)[np.maximum(topic, 0)]
    # Gumbel-max picks interest k with softmax(logits): P(topic) = Σ_k π_k [topic = topic_k].
    p = ((1 - cfg.noise) * interest_p + cfg.noise * noise_p) * rank_p
    return np.where(items > 0, p, 0.0)


def relevant(data: SyntheticData, user: int, event_index: int, items: NDArray) -> NDArray:
    """(M,) bool: the item's topic is one of the user's interests at that event."""
    return np.isin(data.topic_of(items), active_topics(data, user, event_index))
