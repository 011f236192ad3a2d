"""The user-state family (docs/DESIGN.md §2): every kind of per-user compressed state.

- ``svd``: the truncated-SVD factors of the weighted history (:class:`LowRankState`, with
  the hybrid's window of latest events; ``model.states.svd``),
- ``elastic``: the ELASTIC dispatcher's online-softmax tokens (:class:`ElasticState`),
- ``linear``: the FuXi-Linear retention sums (:class:`LinearState`),
- ``mean``: the weighted mean row (:class:`MeanState`).

Each implements :class:`UserState` (``base``), ages with the one decay clock
(:class:`Decay`, ``base.advance``), raises :class:`StateError` (:class:`StateFormatError` for
a bad blob) and writes the one blob format of ``blob`` (which also reads the svd formats 1
and 2 of earlier releases); :func:`decode_user_state` reads any blob back to its kind. A
:class:`StateBuilder` (``make_builder``) creates and updates a model's kind from the events
and gives the scoring pass what it reads, so the service treats every kind alike.
:func:`warm_up_kernels` compiles the svd kind's numba kernels (``svd.brand``) before a
process's first update needs them.
"""

from model.states.base import Decay, UserState
from model.states.builders import StateBuilder, make_builder
from model.states.elastic import ElasticState
from model.states.errors import StateError, StateFormatError
from model.states.kinds import decode_user_state
from model.states.linear import LinearState
from model.states.mean import MeanState
from model.states.svd.brand import warm_up as warm_up_kernels
from model.states.svd.recent import RecentEvents
from model.states.svd.state import LowRankState

__all__ = [
    "Decay",
    "ElasticState",
    "LinearState",
    "LowRankState",
    "MeanState",
    "RecentEvents",
    "StateBuilder",
    "StateError",
    "StateFormatError",
    "UserState",
    "decode_user_state",
    "make_builder",
    "warm_up_kernels",
]
