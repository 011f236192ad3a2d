"""GET and DELETE /users/{user_id}: DELETE goes through the use case (``UserStates.forget``),
and a forgotten user is gone from the state and the log."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI

from service.api.deps import get_user_states
from service.core.users import UserStates
from tests.service.support import event, ingest

pytestmark = pytest.mark.anyio


@dataclass
class _Recorded(UserStates):
    """The app's ``UserStates``, recording who it was asked to forget."""

    forgotten: list[str] = field(default_factory=list)

    async def forget(self, user_id: str) -> bool:
        self.forgotten.append(user_id)
        return await super().forget(user_id)


async def test_delete_goes_through_the_use_case(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = app_client
    await ingest(client, [event("u1", 1, 100.0), event("u1", 2, 101.0)])
    state = app.state
    recorded = _Recorded(
        state.store, state.model, state.metrics, history=state.history, dedup_window=4_000
    )
    app.dependency_overrides[get_user_states] = lambda: recorded
    try:
        response = await client.delete("/users/u1")
        assert response.status_code == 200, response.text
        assert response.json() == {"user_id": "u1", "deleted": True}
        assert recorded.forgotten == ["u1"]
        assert (await client.delete("/users/u1")).json()["deleted"] is False
        assert recorded.forgotten == ["u1", "u1"]
    finally:
        app.dependency_overrides.clear()


async def test_a_deleted_user_is_gone_from_state_and_log(client: httpx.AsyncClient) -> None:
    await ingest(client, [event("u1", i, 100.0 + i) for i in range(1, 6)])
    assert (await client.get("/users/u1")).json()["history_length"] == 5
    assert (await client.delete("/users/u1")).json()["deleted"] is True
    assert (await client.get("/users/u1")).status_code == 404
    body = {"user_id": "u1", "candidates": [1, 2], "mode": "softmax"}
    rank = await client.post("/rank", json=body)
    assert rank.status_code == 200 and rank.json()["history_length"] == 0  # no log left either
    # The same events again are new events, not duplicates: the dedup data went too.
    again = await ingest(client, [event("u1", i, 100.0 + i) for i in range(1, 6)])
    assert (again["accepted"], again["duplicates"]) == (5, 0)
