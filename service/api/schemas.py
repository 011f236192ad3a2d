"""Request and response bodies of the HTTP API (docs/DESIGN.md §5), with descriptions for /docs.

Limits that depend on settings (candidates and events per request) are checked by the routes
and answered with 413; everything else malformed is a 422 naming the field.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
)

from service.core.items import ITEM_ID_ERROR, MAX_ITEM_ID_LENGTH, item_id_or_none
from service.user_ids import MAX_USER_ID_LENGTH, USER_ID_REGEX, USER_ID_RULE

__all__ = [
    "MAX_ITEMS_PAGE",
    "MAX_TOP_K",
    "ErrorResponse",
    "Event",
    "FieldError",
    "Health",
    "IngestRequest",
    "IngestResponse",
    "ItemsPage",
    "CandidateId",
    "ItemId",
    "Mode",
    "ModelInfo",
    "RankRequest",
    "RankResponse",
    "RankedItem",
    "UserDeleted",
    "UserId",
    "UserInfo",
]

MAX_TOP_K = 10_000
MAX_ITEMS_PAGE = 10_000  # GET /model/items: the largest `limit` (422 above)

UserId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_USER_ID_LENGTH,
        pattern=USER_ID_REGEX,
        description=f"{USER_ID_RULE} (no braces)",
        examples=["u1"],
    ),
]


def _whole(value: object) -> object:
    """JSON Schema counts 3.0 as an integer: accept it as 3 (3.5 stays a float and fails)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _item_id(value: object) -> int | str:
    """An integer (not a bool) or a 1-256 character string; one error location per item."""
    item = item_id_or_none(value)
    if item is None:
        raise ValueError(ITEM_ID_ERROR)
    return item


_ITEM_ID_SCHEMA = {
    "anyOf": [
        {"type": "integer"},
        {"type": "string", "minLength": 1, "maxLength": MAX_ITEM_ID_LENGTH},
    ],
    "description": "item id as in the model's vocabulary: an integer or a string",
}
ItemId = Annotated[int | str, PlainValidator(_item_id), WithJsonSchema(_ITEM_ID_SCHEMA)]
# Candidates are type-checked by `service.core.items.candidate_rows` in the same pass that maps
# them to model rows (thousands per request: a per-item Python validator would cost twice that).
CandidateId = Annotated[Any, WithJsonSchema(_ITEM_ID_SCHEMA)]


TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K), BeforeValidator(_whole)]


class Mode(str, Enum):
    """Attention mode used to score the candidates (a model serves some of them: GET /model)."""

    svd = "svd"
    svd_exact = "svd_exact"
    softmax = "softmax"
    elastic = "elastic"
    linear = "linear"
    mean = "mean"
    lifelong = "lifelong"


