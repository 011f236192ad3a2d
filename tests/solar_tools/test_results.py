"""Typed answers from JSON bodies: fields read and converted, new fields ignored, a missing
field a clear error."""

from __future__ import annotations

import pytest

from solar_tools.results import (
    BulkIngestResult,
    IngestResult,
    ItemsPage,
    ModelInfo,
    RankResult,
    SolarError,
    UserInfo,
)


def test_rank_result() -> None:
    body = {
        "user_id": "u",
        "model_version": "v",
        "mode": "svd",
        "history_length": 3,
        "items": [{"item_id": 7, "score": 1}, {"item_id": "a", "score": 0.5}],
        "unknown_items": ["zz"],
        "added_later": True,
    }
    result = RankResult.from_json(body)
    assert result.item_ids == [7, "a"] and result.items[0].score == 1.0
    assert result.unknown_items == ("zz",) and result.history_length == 3
    with pytest.raises(SolarError, match="no 'items'"):
        RankResult.from_json({k: v for k, v in body.items() if k != "items"})


def test_user_model_and_page() -> None:
    user = UserInfo.from_json(
        {
            "user_id": "u",
            "history_length": 2,
            "rank": 2,
            "singular_values": [2, 1],
            "residual_ratio": 0,
            "last_ts": None,
            "model_version": "v",
        }
    )
    assert user.singular_values == (2.0, 1.0) and user.last_ts is None
    document = {
        "version": "v",
        "d": 64,
        "r": 32,
        "dim": 64,
        "rank": 32,
        "oversample": 16,
        "half_life_s": None,
        "vocabulary_size": 9,
        "n_items": 10,
        "actions": ["click"],
        "modes": ["svd"],
        "device": "cpu",
    }
    model = ModelInfo.from_json(document)
    assert (model.d, model.r, model.vocabulary_size, model.actions) == (64, 32, 9, ("click",))
    assert model.default_mode == "svd"  # a server from before the field: svd
    lifelong = ModelInfo.from_json({**document, "modes": ["lifelong"], "default_mode": "lifelong"})
    assert lifelong.default_mode == "lifelong"
    page = ItemsPage.from_json({"offset": 0, "limit": 2, "total": 3, "items": [1, "b"]})
    assert not page.last and ItemsPage(2, 2, 3, ("c",)).last and ItemsPage(0, 5, 0).last
    assert IngestResult.from_json({"accepted": 1, "duplicates": 2, "users": 1}).duplicates == 2


def test_bulk_result_rates() -> None:
    assert BulkIngestResult(90, 10, 2, 2.0).events_per_s == 50.0
    assert BulkIngestResult().events_per_s == 0.0
