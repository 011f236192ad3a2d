"""The architecture, checked: layers import only downwards, no import circle.

Layers of ``service/`` from the top: ``api`` (HTTP) and ``worker`` → ``core`` (use cases,
user state, the applier, the loaded model) and ``backends`` → ``scoring`` (batcher, batch
scorer), ``store`` (storage), ``history`` (the durable history tier) and ``stream`` (the
ingest stream) → the shared ``errors``, ``user_ids``, ``settings`` and ``metrics``.
``model/`` is a library that never imports the service, FastAPI or Redis.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "service", "solar_tools")
# Rank of each service layer: a module may import only layers of a lower or equal rank.
SERVICE_LAYERS = {
    "service.api": 4,
    "service.app": 5,
    "service.cli": 5,
    "service.core": 3,
    "service.backends": 3,
    "service.worker": 5,
    "service.backfill": 5,
    "service.retire": 5,
    "service.scoring": 2,
    "service.store": 2,
    "service.history": 2,
    "service.stream": 2,
    "service.errors": 0,
    "service.user_ids": 0,
    "service.settings": 0,
    "service.metrics": 0,
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path) & modules.keys() - {name} for name, path in modules.items()}


def _layer(module: str) -> int | None:
    for prefix, rank in SERVICE_LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import circle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_service_layers_import_only_downwards() -> None:
    wrong = []
    for module, imported in _graph().items():
        rank = _layer(module)
        if rank is None:
            continue
        for target in imported:
            target_rank = _layer(target)
            if target_rank is not None and target_rank > rank:
                wrong.append(f"{module} → {target}")
    assert not wrong, wrong


def test_model_is_a_library_without_the_service() -> None:
    for name, path in _modules().items():
        if name.split(".")[0] != "model":
            continue
        roots = {imported.split(".")[0] for imported in _imports(path)}
        assert not roots & {"service", "fastapi", "starlette", "redis", "solar_tools"}, name


def test_only_the_api_layer_knows_fastapi() -> None:
    for name, path in _modules().items():
        if not name.startswith("service.") or _layer(name) in (4, 5):
            continue
        roots = {imported.split(".")[0] for imported in _imports(path)}
        assert not roots & {"fastapi", "starlette"}, name


def test_the_batcher_and_the_domain_errors_import_without_fastapi_or_redis() -> None:
    code = (
        "import sys, service.scoring.batcher, service.errors; "
        "print(sorted(m for m in ('fastapi', 'starlette', 'redis') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_client_imports_neither_the_service_nor_the_model() -> None:
    """solar_tools.client is what a caller of the API installs: httpx and tqdm, no server."""
    for name in ("solar_tools.client", "solar_tools.protocol", "solar_tools.results"):
        roots = {imported.split(".")[0] for imported in _imports(_modules()[name])}
        assert not roots & {"service", "model", "fastapi", "starlette", "redis", "torch"}, name
    code = (
        "import sys, solar_tools.client; "
        "print(sorted(m for m in ('service', 'model', 'torch', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
