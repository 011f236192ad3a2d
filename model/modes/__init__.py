"""The attention modes, one registry (``model.modes.registry``): `svd`, `svd_exact`,
`softmax`, `elastic`, `linear`, `mean`.

Each mode is one object (:class:`Mode`) that knows its state kind, its training-path
attention, how to build a request's input from a user (:class:`UserSource`), how to pack a
batch of requests (the one packer of the service and of ``Ranker.score_requests``), which
fused pass scores it, and its FLOPs. Callers look the entry up once (:func:`mode_spec`) and
never branch on a mode's name.
"""

from model.modes.base import Mode, RankerInputError, ScoreRequest, UnknownModeError
from model.modes.inputs import LoggedEvents, UserArrays, UserSource
from model.modes.packing import Buffers, HostBuffers, PackedBatch
from model.modes.registry import (
    BASELINE_MODES,
    MODES,
    SERVING_MODES,
    mode_spec,
    served_modes,
    serving_flops,
    state_kind,
)

__all__ = [
    "BASELINE_MODES",
    "MODES",
    "SERVING_MODES",
    "Buffers",
    "HostBuffers",
    "LoggedEvents",
    "Mode",
    "PackedBatch",
    "RankerInputError",
    "ScoreRequest",
    "UnknownModeError",
    "UserArrays",
    "UserSource",
    "mode_spec",
    "served_modes",
    "serving_flops",
    "state_kind",
]
