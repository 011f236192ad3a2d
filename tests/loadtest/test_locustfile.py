"""The locust load: its pure parts in-process, and one short headless run against a stub.

locust monkey-patches the standard library (gevent) when imported, so the locustfile itself
only ever runs in a subprocess; ``loadtest/workload.py`` holds what can be tested here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import ServeHttp

ROOT = Path(__file__).resolve().parents[2]
LOADTEST = ROOT / "loadtest"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"loadtest_{name}", LOADTEST / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


workload = _load("workload")
compare = _load("compare")
server_metrics = _load("server_metrics")


def _config(**env: str) -> Any:
    return workload.LoadConfig(env)


def test_defaults_match_the_issue() -> None:
    c = _config()
    assert (c.rank_weight, c.ingest_weight) == (80, 20)
    assert (c.candidates, c.top_k, c.max_events, c.mode) == (2048, 100, 50, "svd")
    assert c.rate == 100 and c.users == 20


def test_env_overrides_and_validation() -> None:
    c = _config(SOLAR_LT_CANDIDATES="10", SOLAR_LT_MODE="softmax", SOLAR_LT_RATE="0")
    assert (c.candidates, c.mode, c.rate) == (10, "softmax", 0)
    with pytest.raises(ValueError):
        _config(SOLAR_LT_RANK_WEIGHT="0", SOLAR_LT_INGEST_WEIGHT="0")
    with pytest.raises(ValueError):
        _config(SOLAR_LT_USERS="0")


def test_only_loopback_by_default() -> None:
    c = _config()
    c.check_host("http://127.0.0.1:8000")
    c.check_host("http://lb:8080")
    with pytest.raises(ValueError, match="refusing"):
        c.check_host("http://example.com")
    _config(SOLAR_LT_ALLOW_REMOTE="1").check_host("http://example.com")


def test_zipf_users_are_skewed_and_in_range() -> None:
    import random

    sampler = workload.ZipfSampler(20, 1.1, random.Random(0))
    counts = Counter(sampler.sample() for _ in range(20_000))
    assert set(counts) <= set(range(20))
    assert counts[0] > counts[1] > counts[5] > counts[19]
    uniform = workload.ZipfSampler(4, 0.0, random.Random(0))
    shares = Counter(uniform.sample() for _ in range(8_000))
    assert all(1_700 < shares[k] < 2_300 for k in range(4))


def test_rank_body_has_m_vocabulary_candidates() -> None:
    items = [str(i) for i in range(1, 3001)]
    w = workload.Workload(_config(SOLAR_LT_CANDIDATES="2048", SOLAR_LT_TOP_K="100"), items)
    body = json.loads(w.rank_body())
    assert len(body["candidates"]) == 2048 == len(set(body["candidates"]))
    assert {str(c) for c in body["candidates"]} <= set(items)
    assert body["top_k"] == 100 and body["mode"] == "svd"
    assert body["user_id"].startswith("u") and 0 <= int(body["user_id"][1:]) < 20


def test_vocabulary_from_a_checkpoint_config(tmp_path: Path) -> None:
    items = ["1", "22", "Heat (1995)", "007", "²"]
    (tmp_path / "config.json").write_text(json.dumps({"items": items}))
    ids = workload.vocabulary_ids("http://127.0.0.1:9", None, str(tmp_path / "config.json"))
    # JSON fragments: 007 stays a string (as 7 it would be another item), as does "²".
    assert [json.loads(i) for i in ids] == [1, 22, "Heat (1995)", "007", "²"]
    assert workload.vocabulary_ids("http://127.0.0.1:9", 3) == ["1", "2", "3"]


def test_small_vocabulary_is_drawn_with_replacement_and_strings_stay_strings() -> None:
    w = workload.Workload(_config(SOLAR_LT_CANDIDATES="50"), ['"Heat (1995)"', '"Up (2009)"'])
    body = json.loads(w.rank_body())
    assert len(body["candidates"]) == 50
    assert set(body["candidates"]) <= {"Heat (1995)", "Up (2009)"}


def test_ingest_bodies_hold_1_to_50_events() -> None:
    w = workload.Workload(_config(), ["1", "2", "3"])
    sizes = [len(json.loads(w.ingest_body())["events"]) for _ in range(400)]
    assert min(sizes) >= 1 and max(sizes) <= 50 and len(set(sizes)) > 20
    event = json.loads(w.ingest_body())["events"][0]
    assert set(event) >= {"user_id", "item_id", "ts"} and event["item_id"] in (1, 2, 3)


def test_summarize_percentiles_and_rates() -> None:
    latencies = {"/rank": [float(i) for i in range(1, 101)], "/ingest": [2.0, 4.0]}
    summary = workload.summarize(latencies, {"/ingest": 1}, duration_s=10.0)
    rank = summary["endpoints"]["/rank"]
    assert rank["p50_ms"] == pytest.approx(50.5) and rank["p99_ms"] == pytest.approx(99.01)
    assert rank["requests_per_s"] == pytest.approx(10.0) and rank["failures"] == 0
    ingest = summary["endpoints"]["/ingest"]
    assert ingest["requests"] == 3 and ingest["failures"] == 1
    assert summary["endpoints"]["total"]["requests"] == 103
    empty = workload.summarize({}, {"/rank": 2}, 1.0)["endpoints"]["/rank"]
    assert empty["p99_ms"] is None and empty["failures"] == 2


def test_arrivals_are_poisson_by_default() -> None:
    """Exponential gaps (mean 1/rate, standard deviation 1/rate, memoryless) unless
    constant pacing is asked for by name; slow answers do not lower the offered rate."""
    import random
    import statistics

    assert workload.LoadConfig({}).arrivals == "poisson"
    assert workload.LoadConfig({"SOLAR_LT_ARRIVALS": "constant"}).arrivals == "constant"
    with pytest.raises(ValueError, match="SOLAR_LT_ARRIVALS"):
        workload.LoadConfig({"SOLAR_LT_ARRIVALS": "bursty"})
    pacer = workload.ArrivalPacer(20.0, "poisson", random.Random(0))
    gaps = [pacer.gap() for _ in range(20_000)]
    assert statistics.fmean(gaps) == pytest.approx(0.05, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(0.05, rel=0.05)  # CV 1: exponential
    assert sum(g > 0.1 for g in gaps) / len(gaps) == pytest.approx(0.135, abs=0.01)  # e^-2
    constant = workload.ArrivalPacer(20.0, "constant", random.Random(0))
    assert {round(constant.gap(), 9) for _ in range(10)} == {0.05}
    # Waits follow the schedule: after a late answer the arrivals it missed are due at once.
    late = workload.ArrivalPacer(10.0, "constant", random.Random(0))
    assert late.wait(0.0) == pytest.approx(0.1)  # due at 0.1
    assert late.wait(0.35) == 0.0 and late.wait(0.35) == 0.0  # due at 0.2 and 0.3: late
    assert late.wait(0.35) == pytest.approx(0.05)  # due at 0.4


_METRICS_BEFORE = """\
solar_rank_stage_seconds_bucket{le="0.001",stage="decode"} 5.0
solar_rank_stage_seconds_bucket{le="0.01",stage="decode"} 5.0
solar_rank_stage_seconds_bucket{le="+Inf",stage="decode"} 5.0
"""
_METRICS_AFTER = """\
# HELP solar_rank_stage_seconds stages
solar_rank_stage_seconds_bucket{le="0.001",stage="decode"} 55.0
solar_rank_stage_seconds_bucket{le="0.01",stage="decode"} 105.0
solar_rank_stage_seconds_bucket{le="+Inf",stage="decode"} 105.0
solar_rank_stage_seconds_count{stage="decode"} 105.0
solar_apply_lag_seconds_bucket{le="0.05"} 0.0
solar_apply_lag_seconds_bucket{le="0.1"} 10.0
solar_apply_lag_seconds_bucket{le="+Inf"} 10.0
"""


def test_server_figures_are_the_runs_own_histogram_quantiles() -> None:
    """The run's delta of each histogram, quantiles interpolated inside their bucket (as
    histogram_quantile does): 50 of the run's 100 decodes ≤ 1 ms, the rest ≤ 10 ms."""
    figures = server_metrics.run_figures(_METRICS_BEFORE, _METRICS_AFTER)
    decode = figures["solar_rank_stage_seconds"]["decode"]
    assert decode["count"] == 100
    assert decode["p50"] == pytest.approx(1.0) and decode["p99"] == pytest.approx(9.82)
    lag = figures["solar_apply_lag_seconds"]["all"]
    assert lag["count"] == 10 and lag["p99"] == pytest.approx(99.5)
    assert server_metrics.run_figures("", "") == {}


