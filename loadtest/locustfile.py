"""Locust load for solar: a realistic mix of /rank and /ingest over Zipf-distributed users.

Default mix: 80% ``POST /rank`` (2,048 candidates drawn from the model's vocabulary,
top_k=100) and 20% ``POST /ingest`` (batches of 1–50 events). Users are ``<prefix><k>`` with
k drawn from a Zipf law over ``SOLAR_LT_USERS`` users, so a few users are hot, as in real
traffic. Each locust user sends on its own schedule of **Poisson arrivals** (exponential gaps,
``workload.ArrivalPacer``) so that the whole run offers ``SOLAR_LT_RATE`` requests/s as
independent clients would; ``SOLAR_LT_ARRIVALS=constant`` paces every user at a constant rate
instead (synchronized waves: a stress of its own, not the docs/DESIGN.md §10 load);
``SOLAR_LT_RATE=0`` removes the pacing (closed loop, for saturation throughput).

``summary.json`` holds the client's exact percentiles and, beside them, the server's own
figures over the run (``server``: per-stage /rank latency, pass time by new or seen shape,
GC pauses, event-loop lag, batch sizes; ``worker``: apply lag), from a scrape of ``/metrics``
at the start and one at the end (``server_metrics.py``).

Only the standard library, locust and ``workload.py`` (beside this file: the pure parts,
importable by tests without locust's gevent patching) are imported, so the file also runs in
the stock ``locustio/locust`` image (docker-compose ``--profile loadtest``).

Environment (all optional):

=========================  ========  ==========================================================
variable                   default   meaning
=========================  ========  ==========================================================
SOLAR_LT_RANK_WEIGHT       80        relative weight of /rank
SOLAR_LT_INGEST_WEIGHT     20        relative weight of /ingest
SOLAR_LT_CANDIDATES        2048      candidates per /rank
SOLAR_LT_TOP_K             100       top_k per /rank
SOLAR_LT_MODE              svd       attention mode sent with /rank (any the model serves:
                                     svd, svd_exact, softmax; lifelong for a lifelong model)
SOLAR_LT_USERS             20        size of the user population (ids 0..USERS-1)
SOLAR_LT_USER_PREFIX       u         user id prefix
SOLAR_LT_ZIPF_S            1.1       Zipf exponent (0 = uniform)
SOLAR_LT_MAX_EVENTS        50        largest /ingest batch (batches are 1..MAX events)
SOLAR_LT_ITEMS_FILE        (none)    a checkpoint's config.json: candidates from its ``items``
SOLAR_LT_ITEMS             (none)    item ids 1..K (else GET /model's items or n_items)
SOLAR_LT_RATE              100       total offered requests/s over all locust users; 0 = no pacing
SOLAR_LT_ARRIVALS          poisson   poisson (exponential gaps) or constant (fixed gaps, waves)
SOLAR_LT_WORKER_METRICS    (none)    a `solar worker`'s /metrics URL (apply lag in the summary)
SOLAR_LT_LOCUST_USERS      20        locust users the rate is split over (run.sh sets it)
SOLAR_LT_EXTRA_HOSTS       (none)    comma-separated base URLs to spread requests over as well
SOLAR_LT_SUMMARY           (none)    write summary JSON (exact percentiles) here at exit
SOLAR_LT_ALLOW_REMOTE      0         1 allows a host other than loopback / compose services
SOLAR_LT_SEED              0         random seed for the candidate pool
=========================  ========  ==========================================================
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task
from locust.env import Environment
from server_metrics import fetch, run_figures  # next to this file
from workload import ArrivalPacer, LoadConfig, Workload, summarize, vocabulary_ids

logger = logging.getLogger("solar.locust")
__all__ = ["SolarUser"]


CONFIG = LoadConfig()
_workload: Workload | None = None
_latencies: dict[str, list[float]] = {}
_failures: dict[str, int] = {}
_window: list[float] = []  # [first request start, last request end], unix seconds
_scrapes: dict[str, str] = {}  # /metrics texts at the start: "server", "worker"
_pacers = random.Random(CONFIG.seed + 2)  # seeds each user's arrival schedule


def _get_workload(host: str) -> Workload:
    global _workload
    if _workload is None:
        _workload = Workload(CONFIG, vocabulary_ids(host, CONFIG.items, CONFIG.items_file))
    return _workload


class SolarUser(FastHttpUser):
    """One client: /rank and /ingest in the configured ratio, paced to the total rate."""

    host = "http://127.0.0.1:8000"

    def wait_time(self) -> float:
        return self.pacer.wait(time.monotonic()) if self.pacer is not None else 0.0

    def on_start(self) -> None:
        self.pacer = (
            ArrivalPacer(
                CONFIG.rate / CONFIG.locust_users,
                CONFIG.arrivals,
                random.Random(_pacers.getrandbits(64)),
            )
            if CONFIG.rate > 0
            else None
        )
        CONFIG.check_host(self.host)
        for extra in CONFIG.extra_hosts:
            CONFIG.check_host(extra)
        self.workload = _get_workload(self.host)
        self.hosts = itertools.cycle([""] + CONFIG.extra_hosts)

    def _post(self, path: str, body: str, name: str) -> None:
        url = next(self.hosts) + path
        headers = {"Content-Type": "application/json"}
        with self.client.post(url, data=body, headers=headers, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")

    @task(CONFIG.rank_weight)
    def rank(self) -> None:
        self._post("/rank", self.workload.rank_body(), "/rank")

    @task(CONFIG.ingest_weight)
    def ingest(self) -> None:
        self._post("/ingest", self.workload.ingest_body(), "/ingest")


@events.request.add_listener
def _record(
    request_type: str,
    name: str,
    response_time: float,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    """Keep every latency (ms, unrounded): locust's own percentiles are rounded to 1 ms+."""
    end = time.time()
    start = end - response_time / 1000.0
    _window[:] = [min(_window[0], start), end] if _window else [start, end]
    if exception is not None:
        _failures[name] = _failures.get(name, 0) + 1
    else:
        _latencies.setdefault(name, []).append(response_time)


def _metrics_urls(environment: Environment) -> dict[str, str]:
    urls = {"server": f"{(environment.host or SolarUser.host).rstrip('/')}/metrics"}
    if CONFIG.worker_metrics:
        urls["worker"] = CONFIG.worker_metrics
    return urls


@events.test_start.add_listener
def _scrape_start(environment: Environment, **_: Any) -> None:
    for side, url in _metrics_urls(environment).items():
        _scrapes[side] = fetch(url)


@events.quitting.add_listener
def _write_summary(environment: Environment, **_: Any) -> None:
    if not CONFIG.summary_path:
        return
    duration = (_window[1] - _window[0]) if _window else 0.0
    summary = summarize(_latencies, _failures, duration)
    for side, url in _metrics_urls(environment).items():
        summary[side] = run_figures(_scrapes.get(side, ""), fetch(url))
    summary["config"] = {
        "host": environment.host,
        "mode": CONFIG.mode,
        "rate": CONFIG.rate,
        "arrivals": CONFIG.arrivals,
        "locust_users": CONFIG.locust_users,
        "users": CONFIG.users,
        "zipf_s": CONFIG.zipf_s,
        "candidates": CONFIG.candidates,
        "top_k": CONFIG.top_k,
        "rank_weight": CONFIG.rank_weight,
        "ingest_weight": CONFIG.ingest_weight,
        "max_events": CONFIG.max_events,
        "vocabulary": len(_workload.item_ids) if _workload else None,
        "cpus": os.cpu_count(),
    }
    path = Path(CONFIG.summary_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    logger.info("summary written to %s", path)
