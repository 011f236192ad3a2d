"""The deployment files, validated without a Docker engine.

YAML/JSON parse; every file, build context and stage the compose file and the Dockerfile
refer to exists; ports and service names agree between docker-compose.yml, nginx.conf,
prometheus.yml and Grafana's provisioning; redis.conf loads in a real redis-server; every
metric name in the dashboard and in prometheus.yml is in DESIGN §6 and is exported by the app.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import torch
import yaml
from prometheus_client.parser import text_string_to_metric_families

from model.checkpoint import save_checkpoint
from model.config import RankerConfig
from model.ranker import Ranker
from model.vocabulary import Vocabulary
from service.settings import Settings
from solar_tools.redis_server import REDIS_SERVER_BIN, free_port
from tests.service.support import running_app

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"

# DESIGN §6, the metric names the service promises.
DESIGN_METRICS = {
    "solar_request_duration_seconds": "histogram",
    "solar_rank_candidates": "histogram",
    "solar_batch_size": "histogram",
    "solar_batch_queue_seconds": "histogram",
    "solar_batch_compute_seconds": "histogram",
    "solar_queue_depth": "gauge",
    "solar_ingest_events_total": "counter",
    "solar_factor_update_seconds": "histogram",
    "solar_store_seconds": "histogram",
    "solar_store_conflicts_total": "counter",
    "solar_rejected_total": "counter",
    "solar_unknown_items_total": "counter",
    "solar_factor_residual_ratio": "histogram",
    "solar_model_info": "gauge",
    "solar_apply_lag_seconds": "histogram",
    "solar_ingest_pending": "gauge",
    "solar_apply_batch_events": "histogram",
    "solar_state_rebuilds_total": "counter",
    "solar_model_states": "gauge",
    "solar_applied_versions": "gauge",
    "solar_backfill_users_total": "gauge",
    "solar_backfill_users_done": "gauge",
    "solar_backfill_events_total": "counter",
}
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("",), "gauge": ("",)}
METRIC_RE = re.compile(r"\bsolar_[a-z0-9_]*[a-z0-9]\b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (DOCKER / "grafana" / "dashboards" / "solar.json").read_text()
    )
    return document


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _replicas(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The solar services: built from this repository's Dockerfile."""
    return {n: s for n, s in compose["services"].items() if "build" in s}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a service: container path → host path (relative to the repo)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = source
    return out


def _dockerfile_stages() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    return re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE | re.IGNORECASE)


def test_every_config_file_parses() -> None:
    for path in [ROOT / "docker-compose.yml", *DOCKER.rglob("*.yml")]:
        assert _yaml(path), path
    for path in DOCKER.rglob("*.json"):
        assert json.loads(path.read_text()), path