class _Strict(BaseModel):
    """Request bodies: unknown fields and type coercions (``"1.5"``, ``true`` as a number) are
    refused, so what the schema documents is exactly what is accepted."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RankRequest(_Strict):
    user_id: UserId
    candidates: list[CandidateId] = Field(
        min_length=1,
        description="candidate item ids to score (at most SOLAR_MAX_CANDIDATES, else 413)",
    )
    top_k: TopK | None = Field(
        None, description="return the k best candidates; default: all, best first"
    )
    mode: Mode | None = Field(
        None,
        strict=False,  # FastAPI validates parsed JSON: the enum arrives as a string
        description="default: the loaded model's trained mode (GET /model: default_mode). "
        "svd: factors only (fast); svd_exact: softmax over all events through "
        "the factors; softmax: full attention over the event log (exact baseline); elastic, "
        "linear, mean: the compressed state of a model trained in that mode; lifelong: the "
        "factors and the latest events in two channels, for a model trained so (with an "
        "svd read-out it serves svd, svd_exact and softmax too). A mode the loaded model "
        "does not serve is a 422 naming the served ones (GET /model)",
    )


class RankedItem(BaseModel):
    item_id: ItemId
    score: float = Field(description="logit of the scoring MLP (higher is better)")


class RankResponse(BaseModel):
    user_id: str
    model_version: str = Field(description="content hash of the checkpoint that scored")
    mode: Mode
    history_length: int = Field(description="events absorbed into the user's factors")
    items: list[RankedItem] = Field(description="top candidates, descending score")
    unknown_items: list[ItemId] = Field(
        description="candidates outside the vocabulary, scored through the shared OOV row"
    )


# 2100-01-01 in unix seconds. With decay, one event dated far ahead (a timestamp in
# milliseconds, say) would move t_ref there and decay every earlier event to nothing.
MAX_TS = 4_102_444_800.0


class Event(_Strict):
    user_id: UserId
    item_id: ItemId
    ts: float = Field(
        ge=0,
        le=MAX_TS,
        allow_inf_nan=False,
        description="event time, unix seconds (≤ 2100-01-01: milliseconds are refused)",
    )
    action: str | None = Field(
        None, min_length=1, max_length=64, description="action name, e.g. click; none: plain"
    )
    event_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="idempotency key; without it (user, item, ts, action) identifies the event",
    )


class IngestRequest(_Strict):
    events: list[Event] = Field(
        min_length=1, description="events to absorb (at most SOLAR_MAX_EVENTS, else 413)"
    )


class IngestResponse(BaseModel):
    accepted: int = Field(description="new events stored (applied to the factors shortly after)")
    duplicates: int = Field(
        description="events already among the user's last W events (same event_id, or without "
        "one the same item, ts and action): not stored again"
    )
    users: int = Field(description="distinct users in the request")
    refused: int = Field(
        default=0,
        description="events older than the user's dedup window remembers (ts at or before the "
        "newest ts that left it): not stored, since they may be re-sends of forgotten events",
    )


class UserInfo(BaseModel):
    user_id: str
    history_length: int = Field(description="events applied to the factors")
    pending: int = Field(description="events acknowledged but not applied yet")
    rank: int = Field(description="served rank r (svd); dispatcher tokens k (elastic); 0 else")
    singular_values: list[float] = Field(
        description="the r served singular values σ_1 ≥ … ≥ σ_r; 0 past the history's rank "
        "(fewer than r independent events); empty for states other than svd"
    )
    residual_ratio: float = Field(description="ρ / (Σσ² + ρ): energy dropped by truncation")
    last_ts: float | None = Field(description="latest event time, unix seconds")
    model_version: str = Field(description="model whose embeddings produced the factors")
    state_kind: str = Field(
        description="kind of the stored state: svd, lifelong, elastic, linear or mean"
    )
    state_bytes: int = Field(description="size of the stored state blob, bytes")


class UserDeleted(BaseModel):
    user_id: str
    deleted: bool = Field(description="False when the user was not stored")


class ModelInfo(BaseModel):
    """The loaded model in a few numbers; the vocabulary itself is paged by /model/items."""

    version: str = Field(description="content hash of the checkpoint")
    d: int = Field(description="embedding dimension d")
    r: int = Field(description="served rank r (interest tokens per user)")
    dim: int = Field(description="embedding dimension d (same as `d`)")
    rank: int = Field(description="served rank r (same as `r`)")
    oversample: int = Field(description="extra factors p kept by each state (ℓ = r + p)")
    half_life_s: float | None = Field(description="recency half-life, seconds; None: no decay")
    vocabulary_size: int = Field(description="item ids in the vocabulary (GET /model/items)")
    n_items: int = Field(description="rows of the item table: vocabulary_size + the OOV row")
    actions: list[str] = Field(description="action names the model knows (others: no action)")
    modes: list[Mode] = Field(description="attention modes /rank serves for this model")
    default_mode: Mode = Field(description="the mode of a /rank without one: the trained mode")
    state_kind: str = Field(
        description="per-user state kept: svd, lifelong, elastic, linear or mean"
    )
    device: str = Field(description="torch device scoring the candidates")


class ItemsPage(BaseModel):
    """One page of the vocabulary, in row order (stable for a model version)."""

    offset: int = Field(description="index of the first id of this page")
    limit: int = Field(description="page size asked for")
    total: int = Field(description="vocabulary size (ids over all pages)")
    items: list[ItemId] = Field(description="item ids, decimal ids as integers; empty past the end")


class Health(BaseModel):
    status: str


class FieldError(BaseModel):
    field: str = Field(description="dotted location, e.g. body.events.3.ts")
    message: str
    type: str


class ErrorResponse(BaseModel):
    detail: str
    errors: list[FieldError] = Field(default_factory=list)
