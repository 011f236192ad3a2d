"""The registry: one entry per attention mode, looked up once by name.

Adding a mode is one new entry in :data:`MODES` (an object with the :class:`Mode` interface;
the :class:`~model.config.RankerConfig` ``AttentionMode`` type names it too). Everything else
derives from the entries: the state each trained mode keeps, the modes a model serves, the
baseline modes with layers of their own.
"""

from __future__ import annotations

from model.config import RankerConfig
from model.flops import PassFlops
from model.modes.base import Mode, UnknownModeError
from model.modes.channels import LifelongMode
from model.modes.history import HistoryMode
from model.modes.summary import LinearMode, MeanMode
from model.modes.tokens import ElasticMode, SvdMode

__all__ = [
    "BASELINE_MODES",
    "MODES",
    "SERVING_MODES",
    "mode_spec",
    "served_modes",
    "serving_flops",
    "state_kind",
]

_ENTRIES: tuple[Mode, ...] = (
    SvdMode(),
    HistoryMode("svd_exact", projected=True),
    HistoryMode("softmax", projected=False),
    ElasticMode(),
    LinearMode(),
    MeanMode(),
    LifelongMode(),
)
MODES: dict[str, Mode] = {mode.name: mode for mode in _ENTRIES}


def mode_spec(name: str) -> Mode:
    """The registry's entry for ``name``.

    Raises:
        UnknownModeError: no such mode (the message lists the known ones).
    """
    mode = MODES.get(name)
    if mode is None:
        raise UnknownModeError(f"unknown attention mode {name!r}; known modes: {', '.join(MODES)}")
    return mode


def state_kind(mode: str) -> str:
    """The kind of per-user state a model trained in ``mode`` keeps (svd, elastic, ...)."""
    return mode_spec(mode).state_kind


def served_modes(mode: str, svd_readout: bool = False) -> tuple[str, ...]:
    """The /rank modes a model trained in ``mode`` serves: those of its state kind (svd,
    svd_exact and softmax from the factors and the log; a baseline only its own), and with
    an svd read-out (`lifelong`'s ``svd_readout``, whose state holds the factors) the svd
    family too."""
    kinds = {state_kind(mode), "svd"} if svd_readout else {state_kind(mode)}
    return tuple(name for name, entry in MODES.items() if entry.state_kind in kinds)


def serving_flops(
    config: RankerConfig, mode: str, candidates: int, rank: int, history: int = 0
) -> PassFlops:
    """FLOPs of scoring ``candidates`` (M) for one user in ``mode`` (``Mode.flops``).

    Args:
        config: the ranker's shapes (d, heads, hidden width, k dispatcher tokens).
        rank: served r. history: N, for the modes that read the log.
    """
    return mode_spec(mode).flops(config, candidates, rank, history)


# The modes served from the svd factors (and the event log), and the baselines, each of which
# owns layers (``model.heads``) and a state kind of its own.
SERVING_MODES: tuple[str, ...] = served_modes("svd")
BASELINE_MODES: tuple[str, ...] = tuple(name for name, m in MODES.items() if m.head is not None)