def test_bind_mounts_and_build_context_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in _mounts(service).items():
            if source == "./artifacts/default-model":
                continue  # written by `make model` (gitignored); README says so
            assert (ROOT / source).exists(), f"{name}: {source} → {target} does not exist"
    for name, service in _replicas(compose).items():
        build = service["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        assert build["target"] in _dockerfile_stages(), f"{name}: no stage {build['target']}"


def test_two_replicas_on_one_redis(compose: dict[str, Any]) -> None:
    replicas = _replicas(compose)
    assert len(replicas) >= 2
    for service in replicas.values():
        env = service["environment"]
        assert env["SOLAR_REDIS_URL"] == "redis://redis:6379/0"
        assert env["SOLAR_PORT"] in service["expose"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert env["SOLAR_MODEL_PATH"] in _mounts(service)
    assert "6379" in compose["services"]["redis"]["expose"]


def test_every_process_on_redis_shares_one_durable_history(compose: dict[str, Any]) -> None:
    """Replicas and worker share Redis, so they must share the PostgreSQL history too (the
    embedded one would give each process only its own part of the histories)."""
    sharing = {**_replicas(compose), "worker": compose["services"]["worker"]}
    urls = {name: s["environment"].get("SOLAR_HISTORY_URL") for name, s in sharing.items()}
    assert set(urls.values()) == {"postgresql://solar@postgres:5432/solar"}, urls
    for service in sharing.values():
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "5432" in compose["services"]["postgres"]["expose"]


def test_published_ports_bind_to_loopback(compose: dict[str, Any]) -> None:
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published
    assert all(p.startswith("127.0.0.1:") for p in published), published


def _nginx() -> str:
    return (DOCKER / "nginx.conf").read_text()


def test_load_balancer_fronts_every_replica(compose: dict[str, Any]) -> None:
    conf = _nginx()
    upstream = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", conf, flags=re.MULTILINE))
    replicas = _replicas(compose)
    assert upstream == {f"{n}:{s['environment']['SOLAR_PORT']}" for n, s in replicas.items()}
    lb = compose["services"]["lb"]
    listen = re.search(r"^\s*listen\s+(\d+);", conf, flags=re.MULTILINE)
    assert listen is not None
    assert lb["ports"][0].rsplit(":", 1)[1] == listen.group(1)
    assert set(lb["depends_on"]) == set(replicas)
    assert _mounts(lb)["/etc/nginx/nginx.conf"] == "./docker/nginx.conf"
    assert conf.count("{") == conf.count("}")


def test_prometheus_scrapes_every_replica(compose: dict[str, Any]) -> None:
    config = _yaml(DOCKER / "prometheus.yml")
    targets = {
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    }
    replicas = _replicas(compose)
    worker = compose["services"]["worker"]
    assert worker["command"] == ["solar", "worker"]
    worker_target = f"worker:{worker['environment']['SOLAR_WORKER_METRICS_PORT']}"
    assert targets == {f"{n}:{s['environment']['SOLAR_PORT']}" for n, s in replicas.items()} | {
        worker_target
    }
    assert all(s["environment"]["SOLAR_APPLIER"] == "external" for s in replicas.values())
    prometheus = compose["services"]["prometheus"]
    mounted = _mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    assert mounted == "./docker/prometheus.yml"
    assert any("/etc/prometheus/prometheus.yml" in arg for arg in prometheus["command"])


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard(
    compose: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    datasource = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"][0]
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    provider = _yaml(provisioning / "dashboards" / "solar.yml")["providers"][0]
    dashboards_dir = ROOT / mounts[provider["options"]["path"]]
    assert (dashboards_dir / "solar.json").is_file()
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {datasource["uid"]}


def test_dashboard_covers_the_issue_panels(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    needed = [
        "solar_request_duration_seconds_count",
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
        "solar_batch_size",
        "solar_queue_depth",
        "solar_ingest_events_total",
        "solar_store_seconds",
        "solar_rejected_total",
    ]
    assert [n for n in needed if n not in exprs] == []
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def _metric_names_used(dashboard: dict[str, Any]) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    text = "\n".join(exprs) + (DOCKER / "prometheus.yml").read_text()
    return set(METRIC_RE.findall(text))


def _family(name: str, families: dict[str, str]) -> str | None:
    """The metric family a sample name belongs to, given family → type."""
    for family, kind in families.items():
        if any(name == family + suffix for suffix in _SUFFIXES[kind]):
            return family
    return None


def test_dashboard_metrics_are_design_metrics(dashboard: dict[str, Any]) -> None:
    used = _metric_names_used(dashboard)
    assert len(used) >= 10
    unknown = {n for n in used if _family(n, DESIGN_METRICS) is None}
    assert not unknown, f"not in DESIGN §6: {unknown}"


def test_locust_service_is_optional_and_uses_the_locustfile(compose: dict[str, Any]) -> None:
    locust = compose["services"]["locust"]
    assert locust["profiles"] == ["loadtest"]
    mount = next(t for t, s in _mounts(locust).items() if s == "./loadtest")
    command = locust["command"]
    locustfile = command[command.index("-f") + 1]
    assert locustfile.startswith(mount + "/")
    assert (ROOT / "loadtest" / Path(locustfile).relative_to(mount)).is_file()
    assert any(arg.startswith("--run-time=") for arg in command)  # bounded
    assert "--host=http://lb:8080" in command


def test_dockerfile_is_multistage_nonroot_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = _dockerfile_stages()
    assert len(stages) >= 3 and {"build", "runtime", "serve"} <= set(stages)
    assert stages[-1] == "serve"  # the default target: model mounted, not baked
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)
    healthcheck = re.search(r"^HEALTHCHECK .*\n(?:.*\n)*?.*CMD .*?/healthz", text, re.MULTILINE)
    assert healthcheck is not None
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^EXPOSE 8000$", text, flags=re.MULTILINE)
    # The image pip-installs the project, hence pyproject's torch pin.
    assert '"torch==2.13.0"' in (ROOT / "pyproject.toml").read_text()
    assert "pip install" in text and " ." in text


def test_dockerfile_copies_only_what_the_context_keeps() -> None:
    text = (ROOT / "Dockerfile").read_text()
    ignore = (ROOT / ".dockerignore").read_text().split()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = []
    for line in re.findall(r"^COPY (?!--from)(.*)$", text, flags=re.MULTILINE):
        words = [w for w in line.split() if not w.startswith("--")]
        sources += words[:-1]
    assert sources
    for source in sources:
        assert source.rstrip("/") in kept, f"{source} is excluded by .dockerignore"
        if source != "artifacts/default-model":  # baked target only, after `make model`
            assert (ROOT / source).exists(), source


def test_redis_conf_is_durable_and_never_evicts() -> None:
    conf = dict(
        line.split(None, 1)
        for line in (DOCKER / "redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("save")
    )
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "everysec"
    assert conf["maxmemory"].endswith(("gb", "mb"))
    assert conf["maxmemory-policy"] == "noeviction"
    text = (DOCKER / "redis.conf").read_text()
    assert "# noeviction:" in text  # the choice is explained in a comment


@pytest.fixture
def conf_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """redis-server started from docker/redis.conf (port, bind and dir overridden)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER_BIN,
            str(DOCKER / "redis.conf"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "redis-server refused docker/redis.conf"
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_redis_conf_loads_in_a_real_redis_server(conf_redis: redis.Redis) -> None:
    keys = ("appendonly", "appendfsync", "maxmemory-policy", "maxmemory")
    got = {k: str(conf_redis.config_get(k)[k]) for k in keys}
    assert got["appendonly"] == "yes" and got["appendfsync"] == "everysec"
    assert got["maxmemory-policy"] == "noeviction"
    assert int(got["maxmemory"]) == 2 * 1024**3


@pytest.fixture(scope="module")
def exported_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Family name → type of every metric the real app's GET /metrics exposes, after traffic."""
    model_dir = _tiny_checkpoint(tmp_path_factory.mktemp("model"))

    async def scrape() -> str:
        settings = Settings(model_path=model_dir, redis_url=None, api_token=None)
        async with running_app(settings) as (_, client):
            events = [{"user_id": "u1", "item_id": i, "ts": 1.0e9 + i} for i in range(1, 9)]
            assert (await client.post("/ingest", json={"events": events})).status_code == 200
            rank = {"user_id": "u1", "candidates": [1, 2, 99_999], "top_k": 2}
            assert (await client.post("/rank", json=rank)).status_code == 200
            assert (await client.post("/rank", json={"user_id": "bad{"})).status_code == 422
            response = await client.get("/metrics")
            assert response.status_code == 200
            return response.text

    text = anyio.run(scrape)
    families = {}
    for family in text_string_to_metric_families(text):
        # The parser strips a counter's _total; the exposition name keeps it.
        name = family.name + ("_total" if family.type == "counter" else "")
        families[name] = family.type
    return families


def _tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    vocab = Vocabulary(tuple(str(i) for i in range(1, 21)))
    config = RankerConfig(n_items=vocab.n_items, dim=16, heads=2, rank=4, mlp_hidden=16)
    save_checkpoint(path, Ranker(config), vocab)
    return path


def test_app_exports_every_design_metric(exported_metrics: dict[str, str]) -> None:
    missing = {n: t for n, t in DESIGN_METRICS.items() if exported_metrics.get(n) != t}
    assert not missing, f"DESIGN §6 metrics missing or of another type: {missing}"


def test_dashboard_metrics_are_exported_by_the_app(
    dashboard: dict[str, Any], exported_metrics: dict[str, str]
) -> None:
    used = _metric_names_used(dashboard)
    not_exported = {n for n in used if _family(n, exported_metrics) is None}
    assert not not_exported, f"used in the dashboard, not exported by the app: {not_exported}"


def test_compose_environment_names_real_settings(compose: dict[str, Any]) -> None:
    fields = {f"SOLAR_{name.upper()}" for name in Settings.model_fields}
    for name, service in _replicas(compose).items():
        unknown = {k for k in service["environment"] if k.startswith("SOLAR_")} - fields
        assert not unknown, f"{name}: no such setting {unknown}"
        Settings(**{k[6:].lower(): v for k, v in service["environment"].items()})  # validates


def test_healthcheck_command_is_valid_python_hitting_healthz() -> None:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])$", text, flags=re.MULTILINE)
    assert match is not None
    argv = json.loads(match.group(1))
    assert argv[:2] == ["python3", "-c"] and "/healthz" in argv[2]
    compile(argv[2], "<healthcheck>", "exec")
