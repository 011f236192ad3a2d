"""What the quality study runs: rows, per-dataset settings, data samples and configs.

A :class:`Row` is one line of a result table: a label, the attention mode the model is
trained (and evaluated) in, the history it sees (``context`` events, None = the whole
history) and overrides of :class:`RankerConfig` / :class:`TrainConfig` fields. A
:class:`DatasetSettings` holds what depends on the dataset (user sample, training and
evaluation sizes). Everything here is plain data, so a job pickles to a worker process.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np

from model.config import AttentionMode, RankerConfig
from model.datasets import load_dataset
from model.events.interactions import Interactions
from model.lifelong import LifelongConfig
from model.train import TrainConfig

log = logging.getLogger(__name__)
_MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(RankerConfig))
_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


class Row(NamedTuple):
    """One table row: ``mode`` trained and evaluated on the last ``context`` events (None:
    the whole history, training capped at the dataset's ``train_len``), with ``overrides``
    of RankerConfig or TrainConfig fields (e.g. ``{"half_life_s": 86400.0}``)."""

    label: str
    mode: str
    context: int | None = None
    overrides: Mapping[str, Any] | None = None

    @property
    def fields(self) -> Mapping[str, Any]:
        """The overrides ({} when None)."""
        return self.overrides or {}


@dataclass(frozen=True)
class DatasetSettings:
    """Sizes of one dataset's runs.

    Attributes:
        users: users sampled (None: all); the ``long_users`` longest are always in it.
        train_len: longest training context of a whole-history row (events); evaluation
            always uses the whole history. None: the longest history (no cap).
        train: TrainConfig fields of every run (a field this TrainConfig lacks is dropped
            with a warning, so settings may name fields of a newer trainer).
        eval_negatives: None = whole catalogue minus seen items; k = k sampled items.
        eval_users: test users sampled (None: all with ≥ 3 events).
        lifelong: generator config of ``synthetic-lifelong``.
        cost_budget_s: CPU seconds spent timing one row's serving call (beyond a warm-up).
    """

    users: int | None = None
    long_users: int = 0
    train_len: int | None = None
    train: Mapping[str, Any] = field(default_factory=dict)
    eval_negatives: int | None = None
    eval_users: int | None = None
    lifelong: LifelongConfig = LifelongConfig()
    cost_budget_s: float = 0.5


class Job(NamedTuple):
    """One independent run: (dataset, settings, row, seed) plus the loader's options."""

    dataset: str
    settings: DatasetSettings
    row: Row
    seed: int
    columns: Mapping[str, str] | None = None
    sort: bool = False
    data_dir: str = "data"
    code: str = ""  # the code's version (``journal.code_version``): a journal reuses same-code runs


def train_config(job: Job, context: int) -> TrainConfig:
    """The run's TrainConfig: settings, then the row's train overrides, max_len = context."""
    wanted = {**job.settings.train, **job.row.fields}
    fields = {k: v for k, v in wanted.items() if k in _TRAIN_FIELDS}
    dropped = sorted(set(wanted) - _TRAIN_FIELDS - _MODEL_FIELDS)
    if dropped:
        log.warning("TrainConfig has no field(s) %s: ignored", dropped)
    base = {"seed": job.seed, "device": "cpu", "progress": False}
    return TrainConfig(**{**base, **fields, "max_len": context})


def model_config(job: Job, data: Interactions) -> RankerConfig:
    """The run's RankerConfig: the row's mode and model overrides on the defaults."""
    fields = {k: v for k, v in job.row.fields.items() if k in _MODEL_FIELDS}
    return RankerConfig(
        n_items=data.vocab.n_items,
        n_actions=data.vocab.n_actions,
        **{"mode": cast(AttentionMode, job.row.mode), **fields},
    )


def contexts(job: Job, data: Interactions) -> tuple[int, int]:
    """(training, evaluation) context lengths in events of the job's row."""
    whole = int(data.lengths.max())
    if job.row.context is not None:
        return min(job.row.context, whole), min(job.row.context, whole)
    cap = job.settings.train_len
    return (whole if cap is None else min(cap, whole)), whole


@functools.lru_cache(maxsize=2)
def _load(
    name: str,
    data_dir: str,
    lifelong: LifelongConfig,
    columns: tuple[tuple[str, str], ...] | None,
    sort: bool,
) -> Interactions:
    return load_dataset(
        name, data_dir, lifelong=lifelong, sort=sort, columns=dict(columns) if columns else None
    )


def dataset(job: Job) -> Interactions:
    """The job's data, sampled to ``settings.users`` users including the longest ones
    (deterministic: the sample does not depend on the seed, so seeds share it)."""
    s = job.settings
    cols = tuple(sorted(job.columns.items())) if job.columns else None
    data = _load(job.dataset, job.data_dir, s.lifelong, cols, job.sort)
    if s.users is None or data.n_users <= s.users:
        return data
    longest = np.argsort(-data.lengths, kind="stable")[: s.long_users]
    rest = np.setdiff1d(np.arange(data.n_users), longest)
    rng = np.random.default_rng(12_345)
    pick = np.concatenate((longest, rng.choice(rest, s.users - longest.size, replace=False)))
    return data.subset(np.sort(pick))
