"""/docs and /redoc work offline: a real headless Chromium, cut off from every network but
loopback, renders the operations of a real `solar serve`.

Chromium is Debian's package; when it is missing the fixture installs it with apt-get (as
loadtest/prometheus_check.sh installs Prometheus) and fails, never skips, when it cannot.
The browser gets a proxy that does not exist and a resolver that knows no host name, so a
page that needs a CDN stays blank and the test fails (FastAPI's stock pages do).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.common.harness import service
from service.api.docs import STATIC_PATH
from solar_tools.redis_server import free_port

pytestmark = pytest.mark.e2e

VIRTUAL_TIME_MS = 15_000  # page time Chromium simulates before dumping the DOM
EXTERNAL_URL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def _apt_install(package: str) -> str:
    """``apt-get install`` (after ``apt-get update`` if the first try fails); the log."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "-y", "-q", "install", "--no-install-recommends", package]
    first = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if first.returncode == 0:
        return first.stdout
    update = subprocess.run(
        ["apt-get", "-q", "update"], env=env, capture_output=True, text=True, timeout=600
    )
    second = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    return first.stderr + update.stderr + second.stdout + second.stderr


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of a Chromium binary, installed from Debian's packages when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("chromium is not installed and this is not root: apt-get install chromium")
    log = _apt_install("chromium")
    found = shutil.which("chromium")
    if not found:
        pytest.fail(f"apt-get could not install chromium:\n{log[-3000:]}")
    return found


@pytest.fixture(scope="module")
def base_url(checkpoint_dir: Path) -> Iterator[str]:
    """A real `solar serve` (uvicorn, embedded store) on a free loopback port."""
    with service(checkpoint_dir, None, env={"SOLAR_WARMUP": "0"}) as url:
        yield url


def render(chromium: str, url: str, profile: Path) -> str:
    """The DOM of ``url`` after the page ran, loaded with every non-loopback request failing."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        f"--proxy-server=http://127.0.0.1:{free_port()}",  # nothing listens there
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
        "--dump-dom",
        url,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _operations(base_url: str) -> list[tuple[str, str, dict[str, str]]]:
    """(path, method, operation) of every documented operation."""
    document = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    return [(p, m, op) for p, item in document["paths"].items() for m, op in item.items()]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_load_nothing_from_outside(base_url: str, page: str) -> None:
    html = httpx.get(base_url + page, timeout=10)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert not EXTERNAL_URL.search(html.text), html.text
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
    assert assets and all(a.startswith(STATIC_PATH + "/") for a in assets), assets
    for asset in assets:
        response = httpx.get(base_url + asset, timeout=10)
        assert response.status_code == 200 and len(response.content) > 1_000, asset


def test_swagger_ui_renders_every_operation_offline(
    chromium: str, base_url: str, tmp_path: Path
) -> None:
    dom = render(chromium, f"{base_url}/docs", tmp_path / "profile")
    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    documented = {path for path, _, _ in _operations(base_url)}
    assert {"/rank", "/ingest", "/model/items"} <= documented
    assert rendered == documented, dom[-2000:]
    assert "Rank candidates for a user" in dom


def test_redoc_renders_every_operation_offline(
    chromium: str, base_url: str, tmp_path: Path
) -> None:
    dom = render(chromium, f"{base_url}/redoc", tmp_path / "profile")
    for path, method, operation in _operations(base_url):
        assert f'data-section-id="operation/{operation["operationId"]}"' in dom, (method, path)
        assert operation["summary"] in dom, operation["summary"]
