"""Model rollouts on real processes (docs/DESIGN.md §3, "Rollouts"): a real Redis, a private
PostgreSQL history, `solar serve` on two models (random checkpoints that differ by seed),
`solar worker` and `solar backfill`, killed with real signals.

- A rolling deploy under ingest keeps exactly-once for both versions, a history longer than
  16,384 events included (never truncated), and neither version rebuilds the other's states
  while replicas on A and B alternate (no ping-pong); retiring A deletes A's states.
- A backfill SIGKILLed halfway resumes and completes.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from model.checkpoint import checkpoint_version
from model.states import LowRankState
from solar_tools.processes import Backfill, Process, Serve, Worker
from tests.service.support import event, gram, reference_state

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LONG = 16_384 + 700  # one user's history past the old log cap


def _env(model: Path, url: str, history: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "SOLAR_MODEL_PATH": str(model),
        "SOLAR_REDIS_URL": url,
        "SOLAR_HISTORY_URL": history["history_url"],
        "SOLAR_HISTORY_SCHEMA": history["history_schema"],
        "SOLAR_APPLIER": "external",
        "SOLAR_MAX_WAIT_MS": "1",
        "SOLAR_APPLY_LEASE_S": "1",
        "SOLAR_HALF_LIFE_S": "0",
        "SOLAR_WARMUP": "false",
        **extra,
    }


def _events(users: list[str], per_user: int, start: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        event(u, rng.choice([*range(1, 41), "alpha"]), 1_000.0 + j, None, f"{u}-{j}")
        for j in range(start, start + per_user)
        for u in users
    ]


def _post(base: str, events: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(0, len(events), 1_000):
            response = client.post("/ingest", json={"events": events[i : i + 1_000]})
            assert response.status_code == 200, response.text


def _users_view(base: str, user: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{base}/users/{user}", timeout=10).json()
    return body


def _wait_applied(base: str, expected: dict[str, int], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    for user, n in expected.items():
        while True:
            body = _users_view(base, user)
            if body.get("pending") == 0 and body.get("history_length") == n:
                break
            assert time.monotonic() < deadline, f"{user} on {base}: {body}, expected {n}"
            time.sleep(0.1)


def _metric(base: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _state(raw: redis.Redis, user: str, version: str) -> tuple[LowRankState | None, int]:
    blob = raw.get(f"solar:{{{user}}}:state:{version}")
    applied = raw.hget(f"solar:{{{user}}}:pos", f"applied:{version}")
    state = None if blob is None else LowRankState.from_bytes(blob)
    return state, int(applied or 0)


def test_a_rolling_deploy_keeps_exactly_once_without_ping_pong_and_retires_a(
    checkpoint_dir: Path,
    other_checkpoint_dir: Path,
    redis_url: str,
    tmp_path: Path,
    shared_history: dict[str, str],
) -> None:
    model_a, model_b = checkpoint_dir, other_checkpoint_dir
    version_a, version_b = checkpoint_version(model_a), checkpoint_version(model_b)
    env_a = _env(model_a, redis_url, shared_history)
    env_b = _env(model_b, redis_url, shared_history)
    users = [f"r{i}" for i in range(8)]
    sent = _events(users, 30, 0, seed=1) + _events(["long"], LONG, 0, seed=2)
    worker = Worker(env_a, tmp_path / "worker-a.log")
    serve_a = Serve(env_a, tmp_path / "serve-a.log")
    serve_b: Serve | None = None
    try:
        _post(serve_a.base, sent)
        # Ingest goes on while B is backfilled: the appliers keep B current from its start.
        during = _events(users, 20, 30, seed=3) + _events(["long"], 50, LONG, seed=4)
        feeder = threading.Thread(target=lambda: (time.sleep(1.0), _post(serve_a.base, during)))
        feeder.start()
        backfill = Backfill(env_a, tmp_path / "backfill.log", model_b, "--processes", "2")
        assert backfill.wait(240) == 0, backfill.tail()
        feeder.join()
        sent += during
        serve_b = Serve(env_b, tmp_path / "serve-b.log")
        after = _events(users, 10, 50, seed=5)
        _post(serve_b.base, after)
        sent += after
        expected = {u: sum(e["user_id"] == u for e in sent) for u in [*users, "long"]}
        assert expected["long"] == LONG + 50
        _wait_applied(serve_a.base, expected)
        _wait_applied(serve_b.base, expected)
        # Replicas on A and B alternate on the same users: nobody rebuilds anything.
        for _ in range(3):
            for user in [*users, "long"]:
                for serve, version in ((serve_a, version_a), (serve_b, version_b)):
                    body = {"user_id": user, "candidates": list(range(1, 41))}
                    answer = httpx.post(f"{serve.base}/rank", json=body, timeout=10).json()
                    assert answer["model_version"] == version
                    assert answer["history_length"] == expected[user]  # never truncated
        for serve in (serve_a, serve_b):
            assert _metric(serve.base, "solar_state_rebuilds_total") == 0
        assert worker.metric("solar_state_rebuilds_total") == 0
        raw = redis.Redis.from_url(redis_url)
        try:
            for user in [*users, "long"]:
                mine = [e for e in sent if e["user_id"] == user]
                for model, version in ((model_a, version_a), (model_b, version_b)):
                    state, applied = _state(raw, user, version)
                    assert state is not None and state.n == applied == len(mine), (user, version)
                    if user != "long":
                        ref = reference_state(str(model), mine)
                        np.testing.assert_allclose(gram(state), gram(ref), rtol=1e-5, atol=1e-5)
            # Retire A in the documented order: its replicas (serve and worker) first.
            serve_a.stop()
            worker.stop()
            worker = Worker(env_b, tmp_path / "worker-b.log")
            time.sleep(3.5)  # A's last registration is older than three leases
            retire = Process("retire", env_b, tmp_path / "retire.log", "--model", str(model_a))
            assert retire.proc.wait(timeout=60) == 0, retire.tail()
            assert not list(raw.scan_iter(match=f"solar:{{*}}:state:{version_a}"))
            assert version_a.encode() not in raw.hkeys("solar:models")
            assert len(list(raw.scan_iter(match=f"solar:{{*}}:state:{version_b}"))) == 9
            _post(serve_b.base, _events(users, 1, 60, seed=6))
            _wait_applied(serve_b.base, {u: expected[u] + 1 for u in users})
        finally:
            raw.close()
    finally:
        if serve_b is not None:
            serve_b.stop()
        serve_a.stop()
        worker.stop()


def test_a_backfill_killed_halfway_resumes_and_completes(
    checkpoint_dir: Path,
    other_checkpoint_dir: Path,
    redis_url: str,
    tmp_path: Path,
    shared_history: dict[str, str],
) -> None:
    version_b = checkpoint_version(other_checkpoint_dir)
    # No sweep during the test: a sweep applies every registered version, the backfill's too.
    env = _env(
        checkpoint_dir,
        redis_url,
        shared_history,
        SOLAR_APPLIER="inline",
        SOLAR_SWEEP_GRACE_S="600",
    )
    users = [f"k{i}" for i in range(64)]
    serve = Serve(env, tmp_path / "serve.log")
    try:
        _post(serve.base, _events(users, 40, 0, seed=7))
        slow = Backfill(
            env, tmp_path / "slow.log", other_checkpoint_dir, "--max-events-per-s", "400"
        )
        raw = redis.Redis.from_url(redis_url)
        meta = f"solar:{{backfill:{version_b}}}:meta"
        try:
            deadline = time.monotonic() + 60
            while int(raw.hget(meta, "done") or 0) < 8:
                assert slow.proc.poll() is None, slow.tail()
                assert time.monotonic() < deadline, slow.tail()
                time.sleep(0.05)
            slow.kill()  # halfway: some items done, one taken and not done
            done = int(raw.hget(meta, "done") or 0)
            assert 0 < done < len(users)
            again = Backfill(
                env, tmp_path / "again.log", other_checkpoint_dir, "--claim-idle-s", "0.5"
            )
            assert again.wait(120) == 0, again.tail()
            assert "resuming" in again.log.read_text()
            assert int(raw.hget(meta, "done") or 0) == int(raw.hget(meta, "total") or 0) == 64
            for user in users:
                state, applied = _state(raw, user, version_b)
                assert state is not None and state.n == applied == 40, user
        finally:
            raw.close()
    finally:
        serve.stop()
