"""End to end: `solar serve` as a real uvicorn process on a free port, with real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from solar_tools.redis_server import free_port
from tests.service.support import event

pytestmark = pytest.mark.e2e

STARTUP_TIMEOUT_S = 60.0


@pytest.fixture
def server(checkpoint_dir: Path, redis_url: str, tmp_path: Path) -> Iterator[str]:
    """`python -m service.cli serve` on 127.0.0.1:<free port>; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "SOLAR_MODEL_PATH": str(checkpoint_dir),
        "SOLAR_REDIS_URL": redis_url,
        "SOLAR_API_TOKEN": "e2e-token",
        "SOLAR_MAX_WAIT_MS": "1",
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, tmp_path / "server.log")
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"solar serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"solar serve not ready after {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


def test_serve_end_to_end(server: str) -> None:
    auth = {"Authorization": "Bearer e2e-token"}
    with httpx.Client(base_url=server, timeout=10.0, headers=auth) as client:
        events = [event("e2e", i, 100.0 + i, "click") for i in range(1, 21)]
        response = client.post("/ingest", json={"events": events[:10]})
        assert response.json() == {"accepted": 10, "duplicates": 0, "users": 1, "refused": 0}
        ndjson = "\n".join(json.dumps(e) for e in events[5:])
        response = client.post(
            "/ingest?wait=true", content=ndjson, headers={"content-type": "application/x-ndjson"}
        )
        assert response.json() == {"accepted": 10, "duplicates": 5, "users": 1, "refused": 0}
        for mode in ("svd", "svd_exact", "softmax"):
            response = client.post(
                "/rank",
                json={
                    "user_id": "e2e",
                    "candidates": [1, 2, 3, "alpha", 77],
                    "top_k": 3,
                    "mode": mode,
                },
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["history_length"] == 20 and len(body["items"]) == 3
            assert body["unknown_items"] == [77]
        assert client.get("/users/e2e").json()["history_length"] == 20
        assert (
            client.post(
                "/rank",
                json={"user_id": "x", "candidates": [1]},
                headers={"Authorization": "Bearer no"},
            ).status_code
            == 401
        )
        metrics = client.get("/metrics").text
        assert 'solar_request_duration_seconds_count{route="/rank",status="200"} 3.0' in metrics
        assert 'solar_ingest_events_total{result="duplicate"} 5.0' in metrics
        assert client.get("/docs").status_code == 200


def test_sigterm_shuts_down_cleanly(checkpoint_dir: Path, redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SOLAR_MODEL_PATH": str(checkpoint_dir), "SOLAR_REDIS_URL": redis_url}
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(f"http://127.0.0.1:{port}", proc, log_path)
            proc.send_signal(signal.SIGTERM)
            # uvicorn re-raises the captured signal once it has shut down.
            assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    assert "Application shutdown complete" in text and "Traceback" not in text
