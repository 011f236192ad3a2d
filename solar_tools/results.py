"""Typed answers of the solar HTTP API (docs/DESIGN.md §5) and the client's errors.

Each answer is a frozen dataclass built from the JSON body by ``from_json``; fields the
service adds later are ignored, a missing field raises :class:`SolarError`. No httpx, no
service import: this module only knows the wire format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BulkIngestResult",
    "IngestResult",
    "ItemId",
    "ItemsPage",
    "ModelInfo",
    "RankResult",
    "RankedItem",
    "SolarError",
    "SolarHTTPError",
    "SolarUnavailable",
    "UserInfo",
]

ItemId = int | str


class SolarError(RuntimeError):
    """The service could not be reached, or answered something that is not solar's API."""


class SolarHTTPError(SolarError):
    """A non-2xx answer: ``status``, the service's ``detail`` and its per-field ``errors``
    (``[{"field": "body.events.3.ts", "message": ..., "type": ...}, ...]`` for a 422)."""

    def __init__(
        self, status: int, detail: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.errors = list(errors or [])
        fields = ", ".join(e.get("field", "?") for e in self.errors)
        super().__init__(f"HTTP {status}: {detail}" + (f" ({fields})" if fields else ""))


class SolarUnavailable(SolarHTTPError):
    """503 still, after the client's bounded retries (store down, queue full, starting)."""


def _get(body: Mapping[str, Any], name: str) -> Any:
    try:
        return body[name]
    except (KeyError, TypeError) as exc:
        raise SolarError(f"unexpected answer: no {name!r} in {str(body)[:200]}") from exc


@dataclass(frozen=True)
class RankedItem:
    item_id: ItemId
    score: float  # the ranker's logit: higher is better


@dataclass(frozen=True)
class RankResult:
    """``POST /rank``: the best candidates first, and those outside the vocabulary."""

    user_id: str
    model_version: str
    mode: str
    history_length: int  # events absorbed into the user's factors
    items: tuple[RankedItem, ...]  # descending score
    unknown_items: tuple[ItemId, ...]

    @property
    def item_ids(self) -> list[ItemId]:
        return [item.item_id for item in self.items]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RankResult:
        items = tuple(RankedItem(i["item_id"], float(i["score"])) for i in _get(body, "items"))
        return cls(
            user_id=str(_get(body, "user_id")),
            model_version=str(_get(body, "model_version")),
            mode=str(_get(body, "mode")),
            history_length=int(_get(body, "history_length")),
            items=items,
            unknown_items=tuple(_get(body, "unknown_items")),
        )


@dataclass(frozen=True)
class IngestResult:
    """``POST /ingest`` of one request: events stored, events already known, users touched,
    and events refused as older than the user's dedup window remembers."""

    accepted: int
    duplicates: int
    users: int
    refused: int = 0

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> IngestResult:
        accepted, duplicates, users = (
            int(_get(body, k)) for k in ("accepted", "duplicates", "users")
        )
        return cls(accepted, duplicates, users, refused=int(body.get("refused", 0)))


@dataclass(frozen=True)
class BulkIngestResult:
    """Totals of many ``POST /ingest`` requests (a replay): events, requests, wall seconds."""

    accepted: int = 0
    duplicates: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def events(self) -> int:
        return self.accepted + self.duplicates

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class UserInfo:
    """``GET /users/{id}``: the stored factors of one user."""

    user_id: str
    history_length: int  # events applied to the factors
    pending: int  # events acknowledged, not applied yet
    rank: int  # served rank r
    singular_values: tuple[float, ...]  # the r served σ, descending
    residual_ratio: float  # ρ / (Σσ² + ρ): energy dropped by truncation
    last_ts: float | None  # unix seconds
    model_version: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> UserInfo:
        last_ts = _get(body, "last_ts")
        return cls(
            user_id=str(_get(body, "user_id")),
            history_length=int(_get(body, "history_length")),
            pending=int(body.get("pending", 0)),
            rank=int(_get(body, "rank")),
            singular_values=tuple(float(s) for s in _get(body, "singular_values")),
            residual_ratio=float(_get(body, "residual_ratio")),
            last_ts=None if last_ts is None else float(last_ts),
            model_version=str(_get(body, "model_version")),
        )


@dataclass(frozen=True)
class ModelInfo:
    """``GET /model``: the served model in a few numbers (the vocabulary: ``ItemsPage``)."""

    version: str
    d: int
    r: int
    oversample: int
    half_life_s: float | None
    vocabulary_size: int
    actions: tuple[str, ...]
    modes: tuple[str, ...]
    device: str
    default_mode: str = "svd"  # a /rank without a mode; servers before it existed: svd

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ModelInfo:
        half_life = _get(body, "half_life_s")
        return cls(
            version=str(_get(body, "version")),
            d=int(_get(body, "d")),
            r=int(_get(body, "r")),
            oversample=int(_get(body, "oversample")),
            half_life_s=None if half_life is None else float(half_life),
            vocabulary_size=int(_get(body, "vocabulary_size")),
            actions=tuple(str(a) for a in _get(body, "actions")),
            modes=tuple(str(m) for m in _get(body, "modes")),
            device=str(_get(body, "device")),
            default_mode=str(body.get("default_mode", "svd")),
        )


@dataclass(frozen=True)
class ItemsPage:
    """``GET /model/items``: ids ``offset .. offset+len(items)-1`` of ``total``."""

    offset: int
    limit: int
    total: int
    items: tuple[ItemId, ...] = field(default=())

    @property
    def last(self) -> bool:
        """No page after this one."""
        return self.offset + len(self.items) >= self.total or len(self.items) < self.limit

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ItemsPage:
        return cls(
            offset=int(_get(body, "offset")),
            limit=int(_get(body, "limit")),
            total=int(_get(body, "total")),
            items=tuple(_get(body, "items")),
        )