def test_compare_prints_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def doc(p99: float, rps: float) -> dict[str, Any]:
        row = {"p50_ms": p99 / 2, "p95_ms": p99, "p99_ms": p99, "requests_per_s": rps}
        return {"config": {"mode": "x"}, "endpoints": {"/rank": row}}

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(doc(10.0, 200.0)))
    b.write_text(json.dumps(doc(250.0, 10.0)))
    assert compare.compare(doc(10.0, 200.0), doc(250.0, 10.0))["/rank"]["p99_ms"] == 25.0
    assert compare.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "25.00x" in out and "20.00x" in out
    with pytest.raises(SystemExit):
        compare.main([str(a)])  # one summary needs --show
    assert compare.main(["--show", str(a)]) == 0
    (tmp_path / "bad.json").write_text("{}")
    assert compare.main([str(a), str(tmp_path / "bad.json")]) == 2


class _Stub(BaseHTTPRequestHandler):
    """A fake solar: /model/items pages 30 items, /rank and /ingest answer 200, counted."""

    seen: Counter[str] = Counter()
    bodies: list[dict[str, Any]] = []
    vocabulary: list[int | str] = list(range(1, 31))

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if url.path == "/metrics":  # one decode-stage observation per /rank so far
            n = _Stub.seen["/rank"]
            name = "solar_rank_stage_seconds_bucket"
            text = (
                f'{name}{{le="0.001",stage="decode"}} {n}\n{name}{{le="+Inf",stage="decode"}} {n}\n'
            )
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if url.path != "/model/items":
            self._reply({"version": "stub", "vocabulary_size": len(self.vocabulary)})
            return
        query = {k: int(v[0]) for k, v in parse_qs(url.query).items()}
        offset, limit = query.get("offset", 0), query.get("limit", 1000)
        page = self.vocabulary[offset : offset + limit]
        self._reply({"offset": offset, "limit": limit, "total": 30, "items": page})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.seen[self.path] += 1
        _Stub.bodies.append(body)
        self._reply({"items": []} if self.path == "/rank" else {"accepted": 1})

    def _reply(self, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub_url(serve_http: ServeHttp) -> str:
    return serve_http(_Stub)


def test_vocabulary_pages_through_model_items(stub_url: str) -> None:
    assert workload.served_items(stub_url, page=7) == [str(i) for i in range(1, 31)]
    assert workload.served_items(stub_url, page=7, max_items=10) == [str(i) for i in range(1, 15)]
    assert workload.vocabulary_ids(stub_url, None) == [str(i) for i in range(1, 31)]
    # Nothing listening: the MovieLens-100K ids.
    assert len(workload.vocabulary_ids("http://127.0.0.1:9", None)) == 1682


@pytest.mark.e2e
def test_headless_run_writes_a_summary(stub_url: str, tmp_path: Path) -> None:
    """4 s of locust at 50 requests/s: the mix, the rate and the summary file."""
    _Stub.seen.clear()
    _Stub.bodies.clear()
    summary = tmp_path / "summary.json"
    env = dict(
        os.environ,
        SOLAR_LT_RATE="50",
        SOLAR_LT_LOCUST_USERS="5",
        SOLAR_LT_CANDIDATES="16",
        SOLAR_LT_SUMMARY=str(summary),
    )
    locust = Path(sys.executable).with_name("locust")
    subprocess.run(
        [
            str(locust),
            "-f",
            str(LOADTEST / "locustfile.py"),
            "--headless",
            "--host",
            stub_url,
            "--users",
            "5",
            "--spawn-rate",
            "5",
            "--run-time",
            "4s",
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=60,
        capture_output=True,
    )
    document = json.loads(summary.read_text())
    endpoints = document["endpoints"]
    total = endpoints["total"]["requests"]
    assert 120 <= total <= 260, total  # ~50/s for ~4 s
    assert 0.65 <= endpoints["/rank"]["requests"] / total <= 0.95
    assert endpoints["total"]["failures"] == 0 and endpoints["/rank"]["p99_ms"] > 0
    decode = document["server"]["solar_rank_stage_seconds"]["decode"]  # the server's side
    # The server sees every request the client counted, plus at most one in flight per
    # locust user when the run stopped (answered after the client's stats closed).
    assert 0 <= decode["count"] - endpoints["/rank"]["requests"] <= 5
    assert document["config"]["arrivals"] == "poisson"
    rank_bodies = [b for b in _Stub.bodies if "candidates" in b]
    assert all(len(b["candidates"]) == 16 for b in rank_bodies)
    assert {c for b in rank_bodies for c in b["candidates"]} <= set(range(1, 31))


@pytest.mark.e2e
def test_refuses_a_remote_host(tmp_path: Path) -> None:
    locust = Path(sys.executable).with_name("locust")
    run = subprocess.run(
        [
            str(locust),
            "-f",
            str(LOADTEST / "locustfile.py"),
            "--headless",
            "--host",
            "http://192.0.2.1:8000",
            "--users",
            "1",
            "--run-time",
            "2s",
            "--only-summary",
        ],
        cwd=tmp_path,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert "refusing to send load" in run.stdout + run.stderr
