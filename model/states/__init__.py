"""The compressed-state family (DESIGN §2): svd factors, ELASTIC, FuXi-Linear, mean."""

from model.states.base import UserState
from model.states.builders import StateBuilder, make_builder
from model.states.codec import decode_user_state
from model.states.elastic import ElasticState
from model.states.linear import LinearState
from model.states.mean import MeanState

__all__ = [
    "ElasticState",
    "LinearState",
    "MeanState",
    "StateBuilder",
    "UserState",
    "decode_user_state",
    "make_builder",
]
