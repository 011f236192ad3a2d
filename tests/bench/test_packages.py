"""bench/ as packages: every tool runs as ``python -m bench.<pkg>.<tool>`` from the checkout,
no module edits ``sys.path``, and what the wheel ships of bench/ imports only what it ships."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import tomllib
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
# Every tool, as its docstring and the docs run it.
TOOLS = (
    "bench.micro.kernels",
    "bench.micro.state_modes",
    "bench.micro.fusions",
    "bench.micro.stages",
    "bench.micro.device",
    "bench.micro.train_speed",
    "bench.e2e.serve",
    "bench.e2e.ingest",
    "bench.e2e.ab",
    "bench.e2e.squeeze",
    "bench.e2e.rank_ab",
    "bench.e2e.loadrange",
    "bench.e2e.stalls",
    "bench.e2e.report",
    "bench.quality",
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in BENCH.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _bench_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name == "bench" or name.startswith("bench.")}


def _packaged() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return {p for p in find_packages(where=str(ROOT), include=include) if p.startswith("bench")}


def test_no_module_edits_the_import_path() -> None:
    for path in [*BENCH.rglob("*.py"), *(ROOT / "tests" / "bench").rglob("*.py")]:
        if path == Path(__file__):
            continue  # the patterns below
        text = path.read_text()
        assert not re.search(r"sys\.path\.(insert|append)", text), path
        assert not re.search(r"noqa:[^\n]*E402", text), path


def test_every_tool_is_a_module_with_a_main() -> None:
    modules = _modules()
    for tool in TOOLS:
        path = modules[tool]
        if path.name == "__init__.py":  # a package tool: its __main__ runs it
            path = path.with_name("__main__.py")
        assert "raise SystemExit(main())" in path.read_text(), tool


def test_every_tool_answers_help_as_python_dash_m() -> None:
    """``python -m <tool> --help`` for every tool, in one interpreter (runpy, as -m does)."""
    code = (
        "import runpy, sys\n"
        "for tool in sys.argv[1:]:\n"
        "    sys.argv = [tool, '--help']\n"
        "    try:\n"
        "        runpy.run_module(tool, run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, (tool, done.code)\n"
        "    else:\n"
        "        raise AssertionError(f'{tool} --help did not exit')\n"
        "    print('ok', tool, flush=True)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, *TOOLS], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert [line.split()[1] for line in run.stdout.splitlines() if line.startswith("ok ")] == list(
        TOOLS
    )


def test_the_wheel_ships_what_solar_bench_needs_and_no_more() -> None:
    packaged = _packaged()
    assert packaged == {"bench", "bench.common", "bench.micro"}, packaged
    for name, path in _modules().items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        if package not in packaged:
            continue
        for imported in _bench_imports(path):
            is_package = (ROOT / imported.replace(".", "/")).is_dir()
            target = imported if is_package else imported.rsplit(".", 1)[0]
            assert target in packaged, f"{name} (shipped) imports {imported} (not shipped)"
